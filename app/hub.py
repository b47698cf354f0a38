"""The wait-and-wake machinery: one hub per worker process.

Waiting polls register here under their user (``with hub.waiting(...)``) and
then hold no database connection, no transaction and only a small
``Ticket``. Several polls of one user share one ``Waiters`` entry and one
event; a poll loops "check, wait, re-check" on it, so a spurious or shared
wake-up does no harm.

The hub learns that something *may* have changed from three sources, all of
them hints: the worker's wake source on PostgreSQL (``LISTEN`` or a check of
the log's head, ``app/listener.py``), this process's own
writes (``notify()``), and the safety-net timer of the batched re-read
(``app/reread.py``), which reads for all waiters at once and hands each user
its ``News`` (a burst of activity held to one wake-up per window by
``app/coalescing.py``). What the hub has read, and so can vouch for without a
read, is ``app/vouching.py``; clients that hang up are noticed by
``app/disconnects.py``; the change log is pruned by ``app/pruning.py``. Who
is online, which the registry is half of, is ``app/presence.py``.
"""
import functools
import time
from contextlib import contextmanager

import gevent
from gevent.event import Event

from .disconnects import DisconnectWatch
from .listener import HeadChecker, Listener
from .parking import Parking
from .presence import Presence
from .pruning import Pruner
from .reread import Reread, read_head
from .vouching import Vouching


class OverCapacity(Exception):
    """This process holds as many waiting polls as it can."""


class TooManyPolls(Exception):
    """The user already has as many polls waiting as one user may."""

    def __init__(self, limit):
        super().__init__(f"at most {limit} polls may wait for one user")
        self.limit = limit


class Waiters:
    """The polls of one user in this process: one event they all wait on.

    ``parked``: those of its polls that wait as a socket and a record rather
    than a greenlet (``app/parking.py``); ``on_wake`` hands them to the hub's
    answerer.
    """

    __slots__ = ("count", "event", "news", "parked", "on_wake")

    def __init__(self, on_wake=None):
        self.count = 0
        self.event = Event()
        self.news = []
        self.parked = None
        self.on_wake = on_wake

    def deliver(self, news):
        """Hand the user's polls one re-read's ``News`` and wake them."""
        self.news.append(news)
        self.wake()

    def wake(self):
        # Swap the event before setting it, so a poll that loops back to wait
        # blocks on a fresh one instead of spinning on a set one.
        event, self.event = self.event, Event()
        event.set()
        if self.parked:
            self.on_wake(self)


class Ticket:
    """One waiting poll: which news it has taken, and whether its client left."""

    __slots__ = ("user_id", "waiters", "seen", "gone", "fd", "parked")

    def __init__(self, user_id, waiters):
        self.user_id = user_id
        self.waiters = waiters
        self.seen = len(waiters.news)
        self.gone = False
        self.fd = None
        # Its poll waits parked (app/parking.py), which releases it.
        self.parked = False


