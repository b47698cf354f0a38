"""The JSON the API sends and accepts: each shape defined once, as a tuple of fields.

From a shape come its serializer (:func:`serialize` for a row, :func:`compose`
for a body assembled from several values), the validation of the request
bodies that carry it (``app.http.validation``), and its OpenAPI schema
(:func:`schemas`, which ``app.http.openapi`` serves). Keys leave in the order of
the fields: answers are compared byte for byte and state hashes are taken over
them, so reordering a shape's fields changes what clients see.

Longer than most modules because every shape is here and nowhere else: split,
a shape's serializer, validation and schema would drift apart again.
"""
import hashlib
import json
import re
from collections import Counter
from dataclasses import dataclass, replace
from datetime import timezone
from operator import attrgetter
from typing import Callable

import orjson

from .auth import (
    CALLER_ALIAS, CONTROL, ID_PATTERN, ID_RULE, NAME_LENGTH, SURROGATE, USER_ID_RULE, valid_id,
    valid_name, valid_user_id,
)
from .cache import LRU
from .store.models import CHANGE_TYPES, DATA_BYTES, ID_LENGTH, KIND_LENGTH, ROLES
from .watches import TOPIC, TOPIC_RULE, valid_topic

SLUG = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?")
# Lone surrogates (JSON "\udfff") excluded: no database encoding can store them.
URL = re.compile(r"https?://[^\s\x00-\x1f\x7f\ud800-\udfff]{1,2040}")
KIND = re.compile(r"[a-z][a-z0-9_.-]{0,%d}" % (KIND_LENGTH - 1))
# Activity and notifications an answer carries at most, of each type; the
# oldest go first (the counts in the state say how many there are).
MAX_PUBLISHED_PER_ANSWER = 100


def utc(moment):
    """Datetimes from SQLite come back naive; every stored time is UTC."""
    if moment is None:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def iso(moment, milliseconds=False):
    if moment is None:
        return None
    moment = utc(moment).astimezone(timezone.utc)
    # isoformat rather than strftime: every answer carries a few of these.
    return moment.isoformat(timespec="milliseconds" if milliseconds else "seconds")[:-6] + "Z"


@dataclass(frozen=True, eq=False)
class Field:
    """One key of a wire shape: its JSON schema, how it is read, and how a client may send it.

    ``read`` takes the row (or object) being serialized; by default it reads
    the attribute of the field's name. An ``optional`` field is left out when
    its value is None, and the schema does not require it. ``writable`` is
    ``"create"`` for a field a client may set only when creating, ``"always"``
    for one it may also change; ``check`` then decides what it may send.
    """

    name: str
    schema: dict
    read: Callable | None = None
    optional: bool = False
    writable: str = ""
    required_on_create: bool = False
    input_schema: dict | None = None
    check: Callable = lambda value: True
    problem: str = ""
    clean: Callable = lambda value: value

    def __post_init__(self):
        if self.read is None:
            object.__setattr__(self, "read", attrgetter(self.name))

    def parse(self, value):
        """The value as sent, checked and cleaned; ``InvalidValue`` saying why not."""
        if not self.check(value):
            raise InvalidValue(self.problem)
        return self.clean(value)


class InvalidValue(ValueError):
    """A field's value is not one it takes (the HTTP layer answers it 422 ``invalid-field``)."""


def ref(name):
    return {"$ref": f"#/components/schemas/{name}"}


STRING = {"type": "string"}
NULLABLE_STRING = {"type": ["string", "null"]}
TIMESTAMP = {"type": "string", "format": "date-time"}


def array_of(items):
    return {"type": "array", "items": items}


def response_schema(fields):
    return {
        "type": "object",
        "required": [f.name for f in fields if not f.optional],
        "properties": {f.name: f.schema for f in fields},
    }


def request_schema(fields, required=()):
    schema = {"type": "object", "additionalProperties": False}
    if required:
        schema["required"] = list(required)
    schema["properties"] = {f.name: f.input_schema or f.schema for f in fields}
    return schema


