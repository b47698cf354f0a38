"""Faults survived: database outages, killed and reloaded workers, shutdown,
hang-ups, overload and a soak, against real gunicorn servers on PostgreSQL.

Run them alone with ``pytest -m faults``. The clients live in a gevent process
of their own (tests/fault_client.py); this process stays unpatched.
"""
import http.client
import itertools
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from contextlib import closing
from pathlib import Path

import psycopg2
import pytest
import requests
from sqlalchemy.engine import make_url

from app.live.listener import HeadChecker, HeadWatch, Listener
from app.store.queries import UNREAD_CAP
from app.settings import SETTINGS
from app.wire import MAX_PUBLISHED_PER_ANSWER, iso
from bench.stack import dsn

import harness.servers
from harness.polls import bearer_token
from harness.postgres import ThrowawayPostgres
from conftest import SECRET, postgres_url
from harness.servers import ROOT, flask, free_port, python_environ, wait_for

pytestmark = [pytest.mark.faults, pytest.mark.postgres, pytest.mark.slow]

CLIENT = Path(__file__).with_name("fault_client.py")
# Each wake source's connection, by the name it gives PostgreSQL.
# With ``watcher``, each worker's LISTEN (its candidacy for the head watch is another session).
WAKE_CONNECTIONS = {"notify": Listener.application_name, "head": HeadChecker.application_name,
                    "watcher": Listener.application_name}


class Server(harness.servers.Server):
    """``gunicorn wsgi:app`` on the test's PostgreSQL schema, and what the tests read from it."""

    def __init__(self, database, tmp_path, workers=2, **settings):
        self.database = database
        defaults = {
            "AUTO_MIGRATE": 0, "DB_POOL_SIZE": 4, "DB_MAX_OVERFLOW": 4,
            "RATELIMIT_WRITES": "100000 per minute", "GRACEFUL_TIMEOUT": 20,
            "PROMETHEUS_MULTIPROC_DIR": "",
        }
        env = database.environ(**{**defaults, **settings})
        self.wake_source = env.get("WAKE_SOURCE") or SETTINGS["WAKE_SOURCE"][1]
        # gunicorn.conf.py makes (and removes) a metrics directory of its own.
        env.pop("PROMETHEUS_MULTIPROC_DIR")
        port = free_port()
        super().__init__(env, workers=workers, port=port, log_path=tmp_path / f"gunicorn-{port}.log")

    def start(self):
        """Migrate first, as a deploy does (the workers do not: AUTO_MIGRATE is off)."""
        flask(self.env, "db-upgrade")
        return super().start()

    def get(self, path, timeout=5, **kwargs):
        return requests.get(self.url + path, timeout=timeout, **kwargs)

    def all_ready(self, tries=20):
        """Ready on many fresh connections, so on every worker (each has its own listener)."""
        for _ in range(tries):
            try:
                response = self.get("/readyz", headers={"Connection": "close"})
            except requests.RequestException:
                return False
            if response.status_code != 200:
                return False
        return True

    def metric(self, name):
        return self.metrics()[name]

    def database_ports(self):
        """Local ports of this server's own database connections (not other tests')."""
        inodes = set()
        for pid in self.worker_pids():
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                try:
                    target = os.readlink(fd)
                except OSError:
                    continue
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        ports = []
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                local, remote, inode = fields[1], fields[2], fields[9]
                if inode in inodes and remote.endswith(":%04X" % db_port()):
                    ports.append(int(local.rsplit(":", 1)[1], 16))
        return ports

    def terminate_wake_sources(self, then_sql=""):
        """End this server's wake-source backends, then (same session) run ``then_sql``."""
        ports = self.database_ports()
        assert ports, "no database connections found for the workers"
        sql = (
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            f"WHERE application_name = '{WAKE_CONNECTIONS[self.wake_source]}' "
            f"AND client_port IN ({','.join(map(str, ports))});"
        )
        return psql(self.database, sql + then_sql)




def db_port():
    return make_url(postgres_url()).port or 5432


def psql(database, sql):
    url = make_url(postgres_url())
    command = [
        "psql", "-v", "ON_ERROR_STOP=1", "-q", "-X", "-At",
        "-h", url.host or "127.0.0.1", "-p", str(db_port()),
        "-U", url.username or "postgres", "-d", url.database or "test",
        "-c", f"SET search_path TO {database.schema}; {sql}",
    ]
    return subprocess.run(command, check=True, capture_output=True, text=True).stdout


