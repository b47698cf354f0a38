"""Request parsing that refuses bad input with a clear problem, before any write."""
from flask import request

from ..store import cursors
from .. import wire
from ..auth import CALLER_ALIAS, ID_RULE, USER_ID_RULE, valid_id, valid_user_id
from ..errors import Problem
from ..watches import TOPIC_RULE, valid_topic


# Digits a whole-number parameter may have: more than any bound here needs,
# far below Python's integer-string limit (4,300 digits, a ValueError past it).
MAX_DIGITS = 6


def whole_number(raw, max_digits=MAX_DIGITS):
    """``raw`` (a query parameter, a header's value) as a whole number, or None if it is not one.

    One to ``max_digits`` ASCII digits and nothing else: ``int()`` alone would
    also take a sign, spaces, underscores and every script's digits (``１``,
    ``٣``), and past 4,300 digits it raises instead of answering.
    """
    if raw is None or not 1 <= len(raw) <= max_digits or not (raw.isascii() and raw.isdigit()):
        return None
    return int(raw)


def community_id(value):
    """A community id from the path, or a 400 problem."""
    if not valid_id(value):
        raise Problem(400, "invalid-id", f"The community id must be {ID_RULE}.")
    return value


def topic_parameter():
    """The ``topic`` query parameter: None when absent, else a topic or a 400 problem."""
    topic = request.args.get("topic")
    if topic is not None and not valid_topic(topic):
        raise Problem(400, "invalid-topic", f"topic must be {TOPIC_RULE}.")
    return topic


def user_id(value, caller):
    """The user a member path names: ``caller`` for ``me``, otherwise a valid user id or a 400 problem."""
    if value == CALLER_ALIAS:
        return caller
    if not valid_user_id(value):
        raise Problem(400, "invalid-id", f"The user id must be {USER_ID_RULE}.")
    return value


def json_object(allowed, required=(), optional_body=False):
    """The request's JSON object, with only ``allowed`` keys and all ``required`` ones."""
    if optional_body and not request.get_data(cache=True):
        return {}
    if not request.is_json:
        raise Problem(415, "unsupported-media-type", "Send the body as application/json.")
    try:
        body = request.get_json(silent=True)
    except RecursionError:
        # Nested deeper than the parser recurses: 16 KiB of "[" is enough.
        body = None
    if body is None:
        raise Problem(400, "malformed-json", "The body is not valid JSON (or nests too deeply).")
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
    if not wire.ROLE.check(value):
        raise Problem(422, "invalid-role", wire.ROLE.problem)
    return value


# A refusal lists at most this many of the body's problems (its detail counts them all).
MAX_LISTED_ERRORS = 100


def membership_changes():
    """The entries of a bulk membership change, ``{"add": [...], "remove": [...]}``, every one checked.

    Returns (additions, removals): (pointer, user_id, role or None) and
    (pointer, user_id), the pointer naming the entry in the body (``/add/3``).
    Any bad entry refuses them all with ``422 invalid-entries``, whose
    ``errors`` name each problem by its JSON pointer (``/add/3/role``) and say
    what is wrong. Each user may be named once, in one of the lists.
    """
    body = json_object(("add", "remove"), optional_body=True)
    lists = {name: body.get(name, []) for name in ("add", "remove")}
    for name, entries in lists.items():
        if not isinstance(entries, list):
            raise Problem(422, "invalid-body", f"{name} must be a list.",
                          errors=[{"pointer": f"/{name}", "detail": f"{name} must be a list."}])
    total = len(lists["add"]) + len(lists["remove"])
    if not total:
        raise Problem(422, "invalid-body", "Nothing to change: list members to add or remove.")
    if total > wire.MAX_SYNC_ENTRIES:
        raise Problem(422, "too-many-entries",
                      f"At most {wire.MAX_SYNC_ENTRIES} entries in add and remove together, not {total}: "
                      "send them in several requests.")
    errors, named = [], {}

    def once(pointer, user_id):
        """Whether ``user_id`` is named here first; a problem for the entry otherwise."""
        if user_id in named:
            errors.append({"pointer": pointer,
                           "detail": f"{user_id!r} is already named at {named[user_id]}: name each user once."})
            return False
        named[user_id] = pointer
        return True

    additions = []
    for index, entry in enumerate(lists["add"]):
        pointer = f"/add/{index}"
        values = _entry_values(wire.MEMBER_ADDITION, entry, pointer, errors)
        if values is not None and once(pointer, values["user_id"]):
            additions.append((pointer, values["user_id"], values.get("role")))
    removals = []
    for index, user_id in enumerate(lists["remove"]):
        pointer = f"/remove/{index}"
        if not wire.MEMBER_ID.check(user_id):
            errors.append({"pointer": pointer, "detail": f"Each entry must be a user id: {USER_ID_RULE}."})
        elif once(pointer, user_id):
            removals.append((pointer, user_id))
    if errors:
        listed = "" if len(errors) <= MAX_LISTED_ERRORS else f"; the first {MAX_LISTED_ERRORS} are listed"
        raise Problem(422, "invalid-entries",
                      f"{len(errors)} problem(s) in the entries{listed}. Nothing was changed.",
                      errors=errors[:MAX_LISTED_ERRORS])
    return additions, removals


