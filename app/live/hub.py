"""The wait-and-wake machinery: one hub per worker process.

Waiting polls register in the hub under their user (its registry half,
``app/live/registry.py``), each as a ``PollSession`` (``app/live/session.py``)
that waits in a greenlet or parked (``app/live/parking.py``).

The hub learns that something *may* have changed from three sources, all of
them hints: the worker's wake source on PostgreSQL (``LISTEN`` or a check of
the log's head, ``app/live/listener.py``), this process's own
writes (``notify()``), and the safety-net timer of the batched re-read
(``app/live/reread.py``), which reads for all waiters at once and hands each user
its ``News`` (a burst of activity held to one wake-up per window by
``app/live/coalescing.py``). What the hub has read, and so can vouch for without a
read, is ``app/live/vouching.py``; clients that hang up are noticed by
``app/live/disconnects.py``; what it has read and not yet answered with, for
the operator's gauge, is ``app/live/owed.py``; the change log is pruned by
``app/store/pruning.py``. Who
is online through this worker, which the registry is half of, is
``app/live/presence.py``; the counts read back, ``app/live/online_counts.py``;
who is typing in the topics its polls watch, ``app/live/typing.py``.
"""
import functools
import time
from contextlib import contextmanager
from dataclasses import replace

import gevent

from ..store.db import normalize_url
from ..store.pruning import Pruner
from .admission import Admission
from .coalescing import NOTHING, urgency
from .disconnects import DisconnectWatch
from .listener import HeadChecker, Listener, Watcher
from .owed import Owed, recorded
from .parking import Parking
from .online_counts import OnlineCounts
from .presence import WorkerPresence
from .registry import Registry, Watching
from .reread import Reread, read_head
from .typing import Typing
from .vouching import Vouching
from ..watches import NONE as NO_WATCHES


