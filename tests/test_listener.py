"""The wake sources: NOTIFY or a head check becomes a hint, and a lost connection is made good."""
import secrets
import time

import gevent
import psycopg2
import pytest

from app.live import listener as listener_module
from app.live.listener import HeadChecker, HeadWatch, Listener, Watcher
from app.observability import Metrics
from app.live.reread import read_head
from conftest import build_app, eventually

pytestmark = pytest.mark.postgres


@pytest.fixture
def channel(monkeypatch):
    """A channel of the test's own: others share the database, and their triggers notify."""
    name = f"cs_test_{secrets.token_hex(4)}"
    monkeypatch.setattr(listener_module, "CHANNEL", name)
    return name


@pytest.fixture
def listening(pg_database, channel):
    hints, losses = [], []
    listener = Listener(pg_database.url, lambda: hints.append(time.monotonic()),
                        on_lost=lambda: losses.append(True))
    greenlet = listener.start()
    assert eventually(lambda: listener.connected)
    yield listener, hints, losses
    listener.stop()
    greenlet.join(timeout=5)


def test_a_notify_becomes_a_hint(listening, pg_database, channel):
    listener, hints, _ = listening
    # Connecting is a hint of its own: what was notified while away is lost.
    assert len(hints) == 1
    pg_database.psql(f"NOTIFY {channel}")
    assert eventually(lambda: len(hints) == 2)
    pg_database.psql(f"NOTIFY {channel}; NOTIFY {channel}, 'again'")
    assert eventually(lambda: len(hints) >= 3)


def test_a_lost_connection_is_reported_and_made_good(listening, pg_database):
    listener, hints, losses = listening
    pid = listener._connection.get_backend_pid()
    pg_database.psql(f"SELECT pg_terminate_backend({pid})")
    assert eventually(lambda: losses == [True] and listener.connected)
    # Once back, a hint: changes notified while it was down are looked for.
    assert len(hints) == 2
    assert listener._connection.get_backend_pid() != pid


def test_stop_ends_the_greenlet(pg_database, channel):
    listener = Listener(pg_database.url, lambda: None)
    greenlet = listener.start()
    assert eventually(lambda: listener.connected)
    listener.stop()
    greenlet.join(timeout=5)
    assert greenlet.dead and not listener.connected and listener._connection is None


@pytest.mark.parametrize("backend", ["postgres"])
@pytest.mark.parametrize("source", ["notify", "head", "watcher"])
def test_wake_source_killed_while_polls_wait_loses_nothing(app_factory, database, source):
    # The safety net is pushed out of reach: only the wake source's reconnect
    # (which re-checks everything) can deliver the change made while it was down.
    app = app_factory(SAFETY_NET_INTERVAL=3600, WAKE_SOURCE=source)
    app.test_cli_runner().invoke(args=["seed-demo"])
    hub = app.extensions["hub"]
    assert eventually(lambda: hub.ready)
    reconnects = app.extensions["metrics"].wake_source_reconnects
    pool = app.extensions["db"].pool
    # This app's listener only: other processes' listeners are not the test's to end.
    pid = hub.wake_source._connection.get_backend_pid()
    with hub.waiting("u-alan") as ticket:
        database.psql(
            f"SELECT pg_terminate_backend({pid}); "
            "INSERT INTO memberships (user_id, community_id) VALUES ('u-alan', 'c-python')"
        )
        news = hub.wait(ticket, 15)
    assert news and [row.community_id for row in news[0].rows] == ["c-python"]
    assert reconnects._value.get() >= 1
    metrics = app.extensions["metrics"]
    assert metrics.wake_source_up.labels(source)._value.get() == 1
    assert metrics.hints.labels(source)._value.get() >= 2  # connected, then again
    assert metrics.rereads._sum.get() >= 1  # the row, read by a re-read
    # The listener's loss also replaced the pool, whose connections a restart
    # would have broken.
    assert app.extensions["db"].pool is not pool


@pytest.fixture
def migrated(pg_database):
    """The test's schema migrated, and its engine (no hub running)."""
    app = build_app(pg_database, HUB_AUTOSTART=False)
    engine = app.extensions["db"]
    yield engine
    engine.dispose()


def notified(database, connection, sql):
    """Whether ``sql`` run by an operator NOTIFYs a LISTEN on ``connection`` (within a second).

    Only a notification from the operator's own session counts: the channel is
    the database's, which other test runs on the same server write to as well.
    """
    connection.notifies.clear()
    operator = psycopg2.connect(database.url)
    try:
        operator.autocommit = True
        operator.cursor().execute(sql)
        writer = operator.get_backend_pid()
    finally:
        operator.close()

    def arrived():
        connection.poll()
        return any(notify.pid == writer for notify in connection.notifies)

    return eventually(arrived, timeout=1)


