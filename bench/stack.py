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
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from contextlib import contextmanager
from datetime import datetime, timezone

import psycopg2
from prometheus_client import CollectorRegistry, multiprocess
from sqlalchemy.engine import make_url

from harness import servers
from harness.servers import ROOT, flask, python_environ

SECRET = "bench-secret-key-" + "0123456789abcdef" * 3
DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"
TICK = os.sysconf("SC_CLK_TCK")


def raise_fd_limit():
    """10,000 connections need more descriptors than the usual soft limit of 1024."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def log(message):
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


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

    def migrate(self, revision="head"):
        """Migrate to ``revision``: head, or an older schema to measure against."""
        # Straight to PostgreSQL, even when the servers pool through a PgBouncer (--pgbouncer).
        flask(server_environ(self, DATABASE_URL=self.url), "db-upgrade", revision)

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
        connection.close()
        self.vacuum()

    def vacuum(self):
        """Switch autovacuum off for the run's tables, then VACUUM ANALYZE them once, after seeding.

        Autovacuum's transactions count in pg_stat_database too; the writes of a
        run would wake it in the middle of an idle window.
        """
        connection = self.connect()
        with connection, connection.cursor() as cursor:
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
# With ``--pgbouncer``: the PgBouncer (harness/pgbouncer.py) the servers' pools go through,
# their wake sources connecting to PostgreSQL directly (WAKE_DATABASE_URL).
PGBOUNCER = None


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
    })
    if PGBOUNCER is not None:
        env.update({"DATABASE_URL": PGBOUNCER.url(database.url), "WAKE_DATABASE_URL": database.url})
    env.update({key: str(value) for key, value in extra.items()})
    return env


class Server(servers.Server):
    """``gunicorn <target>`` on the run's database, with the /proc readings the scenarios take.

    ``config`` replaces the project's gunicorn.conf.py (the memory profile's
    adds a hook to it); keywords are more environment.
    """

    def __init__(self, database, target="wsgi:app", workers=1, config=servers.CONFIG, **env):
        log = tempfile.NamedTemporaryFile(prefix="bench-gunicorn-", suffix=".log", delete=False)
        log.close()
        # The workers' metrics files, read here rather than through /metrics (see metrics()).
        self.metrics_dir = tempfile.mkdtemp(prefix="bench-metrics-")
        env.setdefault("PROMETHEUS_MULTIPROC_DIR", self.metrics_dir)
        super().__init__(server_environ(database, **env), app=target, workers=workers, config=config,
                         log_path=log.name)

    def stop(self):
        """Stop it; what it logged (warnings and worse) joins the run's own log on stderr."""
        super().stop()
        if self.log_path.exists():
            sys.stderr.write(self.log())
            self.log_path.unlink()
        shutil.rmtree(self.metrics_dir, ignore_errors=True)

    def metrics(self):
        """The workers' metrics as ``/metrics`` sums them, read from their files in this process.

        Asking a worker would add a request to what is measured, and a worker
        saturated by the scenario answers it late or not at all.
        """
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=self.metrics_dir)
        values = Counter()
        for metric in registry.collect():
            for sample in metric.samples:
                labels = ",".join(f'{key}="{value}"' for key, value in sample.labels.items())
                values[sample.name + (f"{{{labels}}}" if labels else "")] += sample.value
        return values

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
        return cpu_seconds(self.worker_pids())

    def waiting(self):
        return self.metrics().get("community_sync_waiting_polls", 0)

    def parked(self):
        """Of the waiting polls, those parked as a socket (``PARKED_POLLS``)."""
        return self.metrics().get("community_sync_parked_polls", 0)

    def queries(self):
        return self.metrics().get("community_sync_db_queries_total", 0)


def cpu_seconds(pids):
    """CPU seconds (user + system) the processes ``pids`` used so far."""
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / TICK


@contextmanager
def sampled(read, every=0.5):
    """A list that ``read()``'s value joins every ``every`` seconds, in a thread, while in the block."""
    values, stop = [], threading.Event()

    def sample():
        while not stop.wait(every):
            values.append(read())

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield values
    finally:
        stop.set()
        thread.join()


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
            [sys.executable, "-m", "bench.client"], cwd=ROOT, env=python_environ(),
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

    def cpu(self):
        """CPU seconds the load generator used so far: a saturated one answers its own timings late."""
        return cpu_seconds([self.process.pid])

    def close(self):
        if self.process.poll() is None:
            try:
                self.send(cmd="close")
                self.process.wait(timeout=20)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()


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
