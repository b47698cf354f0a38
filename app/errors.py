"""One error path: every 4xx/5xx leaves as RFC 9457 problem details."""
import logging
import random

from flask import jsonify
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from werkzeug.exceptions import HTTPException, InternalServerError

log = logging.getLogger(__name__)

# A URN: these types name problems, they are not pages to fetch.
PROBLEM_TYPE = "urn:community-sync:problem:"


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


def problem_response(status, detail, slug=None, title=None, headers=None, **extra):
    body = {
        "type": PROBLEM_TYPE + slug if slug else "about:blank",
        "title": title or _status_phrase(status),
        "status": status,
        "detail": detail,
        **extra,
    }
    response = jsonify(body)
    response.status_code = status
    response.content_type = "application/problem+json"
    response.headers["Cache-Control"] = "no-store"
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


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
        error, (OperationalError, PoolTimeout)
    ):
        return handle_unexpected(error)
    log.warning("database unavailable: %s", error.__class__.__name__)
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
    app.register_error_handler(Exception, handle_unexpected)
