"""The batched re-read: a fixed number of statements for any number of waiters."""
from contextlib import ExitStack, contextmanager

import gevent
import pytest
from freezegun import freeze_time
from sqlalchemy import event, text

from conftest import blocked_polls, eventually


class StatementCounter:
    def __init__(self, engine):
        self.count = 0
        self.engine = engine
        event.listen(engine, "before_cursor_execute", self._count)

    def _count(self, *_args):
        self.count += 1

    def close(self):
        event.remove(self.engine, "before_cursor_execute", self._count)


def add_members(app, community_id, count):
    with app.extensions["db"].begin() as connection:
        for n in range(count):
            connection.execute(text("INSERT INTO users (id) VALUES (:u)"), {"u": f"u-m{n}"})
            connection.execute(
                text("INSERT INTO memberships (user_id, community_id) VALUES (:u, :c)"),
                {"u": f"u-m{n}", "c": community_id},
            )
    return [f"u-m{n}" for n in range(count)]


def rename_and_refresh(app, database, hub, users, name):
    with ExitStack() as stack:
        tickets = [stack.enter_context(hub.waiting(user)) for user in users]
        database.psql(f"UPDATE communities SET name = '{name}' WHERE id = 'c-go'")
        counter = StatementCounter(app.extensions["db"])
        try:
            hub.reread.refresh()
        finally:
            counter.close()
        for ticket in tickets:
            news = hub.wait(ticket, 0)
            assert len(news) == 1
            assert [row.type for row in news[0].rows] == ["community_updated"]
            assert [c["name"] for c in news[0].communities] == [name]
    return counter.count


def test_one_rename_costs_the_same_few_statements_for_any_number_of_waiters(quiet_app, database):
    hub = quiet_app.extensions["hub"]
    users = add_members(quiet_app, "c-go", 400)
    few = rename_and_refresh(quiet_app, database, hub, users[:5], "Go 1")
    many = rename_and_refresh(quiet_app, database, hub, users, "Go 2")
    # The new position, the new rows, their recipients, the waiting users'
    # state (plus SQLite's explicit BEGIN), whatever the number of waiters.
    assert few == many <= 5
    # Each rename is one community-scoped row however many members it reached.
    with quiet_app.extensions["db"].connect() as connection:
        renames = connection.scalar(text("SELECT count(*) FROM changes WHERE type = 'community_updated'"))
    assert renames == 2
    assert hub.waiting_polls == 0 and hub.users == {}


def test_refresh_without_news_wakes_nobody(quiet_app):
    hub = quiet_app.extensions["hub"]
    with hub.waiting("u-ada") as ticket:
        hub.reread.refresh()
        assert hub.wait(ticket, 0.01) == []


def test_news_goes_only_to_the_users_it_concerns(quiet_app, database):
    hub = quiet_app.extensions["hub"]
    wakeups = quiet_app.extensions["metrics"].wakeups
    before = wakeups._value.get()
    with hub.waiting("u-ada") as ada, hub.waiting("u-alan") as alan:
        database.psql("INSERT INTO memberships (user_id, community_id) VALUES ('u-alan', 'c-python')")
        hub.reread.refresh()
        assert hub.wait(ada, 0) == []
        news = hub.wait(alan, 0)
    assert [(row.type, row.community_id) for row in news[0].rows] == [("joined", "c-python")]
    assert "c-python" in [c["id"] for c in news[0].communities]
    assert wakeups._value.get() == before + 1


def test_the_position_outlives_the_last_poll_by_one_safety_interval(quiet_app, database):
    """The clients answered last poll again at once: read on for them, then forget."""
    hub = quiet_app.extensions["hub"]
    with freeze_time() as frozen:
        with hub.waiting("u-ada"):
            pass
        kept = hub.vouching.position
        assert kept is not None
        database.psql("INSERT INTO memberships (user_id, community_id) VALUES ('u-ada', 'c-go')")
        frozen.tick(1)
        hub.reread.refresh()
        # Still read on: the join is noted, a re-poll that did not see it is not vouched for.
        assert hub.vouching.position != kept and "u-ada" in hub.vouching.recent
        frozen.tick(hub.reread.safety_interval)
        counter = StatementCounter(quiet_app.extensions["db"])
        try:
            hub.reread.refresh()
        finally:
            counter.close()
        assert hub.vouching.position is None and counter.count == 0