COMMUNITY = (
    Field("id", {"type": "string", "pattern": f"^{ID_PATTERN.pattern}$"},
          writable="create", check=valid_id, problem=f"id must be {ID_RULE}."),
    Field("slug", {"type": "string", "pattern": f"^{SLUG.pattern}$"},
          writable="always", required_on_create=True,
          check=lambda v: isinstance(v, str) and SLUG.fullmatch(v) is not None,
          problem="slug must be 1 to 64 lowercase letters, digits and inner hyphens."),
    Field("name", {"type": "string", "minLength": 1, "maxLength": NAME_LENGTH},
          writable="always", required_on_create=True, check=valid_name, clean=str.strip,
          problem="name must be 1 to 200 characters without control characters."),
    Field("logo_url", {"type": ["string", "null"], "maxLength": 2048},
          writable="always",
          input_schema={"type": ["string", "null"], "format": "uri", "maxLength": 2048},
          check=lambda v: v is None or (isinstance(v, str) and URL.fullmatch(v) is not None),
          problem="logo_url must be null or an http(s) URL of at most 2048 characters."),
    Field("is_public", {"type": "boolean"}, read=lambda row: bool(row.is_public),
          writable="always", check=lambda v: isinstance(v, bool),
          problem="is_public must be true or false."),
)
ROLE = Field("role", {"enum": list(ROLES)},
             check=lambda v: isinstance(v, str) and v in ROLES,
             problem=f"role must be one of: {', '.join(ROLES)}.")
JOINED_AT = Field(
    "joined_at", {"type": ["string", "null"], "format": "date-time"},
    # Seconds: both backends store at least that, so equal lists hash equally.
    read=lambda row: iso(row.joined_at),
)
UNREAD_SCHEMA = {"type": "integer", "minimum": 0, "maximum": 100}
# The membership's own fields in a community's entry; the others are the community's.
MEMBER_FIELDS = (ROLE, JOINED_AT, Field("unread", UNREAD_SCHEMA))
LAST_ACTIVITY_AT = Field("last_activity_at", {"type": ["string", "null"], "format": "date-time"},
                         read=lambda row: iso(row.last_activity_at, milliseconds=True))
# A community as listed in a user's state (the snapshot and the poll).
COMMUNITY_ENTRY = COMMUNITY + MEMBER_FIELDS + (LAST_ACTIVITY_AT,)
NOTIFICATIONS_UNREAD = Field("notifications_unread", UNREAD_SCHEMA)
MEMBER_COUNT = Field("member_count", {"type": "integer", "minimum": 0})
COMMUNITY_DETAIL = COMMUNITY + (MEMBER_COUNT,)
COMMUNITY_LIST = (Field("communities", array_of(ref("Community"))),)
MEMBERSHIP = (Field("user_id", STRING), Field("community_id", STRING), ROLE, JOINED_AT)
# A bulk membership change (PATCH /communities/{id}/members): entries of
# "add" in this shape, user ids in "remove", at most MAX_SYNC_ENTRIES in all.
MAX_SYNC_ENTRIES = 1000
USER_ID_SCHEMA = {"type": "string", "pattern": f"^{ID_PATTERN.pattern}$", "not": {"const": CALLER_ALIAS}}
MEMBER_ID = Field("user_id", USER_ID_SCHEMA, writable="create", required_on_create=True,
                  check=valid_user_id, problem=f"user_id must be {USER_ID_RULE}.")
MEMBER_ADDITION = (MEMBER_ID, replace(ROLE, writable="create"))
MEMBERSHIP_SYNC = tuple(
    Field(outcome, {"type": "integer", "minimum": 0, "maximum": MAX_SYNC_ENTRIES})
    for outcome in ("created", "updated", "unchanged", "removed")
)


def valid_ref(value):
    """An id the platform names (a post, a user): 1 to 64 characters of storable text."""
    return (
        isinstance(value, str)
        and 0 < len(value) <= ID_LENGTH
        and not CONTROL.search(value)
        and not SURROGATE.search(value)
    )


REF_SCHEMA = {"type": "string", "minLength": 1, "maxLength": ID_LENGTH}
REF_RULE = "1 to 64 characters without control characters"
KIND_FIELD = Field(
    "kind", {"type": "string", "pattern": f"^{KIND.pattern}$"},
    writable="create", required_on_create=True,
    check=lambda v: isinstance(v, str) and KIND.fullmatch(v) is not None,
    problem="kind must be 1 to 32 of a-z 0-9 _ . -, starting with a letter.",
)
REF_FIELD = Field("ref", REF_SCHEMA, writable="create", required_on_create=True,
                  check=valid_ref, problem=f"ref must be {REF_RULE}.")


