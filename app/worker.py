"""The gunicorn worker class: gunicorn's gevent worker, with problem+json errors.

Named by ``worker_class`` in gunicorn.conf.py as a dotted path, so that the
master loads it only as gunicorn loads any worker class; nothing of the app is
imported until a worker answers an error.
"""
from gunicorn import util
from gunicorn.workers.ggevent import GeventWorker


class _Page:
    """Stands in for the client's socket while gunicorn writes its HTML error page."""

    def __init__(self):
        self.written = b""

    def gettimeout(self):
        return 0.0

    def sendall(self, data):
        self.written += data

    def status(self):
        try:
            return int(self.written.split(b" ", 2)[1])
        except (IndexError, ValueError):
            return 500


class ProblemWorker(GeventWorker):
    """gunicorn's gevent worker, whose own error answers are problem+json too.

    gunicorn answers what it cannot hand to the app itself (a bad request
    line 400, one over limit_request_line 414, headers over the limits 431,
    an error before the app answered 500), with an HTML page and none of the
    app's headers. Its classification, logging and access log are kept: the
    page is written to a stand-in and replaced by app.errors.raw_problem.
    """

    def handle_error(self, req, client, addr, exc):
        page = _Page()
        super().handle_error(req, page, addr, exc)
        # Imported here, in the worker, where the app is already loaded: the
        # master imports this module to find the worker class, before the
        # workers monkey-patch, and must not load Flask or SQLAlchemy.
        from .errors import raw_problem

        try:
            util.write_nonblock(client, raw_problem(page.status()))
        except Exception:
            self.log.debug("Failed to send error message.")
