"""One error path: every 4xx/5xx leaves as RFC 9457 problem details."""
import json
import logging
import random

import psycopg2
from flask import current_app, jsonify
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from werkzeug.exceptions import HTTPException, InternalServerError

from .db import address

log = logging.getLogger(__name__)

# A URN: these types name problems, they are not pages to fetch.
PROBLEM_TYPE = "urn:community-sync:problem:"

# A lost connection is raised unwrapped where SQLAlchemy does not wrap it:
# resetting a pooled connection as it is given back, after a read that
# changed its isolation level, when the server went away meanwhile.
UNWRAPPED_OUTAGES = (psycopg2.OperationalError,)


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


def _status_phrase(status):
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def handle_problem(error):
    return problem_response(
        error.status, error.detail, error.slug, error.title, error.headers, **error.extra
    )


def handle_http_exception(error):
    headers = {k: v for k, v in error.get_headers() if k.lower() not in ("content-type",)}
    return problem_response(error.code, error.description or error.name, headers=headers)


def handle_database_unavailable(error):
    """A lost or refused database connection, or an exhausted pool, is a passing outage."""
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
    app.register_error_handler(HTTPException, handle_http_exception)
    app.register_error_handler(DBAPIError, handle_database_unavailable)
    app.register_error_handler(PoolTimeout, handle_database_unavailable)
    for outage in UNWRAPPED_OUTAGES:
        app.register_error_handler(outage, handle_database_unavailable)
    app.register_error_handler(Exception, handle_unexpected)