def test_each_source_sets_the_logs_notify_switch_for_every_writer(migrated, pg_database):
    watcher = psycopg2.connect(pg_database.url)
    watcher.autocommit = True
    watcher.cursor().execute(f"LISTEN {listener_module.CHANNEL}")
    pg_database.psql("INSERT INTO communities (id, slug, name) VALUES ('c-1', 'c-1', 'One');"
                     "INSERT INTO users (id) VALUES ('u-1'), ('u-2'), ('u-3')")
    join = "INSERT INTO memberships (user_id, community_id) VALUES ('u-{0}', 'c-1')"
    try:
        assert notified(pg_database, watcher, join.format(1))   # as migrated
        checker = HeadChecker(pg_database.url, lambda: None, lambda: None)
        checker.start()
        assert eventually(lambda: checker.connected)
        checker.stop()
        assert not notified(pg_database, watcher, join.format(2))
        assert not notified(pg_database, watcher, "INSERT INTO activity (community_id, kind, ref) "
                                                  "VALUES ('c-1', 'post', 'p-1')")
        listener = Listener(pg_database.url, lambda: None)
        listener.start()
        assert eventually(lambda: listener.connected)
        listener.stop()
        assert notified(pg_database, watcher, join.format(3))
    finally:
        watcher.close()


@pytest.fixture
def checking(migrated, pg_database):
    """A head checker over a position the test sets, and the hints and metrics it produced."""
    hints, held = [], {"position": None}
    metrics = Metrics()
    checker = HeadChecker(pg_database.url, lambda: hints.append(time.monotonic()),
                          lambda: held["position"], metrics=metrics, interval=0.01)
    greenlet = checker.start()
    assert eventually(lambda: checker.connected)
    yield checker, hints, held, metrics
    checker.stop()
    greenlet.join(timeout=5)


def checks(metrics):
    """How many head checks ``metrics`` has timed."""
    return next(sample.value for sample in metrics.head_checks.collect()[0].samples
                if sample.name.endswith("_count"))


def test_the_head_is_checked_only_while_the_hub_holds_a_position(checking, migrated):
    checker, hints, held, metrics = checking
    assert len(hints) == 1  # connecting: whatever changed meanwhile is looked for
    gevent.sleep(0.2)
    assert not checks(metrics)
    held["position"] = read_head(migrated)[1]
    assert eventually(lambda: checks(metrics) >= 3)
    assert len(hints) == 1  # nothing past the position


def test_a_row_past_the_position_is_one_hint_until_the_position_moves(checking, migrated, pg_database):
    checker, hints, held, metrics = checking
    held["position"] = read_head(migrated)[1]
    pg_database.psql("INSERT INTO communities (id, slug, name) VALUES ('c-1', 'c-1', 'One');"
                     "INSERT INTO users (id) VALUES ('u-1');"
                     "INSERT INTO memberships (user_id, community_id) VALUES ('u-1', 'c-1')")
    assert eventually(lambda: len(hints) == 2)
    gevent.sleep(0.2)  # checked some twenty times: the same position, no new hint
    assert len(hints) == 2
    held["position"] = read_head(migrated)[1]  # the re-read moved past the row
    gevent.sleep(0.2)
    assert len(hints) == 2
    pg_database.psql("INSERT INTO activity (community_id, kind, ref) VALUES ('c-1', 'post', 'p-1')")
    assert eventually(lambda: len(hints) == 3)


@pytest.mark.parametrize("source", [Listener, HeadChecker])
def test_a_lost_wake_source_names_host_and_port_not_the_password(source, caplog):
    from harness.servers import free_port

    port = free_port()  # nobody listens there
    arguments = (lambda: None,) if source is Listener else (lambda: None, lambda: None)
    wake_source = source(f"postgresql://sync:hunter2@127.0.0.1:{port}/sync", *arguments)
    greenlet = wake_source.start()
    try:
        assert eventually(lambda: any("wake source lost" in r.getMessage() for r in caplog.records))
    finally:
        wake_source.stop()
        greenlet.join(timeout=5)
    logged = " ".join(record.getMessage() for record in caplog.records)
    assert f"127.0.0.1:{port}" in logged and "hunter2" not in logged


# -- the deployment's one head watcher (WAKE_SOURCE=watcher) -------------------------


@pytest.fixture
def candidates(migrated, pg_database):
    """``start(n)``: n head-watch candidates on the test's schema, stopped after."""
    started = []

    def start(count):
        for _ in range(count):
            candidate = HeadWatch(pg_database.url, metrics=Metrics(), interval=0.005)
            started.append((candidate, candidate.start()))
            assert eventually(lambda: candidate.connected)
        return [candidate for candidate, _ in started[-count:]]

    yield start
    for candidate, greenlet in started:
        candidate.stop()
        greenlet.join(timeout=5)


def leaders(candidates):
    return [candidate for candidate in candidates if candidate.leading]


