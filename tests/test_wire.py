"""Wire shapes: the state hash, net membership, and bodies that keep to their schemas."""
import hashlib
import json
import re
from datetime import datetime, timezone

import orjson
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from sqlalchemy import DateTime, String, create_engine, literal, select

from app import wire
from app.cache import LRU
from app.live.session import Known, Reply

# What a state holds: text (any character a database column stores), integers, flags, nulls.
TEXT = st.text(st.characters(blacklist_categories=("Cs",)))
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**63 - 1) | TEXT,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(TEXT, children, max_size=4),
    max_leaves=20)


def test_hash_is_canonical_and_sensitive():
    one = [{"id": "c-1", "slug": "a", "name": "A", "logo_url": None, "is_public": True,
            "role": "member", "joined_at": "2026-11-22T10:00:00Z"}]
    reordered = [dict(reversed(list(one[0].items())))]
    assert wire.state_hash(one) == wire.state_hash(reordered)
    changed = [dict(one[0], role="admin")]
    assert wire.state_hash(one) != wire.state_hash(changed)
    assert wire.state_hash([]) != wire.state_hash(one)
    assert len(wire.state_hash(one)) == 16


@given(JSON_VALUES)
def test_hash_digests_the_canonical_json(value):
    """The hash a client holds stays the hash of the canonical JSON, whatever writes it."""
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert wire.state_hash(value) == hashlib.sha256(canonical.encode()).hexdigest()[:16]


def test_net_membership():
    class C:
        def __init__(self, kind, cid):
            self.type, self.community_id = kind, cid

    added, removed = wire.net_membership(
        [C("joined", "a"), C("left", "b"), C("joined", "c"), C("left", "c"),
         C("left", "d"), C("joined", "d"), C("role_changed", "e"), C("community_deleted", "f"),
         C("joined", "g"), C("role_changed", "g"), C("left", "h"), C("joined", "h"), C("left", "h")]
    )
    assert added == ["a", "g"]
    assert removed == ["b", "f", "h"]


TYPES = ("activity", "notification", "joined", "left", "role_changed")


# A row's type, and for activity whether it is a collapsed value of one of a few keys.
KINDS = st.one_of(st.tuples(st.sampled_from(TYPES), st.none()),
                  st.tuples(st.just("activity"), st.sampled_from(("votes:p-1", "votes:p-2", "edit:p-1"))))


class Change:
    def __init__(self, id, type, key=None):
        self.id, self.type, self.collapse = id, type, key is not None
        self.community_id, self.topic = "c-1", "thread:t-1"
        self.kind, _, self.ref = (key or "posted:r").partition(":")


@given(st.lists(KINDS, max_size=4 * (wire.MAX_PUBLISHED_PER_ANSWER + 1)))
@example([("activity", None)] * 150 + [("joined", None)] + [("notification", None)] * 102
         + [("activity", None), ("left", None)])
@example([("activity", "votes:p-1")] * 300 + [("activity", None)] * 50 + [("activity", "votes:p-2")] * 3)
def test_the_newest_rows_make_the_same_capped_answer_as_all_of_them(types):
    """What a waiting poll keeps of its news tells the client what all of it would: the same
    rows, ``truncated`` included; no more than one past the cap of each published type is kept."""
    rows = [Change(i, kind, key) for i, (kind, key) in enumerate(types)]
    kept = wire.newest(rows)
    assert wire.capped(kept) == wire.capped(rows)
    assert all(sum(row.type == kind for row in kept) <= wire.MAX_PUBLISHED_PER_ANSWER + 1
               for kind in wire.PUBLISHED_TYPES)
    assert [row for row in rows if row.type not in wire.PUBLISHED_TYPES] == [
        row for row in kept if row.type not in wire.PUBLISHED_TYPES]


class Row:
    """A change-log row as read: activity's ``kind``, ``ref``, ``topic`` and ``data`` are NULL on other rows."""

    def __init__(self, **values):
        self.__dict__.update({"kind": None, "ref": None, "topic": None, "data": None, "collapse": False, **values})


