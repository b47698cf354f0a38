"""The change log as a feed: cursors, raw-SQL capture, out-of-order commits, retention."""
import base64
from collections import namedtuple
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import IntegrityError

from app.store import cursors, feed, migrations
from app import wire
from app.store.db import make_engine, normalize_url, read_transaction

def sequence(n):
    return cursors.SequencePosition(n)


def snapshot(xmin, xmax, *xip):
    return cursors.SnapshotPosition(xmin, xmax, frozenset(xip))


class Row:
    def __init__(self, id=0, xid=0):
        self.id, self.xid = id, xid


# -- positions and cursors ----------------------------------------------------


KEY = cursors.CursorKey("a-secret-key")


def signed(raw):
    """``raw`` (version|epoch|position) signed under KEY, as KEY.encode would."""
    version, epoch, token = raw.split("|")
    signature = KEY._signature(KEY.id, epoch, token)
    return base64.urlsafe_b64encode(f"{version}|{epoch}|{token}|{KEY.id}|{signature}".encode()).decode()


def test_cursor_round_trips_both_kinds():
    for position in (sequence(0), sequence(987654321), snapshot(10, 15, 11, 13), snapshot(5, 5)):
        cursor = cursors.Cursor("ab12cd34ef56ab78", position)
        assert KEY.decode(KEY.encode(cursor)) == cursor


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "not base64 !!",
        base64.urlsafe_b64encode(b"2|abcd|s1").decode(),
        signed("2|ABCD|s1"),
        signed("2|abcd|s-1"),
        signed("2|abcd|x20:10:"),
        signed("2|abcd|x10:20:25"),
        signed("2|abcd|x10:20:20"),  # in progress, yet not below xmax
        signed("2|abcd|q12"),
        signed("2|abcd|s9223372036854775808"),
        signed("2|abcd|x9223372036854775808:9223372036854775809:"),
        "A" * 5000,
        base64.urlsafe_b64encode("2|abcd|s1\u00e9".encode()).decode(),
        base64.urlsafe_b64encode("1|abcd|s1\u00e9".encode()).decode(),
    ],
)
def test_undecodable_cursors_are_refused(raw):
    with pytest.raises(cursors.InvalidCursor):
        KEY.decode(raw)


def test_a_signed_cursor_decodes_only_as_issued():
    """Any change to a signed cursor's epoch, position or signature is refused."""
    text = KEY.encode(cursors.Cursor("ab12cd34ef56ab78", snapshot(10, 15, 11, 13)))
    raw = base64.urlsafe_b64decode(text + "==").decode()
    version, epoch, token, key_id, signature = raw.split("|")
    altered = [
        (version, epoch, "x10:15:11", key_id, signature),  # 13 marked as seen
        (version, epoch, "x9:15:11,13", key_id, signature),
        (version, "ab12cd34ef56ab79", token, key_id, signature),
        (version, epoch, token, key_id, signature[:-1] + ("0" if signature[-1] != "0" else "1")),
        (version, epoch, token, key_id, "0" * 32),
    ]
    for fields in altered:
        forged = base64.urlsafe_b64encode("|".join(fields).encode()).decode()
        with pytest.raises(cursors.InvalidCursor):
            KEY.decode(forged)


def test_a_cursor_of_another_key_or_an_unsigned_one_is_no_cursor():
    """A changed SECRET_KEY, or a client holding a cursor from before signing: start over (reset)."""
    cursor = cursors.Cursor("ab12cd34ef56ab78", sequence(7))
    assert cursors.CursorKey("another-key").decode(KEY.encode(cursor)) is None
    unsigned = base64.urlsafe_b64encode(b"1|ab12cd34ef56ab78|s7").decode().rstrip("=")
    assert KEY.decode(unsigned) is None
    assert cursors.CursorKey("another-key").id != KEY.id


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


def test_a_sequence_position_sees_exactly_the_ids_up_to_its_own():
    position = sequence(5)
    assert position.sees(Row(id=4)) and position.sees(Row(id=5))
    assert not position.sees(Row(id=6))
    assert position.covers(sequence(4)) and not position.covers(sequence(6))
    assert position.pruned_past(6) and not position.pruned_past(5)


# -- change capture -------------------------------------------------------------