def valid_data(value):
    """A payload: a JSON object of at most DATA_BYTES bytes as stored (compact JSON), every
    number finite and every string storable."""
    if not isinstance(value, dict):
        return False
    try:
        # Compact, as the engine writes JSON (app.store.db): the size the database checks.
        written = orjson.dumps(value)
    except orjson.JSONEncodeError:
        return False  # a lone surrogate, an integer past 64 bits, nested too deep
    if len(written) > DATA_BYTES:
        return False
    try:
        # orjson writes NaN and the infinities (which the request parser accepts) as null.
        json.dumps(value, allow_nan=False)
    except ValueError:
        return False
    return True


TOPIC_FIELD = Field("topic", {"type": "string", "pattern": f"^{TOPIC.pattern}$"}, optional=True,
                    writable="create", check=valid_topic, problem=f"topic must be {TOPIC_RULE}.")
DATA_FIELD = Field(
    "data", {"type": "object", "description": f"At most {DATA_BYTES} bytes as compact JSON."},
    optional=True, writable="create", check=valid_data,
    problem=f"data must be a JSON object of at most {DATA_BYTES} bytes as compact JSON.",
)
# What the platform publishes to a user: a notification.
PUBLICATION = (
    KIND_FIELD,
    REF_FIELD,
    Field("actor", REF_SCHEMA, optional=True, writable="create",
          check=valid_ref, problem=f"actor must be {REF_RULE}."),
)
# What the platform publishes in a community: activity, on a topic or not, with a
# payload, and collapsed when only its newest value per (topic, kind, ref) matters.
ACTIVITY_PUBLICATION = PUBLICATION + (
    TOPIC_FIELD,
    DATA_FIELD,
    Field("collapse", {"type": "boolean", "default": False}, optional=True, writable="create",
          check=lambda v: isinstance(v, bool), problem="collapse must be true or false."),
)
PUBLISHED = (
    Field("community_id", STRING, optional=True),
    Field("user_id", STRING, optional=True),
) + ACTIVITY_PUBLICATION
CHANGE = (
    Field("type", {"enum": list(CHANGE_TYPES)}),
    # Absent from a notification, which concerns no community.
    Field("community_id", STRING, optional=True),
    # Topic activity only: it reaches the polls that watch its topic.
    Field("topic", STRING, optional=True),
    Field("at", TIMESTAMP, read=lambda change: iso(change.at, milliseconds=True)),
    Field("by", NULLABLE_STRING, read=attrgetter("actor")),
    replace(ROLE, optional=True),
    Field("kind", STRING, optional=True),
    Field("ref", STRING, optional=True),
    # Carried verbatim: the stored JSON text goes into the answer as it is.
    Field("data", {"type": "object"}, optional=True,
          read=lambda change: None if change.data is None else orjson.Fragment(change.data)),
)
NOTIFICATION = (
    Field("kind", STRING),
    Field("ref", STRING),
    Field("by", NULLABLE_STRING, read=attrgetter("actor")),
    Field("at", TIMESTAMP, read=lambda change: iso(change.at, milliseconds=True)),
    Field("unread", {"type": "boolean"}, read=lambda change: bool(change.unread)),
)
NOTIFICATION_PAGE = (
    Field("notifications", array_of(ref("Notification"))),
    Field("next_cursor", NULLABLE_STRING),
)
USER = (Field("id", STRING, read=attrgetter("user_id")), Field("name", NULLABLE_STRING))
# Members online per community of the user's state; beside the state, never
# in its hash (app/live/presence.py).
ONLINE = Field("online", {"type": "object", "additionalProperties": {"type": "integer", "minimum": 0}})
SNAPSHOT = (
    Field("user", response_schema(USER)),
    Field("communities", array_of(ref("MembershipEntry"))),
    NOTIFICATIONS_UNREAD,
    Field("hash", STRING),
    Field("cursor", STRING),
    Field("server_time", TIMESTAMP),
    ONLINE,
)
# Who types where (``app/live/typing.py``): never in a state's hash.
TYPIST = (Field("id", STRING), Field("name", NULLABLE_STRING))
TYPING = Field("typing", {
    "type": "object", "additionalProperties": array_of(ref("Typist")),
    "description": "On the answers of polls that watch topics: who types in each watched topic "
                   "(\"community/topic\"), the caller left out; topics with nobody typing left out.",
}, optional=True)
TYPING_PLACE = (
    Field("community_id", {"type": "string", "pattern": f"^{ID_PATTERN.pattern}$"}, writable="create",
          required_on_create=True, check=valid_id, problem=f"community_id must be {ID_RULE}."),
    replace(TOPIC_FIELD, optional=False, required_on_create=True),
)
POLL_STATUSES = ("changed", "unchanged", "reset")
POLL_ANSWER = (
    Field("status", {"enum": list(POLL_STATUSES)}),
    Field("cursor", STRING),
    Field("hash", STRING),
    Field("server_time", TIMESTAMP),
    Field("changes", array_of(ref("Change")), optional=True),
    Field("added", array_of(STRING), optional=True),
    Field("removed", array_of(STRING), optional=True),
    Field("communities", array_of(ref("MembershipEntry")), optional=True),
    # With the communities: the rest of the state.
    replace(NOTIFICATIONS_UNREAD, optional=True),
    Field("truncated", {"const": True}, optional=True),
    ONLINE,
    TYPING,
)
ONLINE_USER = (
    Field("id", STRING),
    Field("name", NULLABLE_STRING),
    Field("since", TIMESTAMP, read=lambda row: iso(row.since)),
)
MAX_ONLINE_LISTED = 100
PRESENCE = (
    Field("online", {"type": "integer", "minimum": 0}),
    Field("users", {**array_of(ref("OnlineUser")), "maxItems": MAX_ONLINE_LISTED}),
    Field("truncated", {"type": "boolean"}),
)
VISIBILITY = (
    Field("visible", {"type": "boolean"}, writable="always", required_on_create=True,
          check=lambda v: isinstance(v, bool), problem="visible must be true or false."),
)


