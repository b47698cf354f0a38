"""Admission: the first read of an arriving poll, alone when the way is clear, else in a batch.

A poll that the hub cannot vouch for reads the user's state and the changes
after its cursor before it answers or waits. One at a time that is a short
transaction of two statements; thousands in the same second would be a queue
on the pool. So the reads go through lanes (``app/lanes.py``): at most
``lanes`` run at once, and the next lane to come free reads every arrival
queued meanwhile (up to ``most_polls``) in one transaction of at most five
statements whatever their number (``arrivals.read_arrivals``). Each arrival
then gets the reply it would have had alone.

A batch whose arrivals are so far behind that more than ``most_rows``
change-log rows follow the oldest cursor is read arrival by arrival instead
(each reads its own changes, bounded per answer), in the lane it holds.
"""
from ..lanes import Lanes
from ..store import arrivals, feed
from ..store.db import read_transaction
from .session import Known, Reply
from ..watches import NONE as NO_WATCHES


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


def read_alone(engine, user_id, known, watches):
    """One arrival's read, in a transaction of its own: its reply."""
    cursor = known.cursor
    with read_transaction(engine) as connection:
        state = feed.read_state(connection, user_id)
        usable = cursor is not None and state.accepts(cursor)
        changes = feed.read_changes(connection, user_id, cursor.position, watches) if usable else []
    return reply_to(known, state, usable, changes)


class Admission:
    """Reads for arriving polls, at most ``lanes`` at once; the rest queue and are read in batches."""

    def __init__(self, engine, *, lanes=4, most_polls=2000, most_rows=5000, metrics=None):
        self.engine = engine
        self.most_rows = most_rows
        self.lanes = Lanes(self._read_alone, self._read_together, lanes=lanes, most=most_polls,
                           observe=metrics.admission_reads.observe if metrics else None)

    def look(self, user_id, known, watches=NO_WATCHES):
        """The reply to a poll whose client knows ``known`` and that ``watches`` topics, read
        alone or with others arriving."""
        return self.lanes((user_id, known, watches))

    def _read_alone(self, arrival):
        return read_alone(self.engine, *arrival)

    def _read_together(self, batch):
        with read_transaction(self.engine) as connection:
            found = arrivals.read_arrivals(
                connection, [(user_id, known.cursor, watches) for user_id, known, watches in batch],
                self.most_rows,
            )
        if found is None:
            return [read_alone(self.engine, *arrival) for arrival in batch]
        return [reply_to(known, *read) for (_user_id, known, _watches), read in zip(batch, found)]