class Hub(Registry):
    """The registry of waiting polls (``Registry``), and the background parts that wake them.

    Its life cycle (start, close, drain, stop) and the registry share the
    ``closing`` flag and the counts; the background parts it owns are
    classes of their own. A little over the usual class size because it is
    the one face the views see: each poll-session method here is a line or
    two that hands the work to the part that does it.
    """

    def __init__(self, engine, *, safety_interval=5.0, max_waiting=12000, max_per_user=10,
                 coalesce=0.0, coalesce_max=None, listen=None, wake="head", wake_poll_interval=0.05,
                 watcher_interval=0.005,
                 pruner=None, metrics=None, presence_ttl=None, presence_interval=10.0,
                 admission_reads=4, hold_the_loop=2.0, typing_ttl=None):
        self.max_waiting = max_waiting
        self.max_per_user = max_per_user
        self.metrics = metrics
        self.users = {}
        self.watching = Watching()
        self.waiting_polls = 0
        self.in_flight = 0
        self.closing = False
        self.vouching = Vouching(functools.partial(read_head, engine))
        self.owed = Owed(metrics.oldest_owed if metrics else None)
        self.reread = Reread(engine, self.users, self.vouching, self.owed, safety_interval=safety_interval,
                             coalesce=coalesce, coalesce_max=coalesce_max, hold_the_loop=hold_the_loop,
                             metrics=metrics, watchers=self.watching)
        self.disconnects = DisconnectWatch(self.drop)
        self.admission = Admission(engine, lanes=admission_reads, metrics=metrics)
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
        elif listen and wake == "watcher":
            self.wake_source = Watcher(listen, self.reread.notify, engine.dispose, metrics,
                                       interval=watcher_interval)
        elif listen:
            self.wake_source = Listener(listen, self.reread.notify, engine.dispose, metrics)
        # Presence is off unless asked for (hub tests drive the registry alone).
        self.presence = self.online = None
        if presence_ttl:
            self.presence = WorkerPresence(engine, self.users, self.watching, ttl=presence_ttl,
                                           interval=presence_interval)
            self.online = OnlineCounts(engine, self.presence)
        # So is typing (``TYPING_TTL``).
        self.typing = Typing(engine, self.watching, self.users, ttl=typing_ttl) if typing_ttl else None
        self._greenlets = []

    # -- life cycle -----------------------------------------------------------

    def start(self):
        """Start the re-read loop, the wake source, the pruning timer and the owed-change report."""
        if self._greenlets:
            return
        self._greenlets.append(self.reread.start())
        self._greenlets.append(self.owed.start())
        if self.wake_source is not None:
            self._greenlets.append(self.wake_source.start())
        self._greenlets.append(self.pruner.start())
        if self.presence is not None:
            self._greenlets.append(self.presence.start())
        if self.typing is not None:
            self._greenlets.append(self.typing.start())

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
        if self.typing is not None:
            self.typing.stop()

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

    # -- poll sessions ------------------------------------------------------------

    def look(self, user_id, known, watches=NO_WATCHES):
        """Read what a client that knows ``known`` (and ``watches`` topics) must be told now, or
        ``unchanged`` (then a poll may wait): alone, or batched with other arriving polls (``Admission``)."""
        return self.admission.look(user_id, known, watches)

    def park(self, session):
        """Leave ``session`` to the answerer: its parked record, which the worker hands its socket to."""
        return self.parking.park(session)

    def answer_parked_with(self, render, app):
        """How a parked poll's answer is made (``render(session)``), in ``app``'s context; set once."""
        self.parking.render, self.parking.app = render, app

    def conclude(self, user_id, reply, now):
        """``reply`` as its client will hold it (a ``changed`` one changed the state ``now``),
        noted for vouching for that client's next request; the lag of the changes it carries measured."""
        if reply.changes and self.metrics:
            self.metrics.observe_delivery(recorded(reply.changes), now, reply.waited)
        if reply.status == "changed":
            reply = replace(reply, known=replace(reply.known, last_change_at=now))
        self.note_served(user_id, reply.known, reply.communities)
        return reply

    def measured(self, reply):
        """Around making the answer to ``reply`` in a poll's greenlet: an answer of community-wide
        rows to a poll that waited is timed, for the coalescing window (``Coalescing.adapt``)."""
        return self.reread.coalescing.measure(urgency(reply.changes) if reply.waited else NOTHING)

    def note_served(self, user_id, known, communities=None):
        """The state ``known`` (its cursor, hash and last change) was just served to the user."""
        self.vouching.served_state(user_id, known, communities)

    def served_if_current(self, user_id):
        """The state last served to the user (``Served``), when this hub can vouch it is
        still the user's without a read; else None. What answers a snapshot ``304``."""
        served = self.vouching.served.get(user_id)
        return served if served is not None and self.vouching.current(user_id, served.hash) else None

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
        # Directly at PostgreSQL when the pool goes through a transaction-mode PgBouncer.
        url = normalize_url(app.config["WAKE_DATABASE_URL"]) if app.config["WAKE_DATABASE_URL"] else engine.url
        listen = url.set(drivername="postgresql").render_as_string(hide_password=False)
    hub = Hub(
        engine,
        safety_interval=app.config["SAFETY_NET_INTERVAL"],
        max_waiting=app.config["POLL_MAX_WAITING"],
        max_per_user=app.config["POLL_MAX_PER_USER"],
        coalesce=app.config["ACTIVITY_COALESCE"],
        coalesce_max=app.config["ACTIVITY_COALESCE_MAX"],
        listen=listen,
        wake=app.config["WAKE_SOURCE"],
        wake_poll_interval=app.config["WAKE_POLL_INTERVAL"],
        watcher_interval=app.config["WATCHER_INTERVAL"],
        pruner=Pruner(engine, retention=app.config["CHANGE_RETENTION"],
                      interval=app.config["PRUNE_INTERVAL"]),
        metrics=app.extensions.get("metrics"),
        presence_ttl=app.config["PRESENCE_TTL"],
        presence_interval=app.config["PRESENCE_INTERVAL"],
        admission_reads=app.config["ADMISSION_READS"],
        hold_the_loop=app.config["HOLD_THE_LOOP"],
        typing_ttl=app.config["TYPING_TTL"],
    )
    app.extensions["hub"] = hub
    app.extensions["presence"] = hub.presence
    app.extensions["online_counts"] = hub.online
    app.extensions["typing"] = hub.typing

    # Counted until the application returns its answer, not until the answer
    # is written: a client that reads slowly must not hold up a drain.
    wsgi_app = app.wsgi_app

    def counted(environ, start_response):
        with hub.answering():
            return wsgi_app(environ, start_response)

    app.wsgi_app = counted

    if app.config.get("HUB_AUTOSTART", True):
        hub.start()
