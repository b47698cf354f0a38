"""Writes that the rules refuse: domain exceptions, which the HTTP layer answers as problems."""


class Refused(Exception):
    """A write its rules refuse: ``kind`` names the problem, ``detail`` says why;
    ``errors``, for a bulk change, points at the entry refused."""

    def __init__(self, kind, detail):
        super().__init__(detail)
        self.kind = kind
        self.detail = detail
        self.errors = None


class NotFound(Refused):
    """No such community (or one the caller may not know of), or no such membership."""


class Forbidden(Refused):
    """The caller may not make this change."""


class Conflict(Refused):
    """The change collides with what is there (a taken id or slug, the last owner)."""


class PreconditionFailed(Refused):
    """The community is no longer the version the caller named (``If-Match``): nothing changed.

    ``current`` names the version it is, read under the write's lock, for the
    answer to name it.
    """

    def __init__(self, current):
        super().__init__("precondition-failed",
                         "The community changed since the version named in If-Match; nothing was changed. "
                         "Read it again (its ETag is in this answer's) and decide.")
        self.current = current
