"""Fixtures: an app per test on a fresh database, on SQLite and on PostgreSQL.

PostgreSQL tests use TEST_DATABASE_URL (default: the local ``test`` database)
with a schema of their own. When CI=true they must run: an unreachable server
fails them instead of skipping them.
"""
import http.client
import json
import os
import shutil
import secrets
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import gevent
import pytest
from hypothesis import settings
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import make_url

from app import create_app
from app.auth import mint_token
from app.store.db import normalize_url
from app.live.coalescing import Coalescing
from app.live.vouching import Vouching
# With CI=true a skip, or an xfail that is not strict, fails the run (tests/no_skips.py).
from no_skips import (pytest_make_collect_report, pytest_runtest_makereport,  # noqa: F401
                      pytest_sessionfinish, pytest_terminal_summary)

DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/test"
SECRET = "test-secret-key-long-enough-for-every-hmac-variant-0123456789abcdef"
BIN = Path(sys.executable).parent

# Hypothesis (tests/test_properties.py). "ci", the default, replays the same
# examples on every run (no example database, nothing written) and is bounded
# so that the file stays within a couple of minutes on two cores.
# HYPOTHESIS_PROFILE=explore draws fresh random examples, many more, and keeps
# any failure in .hypothesis/ to replay it first next time. No deadline in
# either: a request's time depends on the machine, and speed is the benchmarks' job.
settings.register_profile("ci", derandomize=True, database=None, max_examples=500, deadline=None,
                          print_blob=True)
settings.register_profile("explore", max_examples=5000, deadline=None, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def postgres_url():
    return os.environ.get("TEST_DATABASE_URL", DEFAULT_PG)


def _postgres_available():
    try:
        engine = create_engine(normalize_url(postgres_url()))
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        engine.dispose()
        return True
    except Exception:
        return False


def require_postgres():
    if _postgres_available():
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"PostgreSQL at {postgres_url()} is required when CI=true")
    pytest.skip(f"PostgreSQL at {postgres_url()} is not reachable")


def require_command(name, install):
    """The path of the program ``name``: a skip without it, a failure when CI=true."""
    found = shutil.which(name)
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{name} is required when CI=true ({install})")
        pytest.skip(f"{name} is not installed ({install})")
    return found


class Database:
    """A fresh database, empty until an app (or a test) migrates it: a SQLite file or a PostgreSQL schema."""

    def __init__(self, backend, tmp_path):
        self.backend = backend
        if backend == "sqlite":
            self.url = f"sqlite:///{tmp_path / 'test.sqlite3'}"
            self.schema = None
        else:
            require_postgres()
            self.schema = f"t_{secrets.token_hex(6)}"
            admin = create_engine(normalize_url(postgres_url()))
            with admin.begin() as connection:
                connection.execute(text(f"CREATE SCHEMA {self.schema}"))
            admin.dispose()
            base = make_url(postgres_url())
            self.url = base.update_query_dict(
                {"options": f"-csearch_path={self.schema}"}
            ).render_as_string(hide_password=False)

    def drop(self):
        if self.schema:
            admin = create_engine(normalize_url(postgres_url()))
            with admin.begin() as connection:
                connection.execute(text(f"DROP SCHEMA IF EXISTS {self.schema} CASCADE"))
            admin.dispose()

    def psql(self, sql):
        """Run ``sql`` as an operator would, from psql (PostgreSQL) or sqlite3."""
        if self.backend == "postgres":
            url = make_url(postgres_url())
            command = [
                "psql", "-v", "ON_ERROR_STOP=1", "-q", "-X",
                "-h", url.host or "127.0.0.1", "-p", str(url.port or 5432),
                "-U", url.username or "postgres", "-d", url.database or "test",
                "-c", f"SET search_path TO {self.schema}; {sql}",
            ]
            subprocess.run(command, check=True, capture_output=True, text=True)
        else:
            import sqlite3

            connection = sqlite3.connect(make_url(self.url).database, isolation_level=None)
            connection.execute("PRAGMA foreign_keys=ON")
            connection.executescript(sql)
            connection.close()

    def backdated_activity(self, community_id, ref, seconds):
        """Publish activity whose change-log row says it was recorded ``seconds`` ago.

        As from the platform (an ``activity`` insert, moved into the log by its
        trigger), then the row's ``at`` moved back in the same transaction: a
        change as old as a slow worker would leave it.
        """
        insert = (f"INSERT INTO activity (community_id, kind, ref) "
                  f"VALUES ('{community_id}', 'post_created', '{ref}');")
        if self.backend == "postgres":
            backdate = (f"UPDATE changes SET at = at - make_interval(secs => {seconds}) "
                        f"WHERE xid = pg_current_xact_id()::text::bigint;")
        else:
            backdate = (f"UPDATE changes SET at = strftime('%Y-%m-%d %H:%M:%f', at, '-{seconds} seconds') "
                        f"WHERE id = (SELECT max(id) FROM changes);")
        self.psql(f"BEGIN; {insert} {backdate} COMMIT;")

    def environ(self, **extra):
        """Environment for a server or CLI subprocess on this database."""
        env = dict(os.environ)
        env.update({"DATABASE_URL": self.url, "SECRET_KEY": SECRET})
        env.update({key: str(value) for key, value in extra.items()})
        return env


BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param


@pytest.fixture
def database(backend, tmp_path):
    db = Database(backend, tmp_path)
    yield db
    db.drop()


@pytest.fixture
def pg_database(tmp_path):
    db = Database("postgres", tmp_path)
    yield db
    db.drop()


def build_app(database, **overrides):
    config = {
        "TESTING": True,
        "DATABASE_URL": database.url,
        "SECRET_KEY": SECRET,
        "AUTO_MIGRATE": True,
        "DEMO_MODE": False,
        "SAFETY_NET_INTERVAL": 0.2,
    }
    config.update(overrides)
    return create_app(config)


@pytest.fixture
def app_factory(database):
    apps = []

    def factory(**overrides):
        app = build_app(database, **overrides)
        apps.append(app)
        return app

    yield factory
    for app in apps:
        app.extensions["hub"].stop()
        app.extensions["db"].dispose()


@pytest.fixture
def app(app_factory):
    return app_factory()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def token(app):
    def make(user_id, admin=False, name=None, **kwargs):
        with app.app_context():
            return mint_token(user_id, name=name, admin=admin, **kwargs)

    return make


@pytest.fixture
def auth(token):
    """Headers for a user: ``auth("u-ada")``, ``auth("u-admin", admin=True)``."""

    def make(user_id, admin=False, name=None):
        return {"Authorization": f"Bearer {token(user_id, admin=admin, name=name)}"}

    return make


@pytest.fixture
def seeded(app):
    result = app.test_cli_runner().invoke(args=["seed-demo"])
    assert result.exit_code == 0, result.output
    return app


@pytest.fixture
def quiet_app(app_factory):
    """A seeded app whose hub does nothing unless the test tells it to."""
    app = app_factory(HUB_AUTOSTART=False, SAFETY_NET_INTERVAL=3600)
    app.test_cli_runner().invoke(args=["seed-demo"])
    return app


@contextmanager
def statements(engine):
    """The SQL statements run on ``engine`` by this greenlet meanwhile (the hub's own are not counted)."""
    caller = gevent.getcurrent()
    seen = []

    def note(_conn, _cursor, statement, *_args):
        if gevent.getcurrent() is caller:
            seen.append(" ".join(statement.split()))

    event.listen(engine, "before_cursor_execute", note)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", note)


def eventually(condition, timeout=10):
    """True once ``condition()`` holds, letting greenlets run meanwhile; False after ``timeout``."""
    with gevent.Timeout(timeout, False):
        while not condition():
            gevent.sleep(0.01)
    return bool(condition())


def blocked_polls(hub):
    """How many polls are blocked in ``hub.wait`` now: read, registered and waiting for news."""
    return sum(waiters.event.linkcount() for waiters in hub.users.values())


def until_blocked(hub, greenlet, timeout=10):
    """Return ``greenlet`` (a poll) once one more poll waits in ``hub``.

    A poll that ends first (answered at once, or failed) fails the test: a
    test that means to watch a waiting poll would otherwise go on with an
    answer given before anything it does next.
    """
    before = blocked_polls(hub)
    with gevent.Timeout(timeout, False):
        while not greenlet.dead:
            if blocked_polls(hub) > before:
                return greenlet
            gevent.sleep(0.01)
    if greenlet.dead:
        outcome = greenlet.exception if greenlet.exception is not None else greenlet.value
        pytest.fail(f"the poll ended without waiting: {outcome!r}")
    pytest.fail(f"the poll never waited (within {timeout} s)")


