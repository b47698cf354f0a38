"""Fixtures: an app per test on a fresh database, on SQLite and on PostgreSQL.

PostgreSQL tests use TEST_DATABASE_URL (default: the local ``test`` database)
with a schema of their own. When CI=true they must run: an unreachable server
fails them instead of skipping them.
"""
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from app import create_app
from app.auth import mint_token
from app.db import normalize_url

DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/test"
SECRET = "test-secret-key-long-enough-for-every-hmac-variant-0123456789abcdef"
BIN = Path(sys.executable).parent


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


class Database:
    """A fresh, migrated database: a SQLite file or a PostgreSQL schema."""

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


def table_dump(app):
    """Every row of every table, for "nothing changed" assertions."""
    engine = app.extensions["db"]
    tables = ["users", "communities", "memberships", "changes", "feed_meta", "change_actor"]
    with engine.connect() as connection:
        return {
            table: sorted(map(tuple, connection.execute(text(f"SELECT * FROM {table}")).all()), key=repr)
            for table in tables
        }


# -- real servers ----------------------------------------------------------------


def free_port():
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """A real gunicorn (gevent workers) on a database, on a free loopback port."""

    def __init__(self, database, workers=1, port=None, graceful=10, **env):
        self.database = database
        self.workers = workers
        self.graceful = graceful
        self.port = port or free_port()
        self.env = database.environ(AUTO_MIGRATE="1", **env)
        self.process = None
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self, timeout=30):
        import requests

        self.process = subprocess.Popen(
            [str(BIN / "gunicorn"), "wsgi:app", "--bind", f"127.0.0.1:{self.port}",
             "--workers", str(self.workers), "--graceful-timeout", str(self.graceful)],
            env=self.env, cwd=str(Path(__file__).resolve().parent.parent),
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited: {self.process.stderr.read()[-2000:]}")
            try:
                if requests.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise RuntimeError("gunicorn did not become ready")

    def worker_pids(self):
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        return [int(pid) for pid in children.read_text().split()]

    def stop(self):
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stderr:
            self.process.stderr.close()


@pytest.fixture
def server_factory():
    servers = []

    def factory(database, **kwargs):
        server = Server(database, **kwargs).start()
        servers.append(server)
        return server

    yield factory
    for server in servers:
        server.stop()


def bearer(user_id, admin=False):
    """A token minted as the platform would, without an app."""
    import jwt

    claims = {"sub": user_id, "exp": int(time.time()) + 3600}
    if admin:
        claims["adm"] = True
    return {"Authorization": "Bearer " + jwt.encode(claims, SECRET, algorithm="HS256")}
