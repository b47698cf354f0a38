"""What a worker owes its waiting polls: the oldest change it knows of and has not answered with.

The operator's question is "does this worker keep up?". A worker that keeps
up owes nothing for long: a change it reads reaches its waiting polls within
a re-read and an answer, or within a coalescing window for a burst of
activity. One that does not keep up owes older and older changes. This is
the age of the oldest one, ``community_sync_oldest_owed_change_seconds``
(the worst worker of a host, ``livemax``).

A change is owed from the moment the worker knows of it: a hint that the
log grew (the wake source, its own write) which no re-read has read yet,
dated by the hint (the row is at least that old); then, once read, by the
row's own time, for each waiting user it concerns, whether woken at once or
held for a coalescing window, and for a poll that holds back activity it
read itself. It is paid when a poll of the user is answered, whatever the
answer (an answer's poll has read, or taken, everything committed before it
began), and when the user's last waiting poll leaves (nobody is left to owe).
Kept per user, not per poll: a user's polls take the same news together, so
the first one answered stands for the rest.

Nothing here costs a metric write per poll: ``owe`` and ``paid`` are a dict
entry and a heap entry; the gauge is written by ``report``, once per re-read,
when the last debt is paid, and once a second while anything is owed, so
that a re-read stuck on a slow database, or answers queued behind a long
batch, show as a growing age rather than a frozen one.
"""
import heapq
import time

import gevent

from .. import wire


def recorded(rows):
    """When the oldest of ``rows`` was recorded (a UTC datetime): its row's ``at``.

    The rows of one read are all naive (SQLite) or all aware: compared as read,
    and only the oldest made aware (once per answer, not once per row).
    """
    return wire.utc(min(row.at for row in rows))


class Owed:
    """When each waiting user's oldest undelivered change was recorded, and pending hints.

    ``since``: user id -> the time (seconds since the epoch) its oldest owed
    change was recorded. ``hinted``: when the first hint no re-read has begun
    to read came; ``reading``: the hint the re-read in flight reads. Updated
    without yielding; the re-read greenlet and the answers' greenlets share it.
    """

    def __init__(self, gauge=None, clock=time.time, interval=1.0):
        self.gauge = gauge
        self.clock = clock
        self.interval = interval
        self.since = {}
        self.hinted = None
        self.reading = None
        self.reported = 0.0
        # (recorded time, user id), oldest first; entries paid since are
        # skipped when they come to the top.
        self._order = []

    def owe(self, user_id, at):
        """The user is owed a change recorded at ``at`` (seconds since the epoch)."""
        since = self.since.get(user_id)
        if since is None or at < since:
            self.since[user_id] = at
            heapq.heappush(self._order, (at, user_id))
            if len(self._order) > 2 * len(self.since) + 100:
                # Mostly paid entries: start again from what is owed.
                self._order = [(t, user) for user, t in self.since.items()]
                heapq.heapify(self._order)

    def paid(self, user_id):
        """A poll of the user was answered, or its last one left: nothing owed to it."""
        if self.since.pop(user_id, None) is not None and not self.since:
            self._order.clear()
            self.report()

    def hint(self):
        """The log may have grown: owed from now until a re-read has read it."""
        if self.hinted is None:
            self.hinted = self.clock()

    def read_begins(self):
        """A re-read begins: the hints so far are what it reads."""
        self.reading, self.hinted = self.hinted, None

    def read_ends(self, failed=False):
        """The re-read ended; one that failed leaves its hints for the next."""
        if failed and self.reading is not None:
            self.hinted = self.reading if self.hinted is None else min(self.hinted, self.reading)
        self.reading = None
        self.report()

    def oldest(self):
        """The time of the oldest change owed (seconds since the epoch), or None."""
        order, since = self._order, self.since
        while order and since.get(order[0][1]) != order[0][0]:
            heapq.heappop(order)
        times = [t for t in (order[0][0] if order else None, self.hinted, self.reading) if t is not None]
        return min(times) if times else None

    def age(self):
        """Seconds since the oldest change owed was recorded; 0 when nothing is owed."""
        oldest = self.oldest()
        return 0.0 if oldest is None else max(0.0, self.clock() - oldest)

    def report(self):
        """Write the age to the gauge (not again when it was 0 and still is)."""
        if self.gauge is None:
            return
        age = self.age()
        if age or self.reported:
            self.gauge.set(age)
            self.reported = age

    def start(self):
        """Report once a ``interval`` while anything is owed, in a greenlet, which is returned."""
        return gevent.spawn(self._run)

    def _run(self):
        while True:
            gevent.sleep(self.interval)
            if self.reported or self.since or self.hinted is not None or self.reading is not None:
                self.report()
