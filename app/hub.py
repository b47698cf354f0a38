"""The wait-and-wake machinery: one hub per worker process.

Waiting polls register here under their user and then hold no database
connection, no transaction and only a small ``Ticket``. Several polls of one
user share one ``Waiters`` entry and one event.

The hub learns that something *may* have changed from three sources, all of
them hints: the PostgreSQL listener (``LISTEN community_sync``, fed by the
triggers), this process's own writes, and a safety-net timer that catches what
a lost NOTIFY or another SQLite process left unsaid. On a hint it does one
batched re-read for all its waiters (the new change-log rows, then the state of
the waiting users those rows touch, whatever their number) and hands each user
the result as ``News``. The database stays the source of truth: a poll decides
what to answer from rows read from it, never from the hint.
"""
import logging
import random
import select
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import gevent
import gevent.socket
from gevent import monkey
from gevent.event import Event
from sqlalchemy.orm import Session

from . import feed
from .cache import LRU
from .db import read_transaction
from .errors import Problem

log = logging.getLogger(__name__)

CHANNEL = "community_sync"
# How much the hub remembers to vouch for re-polls' cursors (see Hub.vouches).
RECENT_USERS = 100_000
RECENT_SECONDS = 600


@dataclass(frozen=True)
class News:
    """One batched re-read, as it concerns one user."""

    rows: list
    communities: list
    hash: str
    position: object


class Waiters:
    """The polls of one user in this process: one event they all wait on."""

    __slots__ = ("count", "event", "news")

    def __init__(self):
        self.count = 0
        self.event = Event()
        self.news = []

    def wake(self):
        # Swap the event before setting it, so a poll that loops back to wait
        # blocks on a fresh one instead of spinning on a set one.
        event, self.event = self.event, Event()
        event.set()


class Ticket:
    """One waiting poll: which news it has taken, and whether its client left."""

    __slots__ = ("user_id", "waiters", "seen", "gone", "fd")

    def __init__(self, user_id, waiters):
        self.user_id = user_id
        self.waiters = waiters
        self.seen = len(waiters.news)
        self.gone = False
        self.fd = None


