"""Admission: arriving polls read alone while the way is clear, else in batches of a fixed cost."""
from dataclasses import replace

import gevent
import pytest
from gevent.event import Event

from app.live import admission
from app.live.admission import Admission, read_alone
from app.live.session import Known
from app.store import arrivals, cursors, feed
from app.store.db import read_transaction
from app.watches import NONE as NO_WATCHES, Watches
from conftest import statements

# Polls arriving at once: fewer than either backend's pool holds, so that
# without admission each would hold a connection at once rather than wait.
ARRIVING = 12
USERS = ("u-ada", "u-grace", "u-alan", "u-admin", "u-new")


def positions_through_a_history(app, database):
    """The feed's position before and between changes of every kind, as a client may hold them."""
    def now():
        with app.app_context(), read_transaction() as connection:
            return feed.read_state(connection, "u-ada").cursor

    held = [now()]
    steps = [
        "UPDATE communities SET name = 'Pythonistas' WHERE id = 'c-python'",
        "UPDATE communities SET name = 'Design' WHERE id = 'c-design'",
        topic("c-design", "thread:t-1", "r-1"),
        "DELETE FROM memberships WHERE user_id = 'u-grace' AND community_id = 'c-design'",
        topic("c-design", "thread:t-1", "r-2"),
        topic("c-rust", "thread:t-2", "r-3"),
        topic("c-ops", "board:b-1", "r-4"),
        "DELETE FROM memberships WHERE user_id = 'u-alan' AND community_id = 'c-go'",
        "UPDATE communities SET name = 'Go 1' WHERE id = 'c-go'",
        "INSERT INTO memberships (user_id, community_id) VALUES ('u-alan', 'c-go')",
        "INSERT INTO activity (community_id, kind, ref) VALUES ('c-rust', 'post_created', 'p-1')",
        "INSERT INTO activity (community_id, topic, kind, ref, data, collapse) VALUES "
        "('c-rust', 'thread:t-2', 'votes', 'r-3', '{\"n\": 1}', true), "
        "('c-rust', 'thread:t-2', 'votes', 'r-3', '{\"n\": 2}', true)",
        "INSERT INTO activity (user_id, kind, ref) VALUES ('u-ada', 'mention', 'm-1')",
        "UPDATE memberships SET role = 'admin' WHERE user_id = 'u-ada' AND community_id = 'c-rust'",
        "INSERT INTO users (id) VALUES ('u-new'); "
        "INSERT INTO memberships (user_id, community_id) VALUES ('u-new', 'c-design')",
        topic("c-design", "thread:t-1", "r-5"),
        "DELETE FROM communities WHERE id = 'c-python'",
        "INSERT INTO activity (community_id, kind, ref) VALUES ('c-go', 'post_created', 'p-2')",
        "INSERT INTO activity (community_id, topic, kind, ref, data, collapse) VALUES "
        "('c-rust', 'thread:t-2', 'votes', 'r-3', '{\"n\": 3}', true)",
    ]
    for sql in steps:
        database.psql(sql)
        held.append(now())
    return held


def topic(community_id, name, ref):
    return (f"INSERT INTO activity (community_id, topic, kind, ref, data) "
            f"VALUES ('{community_id}', '{name}', 'reply', '{ref}', '{{\"ref\": \"{ref}\"}}')")


# Polls watching nothing, a private community's thread, every topic of a public one, and a
# private community none of them is in (refused over HTTP; read, it must give nothing).
WATCHES = (NO_WATCHES, Watches.parse(["c-design/thread:t-1"]), Watches.parse(["c-rust/*"]),
           Watches.parse(["c-ops/*", "c-rust/thread:t-2"]))


def as_read(state, usable, changes):
    """What a reply is made of, with each row as the answer renders it (a community row names no user).

    The feed's position is left out: the database may assign a transaction
    id between two reads (the hub's own writes) with nothing written to the log.
    """
    return state and replace(state, cursor=state.cursor.epoch), usable, [
        (row.id, row.type, row.community_id, row.shared, row.role, row.kind, row.ref, row.topic, row.data)
        for row in changes]


