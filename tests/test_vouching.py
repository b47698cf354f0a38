"""Vouching: what the hub read, and when a re-poll may skip its read.

Its state changes between database calls without a lock, so these tests look
at the interleavings that matter: a re-read's rows noted before anything
yields, and polls subscribing while nobody waits or while the position is
being taken. ``Vouching.check()`` runs after every update (conftest).
"""
from collections import namedtuple

import gevent
import greenlet
import pytest
from gevent.event import Event

from app import wire
from app.store import cursors, feed
from app.live import vouching
from app.live.session import Known
from app.live.vouching import Vouching

Row = namedtuple("Row", "id user_id shared community_id type topic collapse public",
                 defaults=(False, None, "activity", None, False, False))
EPOCH = "e1"


def at(n):
    return cursors.Cursor(EPOCH, cursors.SequencePosition(n))


def heads(*numbers):
    """A read_head that returns these positions in turn."""
    positions = iter(numbers)
    return lambda: (EPOCH, cursors.SequencePosition(next(positions)))


def served(state, user_id="u-ada", digest="h1"):
    state.served_state(user_id, Known(None, digest))
    return state


def test_vouches_for_a_cursor_that_saw_every_row_read_since():
    state = served(Vouching(heads(10)))
    assert not state.vouches("u-ada", at(10), "h1")  # nothing read yet: no position
    state.ensure_position()
    assert state.vouches("u-ada", at(10), "h1") and state.vouches("u-ada", at(12), "h1")
    assert not state.vouches("u-ada", at(9), "h1")  # older than what was read from
    assert not state.vouches("u-ada", cursors.Cursor("e2", at(10).position), "h1")
    assert not state.vouches("u-ada", at(10), "h2")  # not the hash last served
    assert not state.vouches("u-ada", None, "h1") and not state.vouches("u-ada", at(10), None)
    assert not state.vouches("u-alan", at(10), "h1")  # never served here

    state.advance([Row(11, "u-ada"), Row(12, "u-alan")], cursors.SequencePosition(12))
    assert not state.vouches("u-ada", at(10), "h1")  # the cursor did not see row 11
    assert state.vouches("u-ada", at(11), "h1")
    assert state.position == cursors.SequencePosition(12)


def test_a_served_state_is_current_until_a_row_of_the_user_or_its_communities_is_read():
    state = Vouching(heads(10))
    state.ensure_position()
    state.served_state("u-ada", Known(at(10), "h1"), [{"id": "c-go"}])
    state.served_state("u-alan", Known(None, "h2"), [{"id": "c-go"}])  # no cursor: unknown when
    assert state.current("u-ada", "h1")
    assert not state.current("u-ada", "h0")  # not the hash served
    assert not state.current("u-alan", "h2") and not state.current("u-grace", "h1")

    state.advance([Row(11, "u-alan"), Row(12, None, True, "c-rust")], cursors.SequencePosition(12))
    assert state.current("u-ada", "h1")  # another user's row, another community's
    state.advance([Row(13, None, True, "c-go")], cursors.SequencePosition(13))
    assert not state.current("u-ada", "h1")  # a rename of one of its communities
    state.served_state("u-ada", Known(at(13), "h3"), [{"id": "c-go"}])
    assert state.current("u-ada", "h3")
    state.advance([Row(14, "u-ada")], cursors.SequencePosition(14))
    assert not state.current("u-ada", "h3")


