"""Who is online through this worker: its own users, shared with the other workers through the database.

A user is online while one of its long polls is held, or for ``PRESENCE_TTL``
seconds after a request of its own. Each worker knows only its own users: the
hub's registry holds the waiting polls, every authenticated request is noted
here (``seen``), and a poll whose client hung up (``app/live/disconnects.py``)
ends its user's presence on this worker at once, without the TTL's grace: the
tab is gone, not between two polls.

The workers share what they know through two tables (migration 0005), written
by one greenlet per worker, never per request:

- on a transition (a user arrives on this worker or leaves it), within a
  fraction of a second, one statement for all the arrivals and one for all
  the departures gathered meanwhile;
- every ``PRESENCE_INTERVAL``, one statement that refreshes this worker's own
  row in ``presence_workers``, whatever the number of its users.

The same transaction writes who reads which topic here (``reading``,
migration 0008): a (user, watch) pair while one of the user's polls held here
watches it, or for ``READING_GRACE`` seconds after such a poll was answered
(its client polls again at once), again only on transitions.

Readers count a ``presence`` row only while its worker's refresh is within
``PRESENCE_TTL`` of the database's clock (the live workers, read once per
``PRESENCE_INTERVAL``), so a worker that dies (SIGKILL, a lost host) takes its
users offline within ``PRESENCE_TTL`` plus one interval without anyone
cleaning up after it; any worker deletes such leftovers now and then. The
counts are read back in ``app/live/online_counts.py``.
"""
import logging
import os
import random
import secrets
import socket
import time

import gevent
from gevent.event import Event
from gevent.lock import Semaphore

from ..store import queries
from ..store.db import read_transaction, write_transaction
from ..store.models import Presence, Reading

log = logging.getLogger(__name__)

# A worker silent for this many TTLs is dead, whatever it was doing: its rows
# go. Readers stopped counting them long before; this only reclaims space.
SWEEP_AFTER_TTLS = 10
# A watch stays read this long after the poll that held it was answered: its
# client's next poll, sent at once, takes it over without a write.
READING_GRACE = 5.0
# PostgreSQL reads a table's statistics again when this worker's rows in it
# have doubled since it last asked, and number this many at least. A table
# that fills within a minute (a deploy, an arrival storm, a restart) keeps
# the statistics of when it was nearly empty until autovacuum next comes by;
# the planner then counts the members online from the wrong side: 30-50 ms a
# community at 10,000 online instead of 2, and every answer that needs a
# count waits for it (bench/notes.md, scenario 19). Doubling, so a worker
# that fills asks a few times (at 1,000, 2,000, 4,000...) and a steady one never.
ANALYZE_AFTER_ROWS = 1000


def worker_id():
    """This process, unique across hosts and restarts (a pid is reused, the random part not)."""
    return f"{socket.gethostname()[:32]}:{os.getpid()}:{secrets.token_hex(4)}"


