"""How a worker learns that the change log may have grown: its wake source (PostgreSQL).

``WAKE_SOURCE`` picks one per worker, each on one connection of its own
outside the pool:

- ``notify``: ``LISTEN`` for the log's trigger. A hint within a millisecond
  of a commit, but every writing transaction then takes PostgreSQL's one
  database-wide lock at commit (``PreCommit_Notify``): with many concurrent
  writers that serialises the platform's own writes (docs/benchmarks.md).
- ``head``: check the log's head every ``WAKE_POLL_INTERVAL`` with one
  statement ("is any row past the hub's position?"), only while the hub
  holds a position (polls wait, or did a moment ago). No lock for the
  writers; hints up to one interval later; one statement per worker per
  interval, whatever the number of clients.

- ``watcher``: ``LISTEN`` as ``notify`` does, but no writer notifies. One
  session of the whole deployment (``HeadWatch``), elected through PostgreSQL
  itself, checks the log's head every ``WATCHER_INTERVAL`` and sends one
  ``NOTIFY`` per move, from its own statement: the only session that ever
  takes the notification lock. Every worker keeps a candidate connection
  waiting inside PostgreSQL for the watcher's advisory lock; when the
  watcher's worker or host dies, PostgreSQL releases its session's lock and
  grants it to the next candidate at once. Statements: the watcher's one per
  interval for the deployment, and none from the other workers beyond the
  listener's keep-alive.

Each source sets ``feed_meta.notify`` to what it needs when it connects, so
the log's trigger notifies when the workers listen and not when they check
the head or leave it to the watcher (a deployment uses one source;
docs/operations.md). ``notify`` and ``watcher`` listen on one channel, so a
rollout from one to the other misses nothing whichever set the switch last. Both lose hints
while their connection is down, so they reconnect with backoff and, once
connected again, hint the hub to re-check everything waiting.
"""
import logging
import random
import time

import gevent
import gevent.socket
from psycogreen.gevent import gevent_wait_callback
from sqlalchemy import exists, select, update
from sqlalchemy.dialects.postgresql.psycopg2 import PGDialect_psycopg2

from ..store.cursors import parse_position
from ..store.db import address
from ..store.models import Change, FeedMeta
from ..settings import WAKE_SOURCES

log = logging.getLogger(__name__)

CHANNEL = "community_sync"
SOURCES = WAKE_SOURCES
DIALECT = PGDialect_psycopg2()


class WakeSource:
    """Calls ``on_hint`` when the log may have grown (and after every reconnect).

    ``on_lost`` is called when an established connection breaks: the
    database most likely went away, taking the pooled connections with it,
    and each of those would otherwise fail once, whenever next used.
    """

    name = None
    application_name = None
    notify = None  # what feed_meta.notify must be for this source to work best

    def __init__(self, dsn, on_hint, on_lost=None, metrics=None):
        self.dsn = dsn
        self.on_hint = on_hint
        self.on_lost = on_lost
        self.metrics = metrics
        self.connected = False
        self.closed = False
        self._connection = None
        self._greenlet = None
        self._failures = 0

    def start(self):
        """Watch in a greenlet of its own, which is returned."""
        self._greenlet = gevent.spawn(self.run)
        return self._greenlet

    def stop(self):
        """Stop watching. The greenlet is killed rather than its connection closed
        under it: closing a socket that gevent is still watching aborts libev."""
        self.closed = True
        if self._greenlet is not None and not self._greenlet.dead:
            if self._greenlet is gevent.getcurrent():
                return
            self._greenlet.kill(block=False)
            return
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()

    def run(self):
        """Watch until stopped, reconnecting with backoff whenever the connection fails."""
        import psycopg2

        while not self.closed:
            try:
                self._connect_and_watch()
            except (psycopg2.Error, OSError) as error:
                if self.closed:
                    return
                self._set_connected(False)
                if self.metrics:
                    self.metrics.wake_source_reconnects.inc()
                self._failures += 1
                delay = min(5.0, 0.05 * 2**self._failures) * random.uniform(0.5, 1.0)
                log.warning("%s wake source lost at %s (%s); reconnecting in %.2fs", self.name,
                            address(self.dsn), " ".join(str(error).split()), delay)
                gevent.sleep(delay)

    def _connect_and_watch(self):
        import psycopg2

        connection = self.connect()
        self._connection = connection
        try:
            self.prepare(connection)
            self._set_notify(connection)
            self._set_connected(True)
            self._failures = 0  # the next outage backs off from the start again
            # Whatever changed while we were away went unnoticed: look again.
            self.hint()
            self.watch(connection)
        except (psycopg2.Error, OSError):
            if self.connected and not self.closed and self.on_lost is not None:
                self.on_lost()
            raise
        finally:
            self._set_connected(False)
            if self._connection is connection:
                self._connection = None
                connection.close()

    def connect(self):
        """A connection of its own, in autocommit: no transaction is left open between statements."""
        import psycopg2
        import psycopg2.extensions

        connection = psycopg2.connect(self.dsn, **self.connect_arguments())
        connection.set_isolation_level(psycopg2.extensions.ISOLATION_LEVEL_AUTOCOMMIT)
        return connection

    def connect_arguments(self):
        # TCP keepalives: a connection that waits for hours (a LISTEN, a candidate
        # waiting for the watcher's lock) notices a vanished peer.
        return dict(application_name=self.application_name, keepalives=1, keepalives_idle=30,
                    keepalives_interval=10, keepalives_count=3)

    def execute(self, cursor, sql):
        """Run one statement on this source's connection."""
        cursor.execute(sql)

    def _set_notify(self, connection):
        """Make the log's trigger notify, or not, as this source wants.

        Every worker of a deployment is meant to use one source; while a
        rollout changes it, the last worker to connect decides, and the
        safety-net re-read covers a listener left without notifications.
        """
        import psycopg2.errors

        statement = (update(FeedMeta).where(FeedMeta.id == 1, FeedMeta.notify.is_not(self.notify))
                     .values(notify=self.notify))
        with connection.cursor() as cursor:
            try:
                self.execute(cursor, compiled(statement))
            except (psycopg2.errors.UndefinedTable, psycopg2.errors.UndefinedColumn):
                # Not migrated yet (a deploy runs the new code first): the
                # triggers of before revision 0006 always notify.
                log.warning("the change log has no notify switch yet: run the migrations")
                return
            if cursor.rowcount:
                log.info("the change log %s notifies (WAKE_SOURCE=%s)",
                         "now" if self.notify else "no longer", self.name)

    def _set_connected(self, connected):
        self.connected = connected
        if self.metrics:
            self.metrics.wake_source_up.labels(self.name).set(1 if connected else 0)

    def hint(self):
        if self.metrics:
            self.metrics.hints.labels(self.name).inc()
        self.on_hint()

    def prepare(self, connection):
        """Set up a fresh connection before watching (nothing by default)."""

    def watch(self, connection):
        """Hint on every sign of new rows until stopped or the connection fails."""
        raise NotImplementedError