def test_one_candidate_of_many_watches_and_another_takes_over_when_its_session_ends(candidates, pg_database):
    three = candidates(3)
    assert eventually(lambda: len(leaders(three)) == 1)
    gevent.sleep(0.2)
    assert len(leaders(three)) == 1
    # The watcher's session is killed under it: one watcher again, whoever it is
    # (its own worker, reconnected, may be the first to ask).
    pid = leaders(three)[0]._connection.get_backend_pid()
    pg_database.psql(f"SELECT pg_terminate_backend({pid})")
    assert eventually(lambda: len(leaders(three)) == 1 and leaders(three)[0]._connection.get_backend_pid() != pid,
                      timeout=5)
    gevent.sleep(0.5)
    assert len(leaders(three)) == 1
    # The watcher's worker dies (its connection closes): another takes over
    # (the failover's gap itself is the benchmark's).
    leader = leaders(three)[0]
    leader.stop()
    assert eventually(lambda: leaders(three) and leaders(three)[0] is not leader, timeout=10)
    gevent.sleep(0.5)
    assert len(leaders(three)) == 1


def test_a_candidate_waits_inside_postgresql_sending_nothing_and_leaves_the_queue_when_its_worker_dies(
        candidates, pg_database):
    (leader,) = candidates(1)
    assert eventually(lambda: leader.leading)
    (waiting,) = candidates(1)
    pid = waiting._connection.get_backend_pid()
    watching = psycopg2.connect(pg_database.url)
    watching.autocommit = True

    def backend():
        with watching.cursor() as cursor:
            cursor.execute("SELECT wait_event_type || '/' || wait_event, query_start FROM pg_stat_activity "
                           "WHERE pid = %s", (pid,))
            return cursor.fetchone()

    try:
        # Blocked on the advisory lock, not asking again and again.
        assert eventually(lambda: backend() is not None and backend()[0] == "Lock/advisory")
        asked = backend()[1]
        gevent.sleep(1.5)
        assert backend() == ("Lock/advisory", asked)
        assert not waiting.leading
        # The waiting candidate's worker goes: its backend leaves the queue
        # instead of being granted the lock with nobody to use it.
        waiting.stop()
        assert eventually(lambda: backend() is None, timeout=10)
    finally:
        watching.close()
    assert leader.leading


def test_the_watcher_notifies_for_the_writers_who_never_do(candidates, migrated, pg_database):
    """Every NOTIFY on the channel comes from the watcher's session, none from a writer's."""
    (watcher,) = candidates(1)
    assert eventually(lambda: watcher.leading)
    listening = psycopg2.connect(pg_database.url)
    listening.autocommit = True
    listening.cursor().execute(f"LISTEN {listener_module.CHANNEL}")
    pg_database.psql("INSERT INTO communities (id, slug, name) VALUES ('c-1', 'c-1', 'One');"
                     "INSERT INTO users (id) VALUES ('u-1'), ('u-2')")
    own = watcher._connection.get_backend_pid()
    try:
        for user in ("u-1", "u-2"):
            # A writer's transaction: no NOTIFY of its own (its trigger sees the switch off) ...
            assert not notified(pg_database, listening,
                                f"INSERT INTO memberships (user_id, community_id) VALUES ('{user}', 'c-1')")

            # ... and the watcher's within moments of the commit.
            def from_watcher():
                listening.poll()
                return any(notify.pid == own for notify in listening.notifies)

            assert eventually(from_watcher, timeout=2)
            listening.notifies.clear()
        gevent.sleep(0.1)
        listening.poll()
        assert listening.notifies == []  # one move, one NOTIFY: not one per check
    finally:
        listening.close()


@pytest.mark.parametrize("backend", ["postgres"])
def test_polls_wake_through_the_watcher_and_through_the_safety_net_while_none_is_elected(
        app_factory, database):
    app = app_factory(SAFETY_NET_INTERVAL=30, WAKE_SOURCE="watcher")
    app.test_cli_runner().invoke(args=["seed-demo"])
    hub = app.extensions["hub"]
    assert isinstance(hub.wake_source, Watcher)
    assert eventually(lambda: hub.ready and hub.wake_source.candidate.leading)
    with hub.waiting("u-alan") as ticket:
        started = time.monotonic()
        database.psql("INSERT INTO memberships (user_id, community_id) VALUES ('u-alan', 'c-python')")
        news = hub.wait(ticket, 20)
        # Well before the safety net's 30 s: the watcher's NOTIFY woke it.
        assert news and time.monotonic() - started < 20
    # The watcher's session ends and no candidate is left to take over: the
    # safety net still delivers.
    candidate = hub.wake_source.candidate
    candidate.stop()
    assert eventually(lambda: not candidate.leading)
    with hub.waiting("u-alan") as ticket:
        database.psql("INSERT INTO memberships (user_id, community_id) VALUES ('u-alan', 'c-rust')")
        news = hub.wait(ticket, 40)
        while not news:
            news = hub.wait(ticket, 40)
    assert [row.community_id for item in news for row in item.rows] == ["c-rust"]