class WorkerPresence:
    """This worker's online users, written on transitions and refreshed on a timer.

    ``holding`` is the hub's registry (user id -> its waiting polls here),
    read only; ``watching`` its index of what they watch
    (``app.live.registry.Watching``). ``seen``: user id -> when its last
    request here started (or its last poll here ended). ``written``: the
    users whose ``presence`` row this worker has committed. ``read_seen`` and
    ``read_written`` are the same for (user id, watch) pairs.
    """

    def __init__(self, engine, holding, watching=None, *, ttl=70.0, interval=10.0):
        self.engine = engine
        self.holding = holding
        self.watching = watching
        self.read_seen = {}
        self.read_written = set()
        self.ttl = ttl
        self.interval = interval
        self.worker_id = worker_id()
        self.seen = {}
        self.written = set()
        # This worker's rows in each table when PostgreSQL last read its statistics.
        self._analyzed_at = {Presence: 0, Reading: 0}
        self._wake = Event()
        # One write of this worker's rows at a time: a refresh in flight and the
        # leave at shutdown would delete the same rows in two transactions,
        # and deadlock.
        self._writing = Semaphore()
        self._stopping = False
        self._next_sweep = time.monotonic() + ttl * random.uniform(0.5, 1.5)

    # -- what this worker sees --------------------------------------------------

    def seen_now(self, user_id):
        """A request of the user (authenticated): online here for ``ttl`` from now."""
        self.seen[user_id] = time.monotonic()
        if user_id not in self.written:
            self._wake.set()

    def reads(self, user_id, watches):
        """A poll of the user watching ``watches`` is held here: written within a moment if new."""
        if any((user_id, watch) not in self.read_written for watch in watches.names()):
            self._wake.set()

    def released(self, user_id, hung_up, watches):
        """One of the user's polls here ended; ``hung_up``: its client went away mid-wait.

        Called once the hub has let the poll go. An answered poll is a request
        that just ended, and the client is expected back at once; a hang-up
        with no other poll of the user left here ends its presence here now,
        and what it read at once.
        """
        if not hung_up:
            self.seen_now(user_id)
            now = time.monotonic()
            self.read_seen.update(((user_id, watch), now) for watch in watches.names())
            return
        for watch in watches.names():
            self.read_seen.pop((user_id, watch), None)
            if (user_id, watch) in self.read_written:
                self._wake.set()
        if user_id not in self.holding:
            self.seen.pop(user_id, None)
            if user_id in self.written:
                self._wake.set()

    def online(self, now=None):
        """The users online through this worker: a poll held, or seen within ``ttl``."""
        now = time.monotonic() if now is None else now
        for user_id in [u for u, at in self.seen.items() if now - at >= self.ttl]:
            del self.seen[user_id]
        return set(self.holding) | set(self.seen)

    def reading(self, now=None):
        """The (user id, watch) pairs read through this worker: held, or answered within the grace."""
        now = time.monotonic() if now is None else now
        for pair in [p for p, at in self.read_seen.items() if now - at >= READING_GRACE]:
            del self.read_seen[pair]
        held = set(self.read_seen)
        if self.watching is not None:
            for (community_id, topic), users in self.watching.users.items():
                held.update((user_id, f"{community_id}/{topic}") for user_id in users)
        return held

    def counted(self, workers):
        """The live ``workers`` whose rows count, with this one as soon as it has written rows."""
        if self.written and self.worker_id not in workers:
            return workers + (self.worker_id,)
        return workers

    # -- writing it down ----------------------------------------------------------

    def refresh(self):
        """Refresh this worker's row and write the arrivals and departures since the last time.

        One transaction: the refresh first (a row another worker swept away as
        dead makes this worker write all of its users again), then one
        statement for the arrivals and one for the departures, when there are
        any. What changes while it runs is written next time. Nothing at all
        while the worker has no user online and has written none.
        """
        with self._writing:
            if not self._refresh():
                return
        if time.monotonic() >= self._next_sweep:
            self._next_sweep = time.monotonic() + self.ttl * random.uniform(0.5, 1.5)
            self.sweep()

    def _refresh(self):
        """``refresh`` without the sweep: False when the worker is idle and wrote nothing."""
        online, reading = self.online(), self.reading()
        if not online and not self.written and not reading and not self.read_written:
            # Nobody here, and no row of ours that readers count: an idle
            # worker does no database work (its own row may go stale).
            return False
        with write_transaction(self.engine) as session:
            dialect = session.get_bind().dialect.name
            refreshed = session.execute(queries.refresh_worker(self.worker_id, dialect)).rowcount
            if not refreshed:
                session.execute(queries.register_worker(self.worker_id, dialect))
                written, read_written = set(), set()
            else:
                written, read_written = self.written, self.read_written
            arrived, departed = online - written, written - online
            if arrived:
                session.execute(queries.arrive(self.worker_id, arrived, dialect))
            if departed:
                session.execute(queries.depart(self.worker_id, departed, dialect))
            started, stopped = reading - read_written, read_written - reading
            if started:
                session.execute(queries.start_reading(self.worker_id, started, dialect))
            if stopped:
                session.execute(queries.stop_reading(self.worker_id, stopped, dialect))
        self.written, self.read_written = online, reading
        self._analyze_grown({Presence: len(online), Reading: len(reading)}, dialect)
        return True

    def _analyze_grown(self, rows, dialect):
        """Have PostgreSQL read the statistics of the tables where this worker's ``rows`` doubled
        (best effort)."""
        analyzed_at = self._analyzed_at
        grown = [table for table, count in rows.items()
                 if count >= max(ANALYZE_AFTER_ROWS, 2 * analyzed_at[table])]
        for table, count in rows.items():
            # Shrunk to half: a refill from here doubles again.
            if table in grown or count < analyzed_at[table] // 2:
                analyzed_at[table] = count
        statement = queries.analyze(grown, dialect) if grown else None
        if statement is None:
            return
        try:
            # One statement in autocommit, as single reads run.
            with read_transaction(self.engine, single_statement=True) as connection:
                connection.execute(statement)
        except Exception:
            log.warning("presence statistics not refreshed: autovacuum will", exc_info=True)

    def sweep(self):
        """Delete what dead workers left behind (readers ignore it already)."""
        with write_transaction(self.engine) as session:
            dialect = session.get_bind().dialect.name
            for statement in queries.sweep_dead_workers(SWEEP_AFTER_TTLS * self.ttl, dialect):
                session.execute(statement)

    def leave(self):
        """This worker stops: its users are no longer online through it."""
        with self._writing, write_transaction(self.engine) as session:
            for statement in queries.forget_worker(self.worker_id):
                session.execute(statement)
        self.written, self.read_written = set(), set()

    def start(self):
        """Write on transitions and refresh on the timer, in a greenlet of its own (returned)."""
        return gevent.spawn(self._run)

    def stop(self):
        """End the loop and take this worker's users out (best effort: else they expire)."""
        if self._stopping:
            return
        self._stopping = True
        self._wake.set()
        try:
            self.leave()
        except Exception:
            log.warning("presence rows left to expire: the database could not be reached",
                        exc_info=True)

    def _run(self):
        # Arrivals and departures within this gap go in one write.
        gap = min(0.5, self.interval / 4)
        failures = 0
        due = 0.0
        while not self._stopping:
            self._wake.wait(max(0.0, due - time.monotonic()))
            if self._stopping:
                return
            self._wake.clear()
            try:
                self.refresh()
                failures = 0
                due = time.monotonic() + self.interval
            except Exception:
                failures += 1
                delay = min(self.interval, 0.1 * 2**failures)
                log.exception("presence refresh failed; retrying in %.1fs", delay)
                gevent.sleep(delay * random.uniform(0.5, 1.0))
                continue
            gevent.sleep(gap)
