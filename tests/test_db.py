"""The one way into the database: how its reads wait on PostgreSQL among the worker's greenlets."""
import os
import time

import gevent
import pytest
from psycopg2 import extensions
from sqlalchemy import create_engine

from app.store import db
from app.store.db import holding_the_loop, normalize_url
from conftest import postgres_url, require_postgres


@pytest.fixture
def cooperative_engine():
    """An engine whose psycopg2 waits go through the worker's wait callback, as under gunicorn."""
    require_postgres()
    before = extensions.get_wait_callback()
    extensions.set_wait_callback(db._wait)
    engine = create_engine(normalize_url(postgres_url()))
    try:
        yield engine
    finally:
        engine.dispose()
        extensions.set_wait_callback(before)


def ticks_during(engine, seconds, hold=None):
    """When another greenlet ran, in seconds from the start, while a read of ``seconds`` ran; and its end."""
    ticks = []

    def tick(start):
        while True:
            ticks.append(time.monotonic() - start)
            gevent.sleep(0.005)

    with engine.connect() as connection:
        connection.exec_driver_sql("SELECT 1")  # connected before the clock starts
        start = time.monotonic()
        ticker = gevent.spawn(tick, start)
        gevent.sleep(0)  # the ticker's first tick, at 0
        if hold is None:
            connection.exec_driver_sql(f"SELECT pg_sleep({seconds})")
        else:
            with holding_the_loop(hold):
                connection.exec_driver_sql(f"SELECT pg_sleep({seconds})")
        ended = time.monotonic() - start
    ticker.kill()
    return [t for t in ticks if t > 0.001], ended


def test_a_read_yields_to_other_greenlets_while_it_waits(cooperative_engine):
    ticks, ended = ticks_during(cooperative_engine, 0.3)
    assert ticks and ticks[0] < ended


def test_a_read_holding_the_loop_lets_no_other_greenlet_run_until_it_ends(cooperative_engine):
    ticks, ended = ticks_during(cooperative_engine, 0.3, hold=5)
    assert ended >= 0.3
    assert not ticks or ticks[0] >= ended


def test_a_read_holds_the_loop_only_as_long_as_it_was_allowed(cooperative_engine):
    """A slow database must not stall the worker: past ``most`` the read yields again."""
    ticks, ended = ticks_during(cooperative_engine, 0.6, hold=0.1)
    during = [t for t in ticks if t < ended]
    assert during and during[0] >= 0.1


def test_a_block_holds_the_loop_for_its_bound_in_all_not_per_statement(cooperative_engine):
    """Statements each shorter than the bound, together longer: past the bound they yield, or a
    re-read of many statements would keep the loop past gunicorn's heartbeat."""
    ticks = []
    with cooperative_engine.connect() as connection:
        connection.exec_driver_sql("SELECT 1")
        start = time.monotonic()

        def tick():
            while True:
                ticks.append(time.monotonic() - start)
                gevent.sleep(0.005)

        ticker = gevent.spawn(tick)
        gevent.sleep(0)
        with holding_the_loop(0.4):
            for _ in range(3):
                connection.exec_driver_sql("SELECT pg_sleep(0.25)")
        ended = time.monotonic() - start
    ticker.kill()
    during = [t for t in ticks if 0.001 < t < ended]
    assert during and 0.4 <= during[0] < 0.6


def test_only_the_greenlet_holding_the_loop_holds_it(cooperative_engine):
    """Contexts are per greenlet: a read elsewhere, during another's held block, still yields."""
    def held_block():
        with holding_the_loop(5):
            gevent.sleep(0.5)  # a wait that is not the database's: yields

    holder = gevent.spawn(held_block)
    gevent.sleep(0)
    ticks, ended = ticks_during(cooperative_engine, 0.2)
    holder.join()
    assert ticks and ticks[0] < ended


def test_a_held_read_waits_on_a_socket_past_the_first_thousand(cooperative_engine):
    """A worker holding thousands of polls hands its database connections high descriptors."""
    taken = [os.dup(0) for _ in range(1100)]
    try:
        with cooperative_engine.connect() as connection, holding_the_loop(5):
            assert connection.connection.dbapi_connection.fileno() > 1024
            assert connection.exec_driver_sql("SELECT 42").scalar() == 42
    finally:
        for descriptor in taken:
            os.close(descriptor)
