"""ETag helpers shared by the snapshot, the community view and the poll."""
from flask import request
from werkzeug.http import parse_etags


def strip_validator(value):
    """The opaque part of an entity tag: weak comparison ignores ``W/`` and quotes."""
    value = value.strip()
    if value.startswith("W/"):
        value = value[2:]
    return value.strip('"')


def matches(header_value, current):
    """RFC 9110 ``If-None-Match`` with weak comparison, lists and ``*`` included.

    Parsed as entity tags (werkzeug's parser), not split on commas: an opaque
    tag may itself contain one.
    """
    if header_value is None:
        return False
    return parse_etags(header_value.strip()).contains_weak(current)


def matches_strongly(header_value, current):
    """RFC 9110 ``If-Match``: strong comparison (a weak tag never matches), lists and ``*`` included."""
    return parse_etags(header_value.strip()).contains(current)


def if_none_match():
    return request.headers.get("If-None-Match")


def if_match():
    return request.headers.get("If-Match")


def etag(value):
    return f'"{value}"'