def _entry_values(fields, entry, pointer, errors):
    """The entry's values of ``fields``; None, its problems added to ``errors``, when it has any."""
    if not isinstance(entry, dict):
        names = ", ".join(f.name for f in fields)
        errors.append({"pointer": pointer, "detail": f"Each entry must be an object of: {names}."})
        return None
    found = len(errors)
    known = {f.name: f for f in fields}
    for name in entry:
        if name not in known:
            errors.append({"pointer": f"{pointer}/{_escaped(name)}", "detail": "Unknown field."})
    for field in fields:
        if field.name not in entry:
            if field.required_on_create:
                errors.append({"pointer": f"{pointer}/{field.name}", "detail": f"{field.name} is missing."})
        elif not field.check(entry[field.name]):
            errors.append({"pointer": f"{pointer}/{field.name}", "detail": field.problem})
    if len(errors) > found:
        return None
    return {name: entry[name] for name in known if name in entry}


def _escaped(name):
    """``name`` as one JSON pointer token (RFC 6901)."""
    return name.replace("~", "~0").replace("/", "~1")


def community_fields(creating):
    """The community fields of the request's body, validated and cleaned.

    ``creating`` (a POST) also accepts the id and requires the fields a
    community cannot be without; otherwise (a PATCH) any writable subset.
    """
    return body_fields(wire.accepted(wire.COMMUNITY, creating), creating)


def publication(shape=wire.PUBLICATION, recipients=()):
    """A published activity (``wire.ACTIVITY_PUBLICATION``) or notification from the request's
    body, validated.

    ``recipients``: the fields naming whom it is for, when the body carries
    them (the demo's SQL path): exactly one of them must be given, and a
    notification has no topic and is never collapsed.
    """
    fields = body_fields(shape, creating=True, extra=recipients)
    if recipients:
        named = [name for name in recipients if name in fields]
        if len(named) != 1:
            raise Problem(422, "invalid-body", f"Give exactly one of: {', '.join(recipients)}.")
        if not valid_id(fields[named[0]]):
            raise Problem(422, "invalid-field", f"{named[0]} must be {ID_RULE}.")
        if named[0] == "user_id" and (fields.get("topic") is not None or fields.get("collapse")):
            raise Problem(422, "invalid-field", "A notification has no topic and is never collapsed.")
    return fields


def body_fields(fields, creating, extra=()):
    """The request body's values of ``fields`` (and the unchecked ``extra`` keys), validated."""
    required = wire.required_on_create(fields) if creating else ()
    body = json_object(tuple(f.name for f in fields) + tuple(extra), required=required)
    try:
        values = {f.name: f.parse(body[f.name]) for f in fields if f.name in body}
    except wire.InvalidValue as error:
        raise Problem(422, "invalid-field", str(error)) from None
    values.update({name: body[name] for name in extra if name in body})
    return values


def page(default_limit=20, max_limit=100):
    """``cursor`` and ``limit`` from the query string: (the id to continue below or None, limit)."""
    raw_limit = request.args.get("limit")
    limit = default_limit
    if raw_limit is not None:
        limit = whole_number(raw_limit)
        if limit is None or not 1 <= limit <= max_limit:
            raise Problem(400, "invalid-limit", f"limit must be a whole number from 1 to {max_limit}.")
    raw_cursor = request.args.get("cursor")
    try:
        before = cursors.decode_page(raw_cursor) if raw_cursor is not None else None
    except cursors.InvalidCursor as error:
        raise Problem(400, "invalid-cursor", f"The cursor cannot be used: {error}.") from None
    return before, limit
