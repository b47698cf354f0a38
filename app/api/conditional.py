"""ETag helpers shared by the snapshot, the community view and the poll."""
from flask import request


def strip_validator(value):
    """The opaque part of an entity tag: weak comparison ignores ``W/`` and quotes."""
    value = value.strip()
    if value.startswith("W/"):
        value = value[2:]
    return value.strip('"')


def matches(header_value, current):
    """RFC 9110 ``If-None-Match`` with weak comparison, lists and ``*`` included."""
    if header_value is None:
        return False
    if header_value.strip() == "*":
        return True
    return any(strip_validator(tag) == current for tag in header_value.split(",") if tag.strip())


def if_none_match():
    return request.headers.get("If-None-Match")


def etag(value):
    return f'"{value}"'
