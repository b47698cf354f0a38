"""What every scenario stands on: a database, servers, the client process, counters.

Each run gets a database of its own (``CREATE DATABASE bench_<hex>``) so that
PostgreSQL's per-database statistics count this run's transactions and nobody
else's, and drops it at the end.
"""
import json
import os
import platform
import resource
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import jwt
import psycopg2
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
SECRET = "bench-secret-key-" + "0123456789abcdef" * 3
DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"
TICK = os.sysconf("SC_CLK_TCK")


def raise_fd_limit():
    """10,000 connections need more descriptors than the usual soft limit of 1024."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def token(secret, user_id, ttl=3 * 3600):
    """A bearer token as the platform in front of the service would mint it."""
    now = int(time.time())
    return jwt.encode({"sub": user_id, "iat": now, "exp": now + ttl}, secret, algorithm="HS256")


def log(message):
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def dsn(url):
    """A libpq DSN from a SQLAlchemy-style URL (options such as search_path kept)."""
    parsed = make_url(url)
    parts = {
        "host": parsed.host or "127.0.0.1",
        "port": parsed.port or 5432,
        "user": parsed.username or "postgres",
        "dbname": parsed.database,
    }
    if parsed.password:
        parts["password"] = parsed.password
    parts.update(parsed.query)
    return parts


class Database:
    """A fresh database (or, with ``shared_url``, a fresh schema in an existing one)."""

    def __init__(self, base_url=None, shared_url=None):
        self.base_url = base_url or os.environ.get("BENCH_DATABASE_URL", DEFAULT_URL)
        self.owned = shared_url is None
        if self.owned:
            self.name = f"bench_{secrets.token_hex(5)}"
            with self.admin() as connection, connection.cursor() as cursor:
                cursor.execute(f"CREATE DATABASE {self.name}")
            self.url = make_url(self.base_url).set(database=self.name).render_as_string(hide_password=False)
        else:
            self.name = make_url(shared_url).database
            self.url = shared_url

    @contextmanager
    def admin(self):
        """A connection to the base database, outside this run's statistics."""
        connection = psycopg2.connect(**dsn(self.base_url))
        connection.autocommit = True
        try:
            yield connection
        finally:
            connection.close()

    def connect(self):
        connection = psycopg2.connect(**dsn(self.url), application_name="bench-writer")
        return connection

    def migrate(self):
        env = server_environ(self)
        subprocess.run(
            [sys.executable, "-m", "flask", "--app", "wsgi", "db-upgrade"],
            cwd=ROOT, env=env, check=True, capture_output=True, text=True,
        )

    def seed(self, users, small):
        """``users`` users u0..; everyone in ``c-all``, one of 100 groups, the first
        ``small`` in ``c-small``; ten public communities ``c-x*`` left to join.

        The seeding's change-log rows are dated a day back: the users are idle.
        """
        connection = self.connect()
        with connection, connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO users (id, name) SELECT 'u' || i, 'User ' || i "
                "FROM generate_series(0, %s - 1) AS i", (users,))
            cursor.execute(
                "INSERT INTO communities (id, slug, name, is_public) VALUES "
                "('c-all', 'all', 'Everyone', true), ('c-small', 'small', 'Small', true)")
            cursor.execute(
                "INSERT INTO communities (id, slug, name, is_public) "
                "SELECT 'c-g' || g, 'g' || g, 'Group ' || g, true FROM generate_series(0, 99) AS g "
                "UNION ALL "
                "SELECT 'c-x' || x, 'x' || x, 'Extra ' || x, true FROM generate_series(0, 9) AS x")
            cursor.execute(
                "INSERT INTO memberships (user_id, community_id, role) "
                "SELECT 'u' || i, 'c-all', 'member' FROM generate_series(0, %s - 1) AS i "
                "UNION ALL SELECT 'u' || i, 'c-g' || (i %% 100), 'member' "
                "FROM generate_series(0, %s - 1) AS i "
                "UNION ALL SELECT 'u' || i, 'c-small', 'member' FROM generate_series(0, %s - 1) AS i",
                (users, users, small))
            cursor.execute("UPDATE changes SET at = at - interval '1 day'")
            # Autovacuum's transactions count in pg_stat_database too; the writes of a
            # run would wake it in the middle of an idle window.
            for table in ("users", "communities", "memberships", "changes", "feed_meta"):
                cursor.execute(f"ALTER TABLE {table} SET (autovacuum_enabled = false)")
        connection.close()
        vacuum = psycopg2.connect(**dsn(self.url))
        vacuum.autocommit = True
        with vacuum.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE")
        vacuum.close()

    def backdate(self):
        """Make every user idle: their last change a day older than it is."""
        connection = self.connect()
        with connection, connection.cursor() as cursor:
            cursor.execute("UPDATE changes SET at = at - interval '1 day'")
        connection.close()

    def drop(self):
        if self.owned:
            with self.admin() as connection, connection.cursor() as cursor:
                cursor.execute(f"DROP DATABASE IF EXISTS {self.name} WITH (FORCE)")

    def transactions(self):
        """Committed plus rolled-back transactions of this database so far.

        Backends flush their counters when a transaction ends, at most once a
        second, and an idle backend may hold its last second for up to ten
        seconds: read it only after a settle (see :func:`settle`).
        """
        with self.admin() as connection, connection.cursor() as cursor:
            cursor.execute(
                "SELECT xact_commit + xact_rollback, tup_returned FROM pg_stat_database "
                "WHERE datname = %s", (self.name,))
            row = cursor.fetchone()
        return {"transactions": int(row[0]), "tuples_returned": int(row[1])}


