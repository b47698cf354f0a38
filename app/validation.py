"""Request parsing that refuses bad input with a clear problem, before any write."""
from flask import request

from . import cursors, wire
from .auth import CALLER_ALIAS, ID_RULE, USER_ID_RULE, valid_id, valid_user_id
from .errors import Problem
from .models import ROLES


def community_id(value):
    """A community id from the path, or a 400 problem."""
    if not valid_id(value):
        raise Problem(400, "invalid-id", f"The community id must be {ID_RULE}.")
    return value


def user_id(value, caller):
    """The user a member path names: ``caller`` for ``me``, otherwise a valid user id or a 400 problem."""
    if value == CALLER_ALIAS:
        return caller
    if not valid_user_id(value):
        raise Problem(400, "invalid-id", f"The user id must be {USER_ID_RULE}.")
    return value


def json_object(allowed, required=(), optional_body=False):
    """The request's JSON object, with only ``allowed`` keys and all ``required`` ones."""
    if optional_body and not request.get_data(cache=True):
        return {}
    if not request.is_json:
        raise Problem(415, "unsupported-media-type", "Send the body as application/json.")
    try:
        body = request.get_json(silent=True)
    except RecursionError:
        # Nested deeper than the parser recurses: 16 KiB of "[" is enough.
        body = None
    if body is None:
        raise Problem(400, "malformed-json", "The body is not valid JSON (or nests too deeply).")
    if not isinstance(body, dict):
        raise Problem(422, "invalid-body", "The body must be a JSON object.")
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise Problem(422, "invalid-body", f"Unknown field(s): {', '.join(unknown)}.")
    missing = [name for name in required if name not in body]
    if missing:
        raise Problem(422, "invalid-body", f"Missing field(s): {', '.join(missing)}.")
    return body


def role(value):
    if not isinstance(value, str) or value not in ROLES:
        raise Problem(422, "invalid-role", f"role must be one of: {', '.join(ROLES)}.")
    return value


def community_fields(creating):
    """The community fields of the request's body, validated and cleaned.

    ``creating`` (a POST) also accepts the id and requires the fields a
    community cannot be without; otherwise (a PATCH) any writable subset.
    """
    return body_fields(wire.accepted(wire.COMMUNITY, creating), creating)


def publication(recipients=()):
    """A published activity or notification from the request's body, validated.

    ``recipients``: the fields naming whom it is for, when the body carries
    them (the demo's SQL path): exactly one of them must be given.
    """
    fields = body_fields(wire.PUBLICATION, creating=True, extra=recipients)
    if recipients:
        named = [name for name in recipients if name in fields]
        if len(named) != 1:
            raise Problem(422, "invalid-body", f"Give exactly one of: {', '.join(recipients)}.")
        if not valid_id(fields[named[0]]):
            raise Problem(422, "invalid-field", f"{named[0]} must be {ID_RULE}.")
    return fields


def body_fields(fields, creating, extra=()):
    """The request body's values of ``fields`` (and the unchecked ``extra`` keys), validated."""
    required = wire.required_on_create(fields) if creating else ()
    body = json_object(tuple(f.name for f in fields) + tuple(extra), required=required)
    values = {f.name: f.parse(body[f.name]) for f in fields if f.name in body}
    values.update({name: body[name] for name in extra if name in body})
    return values


def page(default_limit=20, max_limit=100):
    """``cursor`` and ``limit`` from the query string: (the id to continue below or None, limit)."""
    raw_limit = request.args.get("limit")
    limit = default_limit
    if raw_limit is not None:
        if not raw_limit.isdecimal() or not 1 <= int(raw_limit) <= max_limit:
            raise Problem(400, "invalid-limit", f"limit must be a whole number from 1 to {max_limit}.")
        limit = int(raw_limit)
    raw_cursor = request.args.get("cursor")
    try:
        before = cursors.decode_page(raw_cursor) if raw_cursor is not None else None
    except cursors.InvalidCursor as error:
        raise Problem(400, "invalid-cursor", f"The cursor cannot be used: {error}.") from None
    return before, limit