class Hub:
    def __init__(
        self,
        engine,
        *,
        safety_interval=5.0,
        max_waiting=12000,
        max_per_user=10,
        retention=7 * 24 * 3600,
        prune_interval=3600,
        listen=None,
        metrics=None,
    ):
        self.engine = engine
        self.safety_interval = safety_interval
        self.max_waiting = max_waiting
        self.max_per_user = max_per_user
        self.retention = retention
        self.prune_interval = prune_interval
        self.metrics = metrics
        self.users = {}
        self.waiting = 0
        self.in_flight = 0
        self.position = None
        # Since when this hub has read every change (``since``), and what it
        # read of whom: enough to vouch for a re-poll's cursor (see vouches()).
        self.epoch = None
        self.since = None
        self.since_at = 0.0
        self.recent = {}
        self.served = LRU(RECENT_USERS)
        self.closing = False
        self.reads = 0
        self._positioning = None
        self._hint = Event()
        self._greenlets = []
        self._next_prune = 0.0
        self.listener = Listener(listen, self.notify, self._database_lost, metrics) if listen else None
        self.disconnects = DisconnectWatch(self)

    # -- life cycle -----------------------------------------------------------

    def start(self):
        if self._greenlets:
            return
        self._greenlets.append(gevent.spawn(self._run))
        if self.listener is not None:
            self._greenlets.append(self.listener.start())

    def close(self):
        """Answer every waiting poll now (``unchanged``) and refuse new ones.

        Called on SIGTERM and on a gunicorn reload, so clients reconnect to a
        worker that stays, well inside the graceful timeout.
        """
        self.closing = True
        for waiters in list(self.users.values()):
            waiters.wake()
        if self.listener is not None:
            self.listener.stop()
        self._hint.set()

    def drain(self, timeout, quiet=1.0):
        """Close, then wait (up to ``timeout``) for ``quiet`` seconds with no request in flight.

        Answers to polls that began before the drain keep their connection
        alive, and clients send their next poll on it at once; the quiet period
        lets those be answered too (gunicorn closes the connection after a
        request that starts during shutdown). What is left after that are idle
        keep-alive connections, which would otherwise hold a gevent worker for
        its whole graceful timeout.
        """
        self.close()
        deadline = time.monotonic() + timeout
        quiet_since = None
        while time.monotonic() < deadline:
            now = time.monotonic()
            if self.in_flight:
                quiet_since = None
            elif quiet_since is None:
                quiet_since = now
            elif now - quiet_since >= quiet:
                return True
            gevent.sleep(0.05)
        return False

    def stop(self):
        """Close and end the background greenlets (tests, app teardown)."""
        self.close()
        gevent.killall(self._greenlets, block=True, timeout=2)
        self._greenlets.clear()

    @property
    def ready(self):
        return self.listener is None or self.listener.connected

    # -- admission and waiting ------------------------------------------------

    def admit(self, user_id):
        """Refuse a poll that would exceed a cap, before any database work.

        While closing, polls are admitted but never wait (see the poll view).
        """
        if self.waiting >= self.max_waiting:
            raise Problem(
                503, "over-capacity", "This worker holds as many waiting polls as it can.",
                headers={"Retry-After": str(random.randint(2, 10))},
            )
        waiters = self.users.get(user_id)
        if waiters is not None and waiters.count >= self.max_per_user:
            raise Problem(
                429, "too-many-polls",
                f"At most {self.max_per_user} polls may wait for one user at once.",
                headers={"Retry-After": "5"},
            )

    def subscribe(self, user_id, socket=None):
        """Register a poll *before* it reads the database, so no change falls between."""
        self._ensure_position()
        waiters = self.users.get(user_id)
        if waiters is None:
            waiters = self.users[user_id] = Waiters()
        waiters.count += 1
        self.waiting += 1
        ticket = Ticket(user_id, waiters)
        if socket is not None:
            self.disconnects.watch(ticket, socket)
        if self.metrics:
            self.metrics.waiting.inc()
        return ticket

    def unsubscribe(self, ticket):
        self.disconnects.forget(ticket)
        waiters = ticket.waiters
        waiters.count -= 1
        self.waiting -= 1
        if self.metrics:
            self.metrics.waiting.dec()
        if waiters.count == 0 and self.users.get(ticket.user_id) is waiters:
            del self.users[ticket.user_id]
        if not self.users:
            # Nobody waits: forget the position rather than read from a stale
            # one later. The next subscriber takes a fresh one first.
            self._forget_position()

    def wait(self, ticket, timeout):
        """Block until news for the ticket's user, a drop, shutdown or ``timeout``.

        Returns the news the ticket has not taken yet (possibly none: a wake-up
        is only a reason to look again).
        """
        waiters = ticket.waiters
        if len(waiters.news) == ticket.seen and not (self.closing or ticket.gone):
            waiters.event.wait(timeout)
        fresh = waiters.news[ticket.seen:]
        ticket.seen = len(waiters.news)
        return fresh

    def drop(self, ticket):
        """The client of ``ticket`` went away: wake its poll so it can leave."""
        ticket.gone = True
        ticket.waiters.wake()

    def notify(self):
        """A hint that the change log may have grown; cheap, callable anywhere."""
        self._hint.set()

    def _database_lost(self):
        """The listener's connection broke: the pooled ones most likely did too.

        Pooled connections are not pinged on checkout (a round trip per
        request); a restart would leave each to fail once, whenever it is next
        used. The listener notices at once, so the pool starts afresh.
        """
        self.engine.dispose()

    def vouches(self, user_id, cursor, client_hash):
        """Can a poll with this cursor and hash wait without reading the database?

        Yes when this hub has read every change since before the cursor
        (``since``) and none of them was this user's unless the cursor saw it:
        then the client's state is current, and whatever comes next reaches the
        poll as news, since it subscribed before asking. This is what makes a
        quiet client's re-poll, every POLL_MAX_TIMEOUT, cost no query.
        """
        if self.since is None or cursor is None or client_hash is None:
            return False
        # The hash must be one this process served the user: a stale or forged
        # one goes the long way, and is answered with a reset there.
        served = self.served.get(user_id)
        if served is None or served[0] != client_hash:
            return False
        if cursor.epoch != self.epoch or not cursor.position.covers(self.since):
            return False
        rows = self.recent.get(user_id, ())
        return rows is not None and all(cursor.position.sees(row) for row in rows)

    # -- the batched re-read --------------------------------------------------

    def served_state(self, user_id, digest, last_change_at):
        """Note the state this process just gave the user (see vouches())."""
        self.served.put(user_id, (digest, last_change_at))

    def last_change_served(self, user_id):
        """When the state last served to the user last changed, as that answer said."""
        served = self.served.get(user_id)
        return served[1] if served else None

    def _ensure_position(self):
        while self.position is None:
            if self._positioning is not None:
                self._positioning.wait()
                continue
            self._positioning = Event()
            try:
                with read_transaction(self.engine, single_statement=True) as connection:
                    epoch, position = feed.read_head(connection)
                if self.position is None:
                    self.position = position
                    self.epoch = epoch
                    self._track_from(position)
            finally:
                event, self._positioning = self._positioning, None
                event.set()

    def refresh(self):
        """Read what changed since the hub's position and hand it to the waiters.

        A fixed number of statements whatever the number of waiters: the new
        rows, then the state of the waiting users among them in one query.
        """
        if self.position is None:
            return
        self.reads += 1
        with read_transaction(self.engine) as session:
            rows, position = feed.read_news(session, self.position)
            # Noted before the next query yields: from here on a poll of a user
            # with rows in this batch is not vouched for, and one already
            # waiting is among those woken below.
            self._remember(rows, position)
            touched = defaultdict(list)
            for row in rows:
                if row.user_id in self.users:
                    touched[row.user_id].append(row)
            states = feed.read_states(session, list(touched)) if touched else {}
        if not self.users:
            self._forget_position()
        for user_id, user_rows in touched.items():
            waiters = self.users.get(user_id)
            if waiters is None:
                continue
            communities = states[user_id]
            waiters.news.append(News(user_rows, communities, feed.state_hash(communities), position))
            waiters.wake()
        if self.metrics and touched:
            self.metrics.wakeups.inc(len(touched))

    def _track_from(self, position):
        self.since = position
        self.since_at = time.monotonic()
        self.recent = {}

    def _forget_position(self):
        self.position = None
        self.since = None
        self.recent = {}

    def _remember(self, rows, position):
        """Advance the position, noting whose changes were read (for vouches())."""
        self.position = position
        if self.since is None:
            return
        if len(self.recent) > RECENT_USERS or time.monotonic() - self.since_at > RECENT_SECONDS:
            # Start over from here: older cursors simply get a read again.
            self._track_from(position)
            return
        for row in rows:
            seen = self.recent.get(row.user_id, ())
            # A user with many changes is not worth tracking row by row.
            self.recent[row.user_id] = None if seen is None or len(seen) >= 8 else (*seen, row)

    def _run(self):
        failures = 0
        # Workers that start together should not all prune together.
        self._next_prune = time.time() + self.prune_interval * random.uniform(0.1, 1.0)
        while not self.closing:
            self._hint.wait(self.safety_interval)
            self._hint.clear()
            if self.closing:
                return
            try:
                if self.users:
                    self.refresh()
                self._prune_if_due()
                failures = 0
            except Exception:
                failures += 1
                delay = min(5.0, 0.1 * 2**failures)
                log.exception("re-read failed; retrying in %.1fs", delay)
                gevent.sleep(delay * random.uniform(0.5, 1.0))
                self._hint.set()

    def _prune_if_due(self):
        now = time.time()
        if now < self._next_prune:
            return
        self._next_prune = now + self.prune_interval * random.uniform(0.9, 1.1)
        self.prune()

    def prune(self, now=None):
        """Delete change-log rows past the retention period."""
        moment = now or datetime.now(timezone.utc)
        cutoff = moment - timedelta(seconds=self.retention)
        with Session(self.engine) as session, session.begin():
            deleted = feed.prune(session, cutoff)
        if deleted:
            log.info("pruned %d change-log rows older than %s", deleted, cutoff.isoformat())
        return deleted