JOINED = datetime(2026, 11, 22, 10, 0, 0, 123456)  # naive, as SQLite returns it


def test_a_community_entry_keeps_its_keys_in_order_and_its_times_in_seconds():
    row = Row(id="c-1", slug="one", name="One", logo_url=None, is_public=1, role="member",
              joined_at=JOINED, updated_at=JOINED, unread=3, last_activity_at=JOINED)
    entry = wire.community_entry(row)
    assert list(entry.items()) == [
        ("id", "c-1"), ("slug", "one"), ("name", "One"), ("logo_url", None), ("is_public", True),
        ("role", "member"), ("joined_at", "2026-11-22T10:00:00Z"), ("unread", 3),
        # The time of the activity's change, as its change says it.
        ("last_activity_at", "2026-11-22T10:00:00.123Z"),
    ]
    assert wire.community_body(row) == {key: entry[key] for key in list(entry)[:5]}


def test_entries_read_together_are_each_what_community_entry_gives():
    def row(community, role, unread, joined):
        return Row(id=community, slug=community, name=community.upper(), logo_url=None, is_public=0,
                   role=role, joined_at=joined, unread=unread, last_activity_at=JOINED)
    later = datetime(2026, 11, 23, 8, 30, 5)
    rows = [row("c-1", "member", 3, JOINED), row("c-2", "admin", 0, later),
            row("c-1", "owner", 7, later), row("c-2", "member", 100, JOINED)]
    entry = wire.community_entries()
    for each in rows:
        built = entry(each)
        assert list(built.items()) == list(wire.community_entry(each).items())
    # The membership's fields are each row's own, not the first row's of the community.
    assert [(e["role"], e["unread"]) for e in map(wire.community_entries(), rows)] == [
        ("member", 3), ("admin", 0), ("owner", 7), ("member", 100)]


def test_a_change_entry_names_its_actor_and_leaves_out_a_missing_role():
    left = Row(type="left", community_id="c-1", at=JOINED, actor=None, role=None)
    assert wire.change_entry(left) == {
        "type": "left", "community_id": "c-1", "at": "2026-11-22T10:00:00.123Z", "by": None,
    }
    promoted = Row(type="role_changed", community_id="c-1", at=JOINED, actor="u-ada", role="admin")
    assert list(wire.change_entry(promoted)) == ["type", "community_id", "at", "by", "role"]
    note = Row(type="notification", community_id=None, at=JOINED, actor=None, role=None,
               kind="mention", ref="p-1")
    assert list(wire.change_entry(note)) == ["type", "at", "by", "kind", "ref"]


def test_topic_activity_names_its_topic_and_carries_its_data_verbatim():
    reply = Row(type="activity", community_id="c-1", topic="thread:t-9", at=JOINED, actor="u-ada", role=None,
                kind="reply", ref="p-7", data='{"title": "Re: hi",  "n": 1.50}')
    entry = wire.change_entry(reply)
    assert list(entry) == ["type", "community_id", "topic", "at", "by", "kind", "ref", "data"]
    # The stored text itself, spacing and number spelling included.
    assert orjson.dumps(entry) == (b'{"type":"activity","community_id":"c-1","topic":"thread:t-9",'
                                   b'"at":"2026-11-22T10:00:00.123Z","by":"u-ada","kind":"reply","ref":"p-7",'
                                   b'"data":{"title": "Re: hi",  "n": 1.50}}')


@pytest.mark.parametrize("data, valid", [
    ({}, True),
    ({"count": 12, "title": "é" * 100}, True),
    ({"a": "x" * 504}, True),  # 512 bytes as compact JSON
    ({"a": "x" * 505}, False),
    ({"a": "é" * 253}, False),  # 512 characters, 760 bytes
    ([1, 2], False),
    ("text", False),
    (None, False),
    ({"a": float("nan")}, False),
    ({"a": float("inf")}, False),
    ({"a": "\udfff"}, False),
    ({"a": 2 ** 64}, False),
])
def test_data_is_an_object_of_at_most_512_bytes_as_compact_json(data, valid):
    assert wire.valid_data(data) is valid