class Listener(WakeSource):
    """``LISTEN``: every NOTIFY of the change-log trigger becomes a hint."""

    name = "notify"
    application_name = "community-sync-listener"
    notify = True

    def __init__(self, dsn, on_hint, on_lost=None, metrics=None, keepalive=30.0):
        super().__init__(dsn, on_hint, on_lost, metrics)
        self.keepalive = keepalive

    def prepare(self, connection):
        with connection.cursor() as cursor:
            cursor.execute(f"LISTEN {CHANNEL}")

    def watch(self, connection):
        while not self.closed:
            try:
                gevent.socket.wait_read(connection.fileno(), timeout=self.keepalive)
            except gevent.socket.timeout:
                # Quiet for a while: prove the connection is still alive.
                with connection.cursor() as cursor:
                    cursor.execute("SELECT 1")
                continue
            connection.poll()
            if connection.notifies:
                connection.notifies.clear()
                self.hint()


class HeadChecker(WakeSource):
    """Every ``interval`` seconds: is any row of the log past ``position()``? If so, a hint.

    ``position`` returns the hub's read position, or None while it holds
    none (nobody waits): then nothing is read. The check is one index probe
    on ``changes.xid`` in autocommit, so it takes no lock and leaves no
    transaction open between checks.

    After a hint it checks again only once the hub has read past that
    position (the re-read it asked for reads everything committed before it
    began), so one change costs one re-read, not one per interval until the
    re-read is done; the safety net re-reads anyway if that never happens.
    """

    name = "head"
    application_name = "community-sync-head-check"
    notify = False

    def __init__(self, dsn, on_hint, position, on_lost=None, metrics=None, interval=0.05,
                 keepalive=30.0):
        super().__init__(dsn, on_hint, on_lost, metrics)
        self.position = position
        self.interval = interval
        self.keepalive = keepalive
        self._hinted = None
        self._compiled = None

    def watch(self, connection):
        last_statement = time.monotonic()
        while not self.closed:
            gevent.sleep(self.interval)
            position = self.position()
            if position is None or position is self._hinted:
                if time.monotonic() - last_statement >= self.keepalive:
                    # Quiet for a while: prove the connection is still alive, as
                    # the listener does (an idle one may be cut by the network).
                    with connection.cursor() as cursor:
                        cursor.execute("SELECT 1")
                    last_statement = time.monotonic()
                continue
            sql = self._statement(position)
            started = time.perf_counter()
            last_statement = time.monotonic()
            with connection.cursor() as cursor:
                cursor.execute(sql)
                grown = cursor.fetchone()[0]
            if self.metrics:
                self.metrics.head_checks.observe(time.perf_counter() - started)
            if grown:
                self._hinted = position
                self.hint()


    def _statement(self, position):
        """The check for ``position`` as SQL, compiled once per position (about a
        millisecond of CPU each time; the position moves only when the hub re-reads)."""
        if self._compiled is None or self._compiled[0] is not position:
            self._compiled = (position, compiled(select(exists().where(position.unseen(Change)))))
        return self._compiled[1]