@contextmanager
def held_open(database, sql):
    """Another writer runs ``sql`` and holds its transaction open; yields (commit, engine).

    ``engine`` is for further writers, which may run in threads and block on
    the held transaction's locks.
    """
    writers = create_engine(normalize_url(database.url))
    holding = writers.connect()
    try:
        transaction = holding.begin()
        holding.execute(text(sql))
        yield transaction.commit, writers
    finally:
        holding.close()
        writers.dispose()


def blocked_then_released(commit, work):
    """Run ``work`` in a thread that blocks on the held transaction, then commit it."""
    import threading

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(timeout=0.5)  # it waits for the held transaction to finish
    commit()
    thread.join(timeout=10)
    assert not thread.is_alive()


def read_all(app, user_id, position):
    with app.app_context(), read_transaction() as connection:
        state = feed.read_state(connection, user_id)
        rows = feed.read_changes(connection, user_id, position)
    return state, rows


def test_raw_sql_insert_update_delete_yield_three_entries_in_order(seeded, database):
    app = seeded
    state, _ = read_all(app, "u-alan", cursors.SequencePosition(0))
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
    state, _ = read_all(seeded, "u-ada", cursors.SequencePosition(0))
    database.psql(
        "UPDATE memberships SET role = 'member' WHERE user_id = 'u-ada' AND community_id = 'c-rust'"
    )
    database.psql("UPDATE communities SET name = 'Rust' WHERE id = 'c-rust'")
    _, rows = read_all(seeded, "u-ada", state.cursor.position)
    assert rows == []


def count_rows(app, where="TRUE"):
    with app.extensions["db"].connect() as connection:
        return connection.scalar(text(f"SELECT count(*) FROM changes WHERE {where}"))


def test_community_changes_reach_every_member_from_one_row_each(seeded, database):
    state, _ = read_all(seeded, "u-grace", cursors.SequencePosition(0))
    before = count_rows(seeded)
    database.psql("UPDATE communities SET name = 'Pythonistas' WHERE id = 'c-python'")
    database.psql("DELETE FROM communities WHERE id = 'c-python'")
    # Recorded once each, whatever the number of members, and no "left" rows.
    assert count_rows(seeded) == before + 2
    assert count_rows(seeded, "user_id IS NULL") == 2
    _, grace = read_all(seeded, "u-grace", state.cursor.position)
    _, ada = read_all(seeded, "u-ada", state.cursor.position)
    for rows in (grace, ada):
        # Deleting the community removes the memberships too, recorded once,
        # as community_deleted rather than also as left.
        assert [(r.type, r.community_id) for r in rows] == [
            ("community_updated", "c-python"),
            ("community_deleted", "c-python"),
        ]
    # A community-wide change concerns the community, not a member's role.
    assert [r.role for r in ada] == [None, None]
    _, alan = read_all(seeded, "u-alan", state.cursor.position)
    assert alan == []


# SQLite has one writer at a time, so its ids are given in commit order.
@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgres"])
def test_out_of_order_commits_are_read_once_in_commit_order(seeded, database):
    app = seeded
    state, _ = read_all(app, "u-alan", cursors.SequencePosition(0))
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
        assert isinstance(cursor, cursors.SnapshotPosition)

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


