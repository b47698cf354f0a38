"""Migrations: several workers starting at once with AUTO_MIGRATE all come up."""
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import create_engine, inspect

from app.store.db import normalize_url
from harness.servers import flask


def test_processes_migrating_one_database_at_once_all_succeed(database):
    """As gunicorn's workers do on a first start: each migrates in a process of its own."""
    env = database.environ()
    with ThreadPoolExecutor(4) as pool:
        outcomes = list(pool.map(lambda _: flask(env, "db-upgrade"), range(4)))
    assert len(outcomes) == 4  # flask() raises, with the log, when one fails
    engine = create_engine(normalize_url(database.url))
    try:
        assert {"communities", "memberships", "changes"} <= set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
