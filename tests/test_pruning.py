"""Retention: the pruner's timer, started and stopped with the hub."""
import gevent
from sqlalchemy import text

from app.store import feed
from app.store.pruning import Pruner
from conftest import eventually


def count_changes(engine):
    with engine.connect() as connection:
        return connection.scalar(text("SELECT count(*) FROM changes"))




def test_the_timer_prunes_until_stopped(seeded, database):
    engine = seeded.extensions["db"]
    assert count_changes(engine) > 0
    # Nothing is kept: every row is past the retention period at once.
    pruner = Pruner(engine, retention=-3600, interval=0.05)
    greenlet = pruner.start()
    assert eventually(lambda: count_changes(engine) == 0)
    database.psql("INSERT INTO memberships (user_id, community_id) VALUES ('u-alan', 'c-python')")
    assert eventually(lambda: count_changes(engine) == 0)
    pruner.stop()
    greenlet.join(timeout=5)
    assert greenlet.dead
    database.psql("INSERT INTO memberships (user_id, community_id) VALUES ('u-alan', 'c-rust')")
    gevent.sleep(0.2)
    assert count_changes(engine) == 1


def test_a_failed_prune_is_tried_again_next_interval(seeded, monkeypatch):
    engine = seeded.extensions["db"]
    original = feed.prune
    calls = []

    def failing_once(session, cutoff):
        calls.append(cutoff)
        if len(calls) == 1:
            raise RuntimeError("the database went away")
        return original(session, cutoff)

    monkeypatch.setattr(feed, "prune", failing_once)
    pruner = Pruner(engine, retention=-3600, interval=0.05)
    greenlet = pruner.start()
    try:
        assert eventually(lambda: count_changes(engine) == 0)
    finally:
        pruner.stop()
        greenlet.join(timeout=5)
    assert len(calls) >= 2


def test_the_hub_starts_and_stops_its_pruner(app_factory, database):
    app = app_factory(CHANGE_RETENTION=0, PRUNE_INTERVAL=1)
    app.test_cli_runner().invoke(args=["seed-demo"])
    engine = app.extensions["db"]
    assert eventually(lambda: count_changes(engine) == 0)  # within its first interval
    app.extensions["hub"].stop()
    database.psql("INSERT INTO memberships (user_id, community_id) VALUES ('u-alan', 'c-python')")
    gevent.sleep(1.5)  # past the next interval (at most 1.1 s)
    assert count_changes(engine) == 1