def test_a_cursor_that_missed_only_its_communities_activity_is_owed_those_rows_without_a_read():
    state = Vouching(heads(10))
    state.ensure_position()
    state.served_state("u-ada", Known(at(10), "h1"), [{"id": "c-go"}, {"id": "c-rust"}])
    state.advance([Row(11, None, True, "c-rust"), Row(12, None, True, "c-go"), Row(13, None, True, "c-ops")],
                  cursors.SequencePosition(13))
    # Its communities' activity, oldest first; another community's is not its business.
    assert [row.id for row in state.unseen("u-ada", at(10), "h1")] == [11, 12]
    assert [row.id for row in state.unseen("u-ada", at(11), "h1")] == [12]
    assert state.unseen("u-ada", at(12), "h1") == () and state.vouches("u-ada", at(12), "h1")
    assert not state.vouches("u-ada", at(10), "h1")  # owed rows: not current
    assert state.unseen("u-ada", at(10), "h0") is None  # not the hash served
    assert state.unseen("u-ada", at(9), "h1") is None  # older than what was read from

    state.advance([Row(14, None, True, "c-go", "renamed")], cursors.SequencePosition(14))
    assert state.unseen("u-ada", at(13), "h1") is None  # its state changed: read it
    state.served_state("u-ada", Known(at(14), "h2"), [{"id": "c-go"}])
    state.advance([Row(15, "u-ada", False, None, "notification")], cursors.SequencePosition(15))
    assert state.unseen("u-ada", at(14), "h2") is None  # a change of its own: read it


def test_a_poll_watching_topics_is_owed_its_communities_topics_and_reads_for_any_other_community():
    state = Vouching(heads(10))
    state.ensure_position()
    state.served_state("u-ada", Known(at(10), "h1"), [{"id": "c-go"}])
    state.advance([Row(11, None, True, "c-go", "activity", "thread:t-1"),
                   Row(12, None, True, "c-python", "activity", "story:s-1", public=True)],
                  cursors.SequencePosition(12))
    # A topic's rows are kept with its community's, and handed to its members' polls (which keep
    # those their watches cover); a public community the user is not in is followed by reading.
    assert [row.id for row in state.unseen("u-ada", at(10), "h1", frozenset({"c-go"}))] == [11]
    assert state.unseen("u-ada", at(10), "h1", frozenset({"c-go", "c-python"})) is None
    state.served_state("u-grace", Known(at(10), "h2"))  # its communities unknown
    assert state.unseen("u-grace", at(12), "h2", frozenset({"c-go"})) is None


def test_a_cursor_is_owed_only_as_much_activity_as_an_answer_carries(monkeypatch):
    """One row more than an answer carries: it keeps the newest and says it dropped some."""
    monkeypatch.setattr(wire, "MAX_PUBLISHED_PER_ANSWER", 2)
    state = Vouching(heads(0))
    state.ensure_position()
    state.served_state("u-ada", Known(at(0), "h1"), [{"id": "c-go"}, {"id": "c-rust"}])
    state.advance([Row(n, None, True, "c-go" if n % 2 else "c-rust") for n in range(1, 6)],
                  cursors.SequencePosition(5))
    assert [row.id for row in state.unseen("u-ada", at(0), "h1")] == [3, 4, 5]
    assert [row.id for row in state.unseen("u-ada", at(3), "h1")] == [4, 5]


def test_a_community_too_busy_to_keep_whole_owes_nothing_without_a_read(monkeypatch):
    monkeypatch.setattr(vouching, "ROWS_PER_COMMUNITY", 3)
    state = Vouching(heads(0))
    state.ensure_position()
    state.served_state("u-ada", Known(at(0), "h1"), [{"id": "c-go"}])
    state.served_state("u-alan", Known(at(0), "h2"))  # its communities unknown
    for n in range(1, 4):
        state.advance([Row(n, None, True, "c-go")], cursors.SequencePosition(n))
    assert len(state.unseen("u-ada", at(0), "h1")) == 3 and state.kept == 3
    assert state.unseen("u-alan", at(0), "h2") is None  # any of them may be its
    state.advance([Row(4, None, True, "c-go")], cursors.SequencePosition(4))
    assert state.recent_communities["c-go"] is None and state.kept == 0
    assert state.unseen("u-ada", at(3), "h1") is None


def test_this_processs_own_write_is_not_current_until_a_re_read_that_began_after_it():
    state = Vouching(heads(10))
    state.ensure_position()
    state.served_state("u-ada", Known(at(10), "h1"), [])
    writes = state.writes
    state.wrote()
    assert not state.current("u-ada", "h1")
    state.advance([], cursors.SequencePosition(11), writes)  # began before the write
    assert not state.current("u-ada", "h1")
    state.advance([], cursors.SequencePosition(12), state.writes)
    assert state.current("u-ada", "h1")