def test_a_batched_read_gives_every_arrival_what_it_would_read_alone(seeded, database):
    """Every user at every position of a history (joins, departures, renames, a deletion, activity,
    notifications), and with no cursor or another log's: the same state, usability and changes."""
    app = seeded
    held = positions_through_a_history(app, database)
    other_log = cursors.Cursor("0" * 16, held[0].position)
    asked = [(user, cursor, watches) for user in USERS for cursor in (*held, None, other_log)
             for watches in WATCHES]
    with app.app_context():
        with read_transaction() as connection:
            batched = arrivals.read_arrivals(connection, asked, most_rows=1000)
        alone = []
        for user, cursor, watches in asked:
            with read_transaction() as connection:
                state = feed.read_state(connection, user)
                usable = cursor is not None and state.accepts(cursor)
                alone.append((state, usable,
                              feed.read_changes(connection, user, cursor.position, watches) if usable else []))
    assert len(batched) == len(asked)
    for arrival, mine, theirs in zip(asked, batched, alone):
        assert as_read(*mine) == as_read(*theirs), arrival
    # The history reached them: a test of equal empties would prove nothing.
    assert sum(len(changes) for _state, _usable, changes in batched) > 30 * len(WATCHES)
    assert sum(not usable for _state, usable, _changes in batched) == 2 * len(USERS) * len(WATCHES)
    # Topics' rows: only as watched, a private community's only to its members while members.
    topic_rows = {(user, watches, row.ref) for (user, _cursor, watches), (_s, _u, changes) in zip(asked, batched)
                  for row in changes if row.topic is not None}
    assert {(user, ref) for user, watches, ref in topic_rows if watches.communities == {"c-design"}} == {
        ("u-grace", "r-1"), ("u-new", "r-5")}
    assert {ref for _user, watches, ref in topic_rows if watches.communities == {"c-rust"}} == {"r-3"}
    assert not any(row.community_id == "c-ops" for _s, _u, changes in batched for row in changes)
    assert not any(watches == NO_WATCHES for _user, watches, _ref in topic_rows)


def test_a_busy_communitys_activity_is_read_only_as_far_as_an_answer_carries_it(seeded, database):
    """Far behind a burst: the batch reads each community's newest activity an answer can carry
    (one more, so that it knows it dropped some), as a reader alone does, not the whole burst."""
    from app.wire import MAX_PUBLISHED_PER_ANSWER

    app = seeded
    with app.app_context(), read_transaction() as connection:
        start = feed.read_state(connection, "u-ada").cursor
    burst = ", ".join(f"('c-rust', 'post_created', 'p-{n}')" for n in range(MAX_PUBLISHED_PER_ANSWER + 50))
    database.psql(f"INSERT INTO activity (community_id, kind, ref) VALUES {burst}")
    database.psql("UPDATE communities SET name = 'Pythonistas' WHERE id = 'c-python'")
    asked = [("u-ada", start, NO_WATCHES), ("u-grace", start, NO_WATCHES), ("u-alan", start, NO_WATCHES)]
    with app.app_context(), read_transaction() as connection:
        batched = arrivals.read_arrivals(connection, asked, most_rows=MAX_PUBLISHED_PER_ANSWER + 10)
        alone = [feed.read_changes(connection, user, cursor.position) for user, cursor, _ in asked]
    assert batched is not None
    assert [as_read(*read)[2] for read in batched] == [as_read(None, None, rows)[2] for rows in alone]
    ada = as_read(*batched[0])[2]
    assert len(ada) == MAX_PUBLISHED_PER_ANSWER + 2 and ada[-1][1] == "community_updated"
    assert [row[6] for row in ada[:2]] == ["p-49", "p-50"]


