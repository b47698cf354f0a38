"""Who is online, read back for communities: counts per community, and the list of one.

Each worker writes its own users down (``app/live/presence.py``); these read
what every live worker wrote. Counts per community are read for the
communities of an answer in one statement and reused for ``PRESENCE_INTERVAL``
(``counts()``); for one interval more they are still answered with while
being read again behind the answer, so a woken poll does not wait for a
count. They are not part of any state hash: a count that changes wakes no
poll.
"""
import logging
import time

import gevent
from gevent.lock import Semaphore

from ..store import queries
from .. import wire
from ..cache import LRU
from ..store.db import read_transaction

# Counts remembered per worker (a community's count costs a few bytes).
CACHED_COMMUNITIES = 100_000

log = logging.getLogger(__name__)


class OnlineCounts:
    """The members online in communities, counted through the rows of the live workers.

    ``presence`` is this worker's :class:`~app.live.presence.WorkerPresence`:
    its TTL and interval are the ones counted by, and its own rows count from
    the moment it has written them.
    """

    def __init__(self, engine, presence):
        self.engine = engine
        self.presence = presence
        self.ttl = presence.ttl
        self.interval = presence.interval
        self.cache = LRU(CACHED_COMMUNITIES)
        # One count read at a time per worker, for every answer waiting on it:
        # the answers of a fan-out all find the same counts stale at once, and
        # would each read them. ``_wanted``: the communities they wait for.
        self._counting = Semaphore()
        self._wanted = set()
        # Counts answered with stale, to be read again once those answers are out.
        self._later = set()
        self._rereading = None
        # The ids of the live workers (refreshed within ``ttl``), and when they were read.
        self.live = ((), float("-inf"))

    def counts(self, community_ids):
        """``{community id: members online}`` for these communities, in their order.

        Counts read less than ``interval`` ago are reused. Those read less
        than two intervals ago are too, and read again in the background
        (``_read_later``): the count read stands between a woken poll and its
        answer otherwise, tens of milliseconds on a busy worker, while a count
        one interval older changes nothing the contract promises (it is
        refreshed at most every interval, not at least). The rest are read
        in one statement, whatever their number, together with those that the
        answers queued behind this one want: the answers of a fan-out find
        their users' communities stale all at once, and share a read or two.
        """
        known = {}
        stale = self._cached(community_ids, known, self._later)
        if self._later and self._rereading is None:
            self._rereading = gevent.spawn(self._read_later)
        if stale:
            self._wanted.update(stale)
            with self._counting:
                # Whoever held the lock before may have read these meanwhile.
                stale = self._cached(stale, known)
                if stale:
                    wanted = set(stale).union(self._cached(self._wanted, {}))
                    self._wanted.clear()
                    read = self._read(wanted)
                    known.update((community_id, read[community_id]) for community_id in stale)
        return {community_id: known[community_id] for community_id in community_ids}

    def _read(self, community_ids):
        """The counts of these communities, read in one statement and cached."""
        now = time.monotonic()
        with read_transaction(self.engine, single_statement=True) as connection:
            workers = self.live_workers(connection)
            statement = queries.online_counts(community_ids, workers, connection.dialect.name)
            read = dict(connection.execute(statement).all())
        counts = {community_id: read.get(community_id, 0) for community_id in community_ids}
        for community_id, count in counts.items():
            self.cache.put(community_id, (count, now))
        return counts

    def _read_later(self):
        """Read the counts answered stale, after the answers that used them."""
        try:
            with self._counting:
                later, self._later = self._later, set()
                stale = self._cached(later, {})  # a read meanwhile may have had them
                if stale:
                    self._read(stale)
        except Exception:
            log.warning("online counts not read again: the next answer reads them", exc_info=True)
        finally:
            self._rereading = None

    def _cached(self, community_ids, known, later=None):
        """Fill ``known`` with the counts read less than ``interval`` ago; return the others.

        With ``later``: counts read less than two intervals ago are known too,
        and added to ``later``, to be read again.
        """
        now = time.monotonic()
        stale = []
        for community_id in community_ids:
            cached = self.cache.get(community_id)
            age = now - cached[1] if cached is not None else float("inf")
            if age < self.interval:
                known[community_id] = cached[0]
            elif later is not None and age < 2 * self.interval:
                known[community_id] = cached[0]
                later.add(community_id)
            else:
                stale.append(community_id)
        return stale

    def members(self, connection, community_id, topic=None):
        """The community's visible members online now, or reading ``topic``: (how many, the first of them)."""
        workers, dialect = self.live_workers(connection), connection.dialect.name
        if topic is None:
            statement = queries.online_members(community_id, workers, wire.MAX_ONLINE_LISTED, dialect)
        else:
            statement = queries.topic_readers(community_id, topic, workers, wire.MAX_ONLINE_LISTED, dialect)
        rows = connection.execute(statement).all()
        return (rows[0].total if rows else 0), rows

    def live_workers(self, connection):
        """The workers whose rows count, read at most once per ``interval`` (a tiny table).

        So a worker that dies stops counting within ``ttl`` plus one interval.
        """
        workers, read_at = self.live
        if time.monotonic() - read_at >= self.interval:
            statement = queries.live_workers(self.ttl, connection.dialect.name)
            workers = tuple(connection.scalars(statement).all())
            self.live = (workers, time.monotonic())
        return self.presence.counted(workers)