class Hub:
    """The registry of waiting polls, and the background parts that wake them.

    A little over the usual class size: its life cycle (start, close, drain,
    stop) and the registry share the ``closing`` flag and the counts, and the
    background parts it owns are classes of their own.
    """

    def __init__(self, engine, *, safety_interval=5.0, max_waiting=12000, max_per_user=10,
                 coalesce=0.0, listen=None, wake="head", wake_poll_interval=0.05,
                 pruner=None, metrics=None, presence_ttl=None, presence_interval=10.0):
        self.max_waiting = max_waiting
        self.max_per_user = max_per_user
        self.metrics = metrics
        self.users = {}
        self.waiting_polls = 0
        self.in_flight = 0
        self.closing = False
        self.vouching = Vouching(functools.partial(read_head, engine))
        self.reread = Reread(engine, self.users, self.vouching, safety_interval=safety_interval,
                             coalesce=coalesce, metrics=metrics)
        self.disconnects = DisconnectWatch(self.drop)
        self.parking = Parking(self)
        self.pruner = pruner or Pruner(engine)
        # ``listen``: the database to watch for hints (PostgreSQL), as
        # ``wake`` says (``WAKE_SOURCE``). The pooled connections are not pinged on checkout (a
        # round trip per request): when the wake source's breaks, the pool
        # starts afresh.
        self.wake_source = None
        if listen and wake == "head":
            self.wake_source = HeadChecker(listen, self.reread.notify, lambda: self.vouching.position,
                                           engine.dispose, metrics, interval=wake_poll_interval)
        elif listen:
            self.wake_source = Listener(listen, self.reread.notify, engine.dispose, metrics)
        # Presence is off unless asked for (hub tests drive the registry alone).
        self.presence = None
        if presence_ttl:
            self.presence = Presence(engine, self.users, ttl=presence_ttl,
                                     interval=presence_interval)
        self._greenlets = []

    # -- life cycle -----------------------------------------------------------

    def start(self):
        """Start the re-read loop, the wake source and the pruning timer."""
        if self._greenlets:
            return
        self._greenlets.append(self.reread.start())
        if self.wake_source is not None:
            self._greenlets.append(self.wake_source.start())
        self._greenlets.append(self.pruner.start())
        if self.presence is not None:
            self._greenlets.append(self.presence.start())

    def close(self):
        """Answer every waiting poll now (``unchanged``) and refuse new ones.

        Called on SIGTERM and on a gunicorn reload, so clients reconnect to a
        worker that stays, well inside the graceful timeout.
        """
        self.closing = True
        for waiters in list(self.users.values()):
            waiters.wake()
        if self.wake_source is not None:
            self.wake_source.stop()
        self.reread.stop()
        self.pruner.stop()
        if self.presence is not None:
            self.presence.stop()

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

    @contextmanager
    def answering(self):
        """One request in flight for as long as the block runs, however it is left.

        Around the whole application call, so that it balances on every path:
        a ``before_request`` that refuses (a 431, a 429) skips the hooks after
        it but not the ``teardown_request`` ones, and a count split between
        the two would go down for a request it never counted, below zero,
        where a drain never sees the worker quiet.
        """
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1
            assert self.in_flight >= 0, "a request counted out that was never counted in"

    def stop(self):
        """Close and end the background greenlets (tests, app teardown)."""
        self.close()
        self.parking.stop()
        gevent.killall(self._greenlets, block=True, timeout=2)
        self._greenlets.clear()

    @property
    def ready(self):
        """Hints arrive: the wake source, where there is one, is connected."""
        return self.wake_source is None or self.wake_source.connected

    # -- admission and waiting ------------------------------------------------

    def admit(self, user_id):
        """Refuse a poll that would exceed a cap: ``OverCapacity`` or ``TooManyPolls``.

        A check only, for polls that take no place (``timeout=0``); a waiting
        poll is admitted by ``waiting()``, which takes its place in the same
        step. While closing, polls are admitted but never wait (see the poll
        view).
        """
        if self.waiting_polls >= self.max_waiting:
            raise OverCapacity()
        waiters = self.users.get(user_id)
        if waiters is not None and waiters.count >= self.max_per_user:
            raise TooManyPolls(self.max_per_user)

    @contextmanager
    def waiting(self, user_id, socket=None):
        """Admit a poll and register it *before* it reads the database.

        The caps are checked and the place taken with nothing in between that
        could yield, so a burst of simultaneous polls cannot all pass the check
        before any of them counts (raises ``OverCapacity`` or
        ``TooManyPolls``). The hub's position is taken after that, before the
        poll reads, so no change falls between its read and its wait.

        Yields the poll's ``Ticket``. Leaving the block, however it is left,
        releases what the wait took (``release``), unless the poll was
        parked, which releases it when it is answered.
        """
        self.admit(user_id)
        waiters = self.users.get(user_id)
        if waiters is None:
            waiters = self.users[user_id] = Waiters(self.parking.wake)
        waiters.count += 1
        self.waiting_polls += 1
        ticket = Ticket(user_id, waiters)
        self.vouching.subscribed(user_id)
        if self.metrics:
            self.metrics.add(self.metrics.waiting)
        try:
            self.vouching.ensure_position()
            if socket is not None:
                self.disconnects.watch(ticket, socket)
            yield ticket
        finally:
            if not ticket.parked:
                self.release(ticket)

    def release(self, ticket):
        """What a poll's wait took, given back: the registry entry, the watch on
        its socket, the waiting-polls gauge."""
        self.disconnects.forget(ticket)
        waiters, user_id = ticket.waiters, ticket.user_id
        waiters.count -= 1
        self.waiting_polls -= 1
        if self.metrics:
            self.metrics.add(self.metrics.waiting, -1)
        if waiters.count == 0 and self.users.get(user_id) is waiters:
            del self.users[user_id]
        if self.presence is not None:
            self.presence.released(user_id, ticket.gone)
        if not self.users:
            # Nobody waits: the position is kept, and read on, for the
            # re-polls of the clients just answered; then forgotten.
            self.reread.keep()

    def wait(self, ticket, timeout):
        """Block until news for the ticket's user, a drop, shutdown or ``timeout``.

        Returns the news the ticket has not taken yet (possibly none: a wake-up
        is only a reason to look again).
        """
        waiters = ticket.waiters
        if len(waiters.news) == ticket.seen and not (self.closing or ticket.gone):
            waiters.event.wait(timeout)
        return self.take(ticket)

    def take(self, ticket):
        """The news the ticket has not taken yet, without waiting."""
        waiters = ticket.waiters
        fresh = waiters.news[ticket.seen:]
        ticket.seen = len(waiters.news)
        return fresh

    def drop(self, ticket):
        """The client of ``ticket`` went away: wake its poll so it can leave."""
        ticket.gone = True
        ticket.waiters.wake()

    def notify(self):
        """This process wrote to the change log: a hint, cheap, callable anywhere."""
        if self.metrics:
            self.metrics.hints.labels("write").inc()
        self.vouching.wrote()
        self.reread.notify()

    def keep_reading(self):
        """A conditional snapshot: take a read position if there is none, and keep
        reading for one safety interval more, so that the next one can be
        answered from what the hub read (``Vouching.current``).

        With polls waiting the position is held anyway; without, it costs the
        wake source's checks and a re-read per hint for that interval.
        """
        self.vouching.ensure_position()
        if not self.users:
            self.reread.keep()


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
        coalesce=app.config["ACTIVITY_COALESCE"],
        listen=listen,
        wake=app.config["WAKE_SOURCE"],
        wake_poll_interval=app.config["WAKE_POLL_INTERVAL"],
        pruner=Pruner(engine, retention=app.config["CHANGE_RETENTION"],
                      interval=app.config["PRUNE_INTERVAL"]),
        metrics=app.extensions.get("metrics"),
        presence_ttl=app.config["PRESENCE_TTL"],
        presence_interval=app.config["PRESENCE_INTERVAL"],
    )
    app.extensions["hub"] = hub
    app.extensions["presence"] = hub.presence

    # Counted until the application returns its answer, not until the answer
    # is written: a client that reads slowly must not hold up a drain.
    wsgi_app = app.wsgi_app

    def counted(environ, start_response):
        with hub.answering():
            return wsgi_app(environ, start_response)

    app.wsgi_app = counted

    if app.config.get("HUB_AUTOSTART", True):
        hub.start()
