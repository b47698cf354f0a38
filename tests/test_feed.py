"""The change log as a feed: cursors, raw-SQL capture, out-of-order commits, retention."""
import base64
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import create_engine, text

from app import feed
from app.db import normalize_url, read_transaction

def sequence(n):
    return feed.SequencePosition(n)


def snapshot(xmin, xmax, *xip):
    return feed.SnapshotPosition(xmin, xmax, frozenset(xip))


class Row:
    def __init__(self, id=0, xid=0):
        self.id, self.xid = id, xid


# -- positions and cursors ----------------------------------------------------


def test_cursor_round_trips_both_kinds():
    for position in (sequence(0), sequence(987654321), snapshot(10, 15, 11, 13), snapshot(5, 5)):
        cursor = feed.Cursor("ab12cd34ef56ab78", position)
        assert feed.Cursor.decode(cursor.encode()) == cursor


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "not base64 !!",
        base64.urlsafe_b64encode(b"2|abcd|s1").decode(),
        base64.urlsafe_b64encode(b"1|ABCD|s1").decode(),
        base64.urlsafe_b64encode(b"1|abcd|s-1").decode(),
        base64.urlsafe_b64encode(b"1|abcd|x20:10:").decode(),
        base64.urlsafe_b64encode(b"1|abcd|x10:20:25").decode(),
        base64.urlsafe_b64encode(b"1|abcd|q12").decode(),
        "A" * 5000,
        base64.urlsafe_b64encode("1|abcd|s1\u00e9".encode()).decode(),
    ],
)
def test_undecodable_cursors_are_refused(raw):
    with pytest.raises(feed.InvalidCursor):
        feed.Cursor.decode(raw)


def test_snapshot_visibility_and_coverage():
    older = snapshot(10, 15, 11, 13)
    assert older.sees(Row(xid=9)) and older.sees(Row(xid=12)) and older.sees(Row(xid=14))
    assert not older.sees(Row(xid=11)) and not older.sees(Row(xid=15))
    newer = snapshot(13, 18, 13, 16)  # 11 committed since; 13 still running
    assert newer.covers(older)
    assert not older.covers(newer)
    # A snapshot that still sees 14 as running cannot cover one that saw it done.
    assert not snapshot(10, 15, 14).covers(older)
    assert sequence(5).covers(sequence(5)) and not sequence(4).covers(sequence(5))
    assert not sequence(5).covers(older)


def test_hash_is_canonical_and_sensitive():
    one = [{"id": "c-1", "slug": "a", "name": "A", "logo_url": None, "is_public": True,
            "role": "member", "joined_at": "2026-11-22T10:00:00Z"}]
    reordered = [dict(reversed(list(one[0].items())))]
    assert feed.state_hash(one) == feed.state_hash(reordered)
    changed = [dict(one[0], role="admin")]
    assert feed.state_hash(one) != feed.state_hash(changed)
    assert feed.state_hash([]) != feed.state_hash(one)
    assert len(feed.state_hash(one)) == 16


def test_net_membership():
    class C:
        def __init__(self, kind, cid):
            self.type, self.community_id = kind, cid

    added, removed = feed.net_membership(
        [C("joined", "a"), C("left", "b"), C("joined", "c"), C("left", "c"),
         C("left", "d"), C("joined", "d"), C("role_changed", "e"), C("community_deleted", "f"),
         C("joined", "g"), C("role_changed", "g"), C("left", "h"), C("joined", "h"), C("left", "h")]
    )
    assert added == ["a", "g"]
    assert removed == ["b", "f", "h"]


# -- change capture -------------------------------------------------------------


def read_all(app, user_id, position):
    with app.app_context(), read_transaction() as session:
        state = feed.read_state(session, user_id)
        rows = feed.read_changes(session, user_id, position)
    return state, rows


def test_raw_sql_insert_update_delete_yield_three_entries_in_order(seeded, database):
    app = seeded
    state, _ = read_all(app, "u-alan", feed.SequencePosition(0))
    start = state.cursor.position

    database.psql("INSERT INTO memberships (user_id, community_id) VALUES ('u-alan', 'c-rust')")
    database.psql(
        "UPDATE memberships SET role = 'moderator' WHERE user_id = 'u-alan' AND community_id = 'c-rust'"
    )
    database.psql("DELETE FROM memberships WHERE user_id = 'u-alan' AND community_id = 'c-rust'")

    after, rows = read_all(app, "u-alan", start)
    assert [(r.type, r.community_id, r.role, r.actor) for r in rows] == [
        ("joined", "c-rust", "member", None),
        ("role_changed", "c-rust", "moderator", None),
        ("left", "c-rust", None, None),
    ]
    assert [r.id for r in rows] == sorted(r.id for r in rows)
    # Reading again from the new cursor finds nothing: each entry is read once.
    _, again = read_all(app, "u-alan", after.cursor.position)
    assert again == []


def test_idempotent_updates_record_nothing(seeded, database):
    state, _ = read_all(seeded, "u-ada", feed.SequencePosition(0))
    database.psql(
        "UPDATE memberships SET role = 'member' WHERE user_id = 'u-ada' AND community_id = 'c-rust'"
    )
    database.psql("UPDATE communities SET name = 'Rust' WHERE id = 'c-rust'")
    _, rows = read_all(seeded, "u-ada", state.cursor.position)
    assert rows == []


