"""The batched re-read: one read per hint for all of a process's waiting polls.

On a hint (a NOTIFY, this process's own write, or the safety-net timer) it
reads, in one snapshot, the new position and every change-log row since the
hub's position, each once, and which waiting users are or were members of the
communities of its community-scoped rows; then the state of the waiting users
those rows touch in one statement: a fixed number of statements whatever the
number of waiters, and rows read once however many members they concern. Each
touched user gets the result as ``News`` and is woken, unless it is only
activity for a user woken less than ``ACTIVITY_COALESCE`` seconds ago: then
it is held until that window ends (``app/coalescing.py``).

When the last poll leaves, it goes on reading on hints for one safety
interval, then forgets the position and reads nothing at all until a poll
comes again. The clients answered last poll again within moments: with the
position kept and read on, the hub can vouch for them (``app/vouching.py``),
where a fresh position would send every one of them to the database at once
(ten thousand reads on one worker after a fan-out).
"""
import logging
import random
import time
from dataclasses import dataclass

import gevent
from gevent.event import Event

from . import feed
from .coalescing import Coalescing
from .db import read_transaction

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class News:
    """One batched re-read, as it concerns one user."""

    rows: list
    communities: list
    notifications_unread: int
    hash: str
    position: object


def read_head(engine):
    """The change log's epoch and current position, to take a position from."""
    with read_transaction(engine, single_statement=True) as connection:
        return feed.read_head(connection)


class Reread:
    """Re-reads on every hint, and every ``safety_interval`` seconds while polls wait.

    ``users`` is the hub's registry (user id -> ``Waiters``), read here and
    written only by the hub; ``vouching`` holds the position read from.
    """

    def __init__(self, engine, users, vouching, *, safety_interval=5.0, coalesce=0.0,
                 metrics=None):
        self.engine = engine
        self.users = users
        self.vouching = vouching
        self.safety_interval = safety_interval
        self.coalescing = Coalescing(coalesce)
        self.metrics = metrics
        self.closed = False
        # When the last waiting poll left (see ``emptied``).
        self.emptied_at = float("-inf")
        self._hint = Event()

    def notify(self):
        """A hint that the change log may have grown; cheap, callable anywhere."""
        self._hint.set()

    def emptied(self):
        """The last waiting poll left: keep the position for one safety interval more."""
        self.emptied_at = time.monotonic()

    def refresh(self):
        """Read what changed since the position and hand it to the waiters it concerns.

        With nobody waiting for a safety interval, forget the position instead.
        """
        vouching = self.vouching
        if not self.users and time.monotonic() - self.emptied_at >= self.safety_interval:
            vouching.forget()
        if vouching.position is None:
            return
        start, position = vouching.position, None
        try:
            with read_transaction(self.engine) as connection:
                batch = feed.read_news(connection, start, self._waiting_users)
                position = batch.position
                # Noted before the next query yields: from here on a poll of a
                # user with rows in this batch is not vouched for, and one
                # already waiting is among those woken below.
                vouching.advance(batch.rows, position)
                touched = {user: kept for user, user_rows in batch.by_user(self.users).items()
                           if (kept := feed.addressed(user_rows))}
                states = feed.read_states(connection, list(touched)) if touched else {}
        except BaseException:
            # Nothing of this batch reached its waiters (the database went
            # away mid-read, say): read it again next time, or its rows would
            # stay behind the position, lost to every waiting poll.
            vouching.rewind(start, position)
            raise
        self._deliver(
            (user_id, News(rows, states[user_id].communities, states[user_id].notifications_unread,
                           states[user_id].hash, position))
            for user_id, rows in touched.items()
        )

    def _waiting_users(self):
        """The users to resolve a batch's community rows to, once its snapshot is taken."""
        self.vouching.listed()
        return list(self.users)

    def release(self):
        """Deliver the held-back news whose coalescing window has ended."""
        self._deliver(self.coalescing.due(), offered=False)

    def _deliver(self, news_by_user, offered=True):
        """Wake each user with its news, or let coalescing hold it back (``offered``)."""
        woken = 0
        for user_id, news in news_by_user:
            if offered:
                news = self.coalescing.offer(user_id, news)
            waiters = self.users.get(user_id)
            if news is None or waiters is None:
                continue
            waiters.deliver(news)
            woken += 1
        if self.metrics and woken:
            self.metrics.wakeups.inc(woken)

    def start(self):
        """Re-read on hints in a greenlet of its own, which is returned."""
        return gevent.spawn(self._run)

    def stop(self):
        """End the loop at its next wake-up (now, if it is waiting for a hint)."""
        self.closed = True
        self._hint.set()

    def _run(self):
        failures = 0
        last_read = time.monotonic()
        while not self.closed:
            until_read = self.safety_interval - (time.monotonic() - last_read)
            held = self.coalescing.next_due()
            hinted = self._hint.wait(max(0.0, until_read if held is None else min(held, until_read)))
            self._hint.clear()
            if self.closed:
                return
            try:
                self.release()
                # A held wake-up's window ending is no reason to read.
                if hinted or time.monotonic() - last_read >= self.safety_interval:
                    last_read = time.monotonic()
                    if self.users or self.vouching.position is not None:
                        self.refresh()
                failures = 0
            except Exception:
                failures += 1
                delay = min(5.0, 0.1 * 2**failures)
                log.exception("re-read failed; retrying in %.1fs", delay)
                gevent.sleep(delay * random.uniform(0.5, 1.0))
                self._hint.set()