def test_idle_hub_does_no_database_work(app_factory):
    app = app_factory(SAFETY_NET_INTERVAL=0.05)
    hub = app.extensions["hub"]
    counter = StatementCounter(app.extensions["db"])
    try:
        gevent.sleep(0.5)  # ten safety-net ticks with nobody waiting
    finally:
        counter.close()
    assert counter.count == 0 and hub.vouching.position is None


def test_safety_net_catches_what_no_hint_announced(app_factory, database):
    app = app_factory(SAFETY_NET_INTERVAL=0.1)
    app.test_cli_runner().invoke(args=["seed-demo"])
    hub = app.extensions["hub"]
    if hub.wake_source is not None:
        hub.wake_source.stop()  # no NOTIFY: only the safety net is left
    with hub.waiting("u-alan") as ticket:
        database.psql("INSERT INTO memberships (user_id, community_id) VALUES ('u-alan', 'c-rust')")
        news = hub.wait(ticket, 5)
    assert news and news[0].rows[0].community_id == "c-rust"


def fail_once(monkeypatch, module, name, call=1):
    """Make ``module.name`` raise on its ``call``-th call (the first by default), as a database
    going away would; returns the failures."""
    original = getattr(module, name)
    calls, failures = [], []

    def failing_once(*args):
        calls.append(args)
        if len(calls) == call:
            failures.append(True)
            raise RuntimeError("the database went away")
        return original(*args)

    monkeypatch.setattr(module, name, failing_once)
    return failures


def test_re_reads_back_to_back_let_the_rest_of_the_worker_run_between_them(quiet_app, monkeypatch):
    """Under load a hint arrives during every re-read, and a re-read keeps the loop while its
    statements wait: between two re-reads every other ready greenlet (the worker's heartbeat
    among them) still gets its turn."""
    reread = quiet_app.extensions["hub"].reread
    seen = []

    def refresh():
        seen.append("re-read")
        reread.notify()  # the next hint, come while this re-read ran
        if seen.count("re-read") == 5:
            reread.closed = True

    def other():
        while True:
            seen.append("other")
            gevent.sleep(0)

    monkeypatch.setattr(reread, "refresh", refresh)
    monkeypatch.setattr(reread.vouching, "position", object())  # something to re-read from
    ticker = gevent.spawn(other)
    gevent.sleep(0)
    reread.notify()
    loop = reread.start()
    loop.join(timeout=5)
    ticker.kill()
    runs = [index for index, name in enumerate(seen) if name == "re-read"]
    assert len(runs) == 5
    assert all("other" in seen[a:b] for a, b in zip(runs, runs[1:]))


def test_a_failed_re_read_is_retried(quiet_app, database, monkeypatch):
    from app.store import feed

    hub = quiet_app.extensions["hub"]
    hub.reread.safety_interval = 3600
    failures = fail_once(monkeypatch, feed, "read_news")
    hub.start()
    with hub.waiting("u-ada") as ticket:
        database.psql("INSERT INTO memberships (user_id, community_id) VALUES ('u-ada', 'c-go')")
        hub.notify()
        news = hub.wait(ticket, 10)
    assert failures and news and news[0].rows[0].community_id == "c-go"


def test_a_re_read_failing_after_its_first_query_reads_the_same_rows_again(quiet_app, database,
                                                                         monkeypatch):
    """The database going away between a re-read's queries must not leave its rows behind."""
    from app.store import feed

    hub = quiet_app.extensions["hub"]
    failures = fail_once(monkeypatch, feed, "read_states")
    with hub.waiting("u-ada") as ticket:
        database.psql("INSERT INTO memberships (user_id, community_id) VALUES ('u-ada', 'c-go')")
        with pytest.raises(RuntimeError):
            hub.reread.refresh()
        assert hub.wait(ticket, 0) == []
        hub.reread.refresh()
        news = hub.wait(ticket, 0)
    assert failures and [(row.type, row.community_id) for row in news[0].rows] == [("joined", "c-go")]


def test_a_poll_registering_while_a_re_read_begins_gets_that_batch(quiet_app, database, monkeypatch):
    """The waiting users are taken once the batch's snapshot is: a poll in between is among them."""
    from app.store import feed

    hub = quiet_app.extensions["hub"]
    original = feed.read_position
    stack = ExitStack()
    tickets = []

    def registering_first(connection):
        if not tickets:
            # A poll registers, and a rename commits, while the re-read begins.
            tickets.append(stack.enter_context(hub.waiting("u-ada")))
            database.psql("UPDATE communities SET name = 'Pythonistas' WHERE id = 'c-python'")
        return original(connection)

    with stack, hub.waiting("u-grace"):
        monkeypatch.setattr(feed, "read_position", registering_first)
        hub.reread.refresh()
        news = hub.wait(tickets[0], 0)
    assert [(row.type, row.community_id) for row in news[0].rows] == [("community_updated", "c-python")]