def test_many_users_states_read_together_are_each_what_their_own_read_gives(seeded, database):
    """Read for many users at once, a community's unread counts come from one probe of its
    newest rows: a read marker below them, on the last of them and within them counts as
    each member's own read does."""
    values = ", ".join(f"('c-python', 'post_created', 'p-{n}')" for n in range(150))
    database.psql(f"INSERT INTO activity (community_id, kind, ref) VALUES {values}")
    database.psql("INSERT INTO memberships (user_id, community_id) VALUES ('u-alan', 'c-python')")
    with seeded.app_context(), read_transaction() as connection:
        newest_first = connection.scalars(text(
            "SELECT id FROM changes WHERE community_id = 'c-python' AND type = 'activity' ORDER BY id DESC")).all()
    markers = {"u-ada": 0, "u-grace": newest_first[99], "u-alan": newest_first[30]}
    for user, marker in markers.items():
        database.psql(f"UPDATE memberships SET read_through = {marker} WHERE user_id = '{user}'")
    with seeded.app_context(), read_transaction() as connection:
        together = feed.read_states(connection, list(markers))
        alone = {user: feed.read_state(connection, user) for user in markers}
    for user in markers:
        assert together[user].communities == alone[user].communities
    unread = {user: {entry["id"]: entry["unread"] for entry in together[user].communities} for user in markers}
    assert [unread[user]["c-python"] for user in markers] == [100, 99, 30]


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgres"])
def test_members_unread_counts_stop_at_the_newest_row_their_snapshot_sees(seeded, database):
    """During a burst the index holds rows committed after a re-read's snapshot: a member's
    count that went on through them would look at every one, for every member."""
    members = [f"u-m{n}" for n in range(40)]
    database.psql("".join(f"INSERT INTO users (id) VALUES ('{user}');"
                          f"INSERT INTO memberships (user_id, community_id) VALUES ('{user}', 'c-python');"
                          for user in members))
    database.psql("INSERT INTO activity (community_id, kind, ref) VALUES "
                  + ", ".join(f"('c-python', 'post_created', 'p-{n}')" for n in range(20)))
    entries_read = text("SELECT pg_stat_get_xact_tuples_returned('ix_changes_activity'::regclass)")
    with seeded.app_context(), read_transaction() as connection:
        before = connection.scalar(entries_read)  # the snapshot: 20 posts
        database.psql("INSERT INTO activity (community_id, kind, ref) VALUES "
                      + ", ".join(f"('c-python', 'post_created', 'q-{n}')" for n in range(500)))
        states = feed.read_states(connection, members)
        read = connection.scalar(entries_read) - before
    assert {entry["unread"] for user in members for entry in states[user].communities} == {20}
    # Not 520 a member; a few probes of the community's newest rows (horizon, newest, their
    # authors, last_activity_at) each pass the 500 committed since, once for all its members.
    assert read < 20 * len(members) + 4 * 520


def test_state_is_sorted_and_hashed_identically_on_each_read(seeded):
    first, _ = read_all(seeded, "u-ada", cursors.SequencePosition(0))
    second, _ = read_all(seeded, "u-ada", cursors.SequencePosition(0))
    assert [c["name"] for c in first.communities] == ["Python", "Rust"]
    assert first.hash == second.hash == wire.user_state_hash(first.communities,
                                                             first.notifications_unread)


# -- retention ------------------------------------------------------------------


def test_pruning_turns_old_cursors_into_resets(seeded, database):
    app = seeded
    old, _ = read_all(app, "u-ada", cursors.SequencePosition(0))
    database.psql("INSERT INTO memberships (user_id, community_id) VALUES ('u-ada', 'c-go')")
    fresh, _ = read_all(app, "u-ada", cursors.SequencePosition(0))
    assert fresh.accepts(old.cursor) and fresh.accepts(fresh.cursor)

    pruner = app.extensions["hub"].pruner
    # Nothing is old enough yet.
    assert pruner.prune(now=datetime.now(timezone.utc)) == 0
    later = datetime.now(timezone.utc) + timedelta(seconds=pruner.retention + 60)
    assert pruner.prune(now=later) > 0

    current, _ = read_all(app, "u-ada", cursors.SequencePosition(0))
    assert not current.accepts(old.cursor)
    assert current.accepts(current.cursor)


def test_cursor_from_another_database_is_not_accepted(seeded):
    state, _ = read_all(seeded, "u-ada", cursors.SequencePosition(0))
    foreign = cursors.Cursor("0123456789abcdef", state.cursor.position)
    assert not state.accepts(foreign)


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgres"])
def test_a_rename_racing_a_join_reaches_the_new_member(seeded, database):
    app = seeded
    start, _ = read_all(app, "u-alan", cursors.SequencePosition(0))
    join = "INSERT INTO memberships (user_id, community_id) VALUES ('u-alan', 'c-python')"
    with held_open(database, join) as (commit, writers):

        def rename():
            with writers.begin() as connection:
                connection.execute(text("UPDATE communities SET name = 'Py' WHERE id = 'c-python'"))

        blocked_then_released(commit, rename)

    final, rows = read_all(app, "u-alan", start.cursor.position)
    # Whatever the interleaving, the log explains the state: the new member is
    # told of the rename (otherwise its hash would change with nothing to say).
    assert [(r.type, r.community_id) for r in rows] == [
        ("joined", "c-python"), ("community_updated", "c-python"),
    ]
    assert [c["name"] for c in final.communities if c["id"] == "c-python"] == ["Py"]