def test_too_many_rows_after_the_oldest_cursor_read_nothing_in_the_batch(seeded, database):
    app = seeded
    held = positions_through_a_history(app, database)
    with app.app_context(), read_transaction() as connection:
        assert arrivals.read_arrivals(connection, [("u-ada", held[0], NO_WATCHES)], most_rows=5) is None
        assert arrivals.read_arrivals(connection, [("u-ada", held[-1], NO_WATCHES)], most_rows=5) is not None


def test_the_oldest_of_several_snapshots_sees_only_what_each_of_them_sees():
    snapshot = cursors.SnapshotPosition
    positions = [snapshot(10, 20, frozenset({12, 15})), snapshot(8, 14, frozenset({9})),
                 snapshot(11, 30, frozenset({25}))]
    oldest = cursors.earliest(positions)
    assert oldest == snapshot(8, 14, frozenset({9, 12}))

    class Row:
        def __init__(self, xid):
            self.xid = xid

    for xid in range(0, 40):
        if not all(position.sees(Row(xid)) for position in positions):
            assert not oldest.sees(Row(xid)), xid
    assert cursors.earliest([cursors.SequencePosition(7), cursors.SequencePosition(3)]) \
        == cursors.SequencePosition(3)


@pytest.fixture
def lane_held(monkeypatch):
    """The first read alone blocks until the test lets it go: arrivals meanwhile queue."""
    go, started = Event(), Event()

    def held(*arguments):
        started.set()
        go.wait(10)
        return read_alone(*arguments)

    monkeypatch.setattr(admission, "read_alone", held)
    return started, go


def summary(reply):
    """A reply as its answer renders it (a community row names no user, whoever read it)."""
    return (reply.status, replace(reply.known, cursor=reply.known.cursor.epoch), reply.communities, reply.notifications_unread, reply.community_ids,
            [(row.id, row.type, row.community_id) for row in reply.changes])


@pytest.mark.parametrize("arriving", [5, 60])
def test_polls_arriving_together_are_read_in_one_batch_of_a_fixed_cost(
    seeded, database, lane_held, monkeypatch, arriving
):
    """However many arrive while the one lane is busy: one batched read, five statements at most."""
    app = seeded
    engine = app.extensions["db"]
    started, go = lane_held
    counted, batched = [], arrivals.read_arrivals

    def counting(connection, *arguments):
        with statements(engine) as seen:  # this greenlet's: the batch's reader
            found = batched(connection, *arguments)
        counted.append(seen)
        return found

    monkeypatch.setattr(arrivals, "read_arrivals", counting)
    gate = Admission(engine, lanes=1)
    with app.app_context():
        with read_transaction() as connection:
            cursor = feed.read_state(connection, "u-ada").cursor
        database.psql("INSERT INTO activity (community_id, kind, ref) VALUES ('c-rust', 'post_created', 'p-9')")
        first = gevent.spawn(gate.look, "u-ada", Known(cursor, None))
        assert started.wait(5)
        users = [USERS[n % 3] for n in range(arriving)]
        queued = [gevent.spawn(gate.look, user, Known(cursor, None)) for user in users]
        gevent.sleep(0.05)
        assert len(gate.lanes.queue) == arriving
        go.set()
        replies = [greenlet.get(timeout=10) for greenlet in queued]
        first.get(timeout=10)
        expected = {user: read_alone(engine, user, Known(cursor, None), NO_WATCHES) for user in set(users)}
    assert [summary(reply) for reply in replies] == [summary(expected[user]) for user in users]
    assert [reply.status for reply in replies[:3]] == ["changed", "unchanged", "unchanged"]
    assert len(counted) == 1 and 1 <= len(counted[0]) <= 5
    assert gate.lanes.running == 0 and gate.lanes.queue == []