def test_a_community_row_is_read_once_however_many_members_wait(quiet_app, database, monkeypatch):
    """A burst in a big community reads rows, not rows times members."""
    from app.store import feed

    hub = quiet_app.extensions["hub"]
    users = add_members(quiet_app, "c-go", 300)
    original = feed.read_news
    batches = []

    def read_news(*args):
        batches.append(original(*args))
        return batches[-1]

    monkeypatch.setattr(feed, "read_news", read_news)
    with ExitStack() as stack:
        tickets = [stack.enter_context(hub.waiting(user)) for user in users]
        database.psql("INSERT INTO activity (community_id, kind, ref) VALUES ('c-go', 'post', 'p-1')")
        database.psql("INSERT INTO activity (community_id, kind, ref) VALUES ('c-go', 'post', 'p-2')")
        hub.reread.refresh()
        woken = [[row.ref for row in hub.wait(ticket, 0)[0].rows] for ticket in tickets]
    assert [row.ref for row in batches[0].rows] == ["p-1", "p-2"]
    assert sorted(batches[0].recipients["c-go"]) == sorted(users)
    assert woken == [["p-1", "p-2"]] * len(users)


def test_what_a_cursor_missed_of_a_batch_is_worked_out_once_for_all_the_members_handed_it(quiet_app, database):
    """A fan-out hands one list to every member, whose clients hold a few cursors between
    them: the rows each cursor did not see are looked for once per cursor, not per member."""
    hub = quiet_app.extensions["hub"]
    users = add_members(quiet_app, "c-go", 50)
    with ExitStack() as stack:
        tickets = [stack.enter_context(hub.waiting(user)) for user in users]
        database.psql("INSERT INTO activity (community_id, kind, ref) VALUES ('c-go', 'post', 'p-1')")
        database.psql("INSERT INTO activity (community_id, kind, ref) VALUES ('c-go', 'post', 'p-2')")
        hub.reread.refresh()
        news = [hub.wait(ticket, 0)[0] for ticket in tickets]
    looked = []

    class Cursor:
        """A client's position that saw p-1, counting the rows it is asked about."""

        def sees(self, row):
            looked.append(row.ref)
            return row.ref == "p-1"

    cursor = Cursor()
    assert [[row.ref for row in item.handed.unseen(cursor)[0]] for item in news] == [["p-2"]] * len(users)
    assert sorted(looked) == ["p-1", "p-2"]


def test_a_cursor_that_saw_some_of_the_newest_rows_is_told_of_older_ones_it_did_not_see():
    """Commits come in any order: a cursor may have seen the newest rows of a list and not an
    older one. What it is handed makes the answer all its unseen rows would, ``truncated`` included."""
    from app import wire
    from app.live.reread import Handed

    class Row:
        type, shared, topic, collapse = "activity", True, None, False

        def __init__(self, id):
            self.id = id

    class Cursor:
        def __init__(self, saw):
            self.saw = saw

        def sees(self, row):
            return self.saw(row.id)

    rows = [Row(n) for n in range(1, 301)]
    handed = Handed(rows)
    for cursor in (Cursor(lambda n: n >= 250), Cursor(lambda n: n < 100), Cursor(lambda n: n % 2)):
        unseen, kinds = handed.unseen(cursor)
        assert wire.capped(unseen) == wire.capped([row for row in rows if not cursor.sees(row)])
        assert kinds.coalescable


def test_a_users_own_change_wakes_before_a_busy_communitys_activity(quiet_app, database):
    """Thousands of members woken by one post must not stand in front of someone's own join."""
    hub = quiet_app.extensions["hub"]
    members = add_members(quiet_app, "c-python", 200)
    woken = []

    def wait(user_id):
        with hub.waiting(user_id) as ticket:
            if hub.wait(ticket, 10):
                woken.append(user_id)

    polls = [gevent.spawn(wait, user_id) for user_id in [*members, "u-alan"]]
    assert eventually(lambda: blocked_polls(hub) == len(polls))  # all read and waiting
    # One re-read finds both: the post reaches every member, the join u-alan alone.
    database.psql("INSERT INTO activity (community_id, kind, ref) VALUES ('c-python', 'post_created', 'p-1');"
                  "INSERT INTO memberships (user_id, community_id) VALUES ('u-alan', 'c-rust')")
    hub.reread.refresh()
    gevent.joinall(polls, timeout=10)
    assert len(woken) == len(members) + 1
    assert woken[0] == "u-alan"


