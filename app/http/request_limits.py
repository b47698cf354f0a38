"""Request limits: how large a request may be, and how long its body may take.

Bodies stop at MAX_CONTENT_LENGTH (16 KiB), except on the views marked with
:func:`larger_body` (the bulk membership change: BULK_MAX_CONTENT_LENGTH,
128 KiB); header fields stop at 8 KiB each, and a body must arrive within
REQUEST_BODY_TIMEOUT seconds (15) of its headers. How often a client may
write is ``app/http/ratelimit.py``.
"""
import io
import socket
import time

from flask import current_app, request
from werkzeug.wsgi import ClosingIterator

from ..errors import Problem

# gunicorn refuses larger header fields itself, before the app (a 431 made
# problem+json by gunicorn.conf.py's worker); below its limit, from here.
MAX_HEADER_FIELD = 8192
MAX_HEADERS_TOTAL = 32 * 1024
# The bulk membership change's body: 1,000 entries of the longest id and
# role take about 100 KB of JSON.
BULK_MAX_CONTENT_LENGTH = 128 * 1024


def refuse_large_headers():
    """431 for header fields a client should never need (tokens stop at 4 KiB)."""
    total = 0
    for name, value in request.headers.items():
        size = len(name) + len(value) + 4
        total += size
        if size > MAX_HEADER_FIELD or total > MAX_HEADERS_TOTAL:
            raise Problem(
                431, "headers-too-large",
                f"Header fields are limited to {MAX_HEADER_FIELD} bytes each and "
                f"{MAX_HEADERS_TOTAL} bytes in all.",
            )


def larger_body(limit):
    """Mark a view that accepts bodies of up to ``limit`` bytes instead of MAX_CONTENT_LENGTH."""
    def mark(view):
        view.max_content_length = limit
        return view
    return mark


def apply_body_limit():
    """The matched view's own body limit (see :func:`larger_body`), before any body is read."""
    view = current_app.view_functions.get(request.endpoint)
    limit = getattr(view, "max_content_length", None)
    if limit is not None:
        request.max_content_length = limit


def refuse_large_streamed_bodies():
    """413 for a chunked body past the request's limit (MAX_CONTENT_LENGTH, or its view's).

    With no Content-Length to check up front, Werkzeug stops reading at the
    limit without saying so: a large body would be cut short and the start of
    it parsed as if it were all. Read it here, one byte past the limit.
    """
    environ = request.environ
    if request.content_length is not None or "wsgi.input_terminated" not in environ:
        return
    if request.method in ("GET", "HEAD", "OPTIONS", "DELETE"):
        return
    limit = request.max_content_length
    stream, body = environ["wsgi.input"], bytearray()
    while len(body) <= limit:
        chunk = stream.read(limit + 1 - len(body))
        if not chunk:
            break
        body += chunk
    if len(body) > limit:
        raise Problem(413, "body-too-large", f"The body must be at most {limit} bytes.")
    environ["wsgi.input"] = io.BytesIO(bytes(body))
    environ["CONTENT_LENGTH"] = str(len(body))


class BodyDeadline:
    """WSGI middleware: a request body must arrive within ``timeout`` seconds.

    gunicorn reads a body from the socket only when the application asks, and
    without a timeout: a client that sends the headers and half a body would
    hold the connection (before authentication) for as long as it likes. The
    deadline is set on the socket only while a body is read, and only for
    requests that declare one, so a waiting long poll (which reads nothing; its
    disconnect watch polls the descriptor) and gunicorn's keep-alive reads
    between requests are untouched. What the application leaves unread is
    drained after the answer under the same deadline and size limit, or the
    connection is closed.
    """

    def __init__(self, app, timeout, limit):
        self.app = app
        self.timeout = timeout
        self.limit = limit

    def __call__(self, environ, start_response):
        sock = environ.get("gunicorn.socket")
        declared = environ.get("CONTENT_LENGTH", "0") not in ("", "0") or "HTTP_TRANSFER_ENCODING" in environ
        if sock is None or self.timeout <= 0 or not declared:
            return self.app(environ, start_response)
        body = _DeadlineInput(environ["wsgi.input"], sock, self.timeout)
        environ["wsgi.input"] = body
        return ClosingIterator(self.app(environ, start_response), lambda: body.drain(self.limit))


class _DeadlineInput:
    """``wsgi.input`` whose reads fail with a 408 problem once the deadline has passed."""

    def __init__(self, stream, sock, timeout):
        self.stream, self.sock, self.timeout = stream, sock, timeout
        self.deadline = time.monotonic() + timeout

    def read(self, size=-1):
        return self._timed(self.stream.read, size)

    def readline(self, size=-1):
        return self._timed(self.stream.readline, size)

    def readlines(self, hint=-1):
        return self._timed(self.stream.readlines, hint)

    def __iter__(self):
        return iter(self.readline, b"")

    def drain(self, limit):
        """Read what the application left (at most ``limit`` bytes), or stop reading."""
        try:
            left = limit + 1
            while left > 0:
                chunk = self.read(min(left, 65536))
                if not chunk:
                    return
                left -= len(chunk)
        except Problem:
            return  # reading has already stopped
        self._stop_reading()

    def _timed(self, read, size):
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            self._expire()
        previous = self.sock.gettimeout()
        self.sock.settimeout(remaining)
        try:
            return read(size)
        except TimeoutError:
            self._expire()
        finally:
            self.sock.settimeout(previous)

    def _stop_reading(self):
        # Where the next request would start is unknown: with the reading side
        # shut, gunicorn finds the end of the stream and closes the connection
        # once the answer is written.
        try:
            self.sock.shutdown(socket.SHUT_RD)
        except OSError:
            pass

    def _expire(self):
        self._stop_reading()
        raise Problem(
            408, "request-timeout",
            f"The request body did not arrive within {self.timeout:g} s.",
        )


def init_app(app):
    """Refuse large headers and bodies, and bodies that take too long, before any view runs."""
    app.wsgi_app = BodyDeadline(
        app.wsgi_app, app.config["REQUEST_BODY_TIMEOUT"], app.config["MAX_CONTENT_LENGTH"]
    )
    app.before_request(refuse_large_headers)
    app.before_request(apply_body_limit)
    app.before_request(refuse_large_streamed_bodies)