def test_a_failed_batch_fails_each_of_its_polls_and_frees_its_lane(seeded, lane_held, monkeypatch):
    app = seeded
    started, go = lane_held
    gate = Admission(app.extensions["db"], lanes=1)

    def lost(*_args):
        raise OSError("the database went away")

    monkeypatch.setattr(arrivals, "read_arrivals", lost)
    with app.app_context():
        first = gevent.spawn(gate.look, "u-ada", Known(None, None))
        assert started.wait(5)
        queued = [gevent.spawn(gate.look, "u-grace", Known(None, None)) for _ in range(3)]
        gevent.sleep(0.05)
        go.set()
        assert first.get(timeout=10).status == "reset"
        for greenlet in queued:
            with pytest.raises(OSError):
                greenlet.get(timeout=10)
        assert gate.lanes.running == 0
        # The next arrival reads alone again.
        assert gate.look("u-grace", Known(None, None)).status == "reset"


def test_polls_arriving_at_once_hold_no_more_connections_than_the_lanes(app_factory, auth, monkeypatch):
    """Polls at once: what waits for a read waits in memory, not on the pool: reads in flight never exceed
    ``ADMISSION_READS`` (so a pool larger than that never makes an arriving poll wait for a
    connection, nor time out into a ``503``), and every poll is answered."""
    # A pool with room for every poll: nothing but admission keeps the reads apart.
    app = app_factory(ADMISSION_READS=2, DB_POOL_SIZE=ARRIVING, DB_MAX_OVERFLOW=0)
    result = app.test_cli_runner().invoke(args=["seed-demo"])
    assert result.exit_code == 0, result.output
    client = app.test_client()
    users = ["u-ada", "u-grace", "u-alan"]
    for user in users:  # provisioned: the arrivals only read
        assert client.get("/me/communities", headers=auth(user)).status_code == 200
    in_flight, most = 0, 0

    def holding(read):
        def held(*arguments):
            nonlocal in_flight, most
            in_flight += 1
            most = max(most, in_flight)
            try:
                gevent.sleep(0.02)  # a read holding its connection: the others queue behind it
                return read(*arguments)
            finally:
                in_flight -= 1
        return held

    monkeypatch.setattr(feed, "read_state", holding(feed.read_state))
    monkeypatch.setattr(arrivals, "read_arrivals", holding(arrivals.read_arrivals))
    polls = [gevent.spawn(client.get, "/community-changes/poll?timeout=0", headers=auth(users[n % 3]))
             for n in range(ARRIVING)]
    statuses = [poll.get(timeout=30).status_code for poll in polls]
    assert statuses == [200] * ARRIVING
    assert most == 2
    batches = app.extensions["metrics"].admission_reads
    assert sum_of(batches) > ARRIVING - count_of(batches) > 0  # some were read together


def count_of(histogram):
    return next(s.value for m in histogram.collect() for s in m.samples if s.name.endswith("_count"))


def sum_of(histogram):
    return next(s.value for m in histogram.collect() for s in m.samples if s.name.endswith("_sum"))


def test_callers_new_to_the_worker_arriving_at_once_wait_in_memory_not_on_the_pool(app_factory, auth, monkeypatch):
    """After a deploy every returning client is new to its worker: their user rows are written through
    lanes too, so more polls at once than the pool holds, each caller's write slow, all wait in
    memory, none on the pool (its time-out short here) and none is answered ``503``."""
    app = app_factory(ADMISSION_READS=2, DB_POOL_SIZE=6, DB_MAX_OVERFLOW=0, DB_POOL_TIMEOUT=0.5)
    result = app.test_cli_runner().invoke(args=["seed-demo"])
    assert result.exit_code == 0, result.output
    client = app.test_client()
    from app.store import db

    def slow(write):
        def slowly(*arguments):
            gevent.sleep(0.2)  # a write holding its connection
            return write(*arguments)
        return slowly

    monkeypatch.setattr(db, "insert_if_absent", slow(db.insert_if_absent))
    monkeypatch.setattr(db, "insert_or_update", slow(db.insert_or_update))
    polls = [gevent.spawn(client.get, "/community-changes/poll?timeout=0", headers=auth(f"u-new-{n}"))
             for n in range(4 * ARRIVING)]
    assert [poll.get(timeout=30).status_code for poll in polls] == [200] * (4 * ARRIVING)