def test_a_busy_user_is_not_tracked_row_by_row():
    state = served(Vouching(heads(0)))
    state.ensure_position()
    for n in range(1, vouching.ROWS_PER_USER + 2):
        state.advance([Row(n, "u-ada")], cursors.SequencePosition(n))
    assert state.recent["u-ada"] is None
    assert not state.vouches("u-ada", at(100), "h1")


def test_a_row_read_twice_is_noted_once_and_a_busy_user_stays_untracked():
    # Overlapping re-reads may both read a row: it is one of the user's rows, not two.
    state = served(Vouching(heads(0)))
    state.ensure_position()
    for _ in range(vouching.ROWS_PER_USER + 1):
        state.advance([Row(1, "u-ada")], cursors.SequencePosition(1))
    assert state.recent["u-ada"] == (Row(1, "u-ada"),)
    assert state.vouches("u-ada", at(1), "h1")
    for n in range(2, vouching.ROWS_PER_USER + 4):
        state.advance([Row(n, "u-ada")], cursors.SequencePosition(n))
    assert state.recent["u-ada"] is None


def test_old_or_large_bookkeeping_starts_over_from_the_latest_position(monkeypatch):
    state = served(Vouching(heads(0)))
    state.ensure_position()
    state.advance([Row(1, "u-ada")], cursors.SequencePosition(1))
    monkeypatch.setattr(vouching, "RECENT_SECONDS", -1)
    state.advance([Row(2, "u-alan")], cursors.SequencePosition(2))
    assert state.since == cursors.SequencePosition(2) and state.recent == {}
    assert not state.vouches("u-ada", at(1), "h1")  # older cursors get a read again
    assert state.vouches("u-ada", at(2), "h1")


def test_bookkeeping_starts_over_only_past_its_size_limit(monkeypatch):
    monkeypatch.setattr(vouching, "RECENT_USERS", 2)
    state = served(Vouching(heads(0)))
    state.ensure_position()
    state.advance([Row(1, "u-ada"), Row(2, "u-alan")], cursors.SequencePosition(2))
    state.advance([Row(3, "u-grace")], cursors.SequencePosition(3))  # 2 tracked: at the limit, kept
    assert state.since == cursors.SequencePosition(0) and set(state.recent) == {"u-ada", "u-alan", "u-grace"}
    state.advance([Row(4, "u-ada")], cursors.SequencePosition(4))  # 3 tracked: past it
    assert state.since == cursors.SequencePosition(4) and state.recent == {}


def test_a_user_is_tracked_row_by_row_up_to_the_limit():
    state = served(Vouching(heads(0)))
    state.ensure_position()
    for n in range(1, vouching.ROWS_PER_USER + 1):
        state.advance([Row(n, "u-ada")], cursors.SequencePosition(n))
    assert len(state.recent["u-ada"]) == vouching.ROWS_PER_USER
    assert state.vouches("u-ada", at(vouching.ROWS_PER_USER), "h1")


def test_check_catches_a_broken_state():
    state = Vouching(heads(0))
    state.recent = {"u-ada": (Row(1, "u-ada"),)}
    with pytest.raises(AssertionError, match="nothing to vouch from"):
        state.check()
    state.ensure_position()
    state.recent = {"u-ada": (Row(1, "u-alan"),)}
    with pytest.raises(AssertionError, match="another user's row"):
        state.check()
    state.recent = {}
    state.position = None
    with pytest.raises(AssertionError, match="forgotten"):
        state.check()


def test_checks_run_after_updates_only_when_switched_on(monkeypatch):
    state = Vouching(heads(0))
    state.recent = {"u-ada": (Row(1, "u-ada"),)}  # rows noted with no ``since``
    monkeypatch.setattr(Vouching, "checking", False)
    state.advance([], cursors.SequencePosition(1))  # production pays nothing for check()
    monkeypatch.setattr(Vouching, "checking", True)
    with pytest.raises(AssertionError, match="nothing to vouch from"):
        state.advance([], cursors.SequencePosition(2))