def test_a_change_read_again_is_rendered_once_and_a_different_one_anew(monkeypatch):
    """A fan-out's activity goes to thousands of answers; each row is rendered once, however it was read."""
    engine = create_engine("sqlite://")  # rows as SQLAlchemy gives them: equal when their values are
    try:
        with engine.connect() as connection:
            def read(ref):
                values = {"type": "activity", "community_id": "c-1", "at": JOINED, "actor": "u-ada",
                          "role": None, "kind": "post_created", "ref": ref, "topic": None, "data": None}
                return connection.execute(select(*(
                    literal(value, DateTime() if name == "at" else String()).label(name)
                    for name, value in values.items()))).one()
            first, again, other = read("p-1"), read("p-1"), read("p-2")
    finally:
        engine.dispose()
    rendered = []
    serialize = wire.serialize
    monkeypatch.setattr(wire, "serialize", lambda fields, row: rendered.append(row) or serialize(fields, row))
    monkeypatch.setattr(wire, "RENDERED_CHANGES", LRU(10))
    entries = [wire.change_entry(row) for row in (first, again, other, first)]
    assert rendered == [first, other]
    assert entries[0] is entries[1] is entries[3]
    assert [entry["ref"] for entry in entries] == ["p-1", "p-1", "p-2", "p-1"]


def test_a_poll_body_lists_changes_only_when_changed():
    cursor = "signed-text"
    now = datetime(2026, 11, 22, 10, 0, 0, tzinfo=timezone.utc)
    joined = Row(type="joined", community_id="c-1", at=JOINED, actor="u-ada", role="member")
    changed = wire.poll_body(Reply("changed", Known(None, "h"), [], [joined]), cursor, now)
    assert list(changed) == ["status", "cursor", "hash", "server_time", "changes", "added",
                             "removed", "communities", "online"]
    assert changed["added"] == ["c-1"] and changed["removed"] == []
    assert changed["cursor"] == "signed-text"
    assert changed["server_time"] == "2026-11-22T10:00:00.000Z"
    unchanged = wire.poll_body(Reply("unchanged", Known(None, "h")), cursor, now, online={"c-1": 2})
    assert list(unchanged) == ["status", "cursor", "hash", "server_time", "online"]
    assert unchanged["online"] == {"c-1": 2}


def test_every_body_schema_requires_exactly_its_non_optional_fields():
    schemas = wire.schemas()
    assert schemas["PollAnswer"]["required"] == ["status", "cursor", "hash", "server_time", "online"]
    # A notification concerns no community: its change has no community_id.
    assert schemas["Change"]["required"] == ["type", "at", "by"]
    assert schemas["NewCommunity"]["required"] == ["slug", "name"]
    assert "required" not in schemas["CommunityPatch"]
    assert "id" not in schemas["CommunityPatch"]["properties"]
    assert schemas["NewCommunity"]["properties"]["logo_url"]["format"] == "uri"


def test_the_id_pattern_refuses_what_a_url_path_cannot_carry():
    pattern = re.compile(wire.schemas()["NewCommunity"]["properties"]["id"]["pattern"])
    for unaddressable in (".", "..", "", "a/b", "a b", "c" * 65):
        assert not pattern.search(unaddressable), unaddressable
    for good in ("...", ".a", "a..", "me", "c-1", "u:7@x|y+z=w~v_"):
        assert pattern.search(good), good


@given(st.lists(KINDS, max_size=300))
def test_an_answer_carries_only_the_newest_value_of_each_collapsed_key(types):
    """Collapsed values: one per key, the newest; every other row kept, in order."""
    rows = [Change(i, kind, key) for i, (kind, key) in enumerate(types)]
    answered = wire.latest_values(rows)
    newest = {}
    for row in rows:
        if row.collapse:
            newest[wire.collapse_key(row)] = row
    assert [row for row in answered if row.collapse] == sorted(newest.values(), key=lambda row: row.id)
    assert [row for row in answered if not row.collapse] == [row for row in rows if not row.collapse]
