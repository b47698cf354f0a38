"""One error path: every 4xx/5xx leaves as RFC 9457 problem details."""
import json
import logging
import random

import psycopg2
from flask import current_app, jsonify
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from werkzeug.exceptions import HTTPException, InternalServerError

from .store.db import address
from .store.refusals import Conflict, Forbidden, NotFound, PreconditionFailed, Refused

log = logging.getLogger(__name__)

# A URN: these types name problems, they are not pages to fetch.
PROBLEM_TYPE = "urn:community-sync:problem:"

# Every problem type the service answers with: its slug, status and meaning.
# /openapi.json lists them from here (app/http/openapi.py); docs/api.md explains
# each under a heading of the same name (tests/test_errors.py keeps the
# three, and the slugs the code raises, in step).
PROBLEM_TYPES = {
    "body-too-large": (413, "A chunked body longer than MAX_CONTENT_LENGTH."),
    "database-unavailable": (503, "The database refused or lost the connection, or no pooled connection came "
                                  "free: a passing outage; retry after Retry-After."),
    "forbidden": (403, "The caller may not make this change; detail says which rule refused it."),
    "headers-too-large": (431, "A header field over 8 KiB, or more than 32 KiB of headers in all."),
    "id-taken": (409, "POST /communities named an id that already exists."),
    "invalid-body": (422, "The body is not an object, has fields the endpoint does not take, or lacks "
                          "required ones."),
    "invalid-cursor": (400, "The cursor cannot be used: empty, too long, or not one this service issued "
                            "(a poll cursor whose signature does not match)."),
    "invalid-entries": (422, "Entries of PATCH /communities/{community_id}/members that cannot be applied, "
                             "listed in errors."),
    "invalid-field": (422, "A community's or a published activity's field has the wrong type or shape "
                           "(a topic, data over 512 bytes or not an object, collapse not a boolean)."),
    "invalid-hash": (400, "The poll's hash (or If-None-Match) is over 128 characters."),
    "invalid-id": (400, "A community or user id in the path is not a valid id."),
    "invalid-limit": (400, "limit is not a whole number from 1 to 100."),
    "invalid-role": (422, "role is not one of member, moderator, admin, owner."),
    "invalid-timeout": (400, "The poll's timeout is not whole seconds."),
    "invalid-topic": (400, "The presence's topic is not 1 to 64 of a-z 0-9 _ . : -, starting with a letter."),
    "invalid-watch": (400, "A poll's watch is not <community_id>/<topic> or <community_id>/*, or it "
                           "has more than 20."),
    "last-owner": (409, "The change would leave the community without an owner. Nothing changed."),
    "malformed-json": (400, "The body says application/json but does not parse."),
    "not-a-member": (404, "A read marker for a community the caller is not a member of."),
    "not-found": (404, "A /demo/ endpoint while DEMO_MODE is off."),
    "not-ready": (503, "GET /readyz: the worker's database or wake source is not ready (checks says which)."),
    "over-capacity": (503, "The worker already holds POLL_MAX_WAITING waiting polls; retry after Retry-After."),
    "precondition-failed": (412, "PATCH or DELETE /communities/{community_id} with an If-Match that does "
                                 "not name the community's current version (strong comparison); nothing "
                                 "changed, and the answer's ETag names the current one."),
    "rate-limited": (429, "More writes than the rate limit allows; retry after Retry-After."),
    "request-timeout": (408, "The request's body did not arrive within REQUEST_BODY_TIMEOUT seconds."),
    "slug-taken": (409, "Another community already has this slug."),
    "too-many-entries": (422, "More than 1,000 entries in one PATCH /communities/{community_id}/members."),
    "too-many-polls": (429, "POLL_MAX_PER_USER polls already wait for this user on this worker."),
    "unauthorized": (401, "No bearer token, or one that is malformed, expired, badly signed (check "
                          "SECRET_KEY), living longer than TOKEN_MAX_TTL or otherwise refused."),
    "unknown-community": (404, "No such community, or a private one the caller is not a member of (a "
                               "poll's watch included)."),
    "unknown-demo-user": (422, "POST /demo/tokens for a user that is not a demo user."),
    "unsupported-media-type": (415, "A body sent without Content-Type: application/json."),
    "write-conflict": (503, "The write met a concurrent one (a deadlock or a serialization failure) and "
                            "was rolled back, nothing changed; retry after Retry-After."),
}

# A lost connection is raised unwrapped where SQLAlchemy does not wrap it:
# resetting a pooled connection as it is given back, after a read that
# changed its isolation level, when the server went away meanwhile.
UNWRAPPED_OUTAGES = (psycopg2.OperationalError,)


# PostgreSQL's SQLSTATEs for a transaction it rolled back because of concurrent
# ones (a deadlock, a serialization failure): nothing is wrong with the
# database or the request, and the same request again will most likely pass.
CONFLICT_SQLSTATES = {"40P01": "deadlock", "40001": "serialization failure"}


