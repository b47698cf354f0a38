"""Write rate limits: how often a client may write.

Writes (``POST``/``PUT``/``PATCH``/``DELETE`` under ``/communities`` and
``/users``, and the demo's writes) are limited to throttle browsers, not the
platform's backend. A request with a platform-admin token (``adm: true``)
counts once against ``RATELIMIT_PLATFORM_WRITES`` (default "6000 per
minute") for its user and nothing else, a bulk change of 1,000 members
included. Every other write is limited twice with ``RATELIMIT_WRITES``
(default "120 per minute"): once per user (the verified token's ``sub``) and
once per client address, so neither many tokens from one address nor one
token from many addresses escapes. Reads and long polls are not rate limited
here: the hub's own caps bound them, and how large a request may be is
``app/http/request_limits.py``.

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
import math
import time

from flask import current_app, g, request
from flask_limiter import Limiter, RateLimitExceeded
from werkzeug.middleware.proxy_fix import ProxyFix

from ..auth import authenticate
from ..errors import Problem, problem_response

WRITE_METHODS = ["POST", "PUT", "PATCH", "DELETE"]


def by_user():
    """The verified token's subject; an unusable token counts against its address."""
    try:
        return f"user:{authenticate().user_id}"
    except Problem:
        # The view answers 401 itself; the address still pays for the attempt.
        return f"anonymous:{request.remote_addr}"


def by_address():
    return f"address:{request.remote_addr}"


def reading():
    """Whether the request is not a write: no limit applies, the limiter need not look for one."""
    return request.method not in WRITE_METHODS


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


def init_app(app):
    """Set up the limiter; :func:`limit_blueprints` applies the write limits once the blueprints are in."""
    proxies = max(0, app.config["TRUSTED_PROXIES"])
    if proxies:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=proxies, x_proto=proxies)

    limiter = Limiter(
        key_func=by_address,
        storage_uri=app.config["RATELIMIT_STORAGE_URI"],
        strategy="moving-window",
        on_breach=remember_reset,
        headers_enabled=False,
    )
    limiter.init_app(app)
    # Reads (a long poll's arrival too) skip the limiter's search for limits.
    limiter.request_filter(reading)
    app.extensions["ratelimit"] = limiter
    app.register_error_handler(RateLimitExceeded, too_many_requests)
    app.after_request(ratelimit_fields)


def limit_blueprints(app, reads, writes):
    """Exempt the ``reads`` blueprints, and apply the write limits to the ``writes`` ones.

    Called by ``create_app`` with the blueprints it registers, so that this
    module imports none of them: the views sit above it.
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
