"""Request limits: how large a request may be, and how often a client may write.

Bodies stop at MAX_CONTENT_LENGTH (16 KiB), except on the views marked with
:func:`larger_body` (the bulk membership change: BULK_MAX_CONTENT_LENGTH,
128 KiB); header fields stop at 8 KiB each, and a body must arrive within
REQUEST_BODY_TIMEOUT seconds (15) of its headers.

Writes (``POST``/``PUT``/``PATCH``/``DELETE`` under ``/communities`` and
``/users``, and the demo's writes) are limited to throttle browsers, not the
platform's backend. A request with a platform-admin token (``adm: true``)
counts once against ``RATELIMIT_PLATFORM_WRITES`` (default "6000 per
minute") for its user and nothing else, a bulk change of 1,000 members
included. Every other write is limited twice with ``RATELIMIT_WRITES``
(default "120 per minute"): once per user (the verified token's ``sub``) and
once per client address, so neither many tokens from one address nor one
token from many addresses escapes. Reads and long polls are not rate limited
here: the hub's own caps bound them.

Each limited answer names the limits it counted against, in the fields of
draft-ietf-httpapi-ratelimit-headers: ``RateLimit-Policy: "writes-by-user";q=120;w=60``
(the quota and its window in seconds) and ``RateLimit: "writes-by-user";r=117;t=42``
(what is left, and the seconds until more is).

``RATELIMIT_STORAGE_URI`` says where the counts live: ``memory://`` is per
worker process (so N workers allow N times the limit), ``redis://host:6379``
shares them between workers and hosts (docs/operations.md).

Behind a load balancer every request comes from the balancer's address;
``TRUSTED_PROXIES`` (how many proxies append to ``X-Forwarded-For``) makes the
per-address limit count the real client instead.
"""
import io
import math
import socket
import time

from flask import current_app, g, request
from flask_limiter import Limiter, RateLimitExceeded
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.wsgi import ClosingIterator

from ..auth import authenticate
from ..errors import Problem, problem_response

WRITE_METHODS = ["POST", "PUT", "PATCH", "DELETE"]
# gunicorn refuses larger header fields itself, before the app (a 431 made
# problem+json by gunicorn.conf.py's worker); below its limit, from here.
MAX_HEADER_FIELD = 8192
MAX_HEADERS_TOTAL = 32 * 1024
# The bulk membership change's body: 1,000 entries of the longest id and
# role take about 100 KB of JSON.
BULK_MAX_CONTENT_LENGTH = 128 * 1024


def by_user():
    """The verified token's subject; an unusable token counts against its address."""
    try:
        return f"user:{authenticate().user_id}"
    except Problem:
        # The view answers 401 itself; the address still pays for the attempt.
        return f"anonymous:{request.remote_addr}"


def by_address():
    return f"address:{request.remote_addr}"


def platform_caller():
    """Whether a verified platform-admin token makes the request: the platform's backend."""
    try:
        return authenticate().is_admin
    except Problem:
        return False


def browser_caller():
    return not platform_caller()


def write_limit():
    return current_app.config["RATELIMIT_WRITES"]


def platform_write_limit():
    return current_app.config["RATELIMIT_PLATFORM_WRITES"]


def ratelimit_fields(response):
    """``RateLimit-Policy`` and ``RateLimit`` for the limits this request counted against.

    Flask-Limiter's own headers are the older ``X-RateLimit-*`` (an epoch for
    the reset); the draft's structured fields are written here from the same
    limits, each named by its scope. Requests no limit applies to (reads,
    polls) get neither.
    """
    limits = current_app.extensions["ratelimit"].current_limits
    if not limits:
        return response
    now = time.time()
    policies, states = [], []
    for limit in limits:
        name = limit.request_args[-1]  # the scope, e.g. "writes-by-user"
        policies.append(f'"{name}";q={limit.limit.amount};w={limit.limit.get_expiry()}')
        # The window itself: RequestLimit.reset_at adds a second to it.
        reset_time, remaining = limit.window
        states.append(f'"{name}";r={max(0, remaining)};t={max(0, math.ceil(reset_time - now))}')
    response.headers["RateLimit-Policy"] = ", ".join(policies)
    response.headers["RateLimit"] = ", ".join(states)
    return response


def remember_reset(limit):
    """on_breach: keep the latest moment a breached limit frees up, for Retry-After."""
    g.ratelimit_reset = max(g.get("ratelimit_reset", 0), limit.reset_at)


def too_many_requests(error):
    retry_after = max(1, math.ceil(g.get("ratelimit_reset", time.time() + 1) - time.time()))
    return problem_response(
        429, f"Too many writes: at most {error.description}. Retry after {retry_after} s.",
        "rate-limited", title="Too Many Requests", headers={"Retry-After": str(retry_after)},
    )


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
    """Set up the limiter and apply the write limits to the write endpoints."""
    proxies = max(0, app.config["TRUSTED_PROXIES"])
    if proxies:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=proxies, x_proto=proxies)
    app.wsgi_app = BodyDeadline(
        app.wsgi_app, app.config["REQUEST_BODY_TIMEOUT"], app.config["MAX_CONTENT_LENGTH"]
    )
    app.before_request(refuse_large_headers)
    app.before_request(apply_body_limit)
    app.before_request(refuse_large_streamed_bodies)

    limiter = Limiter(
        key_func=by_address,
        storage_uri=app.config["RATELIMIT_STORAGE_URI"],
        strategy="moving-window",
        on_breach=remember_reset,
        headers_enabled=False,
    )
    limiter.init_app(app)
    app.extensions["ratelimit"] = limiter
    app.register_error_handler(RateLimitExceeded, too_many_requests)
    app.after_request(ratelimit_fields)


def limit_blueprints(app, reads, writes):
    """Exempt the ``reads`` blueprints, and apply the write limits to the ``writes`` ones.

    Called by ``create_app`` with the blueprints it registers, so that this
    module imports none of them (they import it, for its decorators).
    """
    limiter = app.extensions["ratelimit"]
    # Reads carry no limit (the hub's caps bound polls): skip the check there.
    for blueprint in reads:
        limiter.exempt(blueprint)

    # Applied to the blueprints, for the writing methods only: every write
    # view there is limited, including ones added later. A request meets
    # either the browsers' two limits or the platform's one, never both.
    for blueprint in writes:
        limiter.shared_limit(write_limit, scope="writes-by-user", key_func=by_user,
                             methods=WRITE_METHODS, exempt_when=platform_caller)(blueprint)
        limiter.shared_limit(write_limit, scope="writes-by-address", key_func=by_address,
                             methods=WRITE_METHODS, exempt_when=platform_caller)(blueprint)
        limiter.shared_limit(platform_write_limit, scope="platform-writes", key_func=by_user,
                             methods=WRITE_METHODS, exempt_when=browser_caller)(blueprint)