class Problem(Exception):
    """An error answer: ``raise Problem(422, "invalid-role", "role must be ...")``."""

    def __init__(self, status, slug, detail, title=None, headers=None, **extra):
        super().__init__(detail)
        self.status = status
        self.slug = slug
        self.detail = detail
        self.title = title
        self.headers = headers or {}
        self.extra = extra


def problem_body(status, detail, slug=None, title=None, **extra):
    """The RFC 9457 members of a problem answer."""
    return {
        "type": PROBLEM_TYPE + slug if slug else "about:blank",
        "title": title or _status_phrase(status),
        "status": status,
        "detail": detail,
        **extra,
    }


def problem_response(status, detail, slug=None, title=None, headers=None, **extra):
    response = jsonify(problem_body(status, detail, slug, title, **extra))
    response.status_code = status
    response.content_type = "application/problem+json"
    response.headers["Cache-Control"] = "no-store"
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


# What gunicorn refuses itself, before the application (see raw_problem).
SERVER_DETAILS = {
    400: "The request is not valid HTTP/1.1.",
    414: "The request line is longer than this server accepts.",
    431: "The request has more header fields, or larger ones, than this server accepts.",
    500: "The server could not answer this request.",
}


def raw_problem(status):
    """A whole HTTP/1.1 problem answer, for errors the server answers without the app.

    It carries the headers every answer of the app carries, and closes the
    connection: the server could not make sense of the request, so nor of
    where a next one would start.
    """
    from .observability import SECURITY_HEADERS

    reason = _status_phrase(status)
    detail = SERVER_DETAILS.get(status, f"{reason}.")
    body = json.dumps(problem_body(status, detail)).encode()
    headers = {
        "Content-Type": "application/problem+json",
        "Content-Length": str(len(body)),
        "Cache-Control": "no-store",
        "Connection": "close",
        **SECURITY_HEADERS,
    }
    head = f"HTTP/1.1 {status} {reason}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return (head + "\r\n").encode("latin-1") + body


# RFC 9110's reason phrases where Python's HTTPStatus (3.11) keeps older ones.
RFC_9110_PHRASES = {
    413: "Content Too Large",
    414: "URI Too Long",
    416: "Range Not Satisfiable",
    422: "Unprocessable Content",
}


def _status_phrase(status):
    from http import HTTPStatus

    if status in RFC_9110_PHRASES:
        return RFC_9110_PHRASES[status]
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def handle_problem(error):
    return problem_response(
        error.status, error.detail, error.slug, error.title, error.headers, **error.extra
    )


# What each kind of refused write is answered.
REFUSAL_STATUSES = ((NotFound, 404), (Forbidden, 403), (Conflict, 409), (PreconditionFailed, 412))


def handle_refused(error):
    """A write its rules refused (``app.store.writes``), as its problem type and status."""
    status = next(status for kind, status in REFUSAL_STATUSES if isinstance(error, kind))
    extra = {"errors": error.errors} if error.errors else {}
    return problem_response(status, error.detail, error.kind, **extra)


def handle_http_exception(error):
    headers = {k: v for k, v in error.get_headers() if k.lower() not in ("content-type",)}
    return problem_response(error.code, error.description or error.name, headers=headers)


def handle_database_unavailable(error):
    """A lost or refused database connection, or an exhausted pool, is a passing outage.

    A transaction PostgreSQL rolled back for a concurrent one's sake is no
    outage: it is a ``write-conflict``, also a 503 with ``Retry-After``. Not
    a 409: this API's 409s (``last-owner``, ``id-taken``) mean the same
    request will be refused again, while this one most likely passes as it
    is, which is what a 503 with ``Retry-After`` tells clients and proxies.
    """
    conflict = CONFLICT_SQLSTATES.get(getattr(getattr(error, "orig", error), "pgcode", None))
    if conflict is not None:
        log.warning("write conflict (%s): the transaction was rolled back; the client may retry", conflict)
        return problem_response(
            503, "The write met a concurrent one and was rolled back; nothing changed. Try again.",
            "write-conflict", "Write conflict", headers={"Retry-After": str(random.randint(1, 5))},
        )
    if not getattr(error, "connection_invalidated", False) and not isinstance(
        error, (OperationalError, PoolTimeout, *UNWRAPPED_OUTAGES)
    ):
        return handle_unexpected(error)
    log.warning("database unavailable at %s: %s", address(current_app.extensions["db"].url),
                error.__class__.__name__)
    return problem_response(
        503, "The database is unavailable; try again shortly.", "database-unavailable",
        headers={"Retry-After": str(random.randint(1, 5))},
    )


def handle_unexpected(error):
    log.exception("unhandled error")
    return handle_http_exception(InternalServerError("The server could not answer this request."))


def init_app(app):
    app.register_error_handler(Problem, handle_problem)
    app.register_error_handler(Refused, handle_refused)
    app.register_error_handler(HTTPException, handle_http_exception)
    app.register_error_handler(DBAPIError, handle_database_unavailable)
    app.register_error_handler(PoolTimeout, handle_database_unavailable)
    for outage in UNWRAPPED_OUTAGES:
        app.register_error_handler(outage, handle_database_unavailable)
    app.register_error_handler(Exception, handle_unexpected)