@contextmanager
def a_post_and_a_join(hub, database, members):
    """``members`` and u-alan waiting (their tickets), a post in c-python and u-alan's join of c-rust committed."""
    with ExitStack() as stack:
        tickets = {user: stack.enter_context(hub.waiting(user)) for user in [*members, "u-alan"]}
        database.psql("INSERT INTO activity (community_id, kind, ref) VALUES ('c-python', 'post_created', 'p-1');"
                      "INSERT INTO memberships (user_id, community_id) VALUES ('u-alan', 'c-rust')")
        yield tickets


def test_a_users_own_change_is_handed_over_before_the_woken_members_states_are_read(quiet_app, database,
                                                                                   monkeypatch):
    """The members' states are one slow statement in a burst: the join must not wait for it."""
    from app.store import feed

    hub = quiet_app.extensions["hub"]
    members = add_members(quiet_app, "c-python", 20)
    read_states, reads = feed.read_states, []

    def recording(connection, user_ids):
        reads.append((sorted(user_ids), len(hub.users["u-alan"].news)))
        return read_states(connection, user_ids)

    monkeypatch.setattr(feed, "read_states", recording)
    with a_post_and_a_join(hub, database, members) as tickets:
        hub.reread.refresh()
        news = {user: hub.wait(ticket, 0) for user, ticket in tickets.items()}
    # u-alan's state alone, its news handed over; then the members'.
    assert reads == [(["u-alan"], 0), (sorted(members), 1)]
    assert [row.type for row in news["u-alan"][0].rows] == ["joined"]
    assert all([row.ref for row in news[member][0].rows] == ["p-1"] for member in members)


def test_a_users_own_change_is_answered_before_the_woken_members_states_are_read(quiet_app, database,
                                                                                monkeypatch):
    """Handed over is not enough: the re-read holds the event loop through its statements, and
    the poll of the join must be answered before the members' slow one, not after it."""
    from app.store import feed

    hub = quiet_app.extensions["hub"]
    members = add_members(quiet_app, "c-python", 20)
    read_states, answered, seen = feed.read_states, [], []

    def recording(connection, user_ids):
        seen.append(list(answered))
        return read_states(connection, user_ids)

    monkeypatch.setattr(feed, "read_states", recording)
    with a_post_and_a_join(hub, database, members) as tickets:
        poll = gevent.spawn(lambda: answered.append(bool(hub.wait(tickets["u-alan"], 10))))
        gevent.sleep(0)  # waiting for news
        hub.reread.refresh()
        poll.join(5)
    assert seen == [[], [True]]


def test_a_re_read_failing_after_handing_over_own_changes_reads_the_rest_again(quiet_app, database,
                                                                              monkeypatch):
    """A failure between the two state reads: the members get their rows next time, the joiner nothing new."""
    from app.store import feed

    hub = quiet_app.extensions["hub"]
    members = add_members(quiet_app, "c-python", 3)
    # No coalescing: the members were offered their rows once already, and a
    # window would hold the second offer back (delivered later, not lost).
    hub.reread.coalescing.window = hub.reread.coalescing.floor = 0
    failures = fail_once(monkeypatch, feed, "read_states", call=2)
    with a_post_and_a_join(hub, database, members) as tickets:
        with pytest.raises(RuntimeError):
            hub.reread.refresh()
        first = {user: hub.wait(ticket, 0) for user, ticket in tickets.items()}
        hub.reread.refresh()
        second = {user: hub.wait(ticket, 0) for user, ticket in tickets.items()}
    assert failures
    assert [row.type for row in first["u-alan"][0].rows] == ["joined"]
    assert all(first[member] == [] for member in members)
    assert all([row.ref for row in second[member][0].rows] == ["p-1"] for member in members)
    # Read again from where the failed re-read began, the join comes again; a
    # poll that took it skips it (``PollSession.take``: rows its cursor saw).
    assert [row.type for row in second["u-alan"][0].rows] == ["joined"]