# -- community-scoped rows -------------------------------------------------------


def add_users(database, community_id, count):
    users = [f"u-n{n}" for n in range(count)]
    values = ", ".join(f"('{user}')" for user in users)
    memberships = ", ".join(f"('{user}', '{community_id}')" for user in users)
    database.psql(f"INSERT INTO users (id) VALUES {values}; "
                  f"INSERT INTO memberships (user_id, community_id) VALUES {memberships}")
    return users


def test_a_rename_is_one_row_that_each_member_and_only_members_receive_once(seeded, database):
    app = seeded
    members = add_users(database, "c-go", 30)
    start, _ = read_all(app, "u-ada", cursors.SequencePosition(0))
    cursor = start.cursor.position
    database.psql("DELETE FROM memberships WHERE user_id = 'u-n0'")  # a former member
    before = count_rows(app)
    database.psql("UPDATE communities SET name = 'Golang' WHERE id = 'c-go'")
    assert count_rows(app) == before + 1
    database.psql("INSERT INTO memberships (user_id, community_id) VALUES ('u-ada', 'c-go')")

    for user in ["u-alan", *members[1:]]:
        state, rows = read_all(app, user, cursor)
        assert [(r.type, r.community_id, r.role) for r in rows] == [
            ("community_updated", "c-go", None)
        ], user
        _, again = read_all(app, user, state.cursor.position)
        assert again == []
    _, former = read_all(app, "u-n0", cursor)
    assert [r.type for r in former] == ["left"]
    _, outsider = read_all(app, "u-grace", cursor)
    assert outsider == []
    # Joined after the rename: the joined entry carries the name, not the rename.
    ada, late = read_all(app, "u-ada", cursor)
    assert [(r.type, r.community_id) for r in late] == [("joined", "c-go")]
    assert "Golang" in [c["name"] for c in ada.communities]


def test_a_member_who_leaves_after_a_community_change_still_receives_it(seeded, database):
    """Exactly once means the rename a member lived through, though it left before anyone looked."""
    app = seeded
    start, _ = read_all(app, "u-alan", cursors.SequencePosition(0))
    database.psql("UPDATE communities SET name = 'Go 1' WHERE id = 'c-go'")
    database.psql("DELETE FROM memberships WHERE user_id = 'u-alan' AND community_id = 'c-go'")
    database.psql("UPDATE communities SET name = 'Go 2' WHERE id = 'c-go'")
    _, rows = read_all(app, "u-alan", start.cursor.position)
    assert [(r.type, r.community_id) for r in rows] == [("community_updated", "c-go"), ("left", "c-go")]
    # The hub's batched read, for the waiting users, resolves it the same way.
    batch = read_news_of(app, start.cursor.position, ["u-alan", "u-ada"])
    alan = feed.addressed(batch.by_user({"u-alan", "u-ada"})["u-alan"])
    assert [(r.type, r.community_id) for r in alan] == [("community_updated", "c-go"), ("left", "c-go")]


def read_news_of(app, position, users):
    with app.app_context(), read_transaction() as connection:
        return feed.read_news(connection, position, lambda: users)


def test_a_member_who_leaves_and_rejoins_gets_the_community_rows_of_while_a_member(seeded, database):
    app = seeded
    start, _ = read_all(app, "u-alan", cursors.SequencePosition(0))
    database.psql("UPDATE communities SET name = 'Go 1' WHERE id = 'c-go'")
    database.psql("DELETE FROM memberships WHERE user_id = 'u-alan' AND community_id = 'c-go'")
    database.psql("INSERT INTO memberships (user_id, community_id) VALUES ('u-alan', 'c-go')")
    database.psql("UPDATE communities SET name = 'Go 2' WHERE id = 'c-go'")
    _, rows = read_all(app, "u-alan", start.cursor.position)
    # 'Go 1' while a member, 'Go 2' after rejoining; nothing in between.
    assert [r.type for r in rows] == ["community_updated", "left", "joined", "community_updated"]


