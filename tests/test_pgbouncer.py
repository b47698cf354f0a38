"""The service through a real PgBouncer in transaction mode, its wake source's connections direct.

Debian's pgbouncer runs as this test's child (harness/pgbouncer.py) in front
of the local PostgreSQL; two gunicorn workers pool through it
(``DATABASE_URL``) and keep their wake source's connections, the ``LISTEN``
and the head watcher's election, on PostgreSQL itself (``WAKE_DATABASE_URL``).
PgBouncer needs a database of its own, not a schema: it passes no
``search_path`` through a transaction pool.
"""
import threading

import psycopg2
import pytest
import requests

from bench import stack
from conftest import require_command, require_postgres
from harness import pgbouncer
from harness.polls import POLL_PATH, bearer_token
from harness.servers import Server, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


@pytest.fixture
def database():
    require_postgres()
    database = stack.Database()
    try:
        database.migrate()
        database.seed(10, 0)
        yield database
    finally:
        database.drop()


@pytest.fixture
def bouncer():
    require_command("pgbouncer", "apt-get install pgbouncer")
    bouncer = pgbouncer.PgBouncer(pool_mode="transaction").start()
    yield bouncer
    bouncer.stop()


@pytest.fixture
def server(database, bouncer, tmp_path):
    env = stack.server_environ(database, DATABASE_URL=bouncer.url(database.url), WAKE_DATABASE_URL=database.url,
                               WAKE_SOURCE="watcher", DB_POOL_SIZE=3, DB_MAX_OVERFLOW=2,
                               # Only the watcher's NOTIFY can wake a poll within the test's wait.
                               SAFETY_NET_INTERVAL=120)
    server = Server(env, workers=2, log_path=tmp_path / "gunicorn.log").start()
    yield server
    server.stop()


def headers(user):
    return {"Authorization": f"Bearer {bearer_token(stack.SECRET, user)}"}


def snapshot(server, user):
    answer = requests.get(f"{server.url}{POLL_PATH}?timeout=0", headers=headers(user), timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.json()


def long_poll(server, user, state):
    """Start a long poll from ``state``; ``result`` holds its answer once it comes."""
    result = {}

    def run():
        answer = requests.get(f"{server.url}{POLL_PATH}",
                              params={"cursor": state["cursor"], "hash": state["hash"], "timeout": 50},
                              headers=headers(user), timeout=60)
        result["answer"] = answer

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return result, thread


def test_polls_wake_through_a_transaction_pool_with_the_watcher_connected_directly(database, bouncer, server):
    raw, api = snapshot(server, "u1"), snapshot(server, "u2")
    wait_for(lambda: server.metrics().get("community_sync_head_watcher", 0) >= 1, 15,
             message="no worker became the watcher")
    # A join written in raw SQL, past the pool, and one through the API (pooled).
    first, first_thread = long_poll(server, "u1", raw)
    second, second_thread = long_poll(server, "u2", api)
    wait_for(lambda: server.metrics().get("community_sync_waiting_polls", 0) >= 2, 15,
             message="the polls are not waiting")
    connection = database.connect()
    with connection, connection.cursor() as cursor:
        cursor.execute("INSERT INTO memberships (user_id, community_id, role) VALUES ('u1', 'c-x1', 'member')")
    connection.close()
    joined = requests.put(f"{server.url}/communities/c-x2/members/me", json={}, headers=headers("u2"), timeout=10)
    assert joined.status_code in (200, 201), joined.text
    first_thread.join(30)
    second_thread.join(30)
    for result, community in ((first, "c-x1"), (second, "c-x2")):
        answer = result["answer"]
        assert answer.status_code == 200 and answer.headers["X-Poll-Result"] == "changed", answer.text
        assert community in {entry["id"] for entry in answer.json()["communities"]}

    # The pool's transactions went through PgBouncer ...
    stats = {row["database"]: row for row in bouncer.show("STATS")}
    assert stats[database.name]["total_xact_count"] > 0
    clients = {row.get("application_name") for row in bouncer.show("CLIENTS")}
    # ... and the wake source's sessions did not: PostgreSQL sees them coming from the workers.
    assert not clients & {"community-sync-listener", "community-sync-head-watch"}
    direct = psycopg2.connect(**stack.dsn(database.url))
    try:
        with direct.cursor() as cursor:
            cursor.execute("SELECT application_name, client_port FROM pg_stat_activity WHERE datname = %s "
                           "AND application_name IN ('community-sync-listener', 'community-sync-head-watch')",
                           (database.name,))
            sessions = cursor.fetchall()
    finally:
        direct.close()
    # Two workers: two listeners and two candidates, each from a worker's own socket.
    assert sorted(name for name, _ in sessions) == ["community-sync-head-watch"] * 2 + ["community-sync-listener"] * 2
    assert all(server.worker_connected(port) for _, port in sessions)