class Listener:
    """One ``LISTEN`` connection per worker process; every NOTIFY becomes a hint.

    NOTIFY is lost while the listener is down, so it reconnects with backoff
    and, once connected again, hints the hub to re-check everything waiting.
    """

    def __init__(self, dsn, on_notify, on_lost=None, metrics=None, keepalive=30.0):
        self.dsn = dsn
        self.on_notify = on_notify
        self.on_lost = on_lost
        self.metrics = metrics
        self.keepalive = keepalive
        self.connected = False
        self.reconnects = 0
        self.closed = False
        self._connection = None
        self._greenlet = None
        self._failures = 0

    def start(self):
        self._greenlet = gevent.spawn(self.run)
        return self._greenlet

    def stop(self):
        """Stop listening. The greenlet is killed rather than its connection closed
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
        import psycopg2

        while not self.closed:
            try:
                self._listen()
            except (psycopg2.Error, OSError) as error:
                if self.closed:
                    return
                self.connected = False
                self.reconnects += 1
                if self.metrics:
                    self.metrics.listener_reconnects.inc()
                self._failures += 1
                delay = min(5.0, 0.05 * 2**self._failures) * random.uniform(0.5, 1.0)
                log.warning("listener lost (%s); reconnecting in %.2fs", error, delay)
                gevent.sleep(delay)

    def _listen(self):
        import psycopg2
        import psycopg2.extensions

        connection = psycopg2.connect(self.dsn, application_name="community-sync-listener")
        self._connection = connection
        try:
            connection.set_isolation_level(psycopg2.extensions.ISOLATION_LEVEL_AUTOCOMMIT)
            with connection.cursor() as cursor:
                cursor.execute(f"LISTEN {CHANNEL}")
            self.connected = True
            self._failures = 0  # the next outage backs off from the start again
            # Whatever was notified while we were away is lost: look again.
            self.on_notify()
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
                    self.on_notify()
        except (psycopg2.Error, OSError):
            if self.connected and not self.closed and self.on_lost is not None:
                self.on_lost()
            raise
        finally:
            self.connected = False
            if self._connection is connection:
                self._connection = None
                connection.close()


class DisconnectWatch:
    """Notices clients that hang up mid-wait, within moments rather than at timeout.

    One epoll set per process, watched by one greenlet: a waiting poll costs a
    registered file descriptor, and nothing at all until its peer closes.
    """

    def __init__(self, hub):
        self.hub = hub
        self.tickets = {}
        self._epoll = None
        self._greenlet = None

    def watch(self, ticket, sock):
        try:
            fd = sock.fileno()
        except OSError:
            return
        if fd < 0:
            return
        epoll = self._ensure_epoll()
        if epoll is None:
            return
        try:
            epoll.register(fd, select.EPOLLRDHUP)
        except (OSError, FileExistsError):
            return
        ticket.fd = fd
        self.tickets[fd] = ticket

    def forget(self, ticket):
        fd, ticket.fd = ticket.fd, None
        if fd is None or self.tickets.get(fd) is not ticket:
            return
        del self.tickets[fd]
        try:
            self._epoll.unregister(fd)
        except (OSError, ValueError):
            pass

    def _ensure_epoll(self):
        if self._epoll is None:
            try:
                # gevent's patched select hides epoll; the original is what we want.
                epoll_class = monkey.get_original("select", "epoll")
            except AttributeError:
                return None
            self._epoll = epoll_class()
            self._greenlet = gevent.spawn(self._run)
        return self._epoll

    def _run(self):
        epoll = self._epoll
        while True:
            gevent.socket.wait_read(epoll.fileno())
            for fd, _events in epoll.poll(0):
                ticket = self.tickets.pop(fd, None)
                try:
                    epoll.unregister(fd)
                except (OSError, ValueError):
                    pass
                if ticket is not None:
                    ticket.fd = None
                    self.hub.drop(ticket)


def init_app(app):
    engine = app.extensions["db"]
    listen = None
    if engine.dialect.name == "postgresql":
        listen = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    hub = Hub(
        engine,
        safety_interval=app.config["SAFETY_NET_INTERVAL"],
        max_waiting=app.config["POLL_MAX_WAITING"],
        max_per_user=app.config["POLL_MAX_PER_USER"],
        retention=app.config["CHANGE_RETENTION"],
        prune_interval=app.config["PRUNE_INTERVAL"],
        listen=listen,
        metrics=app.extensions.get("metrics"),
    )
    app.extensions["hub"] = hub

    @app.before_request
    def request_started():
        hub.in_flight += 1

    @app.teardown_request
    def request_finished(_exc=None):
        hub.in_flight -= 1

    if app.config.get("HUB_AUTOSTART", True):
        hub.start()
