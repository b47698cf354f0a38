"""Request parsing that refuses bad input with a clear problem, before any write."""
import re

from flask import request

from .auth import valid_id, valid_name
from .errors import Problem
from .models import ROLES

SLUG = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?")
URL = re.compile(r"https?://[^\s\x00-\x1f\x7f]{1,2040}")


def path_id(value, what):
    if not valid_id(value):
        raise Problem(
            400, "invalid-id",
            f"The {what} id must be 1 to 64 characters of A-Z a-z 0-9 . _ ~ : @ | + = -.",
        )
    return value


def json_object(allowed, required=(), optional_body=False):
    """The request's JSON object, with only ``allowed`` keys and all ``required`` ones."""
    if optional_body and not request.get_data(cache=True):
        return {}
    if not request.is_json:
        raise Problem(415, "unsupported-media-type", "Send the body as application/json.")
    body = request.get_json(silent=True)
    if body is None:
        raise Problem(400, "malformed-json", "The body is not valid JSON.")
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


def community_fields(body):
    """Validate the community fields present in ``body``; returns them cleaned."""
    fields = {}
    if "id" in body:
        fields["id"] = _field(body["id"], valid_id, "id must be 1 to 64 id characters.")
    if "slug" in body:
        fields["slug"] = _field(
            body["slug"],
            lambda v: isinstance(v, str) and SLUG.fullmatch(v),
            "slug must be 1 to 64 lowercase letters, digits and inner hyphens.",
        )
    if "name" in body:
        fields["name"] = _field(
            body["name"], valid_name, "name must be 1 to 200 characters without control characters."
        ).strip()
    if "logo_url" in body:
        fields["logo_url"] = _field(
            body["logo_url"],
            lambda v: v is None or (isinstance(v, str) and URL.fullmatch(v)),
            "logo_url must be null or an http(s) URL of at most 2048 characters.",
        )
    if "is_public" in body:
        fields["is_public"] = _field(
            body["is_public"], lambda v: isinstance(v, bool), "is_public must be true or false."
        )
    return fields


def _field(value, check, message):
    if not check(value):
        raise Problem(422, "invalid-field", message)
    return value