def test_deleting_a_community_reaches_former_members_and_hides_their_tombstones(
    seeded, database, client, auth
):
    app = seeded
    start, _ = read_all(app, "u-ada", cursors.SequencePosition(0))
    database.psql("DELETE FROM communities WHERE id = 'c-python'")
    for user in ("u-ada", "u-grace"):
        state, rows = read_all(app, user, start.cursor.position)
        assert [(r.type, r.community_id) for r in rows] == [("community_deleted", "c-python")]
        assert "c-python" not in [c["id"] for c in state.communities]
    assert count_rows(app, "type = 'left'") == 0
    # The tombstones are invisible to every read of the API.
    assert client.get("/communities/c-python", headers=auth("u-admin", admin=True)).status_code == 404
    listed = client.get("/communities", headers=auth("u-ada")).json["communities"]
    assert "c-python" not in [c["id"] for c in listed]


def test_a_membership_in_a_missing_community_is_refused(seeded, database):
    app = seeded
    engine = app.extensions["db"]
    before = count_rows(app)
    for statement in (
        "INSERT INTO memberships (user_id, community_id) VALUES ('u-alan', 'c-nowhere')",
        "UPDATE memberships SET community_id = 'c-nowhere' WHERE user_id = 'u-alan'",
    ):
        with pytest.raises(IntegrityError) as refused, engine.begin() as connection:
            connection.execute(text(statement))
        if database.backend == "postgres":
            assert refused.value.orig.pgcode == "23503"
        else:
            assert "FOREIGN KEY constraint failed" in str(refused.value)
    database.psql("DELETE FROM communities WHERE id = 'c-go'")
    with pytest.raises(IntegrityError), engine.begin() as connection:
        connection.execute(text("INSERT INTO memberships (user_id, community_id) VALUES ('u-ada', 'c-go')"))
    assert count_rows(app) == before + 1


def test_a_community_recreated_with_a_deleted_ones_id_starts_empty(seeded, database, client, auth):
    app = seeded
    start, _ = read_all(app, "u-ada", cursors.SequencePosition(0))
    database.psql("DELETE FROM communities WHERE id = 'c-python'")
    before = count_rows(app)
    database.psql("INSERT INTO communities (id, slug, name) VALUES ('c-python', 'python', 'Python')")
    assert count_rows(app) == before  # the stale tombstones went without a word
    state, _ = read_all(app, "u-ada", start.cursor.position)
    assert "c-python" not in [c["id"] for c in state.communities]
    detail = client.get("/communities/c-python", headers=auth("u-admin", admin=True)).json
    assert detail["member_count"] == 0
    database.psql("INSERT INTO memberships (user_id, community_id) VALUES ('u-ada', 'c-python')")
    _, rows = read_all(app, "u-ada", state.cursor.position)
    assert [(r.type, r.community_id) for r in rows] == [("joined", "c-python")]