def until_lock_waited_for(engine, pid, timeout=10):
    """Return once another PostgreSQL backend waits for a lock that backend ``pid`` holds.

    A test that means to watch a writer wait would otherwise go on before it
    does: a lock taken late passes quietly.
    """
    query = text("SELECT count(*) FROM pg_stat_activity WHERE :pid = ANY(pg_blocking_pids(pid))")

    def waited_for():
        # pg_stat_activity is read once per transaction: each look is a transaction of its own.
        with engine.connect() as connection:
            return connection.scalar(query, {"pid": pid}) > 0

    if not eventually(waited_for, timeout):
        pytest.fail(f"nothing waited for the locks of backend {pid} (within {timeout} s)")


@pytest.fixture(autouse=True)
def vouching_checks(monkeypatch):
    """Every test asserts the vouching and coalescing invariants after each update (off in production)."""
    monkeypatch.setattr(Vouching, "checking", True)
    monkeypatch.setattr(Coalescing, "checking", True)


def assert_problem(response, status):
    """``response`` is an RFC 9457 problem with ``status``, leaking no traceback; its body."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.content_type == "application/problem+json"
    body = response.get_json()
    assert body["status"] == status
    assert {"type", "title", "detail"} <= set(body)
    assert "Traceback" not in response.get_data(as_text=True)
    return body


def table_dump(app):
    """Every row of every table, for "nothing changed" assertions."""
    engine = app.extensions["db"]
    tables = ["users", "communities", "memberships", "changes", "feed_meta", "change_actor", "activity"]
    with engine.connect() as connection:
        return {
            table: sorted(map(tuple, connection.execute(text(f"SELECT * FROM {table}")).all()), key=repr)
            for table in tables
        }


# -- real servers ----------------------------------------------------------------


@pytest.fixture
def server_factory(tmp_path):
    """``factory(database, workers=1, graceful=10, **env)``: a real gunicorn on ``database``, ready.

    gevent workers on a free loopback port, migrating on start; ``env`` adds
    settings. Every server started is stopped after the test.
    """
    from harness.servers import Server

    servers = []

    def factory(database, workers=1, graceful=10, **env):
        server = Server(database.environ(AUTO_MIGRATE="1", **env), workers=workers, graceful=graceful,
                        log_path=tmp_path / f"gunicorn-{len(servers)}.log")
        servers.append(server)
        return server.start()

    yield factory
    for server in servers:
        server.stop()


class Connection:
    """A keep-alive connection to a gunicorn server, and the worker that serves it."""

    def __init__(self, server):
        self.http = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        self.get("/healthz")
        self.worker = server.worker_serving(self.http.sock.getsockname()[1])

    def get(self, path, headers=None):
        self.send(path, headers)
        return self.answer()

    def send(self, path, headers=None, method="GET", json_body=None):
        headers = dict(headers or {})
        body = None
        if json_body is not None:
            body = json.dumps(json_body)
            headers["Content-Type"] = "application/json"
        self.http.request(method, path, body=body, headers=headers)

    def call(self, method, path, headers=None, json_body=None):
        self.send(path, headers, method, json_body)
        return self.answer()

    def answer(self):
        response = self.http.getresponse()
        body = response.read()
        return response.status, json.loads(body) if body else None

    def close(self):
        self.http.close()


@pytest.fixture
def two_workers(server_factory, database):
    """``start(**settings)``: a seeded two-worker server and a connection to each worker, closed after."""
    opened = []

    def start(**settings):
        server = server_factory(database, workers=2, RATELIMIT_WRITES="100000 per minute", **settings)
        from harness.servers import flask

        flask(server.env, "seed-demo")
        opened.extend(one_connection_per_worker(server))
        return server, opened[0], opened[1]

    yield start
    for connection in opened:
        connection.close()


def one_connection_per_worker(server, tries=200):
    """Keep-alive connections served by two different workers (the kernel decides who accepts)."""
    found, spare = {}, []
    for _ in range(tries):
        connection = Connection(server)
        if connection.worker is not None and connection.worker not in found:
            found[connection.worker] = connection
        else:
            spare.append(connection)
        if len(found) == 2:
            break
    for connection in spare:
        connection.close()
    assert len(found) == 2, "every connection went to one worker"
    return list(found.values())


def bearer(user_id, admin=False):
    """A token minted as the platform would, without an app."""
    import jwt

    claims = {"sub": user_id, "exp": int(time.time()) + 3600}
    if admin:
        claims["adm"] = True
    return {"Authorization": "Bearer " + jwt.encode(claims, SECRET, algorithm="HS256")}


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium, one per test module (the browser tests')."""
    from playwright.sync_api import sync_playwright

    from browser_support import launch_chromium

    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        yield browser
        browser.close()