# -- polls subscribing while nobody waits, or while the position is taken -----


def slow_heads(gate, *numbers):
    """A read_head that yields (as a database read does) until ``gate`` is set."""
    reads = []
    positions = iter(numbers)

    def read_head():
        reads.append(True)
        gate.wait()
        return EPOCH, cursors.SequencePosition(next(positions))

    return read_head, reads


def test_polls_subscribing_together_take_one_position():
    gate = Event()
    read_head, reads = slow_heads(gate, 10, 20)
    state = Vouching(read_head)
    polls = [gevent.spawn(state.ensure_position) for _ in range(3)]
    gevent.sleep(0)
    assert reads == [True]  # one reads; the others wait for it
    gate.set()
    gevent.joinall(polls, timeout=5, raise_error=True)
    assert len(reads) == 1 and state.position == state.since == cursors.SequencePosition(10)


def test_a_poll_subscribing_while_nobody_waits_reads_from_a_fresh_position():
    state = served(Vouching(heads(10, 20)))
    state.ensure_position()
    state.advance([], cursors.SequencePosition(15))
    state.forget()  # the last poll left
    assert state.position is None and not state.vouches("u-ada", at(15), "h1")
    state.ensure_position()
    # Changes 16..20 were never read by this hub: a cursor before them gets a read.
    assert state.since == cursors.SequencePosition(20)
    assert not state.vouches("u-ada", at(15), "h1") and state.vouches("u-ada", at(20), "h1")


def test_the_last_poll_leaving_while_the_position_is_taken():
    gate = Event()
    read_head, _ = slow_heads(gate, 10)
    state = Vouching(read_head)
    taking = gevent.spawn(state.ensure_position)
    gevent.sleep(0)
    state.forget()
    gate.set()
    taking.get(timeout=5)
    assert state.position == state.since == cursors.SequencePosition(10) and state.recent == {}


def test_a_re_read_finishing_after_the_position_was_taken_again():
    # A re-read started from 10; meanwhile every poll left and a new one took
    # position 12. The re-read's rows (up to 13) must still keep a cursor that
    # did not see them from being vouched for.
    state = served(Vouching(heads(10, 12)))
    state.ensure_position()
    state.forget()
    state.ensure_position()
    state.advance([Row(11, "u-ada"), Row(13, "u-ada")], cursors.SequencePosition(13))
    assert not state.vouches("u-ada", at(12), "h1")
    assert state.vouches("u-ada", at(13), "h1")


def test_a_re_read_that_delivered_nothing_rewinds_only_the_position_it_advanced():
    state = served(Vouching(heads(10, 12, 20)))
    state.ensure_position()
    state.advance([], cursors.SequencePosition(13))
    state.rewind(cursors.SequencePosition(10), cursors.SequencePosition(13))
    assert state.position == cursors.SequencePosition(10)
    # Meanwhile every poll left and a new one took position 12: that one stays.
    state.forget()
    state.ensure_position()
    state.rewind(cursors.SequencePosition(10), cursors.SequencePosition(13))
    assert state.position == cursors.SequencePosition(12)
    # A re-read that failed before advancing moves nothing either.
    state.rewind(cursors.SequencePosition(10), None)
    assert state.position == cursors.SequencePosition(12)


# -- a re-read notes its rows before it yields ---------------------------------


def noted(state, row):
    kept = state.recent.get(row.user_id, ())
    return state.since.sees(row) or kept is None or row in kept


@pytest.fixture
def yielding_next_query(monkeypatch):
    """The re-read's query after the rows yields even on SQLite, as it does on PostgreSQL."""
    original = feed.read_states

    def read_states(*args):
        gevent.sleep(0)
        return original(*args)

    monkeypatch.setattr(feed, "read_states", read_states)