SETTLE = 11.0  # PostgreSQL's idle statistics flush interval (10 s) and a margin


def server_environ(database, **extra):
    env = dict(os.environ)
    env.update({
        "DATABASE_URL": database.url,
        "SECRET_KEY": SECRET,
        "DEMO_MODE": "0",
        "AUTO_MIGRATE": "0",
        "LOG_LEVEL": "warning",
        "POLL_MAX_WAITING": "12000",
        "WORKER_CONNECTIONS": "15000",
        "POLL_MAX_TIMEOUT": "300",
        "RATELIMIT_WRITES": "100000 per minute",
        "PYTHONPATH": str(ROOT),
    })
    env.update({key: str(value) for key, value in extra.items()})
    return env


class Server:
    """``gunicorn <target>`` with the project's gunicorn.conf.py, on a port of its own."""

    def __init__(self, database, target="wsgi:app", workers=1, **env):
        self.port = free_port()
        self.target = target
        self.workers = workers
        self.env = server_environ(database, **env)
        self.process = None

    def start(self):
        command = [
            sys.executable, "-m", "gunicorn", self.target, "-c", str(ROOT / "gunicorn.conf.py"),
            "--bind", f"127.0.0.1:{self.port}", "--workers", str(self.workers),
        ]
        self.process = subprocess.Popen(command, cwd=ROOT, env=self.env, start_new_session=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.target} exited with {self.process.returncode}")
            try:
                self.get("/healthz")
                answered = True
            except urllib.error.HTTPError:
                answered = True  # an app without /healthz answered all the same
            except OSError:
                answered = False
            if answered and len(self.worker_pids()) == self.workers:
                return self
            time.sleep(0.1)
        raise RuntimeError(f"{self.target} did not start")

    def stop(self):
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def get(self, path, headers=None):
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", headers=headers or {})
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()

    def worker_pids(self):
        try:
            with open(f"/proc/{self.process.pid}/task/{self.process.pid}/children") as children:
                return [int(pid) for pid in children.read().split()]
        except OSError:
            return []

    def rss(self):
        """Resident memory of the workers, in bytes (VmRSS)."""
        total = 0
        for pid in self.worker_pids():
            with open(f"/proc/{pid}/status") as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
        return total

    def cpu(self):
        """CPU seconds (user + system) used by the workers so far."""
        total = 0
        for pid in self.worker_pids():
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        return total / TICK

    def metrics(self):
        """The counters of whichever worker answers (all of them with one worker)."""
        _status, body = self.get("/metrics")
        values = {}
        for line in body.decode().splitlines():
            if line.startswith("community_sync_") and " " in line:
                name, value = line.rsplit(" ", 1)
                values[name] = float(value)
        return values

    def waiting(self):
        return self.metrics().get("community_sync_waiting_polls", 0)

    def queries(self):
        return self.metrics().get("community_sync_db_queries_total", 0)


@contextmanager
def running(server):
    server.start()
    try:
        yield server
    finally:
        server.stop()


class ClientProcess:
    """The load generator (``python -m bench.client``), a process of its own."""

    def __init__(self):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.client"], cwd=ROOT, env=server_environ_for_client(),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
        )
        self.expect("ready")

    def send(self, **command):
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()

    def expect(self, event, timeout=None):
        while True:
            line = self.process.stdout.readline()
            if not line:
                raise RuntimeError("the load generator exited")
            message = json.loads(line)
            if message.get("event") == event:
                return message

    def call(self, command, event, **spec):
        self.send(cmd=command, **spec)
        return self.expect(event)

    def close(self):
        if self.process.poll() is None:
            try:
                self.send(cmd="close")
                self.process.wait(timeout=20)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()


def server_environ_for_client():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT)
    return env


def wait_for(predicate, timeout, interval=0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return predicate()


def machine():
    """What the figures were measured on."""
    model = "unknown"
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as meminfo:
        total_kb = int(meminfo.readline().split()[1])
    versions = {}
    for module in ("gevent", "gunicorn", "flask", "sqlalchemy", "psycopg2"):
        try:
            versions[module] = __import__(module).__version__
        except (ImportError, AttributeError):
            pass
    try:
        pg = subprocess.run(["psql", "--version"], capture_output=True, text=True).stdout.strip()
    except OSError:
        pg = ""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                text=True).stdout.strip()
    except OSError:
        commit = ""
    return {
        "commit": commit,
        "cpu": model,
        "cores": os.cpu_count(),
        "memory_gib": round(total_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "packages": versions,
        "postgresql_client": pg,
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def percentile(values, p):
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p * (len(ordered) - 1))))]


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None