class Watcher(Listener):
    """``LISTEN``, as ``notify``, for the NOTIFYs of the deployment's one head watcher,
    which this worker stands for too (``HeadWatch``, started and stopped with it)."""

    name = "watcher"
    notify = False

    def __init__(self, dsn, on_hint, on_lost=None, metrics=None, interval=0.005, keepalive=30.0):
        super().__init__(dsn, on_hint, on_lost, metrics, keepalive)
        self.candidate = HeadWatch(dsn, metrics=metrics, interval=interval)

    def start(self):
        self.candidate.start()
        return super().start()

    def stop(self):
        self.candidate.stop()
        super().stop()


class HeadWatch(WakeSource):
    """A candidate for the deployment's head watcher; the elected one notifies for the writers.

    The election is a session-level advisory lock (``LOCK``, keyed by the
    schema, so deployments sharing a database elect one each). A candidate
    waits for it inside PostgreSQL (``pg_advisory_lock``), on an asynchronous
    connection whose waits are the worker loop's (gevent's), so a waiting
    candidate sends no statement at all, and when the watcher's session ends
    (its worker killed, its host lost, its backend terminated) PostgreSQL
    grants the lock to the next candidate at once. A waiting candidate whose
    own worker dies leaves the queue within ``CLIENT_CHECK`` (PostgreSQL's
    ``client_connection_check_interval``, from version 14), rather than being granted the lock
    with nobody left to use it.

    The watcher checks every ``interval`` whether any row of the log is past
    its position, and on a move sends ``NOTIFY`` and takes a new position in
    one statement. A move is told once: a row committed after the check is
    past the new position, or was committed before the NOTIFY that the
    workers then read past. A new watcher notifies once as it takes over, for
    whatever its predecessor committed-and-did-not-tell in its last interval.
    """

    name = "head-watch"
    application_name = "community-sync-head-watch"
    notify = False
    LOCK = "hashtextextended('community-sync head watch ' || current_schema(), 0)"
    CLIENT_CHECK = "1s"

    def __init__(self, dsn, on_lost=None, metrics=None, interval=0.005):
        super().__init__(dsn, lambda: None, on_lost, metrics)
        self.interval = interval
        self.leading = False

    def connect(self):
        import psycopg2

        connection = psycopg2.connect(self.dsn, async_=True, **self.connect_arguments())
        gevent_wait_callback(connection)
        return connection

    def execute(self, cursor, sql):
        cursor.execute(sql)
        # psycogreen's wait, which the pool's connections use too: waits in the worker's loop.
        gevent_wait_callback(cursor.connection)

    def watch(self, connection):
        with connection.cursor() as cursor:
            if connection.server_version >= 140000:  # PostgreSQL 14 added the check
                self.execute(cursor, f"SET client_connection_check_interval = '{self.CLIENT_CHECK}'")
            self.execute(cursor, f"SELECT pg_advisory_lock({self.LOCK})")
            self._lead(True)
            log.info("this worker watches the change log's head for the deployment")
            try:
                self._follow(cursor)
            finally:
                self._lead(False)

    def _lead(self, leading):
        self.leading = leading
        if self.metrics:
            self.metrics.head_watcher.set(1 if leading else 0)

    def _follow(self, cursor):
        told = f"SELECT pg_notify('{CHANNEL}', ''), pg_current_snapshot()::text"
        self.execute(cursor, told)
        position = parse_position(cursor.fetchone()[1])
        check = compiled(select(exists().where(position.unseen(Change))))
        while not self.closed:
            gevent.sleep(self.interval)
            started = time.perf_counter()
            self.execute(cursor, check)
            grown = cursor.fetchone()[0]
            if self.metrics:
                self.metrics.head_checks.observe(time.perf_counter() - started)
            if grown:
                self.execute(cursor, told)
                position = parse_position(cursor.fetchone()[1])
                check = compiled(select(exists().where(position.unseen(Change))))


def compiled(statement):
    """A Core statement as SQL for a raw psycopg2 connection: its values are flags and xids."""
    return str(statement.compile(dialect=DIALECT, compile_kwargs={"literal_binds": True}))