def test_a_re_read_notes_its_rows_before_anything_yields(
    quiet_app, database, monkeypatch, yielding_next_query
):
    hub = quiet_app.extensions["hub"]
    state = hub.vouching
    returned = []
    original = feed.read_news

    def read_news(*args):
        batch = original(*args)
        returned.extend(batch.rows)
        return batch

    monkeypatch.setattr(feed, "read_news", read_news)
    broken = []

    def at_every_switch(event, args):
        origin, _target = args
        if origin is not rereading or not returned:
            return
        # Every row the database returned is noted: a poll arriving now is not
        # vouched past it.
        if not all(noted(state, row) for row in returned):
            broken.append(event)
        elif state.vouches("u-ada", before, "h1"):
            broken.append(event)

    with hub.waiting("u-alan"), hub.waiting("u-ada"):
        before = cursors.Cursor(state.epoch, state.position)
        state.served_state("u-ada", Known(None, "h1"))
        assert state.vouches("u-ada", before, "h1")
        database.psql("INSERT INTO memberships (user_id, community_id) VALUES ('u-ada', 'c-go')")
        rereading = gevent.spawn(hub.reread.refresh)
        previous = greenlet.settrace(at_every_switch)
        try:
            rereading.get(timeout=10)
        finally:
            greenlet.settrace(previous)
    assert [row.user_id for row in returned] == ["u-ada"]
    assert broken == []


def test_a_poll_subscribing_after_a_re_read_listed_the_waiting_users_is_not_vouched_for(
    quiet_app, database, monkeypatch
):
    """That batch resolved its community rows to the users it listed only: the newcomer must read."""
    hub = quiet_app.extensions["hub"]
    state = hub.vouching
    original = state.advance
    asked = []

    def advance(rows, position, writes):
        # A poll of u-ada subscribes while the re-read's query runs.
        with hub.waiting("u-ada"):
            asked.append(state.vouches("u-ada", before, "h1"))
        original(rows, position, writes)

    with hub.waiting("u-alan"):
        before = cursors.Cursor(state.epoch, state.position)
        state.served_state("u-ada", Known(None, "h1"), [{"id": "c-python"}])
        assert state.vouches("u-ada", before, "h1")
        database.psql("UPDATE communities SET name = 'Pythonistas' WHERE id = 'c-python'")
        monkeypatch.setattr(state, "advance", advance)
        hub.reread.refresh()
        assert asked == [False]
        # Once the rows are noted, the rename is what refuses.
        assert not state.vouches("u-ada", before, "h1")
        assert state.listing is False and not state.unlisted


def test_a_poll_subscribing_while_a_re_read_runs_waits_for_its_rows_then_is_vouched_for(
    quiet_app, database, monkeypatch
):
    """In a fan-out the answered clients poll again while the hub re-reads: they need not read."""
    hub = quiet_app.extensions["hub"]
    state = hub.vouching
    original = state.advance
    asked = []

    def poll_again():
        with hub.waiting("u-ada"):
            state.settle("u-ada", 5.0)
            asked.append(state.vouches("u-ada", before, "h1"))

    def advance(rows, position, writes):
        # A poll of u-ada subscribes while the re-read's query runs, and waits for its rows.
        polling = gevent.spawn(poll_again)
        gevent.sleep(0.01)
        assert not polling.dead and "u-ada" in state.unlisted
        original(rows, position, writes)
        polling.join()

    monkeypatch.setattr(state, "advance", advance)
    with hub.waiting("u-alan"):
        before = cursors.Cursor(state.epoch, state.position)
        state.served_state("u-ada", Known(None, "h1"), [{"id": "c-python"}])
        # A community of others: once the rows are noted, nothing refuses.
        database.psql("UPDATE communities SET name = 'Gophers' WHERE id = 'c-go'")
        hub.reread.refresh()
        # Its own community: the rename, noted, refuses.
        database.psql("UPDATE communities SET name = 'Pythonistas' WHERE id = 'c-python'")
        hub.reread.refresh()
    assert asked == [True, False]
    assert state.listing is False and not state.unlisted