class Clients:
    """The gevent client process: many pollers, told when to stop."""

    def __init__(self, server, users, per_user=1, timeout=50, disconnect=0.0, events=False, watches=None):
        settings = {
            "base": server.url, "secret": SECRET, "users": users, "per_user": per_user,
            "timeout": timeout, "disconnect": disconnect, "events": events, "watches": watches or {},
        }
        self.count = len(users) * per_user
        self.process = subprocess.Popen(
            [sys.executable, str(CLIENT), json.dumps(settings)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT, env=python_environ(),
        )
        self.lines = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.process.stdout:
            self.lines.append(json.loads(line))

    def event(self, name, timeout):
        found = wait_for(lambda: [e for e in self.lines if e["event"] == name], timeout,
                         message=f"client event {name!r}")
        return found[0]

    def stop(self, timeout=120):
        self.process.stdin.write("stop\n")
        self.process.stdin.flush()
        done = self.event("done", timeout)
        self.process.wait(10)
        return done

    def kill(self):
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.reader.join(5)
        self.process.stdin.close()
        self.process.stdout.close()


@pytest.fixture
def own_postgres(monkeypatch):
    """A PostgreSQL of the test's own to stop and start; the tests' database lives on it.

    Listed before ``servers`` (and so before ``pg_database``), it moves the
    test's schema there: an outage test never stops the machine's cluster.
    """
    with ThrowawayPostgres() as instance:
        monkeypatch.setenv("TEST_DATABASE_URL", instance.url)
        yield instance


@pytest.fixture
def servers(pg_database, tmp_path):
    started = []

    def start(**settings):
        server = Server(pg_database, tmp_path, **settings).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def clients():
    started = []

    def start(*args, **kwargs):
        process = Clients(*args, **kwargs)
        started.append(process)
        return process

    yield start
    for process in started:
        process.kill()


def seed_communities(database, count, private=0):
    """``count`` communities, the last ``private`` of them private."""
    values = ",".join(f"('c-{i}', 'c-{i}', 'Community {i}', {'false' if i >= count - private else 'true'})"
                      for i in range(count))
    psql(database, f"INSERT INTO communities (id, slug, name, is_public) VALUES {values};")


def join_all(users, community):
    ids = ",".join(f"('{u}')" for u in users)
    return (f"INSERT INTO memberships (user_id, community_id, role) "
            f"SELECT u, '{community}', 'member' FROM (VALUES {ids}) AS t(u);")


def waiting_polls(server):
    return server.metric("community_sync_waiting_polls")


def expect_joined(done, communities):
    """Every client saw each join exactly once, live, and holds the final state."""
    expected = Counter(("joined", c) for c in communities)
    late = Counter(c for client in done["clients"] for c in client["late_changes"])
    assert not late, f"delivered only when asked again, not to the waiting polls: {late}"
    for client in done["clients"]:
        received = Counter((c[0], c[1]) for c in client["received"])
        assert received == expected, client
        assert sorted(c["id"] for c in client["communities"]) == sorted(communities), client
        assert client["resets"] == 0, client


@pytest.mark.parametrize("source", WAKE_CONNECTIONS)
def test_database_outages_lose_nothing(own_postgres, servers, clients, pg_database, source):
    """1,000 waiting polls through killed wake sources and a PostgreSQL restart."""
    server = servers(workers=2, SAFETY_NET_INTERVAL=60, POLL_MAX_TIMEOUT=55, WAKE_SOURCE=source)
    seed_communities(pg_database, 5)
    users = [f"u-{i:03d}" for i in range(200)]
    poll = clients(server, users, per_user=5, timeout=50, events=True)
    poll.event("ready", 120)
    wait_for(lambda: waiting_polls(server) == 1000, 60, message="1,000 waiting polls")

    psql(pg_database, join_all(users, "c-0"))                        # before
    assert server.terminate_wake_sources(join_all(users, "c-1")).strip() == "2"  # during
    wait_for(lambda: server.metric("community_sync_wake_source_reconnects_total") >= 2, 30,
             message="wake sources reconnected")
    wait_for(server.all_ready, 30, message="ready again")
    psql(pg_database, join_all(users, "c-2"))                        # after

    # A real restart: the database goes away under the waiting polls.
    outage_started = time.time()
    own_postgres.stop()
    try:
        down = server.get("/readyz")
        assert down.status_code == 503
        assert down.json()["checks"]["database"].startswith("unavailable")
    finally:
        own_postgres.start()
    wait_for(server.all_ready, 60, interval=0.2, message="readyz after the restart")
    recovered = time.time()
    # Clients refused during the outage come back after their backoff: the
    # next change is for polls that wait again, as live delivery means.
    wait_for(lambda: waiting_polls(server) == 1000, 60, message="1,000 polls waiting again")
    psql(pg_database, join_all(users, "c-3"))                        # after the restart
    time.sleep(3)  # the live path delivers in well under a second
    done = poll.stop()

    assert done["caught_up"] == 1000
    expect_joined(done, ["c-0", "c-1", "c-2", "c-3"])
    for client in done["clients"]:
        # Refusals only while the database was really down, and only as the
        # contract's 503 (never a 500).
        for moment, status in client["failures"]:
            assert outage_started - 1 <= moment <= recovered + 5, client["failures"]
            assert status == 503, client["failures"]
    assert server.metric('community_sync_delivery_lag_seconds_count{answered="after_wait"}') > 0


@pytest.mark.parametrize("source", WAKE_CONNECTIONS)
def test_killed_and_reloaded_workers_lose_nothing(servers, clients, pg_database, source):
    server = servers(workers=2, SAFETY_NET_INTERVAL=60, WAKE_SOURCE=source)
    seed_communities(pg_database, 5)
    users = [f"u-{i:03d}" for i in range(50)]
    poll = clients(server, users, per_user=4, timeout=30)
    poll.event("ready", 60)
    wait_for(lambda: waiting_polls(server) == 200, 30, message="200 waiting polls")

    psql(pg_database, join_all(users, "c-0"))
    # With the watcher, its own worker: the deployment's notifications go with it.
    victim = the_watchers_worker(server, pg_database) if source == "watcher" else server.worker_pids()[0]
    os.kill(victim, signal.SIGKILL)
    psql(pg_database, join_all(users, "c-1"))
    wait_for(lambda: victim not in server.worker_pids() and len(server.worker_pids()) == 2, 30,
             message="the killed worker replaced")
    before_reload = set(server.worker_pids())
    server.reload()
    psql(pg_database, join_all(users, "c-2"))
    wait_for(lambda: not before_reload & set(server.worker_pids())
             and len(server.worker_pids()) == 2, 60, message="the workers reloaded")
    wait_for(server.all_ready, 30, message="ready after the reload")
    psql(pg_database, join_all(users, "c-3"))
    # The gauge counts live workers only: the killed one's polls are gone from it.
    wait_for(lambda: waiting_polls(server) == 200, 30, message="200 polls waiting again")
    time.sleep(3)
    done = poll.stop()

    expect_joined(done, ["c-0", "c-1", "c-2", "c-3"])
    for client in done["clients"]:
        # A killed worker drops its connections; a reload drains: neither answers a 5xx.
        assert not [s for _t, s in client["failures"] if s >= 500], client


def sigterm_while_polls_wait(servers, clients, parked):
    """SIGTERM the server under 100 waiting polls; each client's events after it."""
    server = servers(workers=2, PARKED_POLLS=parked)
    users = [f"u-{i:03d}" for i in range(50)]
    poll = clients(server, users, per_user=2, timeout=50, events=True)
    poll.event("ready", 60)
    wait_for(lambda: waiting_polls(server) == 100, 30, message="100 waiting polls")

    signalled = time.time()
    server.process.send_signal(signal.SIGTERM)
    server.process.wait(15)
    stopped = time.time() - signalled
    done = poll.stop()
    return stopped, [[e for e in c["events"] if e[0] >= signalled] for c in done["clients"]], signalled


# Parked polls (the default) and polls held in greenlets: each drains.
PARKED = pytest.mark.parametrize("parked", ["1", "0"], ids=["parked", "held"])


@PARKED
def test_sigterm_drains_waiting_polls(servers, clients, parked):
    stopped, afters, signalled = sigterm_while_polls_wait(servers, clients, parked)
    drained = []
    for after in afters:
        assert after and after[0][1:] == [200, "unchanged"], after
        assert not [e for e in after if isinstance(e[1], int) and e[1] >= 500], after
        drained.append(after[0][0] - signalled)
    # "About a second": far below the 50 s the polls would otherwise wait.
    assert max(drained) < 5, sorted(drained)[-5:]
    assert stopped < 10


@PARKED
def test_a_poll_reaching_a_closing_worker_gets_no_5xx(servers, parked):
    server = servers(workers=1, PARKED_POLLS=parked)
    token = bearer_token(SECRET, "u-keepalive")
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    headers = {"Authorization": f"Bearer {token}"}
    connection.request("GET", "/community-changes/poll?timeout=0", headers=headers)
    cursor = json.loads(connection.getresponse().read())["cursor"]
    connection.request("GET", f"/community-changes/poll?timeout=30&cursor={cursor}", headers=headers)
    wait_for(lambda: waiting_polls(server) == 1, 10, message="the poll waiting")
    server.process.send_signal(signal.SIGTERM)
    drained = connection.getresponse()
    drained.read()
    assert drained.status == 200
    outcomes = []
    try:
        # What any HTTP client does next: reuse the connection it was not told to close.
        connection.request("GET", f"/community-changes/poll?timeout=30&cursor={cursor}", headers=headers)
        outcomes.append(connection.getresponse().status)
    except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
        # A connection the worker closed is fine: the client reconnects elsewhere. Anything
        # else (a timeout: the worker neither answered nor closed) fails the test.
        outcomes.append("closed")
    finally:
        connection.close()
    assert outcomes == [200] or outcomes == ["closed"], outcomes


@PARKED
def test_disconnected_clients_free_their_places(servers, clients, parked):
    server = servers(workers=2, PARKED_POLLS=parked)
    users = [f"u-{i:03d}" for i in range(100)]
    poll = clients(server, users, timeout=50)
    poll.event("ready", 60)
    wait_for(lambda: waiting_polls(server) == 100, 30, message="100 waiting polls")
    poll.kill()
    # Well before the polls' 50 s timeout: the hang-ups themselves free them.
    wait_for(lambda: waiting_polls(server) == 0, 15, message="the gauge back to zero")


def test_overload_is_refused_fast_and_health_stays_responsive(servers, clients):
    server = servers(workers=1, POLL_MAX_WAITING=50)
    users = [f"u-{i:03d}" for i in range(50)]
    poll = clients(server, users, timeout=50)
    poll.event("ready", 60)
    wait_for(lambda: waiting_polls(server) == 50, 30, message="50 waiting polls")

    token = bearer_token(SECRET, "u-extra")
    for _ in range(20):
        started = time.monotonic()
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        connection.request("GET", "/community-changes/poll?timeout=30",
                           headers={"Authorization": f"Bearer {token}"})
        response = connection.getresponse()
        body = json.loads(response.read())
        connection.close()
        assert response.status == 503
        assert response.getheader("Content-Type") == "application/problem+json"
        assert response.getheader("Retry-After").isdigit()
        assert body["status"] == 503
        assert time.monotonic() - started < 2
        health = server.get("/healthz", timeout=2)
        assert health.status_code == 200
    assert server.metric('community_sync_poll_answers_total{result="refused"}') >= 20
    poll.kill()


class Writers:
    """API and raw-SQL writers that run until stopped, some committing out of order.

    Besides memberships and renames they publish activity and notifications,
    over HTTP and with ``INSERT INTO activity``, each with a ref of its own
    (``published`` holds the refs of those that committed), and readers move
    users' read markers as the users themselves. Activity stays far below an
    answer's cap (``wire.MAX_PUBLISHED_PER_ANSWER``) for any one user, so that
    every row can be checked for: publications are paced to ``publish_rate``
    a second, all writers together, whatever the speed of the rest. A user,
    in about half the communities, hears of under one activity a second, so
    even a client that a loaded server leaves without an answer for a minute
    gets well under 100 in one answer. (Activity wakes every member, so it
    also adds more load per row than a membership change does.)

    Some publications are a topic's: a reply in one of a few threads, or a
    collapsed vote count (``data`` ``{"votes": n}``, ``n`` rising over the
    whole run, on a post of the writer's own, so that no two writers race for
    one key: their order is the advisory lock's, tested on its own).
    """

    TOPICS = ("thread:t-0", "thread:t-1", "story:s-0")

    def __init__(self, server, database, users, communities, publish_rate=2):
        self.server = server
        self.database = database
        self.users = users
        self.communities = communities
        self.stopping = threading.Event()
        self.errors = []
        self.writes = Counter()
        self.published = set()
        self.threads = []
        self.spacing = 1 / publish_rate
        self.next_publication = 0.0
        self.lock = threading.Lock()
        self.votes = itertools.count(1)

    def start(self, api=2, sql=2, readers=1):
        for target, count in ((self._api, api), (self._sql, sql), (self._reads, readers)):
            for index in range(count):
                self.threads.append(threading.Thread(target=self._guard, args=(target, index)))
        for thread in self.threads:
            thread.start()

    def stop(self):
        self.stopping.set()
        for thread in self.threads:
            thread.join(60)

    def _may_publish(self):
        """Whether a publication fits in the pace now; the caller writes something else if not."""
        with self.lock:
            now = time.monotonic()
            if now < self.next_publication:
                return False
            self.next_publication = now + self.spacing
            return True

    def _guard(self, target, index):
        try:
            target(random.Random(index), index)
        except Exception as error:  # reported by the test
            self.errors.append(repr(error))

    def _api(self, rng, index):
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {bearer_token(SECRET, 'u-writer', admin=True)}"
        base = self.server.url
        refs = (f"h{index}-{n}" for n in itertools.count())
        while not self.stopping.is_set():
            user, community = rng.choice(self.users), rng.choice(self.communities)
            action = rng.random()
            if action >= 0.88 and not self._may_publish():
                action = rng.random() * 0.88
            published = None
            if action < 0.4:
                role = rng.choice(["member", "moderator", "admin"])
                response = session.put(f"{base}/communities/{community}/members/{user}",
                                       json={"role": role}, timeout=30)
            elif action < 0.8:
                response = session.delete(f"{base}/communities/{community}/members/{user}",
                                          timeout=30)
            elif action < 0.88:
                response = session.patch(f"{base}/communities/{community}",
                                         json={"name": f"Community {community} {rng.randint(0, 999)}"},
                                         timeout=30)
            elif action < 0.96:
                published = next(refs)
                response = session.post(f"{base}/communities/{community}/activity",
                                        json=self._activity(rng, published, f"vh-{index}"), timeout=30)
            else:
                published = next(refs)
                response = session.post(f"{base}/users/{user}/notifications",
                                        json=self._publication(rng, "mention", published), timeout=30)
            assert response.status_code < 300, (response.status_code, response.text)
            if published:
                self.published.add(published)
            self.writes["api"] += 1
            time.sleep(rng.uniform(0, 0.02))

    def _sql(self, rng, index):
        options = f"{dsn(self.database.url).get('options', '')} -cstatement_timeout=20000"
        first = psycopg2.connect(**{**dsn(self.database.url), "options": options})
        second = psycopg2.connect(**{**dsn(self.database.url), "options": options})
        refs = (f"s{index}-{n}" for n in itertools.count())
        try:
            while not self.stopping.is_set():
                # Two transactions on different users; the one that began (and
                # took its xid) first commits last.
                a, b = rng.sample(self.users, 2)
                published = []
                for connection, user in ((first, a), (second, b)):
                    with connection.cursor() as cursor:
                        published.append(self._sql_change(cursor, rng, user, refs))
                second.commit()
                self.published.update(filter(None, published[1:]))
                time.sleep(rng.uniform(0, 0.01))
                first.commit()
                self.published.update(filter(None, published[:1]))
                self.writes["sql"] += 2
                time.sleep(rng.uniform(0, 0.02))
        finally:
            first.close()
            second.close()

    def _sql_change(self, cursor, rng, user, refs):
        """One change in the cursor's transaction; the ref it publishes, if any."""
        community = rng.choice(self.communities)
        action = rng.random()
        if action >= 0.84 and not self._may_publish():
            action = rng.random() * 0.84
        if action < 0.42:
            cursor.execute(
                "INSERT INTO memberships (user_id, community_id, role) VALUES (%s, %s, 'member') "
                "ON CONFLICT (user_id, community_id) DO UPDATE SET role = "
                "CASE WHEN memberships.role = 'member' THEN 'moderator' ELSE 'member' END",
                (user, community),
            )
        elif action < 0.84:
            cursor.execute("DELETE FROM memberships WHERE user_id = %s AND community_id = %s",
                           (user, community))
        elif action < 0.94:
            # The outbox, as the platform writes it in its own transaction.
            ref = next(refs)
            publication = self._activity(rng, ref, f"vs-{ref.split('-')[0]}-{user}", actor=rng.choice([None, user]))
            cursor.execute(
                "INSERT INTO activity (community_id, kind, ref, actor, topic, data, collapse) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s)",
                (community, publication["kind"], publication["ref"], publication.get("actor"),
                 publication.get("topic"), json.dumps(publication["data"]) if "data" in publication else None,
                 publication.get("collapse", False)))
            return ref
        else:
            ref = next(refs)
            cursor.execute("INSERT INTO activity (user_id, kind, ref) VALUES (%s, %s, %s)",
                           (user, "mention", ref))
            return ref
        return None

    @staticmethod
    def _publication(rng, kind, ref, actor=None):
        actor = actor or rng.choice([None, f"u-{rng.randrange(1000):03d}"])
        return {"kind": kind, "ref": ref, **({"actor": actor} if actor else {})}

    def _activity(self, rng, ref, post, actor=None):
        """A community's activity: a post, a reply in a topic, or a topic's vote count on
        ``post``. A vote's ``ref`` is the post; the publication's own ref goes in its data."""
        choice = rng.random()
        if choice < 0.5:
            return self._publication(rng, "post_created", ref, actor)
        topic = rng.choice(self.TOPICS)
        if choice < 0.8:
            return {**self._publication(rng, "reply", ref, actor), "topic": topic, "data": {"excerpt": ref}}
        return {"kind": "votes", "ref": post, "topic": topic, "collapse": True,
                "data": {"votes": next(self.votes), "publication": ref}}

    def _reads(self, rng, _index):
        """Users reading what their sidebar shows unread: a community, or their notifications."""
        session = requests.Session()
        tokens = {}
        base = self.server.url
        while not self.stopping.is_set():
            user = rng.choice(self.users)
            headers = {"Authorization": f"Bearer {tokens.setdefault(user, bearer_token(SECRET, user))}"}
            snapshot = session.get(f"{base}/me/communities", headers=headers, timeout=30)
            assert snapshot.status_code == 200, (snapshot.status_code, snapshot.text)
            unread = [c["id"] for c in snapshot.json()["communities"] if c["unread"]]
            if snapshot.json()["notifications_unread"] and (not unread or rng.random() < 0.3):
                response = session.put(f"{base}/me/notifications/read", headers=headers, timeout=30)
                assert response.status_code == 200, (response.status_code, response.text)
            elif unread:
                response = session.put(f"{base}/me/communities/{rng.choice(unread)}/read",
                                       headers=headers, timeout=30)
                # A writer may have removed the user meanwhile.
                left = response.status_code == 404 and response.json()["type"].endswith(":not-a-member")
                assert response.status_code == 200 or left, (response.status_code, response.text)
            else:
                continue
            self.writes["read"] += 1
            time.sleep(rng.uniform(0.01, 0.05))


class CommitOrder:
    """Which of two transactions became visible first, from snapshots sampled in a loop.

    The change log's ids follow the order rows were written, not committed,
    and PostgreSQL keeps no commit order (``track_commit_timestamp`` is off
    unless the server was started with it). A transaction is visible from the
    first sample whose snapshot sees it committed; of two first seen in
    different samples, the earlier committed first. Two first seen in the same
    sample (a few milliseconds) are of unknown order.
    """

    def __init__(self, database, interval=0.004):
        self.database = database
        self.interval = interval
        self.samples = []  # (xmin, xmax, in-progress xids)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.error = None

    def start(self):
        self.thread.start()
        wait_for(lambda: self.samples or self.error, 10, message="a first snapshot")
        return self

    def stop(self):
        """Stop sampling, after a last sample that sees every commit so far."""
        self.stopping.set()
        self.thread.join(10)
        assert self.error is None, self.error

    def _run(self):
        try:
            connection = psycopg2.connect(**dsn(self.database.url))
            connection.autocommit = True
            with closing(connection), connection.cursor() as cursor:
                while True:
                    last = self.stopping.is_set()
                    cursor.execute("SELECT pg_current_snapshot()::text")
                    xmin, xmax, running = cursor.fetchone()[0].split(":")
                    running = frozenset(int(xid) for xid in running.split(",") if xid)
                    self.samples.append((int(xmin), int(xmax), running))
                    if last:
                        return
                    time.sleep(self.interval)
        except Exception as error:  # raised by stop()
            self.error = repr(error)

    def first_seen(self, xid):
        """The index of the first sample that sees ``xid`` committed (visibility only grows)."""
        def committed(sample):
            xmin, xmax, running = sample
            return xid < xmin or (xid < xmax and xid not in running)

        low, high = 0, len(self.samples)
        while low < high:
            middle = (low + high) // 2
            if committed(self.samples[middle]):
                high = middle
            else:
                low = middle + 1
        return low


def database_truth(database, users, commit_order, watches=None):
    """What each user's clients must hold and must have received, from the database alone.

    Returns ``(states, notifications_unread, due, racing, rows, votes)``: each user's
    communities as ``(id, role, name, unread)``; its unread notifications;
    the changes due to it exactly once (a Counter of keys); those that raced
    a join or leave of it and may come once or not at all; each key's
    change-log id, to name a row in a failure; and of each collapsed key
    (community, topic, post), its values' ids in order, by vote count.
    A topic's rows are due to the users whose ``watches`` (user -> the
    ``watch`` values its clients poll with, all of public communities) cover
    them, whether members or not.
    """
    watched = {user: {tuple(watch.split("/", 1)) for watch in (watches or {}).get(user, ())} for user in users}
    connection = psycopg2.connect(**dsn(database.url))
    with closing(connection), connection.cursor() as cursor:
        unread = f"""(SELECT count(*) FROM (SELECT 1 FROM changes x WHERE x.type = %s AND {{}}
                      LIMIT {UNREAD_CAP}) AS capped)"""
        # A topic's activity, a collapsed value and a member's own activity are never unread.
        cursor.execute(
            "SELECT m.user_id, c.id, m.role, c.name, "
            + unread.format("x.community_id = m.community_id AND x.id > m.read_through AND x.topic IS NULL "
                            "AND NOT x.collapse AND x.actor IS DISTINCT FROM m.user_id")
            + " FROM memberships m JOIN communities c ON c.id = m.community_id WHERE m.user_id = ANY(%s)",
            ("activity", users))
        states = {user: set() for user in users}
        for user, *entry in cursor.fetchall():
            states[user].add(tuple(entry))
        cursor.execute(
            "SELECT u.id, " + unread.format("x.user_id = u.id AND x.id > u.notifications_read_through")
            + " FROM users u WHERE u.id = ANY(%s)", ("notification", users))
        notifications_unread = dict.fromkeys(users, 0) | dict(cursor.fetchall())
        cursor.execute("SELECT id, xid, user_id, type, community_id, role, ref, at, topic, collapse, data::text "
                       "FROM changes ORDER BY id")
        log = cursor.fetchall()

    # When each join and leave became visible: a community's activity takes
    # the same shared lock as they do, so the two may commit in either order
    # whatever their ids (migration 0003), and a reader may then see either.
    toggles = defaultdict(list)
    for change_id, xid, user, kind, community, *_rest in log:
        if kind in ("joined", "left"):
            toggles[user, community].append((change_id, commit_order.first_seen(xid)))

    # A community-wide row is due to whoever was a member when it was written:
    # replay the log (complete: the soak starts with no members) in id order,
    # which is commit order within a community for joins, leaves, renames and
    # deletions (they lock the community against each other).
    due = {user: Counter() for user in users}
    racing = {user: Counter() for user in users}
    rows = {}
    votes = defaultdict(list)
    published = set()
    members = defaultdict(set)
    for change_id, xid, user, kind, community, role, ref, at, topic, collapse, data in log:
        key = (kind, community, role, iso(at, milliseconds=True), ref)
        rows[key] = change_id
        if collapse:  # checked as latest values, not row by row
            value = json.loads(data)
            votes[community, topic, ref].append(value["votes"])
            published.add(value["publication"])  # its ref names the post it counts the votes of
            continue
        if ref is not None:
            published.add(ref)
        if topic is not None:
            for recipient in users:
                if (community, topic) in watched[recipient] or (community, "*") in watched[recipient]:
                    due[recipient][key] += 1
        elif user is not None:
            if user in due:
                due[user][key] += 1
        elif kind == "activity":
            seen = commit_order.first_seen(xid)
            for recipient in users:
                # A join or leave whose commit order against this row is not
                # its id order (or not known): delivered or not, both are right.
                if any((other < change_id) != (other_seen < seen) or other_seen == seen
                       for other, other_seen in toggles[recipient, community]):
                    racing[recipient][key] += 1
                elif recipient in members[community]:
                    due[recipient][key] += 1
        else:
            for recipient in members[community] & due.keys():
                due[recipient][key] += 1
        if kind == "joined":
            members[community].add(user)
        elif kind == "left":
            members[community].discard(user)
        elif kind == "community_deleted":
            members[community].clear()
    return states, notifications_unread, due, racing, rows, votes, published


def watcher_backend(database):
    """(backend pid, client port) of the session holding the head watcher's lock on the test's schema, or None."""
    with closing(psycopg2.connect(**dsn(database.url))) as connection, connection.cursor() as cursor:
        cursor.execute(
            "SELECT a.pid, a.client_port FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted "
            f"AND (l.classid::bigint << 32) | l.objid::bigint = {HeadWatch.LOCK}")
        return cursor.fetchone()


def the_watchers_worker(server, database):
    """The pid of the worker of ``server`` whose session watches the head."""
    wait_for(lambda: watcher_backend(database) is not None, 10, message="no watcher elected")
    _backend, port = watcher_backend(database)
    worker = server.worker_connected(port)
    assert worker is not None, "the watcher is not one of the server's workers"
    return worker


def end_the_watchers_session(database):
    """End the watching session under its worker (pg_terminate_backend); its backend's pid."""
    wait_for(lambda: watcher_backend(database) is not None, 10, message="no watcher elected")
    backend, _port = watcher_backend(database)
    with closing(psycopg2.connect(**dsn(database.url))) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", (backend,))
    return backend


@pytest.mark.parametrize("wake_source", ["head", "watcher"])
def test_soak(servers, clients, pg_database, wake_source):
    """Hundreds of clients hanging up at random while API and SQL writers run.

    The writers change memberships, rename communities, publish activity and
    notifications and move read markers; every client must end with the
    database's state (unread counts included) and have received each change
    addressed to its user exactly once. With ``watcher``, the deployment's
    watcher's session is ended halfway, and another candidate takes over (its
    worker killed outright: test_killed_and_reloaded_workers_lose_nothing).
    """
    seconds = float(os.environ.get("SOAK_SECONDS", "120" if os.environ.get("CI") == "true" else "30"))
    server = servers(workers=2, SAFETY_NET_INTERVAL=2, WAKE_SOURCE=wake_source)
    communities = [f"c-{i}" for i in range(12)]
    # Two private communities: their topics' rows must reach no one (nobody may watch them).
    seed_communities(pg_database, len(communities), private=2)
    users = [f"u-{i:03d}" for i in range(150)]
    # A third of the users watch every topic of a community, a third two topics, a third none.
    watches = {user: [[f"c-{i % 10}/*"], [f"c-{i % 10}/thread:t-0", f"c-{(i + 1) % 10}/story:s-0"], []][i % 3]
               for i, user in enumerate(users)}
    poll = clients(server, users, per_user=2, timeout=8, disconnect=0.3, events=True, watches=watches)
    poll.event("ready", 60)

    commit_order = CommitOrder(pg_database).start()
    writers = Writers(server, pg_database, users, communities)
    writers.start()
    deadline = time.monotonic() + seconds
    killed = None
    while time.monotonic() < deadline and not writers.errors:
        time.sleep(1)
        if wake_source == "watcher" and killed is None and time.monotonic() > deadline - seconds / 2:
            killed = end_the_watchers_session(pg_database)
    writers.stop()
    commit_order.stop()
    assert not writers.errors, writers.errors
    if killed is not None:
        # Another worker watches (the restarted one, or the other).
        wait_for(lambda: (watcher_backend(pg_database) or (killed,))[0] != killed, 10,
                 message="no other watcher after the kill")
    time.sleep(3)
    done = poll.stop()

    states, notifications_unread, due, racing, rows, votes, published = database_truth(
        pg_database, users, commit_order, watches)
    # The outbox lost nothing and invented nothing: every publication that
    # committed, over HTTP or SQL, is in the log once.
    assert published == writers.published, (writers.published - published, published - writers.published)
    assert sum(writers.writes.values()) > 50
    raced = sum(sum(counter.values()) for counter in racing.values())
    most = max(client["most_published"] for client in done["clients"])
    print(f"writes {dict(writers.writes)}, publications {len(published)}, racing a join or leave {raced}, "
          f"most in one answer {most} (cap {MAX_PUBLISHED_PER_ANSWER}), "
          f"commit-order samples {len(commit_order.samples)}")
    hangups = 0
    activity_received = reads_received = racing_received = racing_due = topics_received = values_checked = 0
    for client in done["clients"]:
        user = client["user"]
        who = (user, client["index"])
        held = {(c["id"], c["role"], c["name"], c["unread"]) for c in client["communities"]}
        assert held == states[user], (who, held ^ states[user])
        assert client["notifications_unread"] == notifications_unread[user], who
        # The answers stayed under the cap of activity per answer: had one left
        # some out, the client could not have received every row below.
        assert client["truncated"] == 0, (who, "the soak publishes too fast for the per-answer cap",
                                          client["most_published"], client["events"][-20:])
        received = Counter(tuple(c[:4]) + (c[5],) for c in client["received"]
                           if not (c[7] or {}).get("votes"))
        # Latest values: of each watched key, its values in the order they were committed,
        # never an older after a newer, ending with the last one.
        counted = defaultdict(list)
        for change in client["received"]:
            if (change[7] or {}).get("votes"):
                counted[change[1], change[6], change[5]].append(change[7]["votes"])
        covered = {tuple(watch.split("/", 1)) for watch in watches[user]}
        for key, values in counted.items():
            assert values == sorted(set(values)) and set(values) <= set(votes[key]), (who, key, values)
        for key, values in votes.items():
            if (key[0], key[1]) in covered or (key[0], "*") in covered:
                assert counted[key][-1:] == values[-1:], (who, key, counted[key][-5:], values[-5:])
            else:
                assert key not in counted, (who, key)
        # Exactly once: nothing missing, nothing twice; a row that raced a
        # join or leave of the user once at most.
        expected, optional = due[user], racing[user]
        missing = {key: rows.get(key) for key in expected if received[key] < expected[key]}
        extra = {key: rows.get(key) for key in received if received[key] > expected[key] + optional[key]}
        assert not missing and not extra, (who, "missing:", missing, "extra:", extra)
        # A client that follows its cursors never needs a reset: every state
        # change it could see is explained by a change-log row.
        assert client["resets"] == 0, client
        assert not [s for _t, s in client["failures"] if s >= 500], client["failures"]
        hangups += client["hangups"]
        activity_received += sum(n for key, n in received.items() if key[0] in ("activity", "notification"))
        reads_received += sum(n for key, n in received.items() if key[0] == "read")
        racing_received += sum(received[key] for key in optional)
        racing_due += sum(optional.values())
        topics_received += sum(1 for change in client["received"] if change[6] is not None)
        values_checked += len(counted)
    assert done["caught_up"] == len(done["clients"])
    assert hangups > 0
    # Not vacuous: the clients did receive activity, notifications and read markers.
    assert activity_received > 100 and reads_received > 10, (activity_received, reads_received)
    # Topics' rows and latest values reached their watchers.
    assert topics_received > 50 and values_checked > 10, (topics_received, values_checked)
    print(f"delivered: {activity_received} activity and notifications, {reads_received} read markers, "
          f"{racing_received} of the {racing_due} that raced a join or leave, {topics_received} topic rows, "
          f"{values_checked} latest values followed")
    assert re.search(r"community_sync_waiting_polls \d", server.get("/metrics").text)