def serialize(fields, source):
    """``source`` (a row or an object) as the JSON object of ``fields``."""
    entry = {field.name: field.read(source) for field in fields}
    for field in fields:
        if field.optional and entry[field.name] is None:
            del entry[field.name]
    return entry


def compose(fields, **values):
    """A body of ``fields`` from ``values``: required ones must be given, optional ones may be None."""
    return {
        field.name: values[field.name]
        for field in fields
        if not field.optional or values.get(field.name) is not None
    }


def community_body(community):
    return serialize(COMMUNITY, community)


def community_detail(community, member_count):
    return {**community_body(community), MEMBER_COUNT.name: member_count}


def community_version(community, member_count):
    """The version of ``GET /communities/{id}``'s answer: its ETag's value, what ``If-Match`` names."""
    return state_hash([community_body(community), member_count])


def community_entry(row):
    return serialize(COMMUNITY_ENTRY, row)


def community_entries():
    """``community_entry`` for the rows of one statement, each community's own fields read once.

    In a batched read of many users' states most rows are the same few
    communities (a fan-out reads ten thousand members of one): their fields
    and ``last_activity_at`` are the same in every member's row, so only the
    membership's are read per row. Keys keep ``COMMUNITY_ENTRY``'s order.
    """
    communities = {}

    def entry(row):
        known = communities.get(row.id)
        if known is None:
            known = communities[row.id] = (serialize(COMMUNITY, row), LAST_ACTIVITY_AT.read(row))
        community, last_activity_at = known
        return {**community, **serialize(MEMBER_FIELDS, row), LAST_ACTIVITY_AT.name: last_activity_at}

    return entry


def membership_body(membership):
    return serialize(MEMBERSHIP, membership)


def published_body(fields, **recipient):
    return compose(PUBLISHED, **recipient, **{f.name: fields.get(f.name) for f in ACTIVITY_PUBLICATION})


def notification_page(rows, next_cursor):
    return compose(NOTIFICATION_PAGE, notifications=[serialize(NOTIFICATION, row) for row in rows],
                   next_cursor=next_cursor)


# Change entries rendered lately, by row: an activity row of a busy community is
# carried by an answer to each of its thousands of members, rendered once.
RENDERED_CHANGES = LRU(10_000)