def test_community_changes_fan_out_to_members(seeded, database):
    state, _ = read_all(seeded, "u-grace", feed.SequencePosition(0))
    database.psql("UPDATE communities SET name = 'Pythonistas' WHERE id = 'c-python'")
    database.psql("DELETE FROM communities WHERE id = 'c-python'")
    _, grace = read_all(seeded, "u-grace", state.cursor.position)
    _, ada = read_all(seeded, "u-ada", state.cursor.position)
    for rows in (grace, ada):
        # Deleting the community removes the memberships too, recorded once,
        # as community_deleted rather than also as left.
        assert [(r.type, r.community_id) for r in rows] == [
            ("community_updated", "c-python"),
            ("community_deleted", "c-python"),
        ]
    _, alan = read_all(seeded, "u-alan", state.cursor.position)
    assert alan == []


# SQLite has one writer at a time, so its ids are given in commit order.
@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgres"])
def test_out_of_order_commits_are_read_once_in_commit_order(seeded, database):
    app = seeded
    state, _ = read_all(app, "u-alan", feed.SequencePosition(0))
    cursor = state.cursor.position

    writers = create_engine(normalize_url(database.url))
    first = writers.connect()
    second = writers.connect()
    try:
        # The first writer takes the lower change id and stays open...
        first_tx = first.begin()
        first.execute(text("INSERT INTO memberships (user_id, community_id) VALUES ('u-alan', 'c-rust')"))
        # ...while a later writer takes a higher id and commits first.
        with second.begin():
            second.execute(
                text("INSERT INTO memberships (user_id, community_id) VALUES ('u-alan', 'c-python')")
            )

        mid, rows = read_all(app, "u-alan", cursor)
        assert [r.community_id for r in rows] == ["c-python"]
        # An id-based cursor would now stand past the open transaction's row.
        cursor = mid.cursor.position
        assert isinstance(cursor, feed.SnapshotPosition)

        first_tx.commit()
        late, rows = read_all(app, "u-alan", cursor)
        assert [r.community_id for r in rows] == ["c-rust"]
        assert rows[0].id < max(r.id for r in read_all(app, "u-alan", state.cursor.position)[1])

        _, none = read_all(app, "u-alan", late.cursor.position)
        assert none == []
    finally:
        first.close()
        second.close()
        writers.dispose()


def test_state_is_sorted_and_hashed_identically_on_each_read(seeded):
    first, _ = read_all(seeded, "u-ada", feed.SequencePosition(0))
    second, _ = read_all(seeded, "u-ada", feed.SequencePosition(0))
    assert [c["name"] for c in first.communities] == ["Python", "Rust"]
    assert first.hash == second.hash == feed.state_hash(first.communities)


# -- retention ------------------------------------------------------------------


def test_pruning_turns_old_cursors_into_resets(seeded, database):
    app = seeded
    old, _ = read_all(app, "u-ada", feed.SequencePosition(0))
    database.psql("INSERT INTO memberships (user_id, community_id) VALUES ('u-ada', 'c-go')")
    fresh, _ = read_all(app, "u-ada", feed.SequencePosition(0))
    assert fresh.accepts(old.cursor) and fresh.accepts(fresh.cursor)

    hub = app.extensions["hub"]
    # Nothing is old enough yet.
    assert hub.prune(now=datetime.now(timezone.utc)) == 0
    later = datetime.now(timezone.utc) + timedelta(seconds=hub.retention + 60)
    assert hub.prune(now=later) > 0

    current, _ = read_all(app, "u-ada", feed.SequencePosition(0))
    assert not current.accepts(old.cursor)
    assert current.accepts(current.cursor)


def test_cursor_from_another_database_is_not_accepted(seeded):
    state, _ = read_all(seeded, "u-ada", feed.SequencePosition(0))
    foreign = feed.Cursor("0123456789abcdef", state.cursor.position)
    assert not state.accepts(foreign)


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgres"])
def test_a_rename_racing_a_join_reaches_the_new_member(seeded, database):
    import threading

    app = seeded
    start, _ = read_all(app, "u-alan", feed.SequencePosition(0))
    writers = create_engine(normalize_url(database.url))
    joining = writers.connect()
    try:
        join = joining.begin()
        joining.execute(text("INSERT INTO memberships (user_id, community_id) VALUES ('u-alan', 'c-python')"))

        def rename():
            with writers.begin() as connection:
                connection.execute(text("UPDATE communities SET name = 'Py' WHERE id = 'c-python'"))

        renaming = threading.Thread(target=rename)
        renaming.start()
        renaming.join(timeout=0.5)  # the rename waits for the join to finish
        join.commit()
        renaming.join(timeout=10)
        assert not renaming.is_alive()
    finally:
        joining.close()
        writers.dispose()

    final, rows = read_all(app, "u-alan", start.cursor.position)
    # Whatever the interleaving, the log explains the state: the new member is
    # told of the rename (otherwise its hash would change with nothing to say).
    assert [(r.type, r.community_id) for r in rows] == [
        ("joined", "c-python"), ("community_updated", "c-python"),
    ]
    assert [c["name"] for c in final.communities if c["id"] == "c-python"] == ["Py"]
