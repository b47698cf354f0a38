"""Admission: the first read of an arriving poll, alone when the way is clear, else in a batch.

A poll that the hub cannot vouch for reads the user's state and the changes
after its cursor before it answers or waits. One at a time that is a short
transaction of two statements. When thousands arrive in the same second (a
deploy, a network blip that sends an office back at once), thousands of such
transactions through a pool of 20 are a queue on the pool, and a poll that
waits there longer than the pool's time-out is answered ``503``.

So at most ``lanes`` reads run at once. An arrival that finds a lane free
and nobody queued reads alone, as it always did; the others queue here, in
memory, and the next lane to come free reads every queued arrival (up to
``most_polls``) in one transaction of at most five statements whatever their
number (``arrivals.read_arrivals``). Each arrival then gets the reply it would
have had alone. Reads never hold more than ``lanes`` of the pool's
connections, and nothing waits on the pool for longer than one batch takes.

A batch whose arrivals are so far behind that more than ``most_rows``
change-log rows follow the oldest cursor is read arrival by arrival instead
(each reads its own changes, bounded per answer), in the lane it holds.
"""
from dataclasses import dataclass

import gevent
from gevent.event import AsyncResult

from ..store import arrivals, feed
from ..store.db import read_transaction
from .session import Known, Reply


def reply_to(known, state, usable, changes):
    """What a client that knows ``known`` must be told now, or ``unchanged`` (then a poll may wait).

    ``state`` is the user's, read in the snapshot that found ``changes``
    after the client's cursor (``usable``: the cursor could be answered).
    A waiting poll keeps only what its answer needs (thousands wait at once):
    an ``unchanged`` reply holds no state, only what the client will know.
    """
    now_known = Known(state.cursor, state.hash, state.last_change_at)
    unread = state.notifications_unread
    if not usable:
        return Reply("reset", now_known, state.communities, notifications_unread=unread)
    if changes:
        return Reply("changed", now_known, state.communities, changes, unread)
    if known.hash is not None and known.hash != state.hash:
        # Same cursor, different state: the client's copy is not ours.
        return Reply("reset", now_known, state.communities, notifications_unread=unread)
    return Reply("unchanged", now_known, community_ids=tuple(c["id"] for c in state.communities))


def read_alone(engine, user_id, known):
    """One arrival's read, in a transaction of its own: its reply."""
    cursor = known.cursor
    with read_transaction(engine) as connection:
        state = feed.read_state(connection, user_id)
        usable = cursor is not None and state.accepts(cursor)
        changes = feed.read_changes(connection, user_id, cursor.position) if usable else []
    return reply_to(known, state, usable, changes)


@dataclass(frozen=True)
class Arrival:
    """A poll queued for a batched read: who, what its client knows, and where its reply goes."""

    user_id: str
    known: Known
    result: AsyncResult


class Admission:
    """Reads for arriving polls, at most ``lanes`` at once; the rest queue and are read in batches."""

    def __init__(self, engine, *, lanes=4, most_polls=2000, most_rows=5000, metrics=None):
        self.engine = engine
        self.lanes = lanes
        self.most_polls = most_polls
        self.most_rows = most_rows
        self.metrics = metrics
        self.reading = 0
        self.queue = []

    def look(self, user_id, known):
        """The reply to a poll whose client knows ``known``, read alone or with others arriving."""
        if self.reading < self.lanes and not self.queue:
            self.reading += 1
            try:
                self._observe(1)
                return read_alone(self.engine, user_id, known)
            finally:
                self._lane_free()
        arrival = Arrival(user_id, known, AsyncResult())
        self.queue.append(arrival)
        return arrival.result.get()

    def _lane_free(self):
        """A read ended: the queued arrivals, if any, are read next, in a greenlet of their own."""
        self.reading -= 1
        if self.queue and self.reading < self.lanes:
            batch, self.queue = self.queue[:self.most_polls], self.queue[self.most_polls:]
            self.reading += 1
            gevent.spawn(self._read_batch, batch)

    def _read_batch(self, batch):
        try:
            self._observe(len(batch))
            with read_transaction(self.engine) as connection:
                found = arrivals.read_arrivals(
                    connection, [(arrival.user_id, arrival.known.cursor) for arrival in batch], self.most_rows
                )
            if found is None:
                for arrival in batch:
                    arrival.result.set(read_alone(self.engine, arrival.user_id, arrival.known))
            else:
                for arrival, read in zip(batch, found):
                    arrival.result.set(reply_to(arrival.known, *read))
        except BaseException as error:
            # Each arrival answers it as its own read's failure would be (an outage: 503).
            for arrival in batch:
                if not arrival.result.ready():
                    arrival.result.set_exception(error)
            if not isinstance(error, Exception):
                raise
        finally:
            self._lane_free()

    def _observe(self, polls):
        if self.metrics:
            self.metrics.admission_reads.observe(polls)