def test_pruning_removes_tombstones_once_their_deletion_is_pruned(seeded, database):
    app = seeded
    database.psql("DELETE FROM communities WHERE id = 'c-python'")

    def tombstones():
        with app.extensions["db"].connect() as connection:
            return connection.scalar(text("SELECT count(*) FROM memberships WHERE community_id = 'c-python'"))

    pruner = app.extensions["hub"].pruner
    pruner.prune(now=datetime.now(timezone.utc))
    assert tombstones() == 2
    pruner.prune(now=datetime.now(timezone.utc) + timedelta(seconds=pruner.retention + 60))
    assert tombstones() == 0
    assert count_rows(app, "type = 'left'") == 0


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgres"])
def test_out_of_order_renames_and_joins_reach_each_member_once_in_commit_order(seeded, database):
    app = seeded
    start, _ = read_all(app, "u-alan", cursors.SequencePosition(0))
    # A rename of c-rust takes the lower id and stays open...
    rename = "UPDATE communities SET name = 'Rust 2' WHERE id = 'c-rust'"
    with held_open(database, rename) as (commit, writers):
        # ...while a join and a rename of c-go take higher ids and commit first.
        with writers.begin() as second:
            second.execute(text("INSERT INTO memberships (user_id, community_id) VALUES ('u-ada', 'c-go')"))
            second.execute(text("UPDATE communities SET name = 'Go 2' WHERE id = 'c-go'"))
        mid_alan, alan = read_all(app, "u-alan", start.cursor.position)
        mid_ada, ada = read_all(app, "u-ada", start.cursor.position)
        assert [(r.type, r.community_id) for r in alan] == [("community_updated", "c-go")]
        assert [(r.type, r.community_id) for r in ada] == [
            ("joined", "c-go"), ("community_updated", "c-go"),
        ]
        commit()
    _, alan_late = read_all(app, "u-alan", mid_alan.cursor.position)
    _, ada_late = read_all(app, "u-ada", mid_ada.cursor.position)
    assert alan_late == []
    assert [(r.type, r.community_id) for r in ada_late] == [("community_updated", "c-rust")]
    # The late row has the lowest id: an id cursor would have skipped it.
    assert ada_late[0].id < min(r.id for r in ada)


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgres"])
def test_a_join_racing_a_deletion_is_refused_or_told_of_it(seeded, database):
    app = seeded
    start, _ = read_all(app, "u-alan", cursors.SequencePosition(0))
    failures = []
    with held_open(database, "DELETE FROM communities WHERE id = 'c-rust'") as (commit, writers):

        def join():
            try:
                with writers.begin() as connection:
                    connection.execute(
                        text("INSERT INTO memberships (user_id, community_id) VALUES ('u-alan', 'c-rust')")
                    )
            except IntegrityError as error:
                failures.append(error)

        blocked_then_released(commit, join)
    assert len(failures) == 1 and failures[0].orig.pgcode == "23503"
    _, rows = read_all(app, "u-alan", start.cursor.position)
    assert rows == []


def test_a_cursor_from_before_the_upgrade_reads_on_with_no_gap_or_duplicate(database):
    engine = make_engine(database.url)
    try:
        migrations.upgrade(engine, "0001")
        with engine.begin() as connection:
            for statement in (
                "INSERT INTO users (id) VALUES ('u-1'), ('u-2')",
                "INSERT INTO communities (id, slug, name) VALUES ('c-1', 'one', 'One')",
                "INSERT INTO memberships (user_id, community_id) VALUES ('u-1', 'c-1')",
            ):
                connection.execute(text(statement))
        with read_transaction(engine) as connection:
            epoch, old = feed.read_head(connection)
        with engine.begin() as connection:
            connection.execute(text("UPDATE communities SET name = 'Uno' WHERE id = 'c-1'"))
            connection.execute(text("INSERT INTO memberships (user_id, community_id) VALUES ('u-2', 'c-1')"))
        with read_transaction(engine) as connection:
            _, later = feed.read_head(connection)

        migrations.upgrade(engine)
        with engine.begin() as connection:
            connection.execute(text("UPDATE communities SET name = 'Eins' WHERE id = 'c-1'"))
            connection.execute(text("DELETE FROM communities WHERE id = 'c-1'"))
        with read_transaction(engine) as connection:
            one = feed.read_changes(connection, "u-1", old)
            two = feed.read_changes(connection, "u-2", old)
            one_later = feed.read_changes(connection, "u-1", later)
        assert [(r.type, r.shared) for r in one] == [
            ("community_updated", False), ("community_updated", True), ("community_deleted", True),
        ]
        assert [r.type for r in two] == ["joined", "community_updated", "community_deleted"]
        assert [r.type for r in one_later] == ["community_updated", "community_deleted"]
        assert len({r.id for r in one}) == 3
    finally:
        engine.dispose()


def test_members_with_the_same_rows_share_one_list_and_others_get_theirs_merged_in_order():
    Row = namedtuple("Row", "id shared community_id user_id type topic public", defaults=(None, False))
    first, second = Row(1, True, "c-1", None, "activity"), Row(2, True, "c-1", None, "activity")
    own, elsewhere = Row(3, False, "c-2", "u-3", "joined"), Row(4, True, "c-2", None, "activity")
    batch = feed.Batch([first, second, own, elsewhere], {"c-1": ["u-1", "u-2", "u-3"], "c-2": ["u-3"]}, None)
    found = batch.by_user({"u-1", "u-2", "u-3"})
    assert found["u-1"] is found["u-2"] and found["u-1"] == [first, second]
    assert found["u-3"] == [first, second, own, elsewhere]
    assert found["u-1"] == [first, second]  # merging for u-3 left the shared list alone