def change_entry(change):
    """``change`` (a change-log row, equal to any other read of it) as answers list it.

    The entry is shared by every answer that carries the row: not to be changed.
    """
    entry = RENDERED_CHANGES.get(change)
    if entry is None:
        entry = serialize(CHANGE, change)
        RENDERED_CHANGES.put(change, entry)
    return entry


def sort_communities(entries):
    return sorted(entries, key=lambda entry: (entry["name"].casefold(), entry["id"]))


def state_hash(value):
    """A digest of exactly ``value`` (a ``communities`` list, say) as served (canonical JSON).

    The canonical form is compact JSON with sorted keys, in UTF-8: what
    ``json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False)``
    writes, byte for byte, written by orjson (a fan-out hashes every woken
    user's state).
    """
    return hashlib.sha256(orjson.dumps(value, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


def user_state_hash(communities, notifications_unread):
    """The hash of a user's state: its communities and its unread notification count."""
    return state_hash({"communities": communities, "notifications_unread": notifications_unread})


REMOVING = ("left", "community_deleted")
PUBLISHED_TYPES = ("activity", "notification")


def net_membership(changes):
    """Which communities a run of changes added and removed, net of each other.

    The first change of a community says whether the user was a member before
    the run (only a join can come first for a non-member); the last says
    whether the user is one after it.
    """
    first, last = {}, {}
    for change in changes:
        first.setdefault(change.community_id, change.type)
        last[change.community_id] = change.type
    added = [cid for cid in first if first[cid] == "joined" and last[cid] not in REMOVING]
    removed = [cid for cid in first if first[cid] != "joined" and last[cid] in REMOVING]
    return added, removed


def snapshot_body(identity, state, cursor, now, online):
    """``GET /me/communities``: who asks, the state, the cursor (signed text) to follow it from, who is online."""
    return compose(
        SNAPSHOT,
        user=serialize(USER, identity),
        communities=state.communities,
        notifications_unread=state.notifications_unread,
        hash=state.hash,
        cursor=cursor,
        server_time=iso(now, milliseconds=True),
        online=online,
    )


def presence_body(online, rows):
    """``GET /communities/{id}/presence``: how many are online, and the first of them."""
    users = [serialize(ONLINE_USER, row) for row in rows[:MAX_ONLINE_LISTED]]
    return compose(PRESENCE, online=online, users=users, truncated=online > len(users))


def latest_values(changes):
    """``changes`` without the collapsed rows that a newer row of the same key follows.

    Collapsed activity (a vote count, a tally, an edit) matters only by its
    newest value per (community, topic, kind, ref): an answer carries that
    one. The rows of a key get their ids in commit order (migration 0007),
    so the newest by id is the newest committed.
    """
    if not any(change.collapse for change in changes):
        return changes
    kept = list(_newest_first_folded(reversed(changes)))
    kept.reverse()
    return kept


def _newest_first_folded(rows):
    """``rows`` (newest first) without the collapsed ones a newer row of their key came before."""
    keys = set()
    for row in rows:
        if row.collapse:
            key = collapse_key(row)
            if key in keys:
                continue
            keys.add(key)
        yield row


def collapse_key(change):
    return change.community_id, change.topic, change.kind, change.ref


def capped(changes):
    """``changes`` with collapsed values folded to their newest (``latest_values``), then at most
    MAX_PUBLISHED_PER_ANSWER activity and notification rows each, the oldest dropped first, and
    whether any were."""
    changes = latest_values(changes)
    excess = Counter(c.type for c in changes if c.type in PUBLISHED_TYPES)
    for kind in excess:
        excess[kind] -= MAX_PUBLISHED_PER_ANSWER
    truncated = any(count > 0 for count in excess.values())
    kept = []
    for change in changes:
        if excess[change.type] > 0:
            excess[change.type] -= 1
            continue
        kept.append(change)
    return kept, truncated


def newest(rows):
    """``rows`` (in id order) with collapsed values folded to their newest, and then at most
    MAX_PUBLISHED_PER_ANSWER + 1 activity and notification rows each, the oldest dropped:
    ``capped`` makes the same answer of them as of all ``rows``, ``truncated`` included.

    What a waiting poll keeps of what it gathers: in a burst a member's news
    is thousands of rows, of which its answer tells of a hundred.
    """
    counts = Counter()
    kept = []
    for row in _newest_first_folded(reversed(rows)):
        if row.type in PUBLISHED_TYPES:
            counts[row.type] += 1
            if counts[row.type] > MAX_PUBLISHED_PER_ANSWER + 1:
                continue
        kept.append(row)
    kept.reverse()
    return kept


def poll_body(reply, cursor, now, online=None, typing=None):
    """A poll's answer to ``reply`` (``app.live.session.Reply``); the changes, and what they
    added and removed, only when ``changed``.

    ``cursor``: the signed text of the cursor to follow (``app.store.cursors.CursorKey``).
    ``online`` (members online per community) comes with every status, and so does
    ``typing`` for a poll that watches topics (None: left out).
    """
    listed = {}
    if reply.status == "changed":
        added, removed = net_membership(reply.changes)
        kept, truncated = capped(reply.changes)
        listed = {"changes": [change_entry(c) for c in kept], "added": added, "removed": removed,
                  "truncated": truncated or None}
    return compose(
        POLL_ANSWER, status=reply.status, cursor=cursor, hash=reply.known.hash,
        server_time=iso(now, milliseconds=True), communities=reply.communities,
        notifications_unread=reply.notifications_unread, online=online or {}, typing=typing, **listed,
    )


def accepted(fields, creating):
    """The fields a client may send: when ``creating`` (a POST), or when changing (a PATCH)."""
    return tuple(f for f in fields if f.writable == "always" or (creating and f.writable))


def required_on_create(fields):
    return tuple(f.name for f in fields if f.required_on_create)


def membership_sync_schema():
    """The body of a bulk membership change: something to add or remove, MAX_SYNC_ENTRIES at most."""
    lists = {"add": array_of(ref("MemberAddition")), "remove": array_of(USER_ID_SCHEMA)}
    for schema in lists.values():
        schema["maxItems"] = MAX_SYNC_ENTRIES
    return {
        "type": "object", "additionalProperties": False, "properties": lists,
        "description": f"At most {MAX_SYNC_ENTRIES} entries in all, each user named once.",
        "anyOf": [{"required": [name], "properties": {name: {"minItems": 1}}} for name in lists],
    }


def schemas():
    """The OpenAPI component schemas of these shapes, by component name."""
    creatable = accepted(COMMUNITY, creating=True)
    return {
        "Community": response_schema(COMMUNITY),
        "CommunityDetail": response_schema(COMMUNITY_DETAIL),
        "CommunityList": response_schema(COMMUNITY_LIST),
        "NewCommunity": request_schema(creatable, required=required_on_create(creatable)),
        "CommunityPatch": request_schema(accepted(COMMUNITY, creating=False)),
        "MembershipEntry": response_schema(COMMUNITY_ENTRY),
        "Membership": response_schema(MEMBERSHIP),
        "MembershipBody": request_schema((ROLE,)),
        "MemberAddition": request_schema(MEMBER_ADDITION, required=required_on_create(MEMBER_ADDITION)),
        "MembershipSyncBody": membership_sync_schema(),
        "MembershipSync": response_schema(MEMBERSHIP_SYNC),
        "Snapshot": response_schema(SNAPSHOT),
        "Change": response_schema(CHANGE),
        "PollAnswer": response_schema(POLL_ANSWER),
        "NotificationsRead": response_schema((NOTIFICATIONS_UNREAD,)),
        "Notification": response_schema(NOTIFICATION),
        "NotificationPage": response_schema(NOTIFICATION_PAGE),
        "Publication": request_schema(PUBLICATION, required=required_on_create(PUBLICATION)),
        "ActivityPublication": request_schema(ACTIVITY_PUBLICATION,
                                              required=required_on_create(ACTIVITY_PUBLICATION)),
        "Published": response_schema(PUBLISHED),
        "OnlineUser": response_schema(ONLINE_USER),
        "Presence": response_schema(PRESENCE),
        "Typist": response_schema(TYPIST),
        "TypingPlace": request_schema(TYPING_PLACE, required=required_on_create(TYPING_PLACE)),
        "Visibility": response_schema(VISIBILITY),
        "VisibilityBody": request_schema(VISIBILITY, required=required_on_create(VISIBILITY)),
    }
