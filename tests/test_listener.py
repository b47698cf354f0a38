"""The PostgreSQL listener: NOTIFY becomes a hint, and a lost connection is made good."""
import secrets
import time

import pytest

from app import listener as listener_module
from conftest import eventually
from app.listener import Listener

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
def test_listener_killed_while_polls_wait_loses_nothing(app_factory, database):
    # The safety net is pushed out of reach: only the listener's reconnect
    # (which re-checks everything) can deliver the change made while it was down.
    app = app_factory(SAFETY_NET_INTERVAL=3600)
    app.test_cli_runner().invoke(args=["seed-demo"])
    hub = app.extensions["hub"]
    assert eventually(lambda: hub.ready)
    reconnects = app.extensions["metrics"].listener_reconnects
    pool = app.extensions["db"].pool
    # This app's listener only: other processes' listeners are not the test's to end.
    pid = hub.listener._connection.get_backend_pid()
    with hub.waiting("u-alan") as ticket:
        database.psql(
            f"SELECT pg_terminate_backend({pid}); "
            "INSERT INTO memberships (user_id, community_id) VALUES ('u-alan', 'c-python')"
        )
        news = hub.wait(ticket, 15)
    assert news and [row.community_id for row in news[0].rows] == ["c-python"]
    assert reconnects._value.get() >= 1
    # The listener's loss also replaced the pool, whose connections a restart
    # would have broken.
    assert app.extensions["db"].pool is not pool
