"""The batched re-read: one read per hint for all of a process's waiting polls.

On a hint (a NOTIFY, this process's own write, or the safety-net timer) it
reads, in one snapshot, the new position and every change-log row since the
hub's position, each once, and which waiting users are or were members of the
communities of its community-scoped rows; then the state of the waiting users
those rows touch, in two statements: first the users with changes of their own
(a join, a role, a notification), who are answered while the second reads the
members woken only by community-wide rows. A fixed number of statements whatever
the number of waiters, and rows read once however many members they concern. Each
touched user gets the result as ``News`` and is woken, unless it is only
activity for a user woken less than a window ago (``ACTIVITY_COALESCE``,
wider while answering costs the worker more: up to ``ACTIVITY_COALESCE_MAX``): then
its rows are held until that window ends and go with the re-read that
follows (``app/live/coalescing.py``); states are read only for the users woken.

When the last poll leaves, it goes on reading on hints for one safety
interval, then forgets the position and reads nothing at all until a poll
comes again. The clients answered last poll again within moments: with the
position kept and read on, the hub can vouch for them (``app/live/vouching.py``),
where a fresh position would send every one of them to the database at once
(ten thousand reads on one worker after a fan-out).
"""
import logging
import random
import time
from dataclasses import dataclass, field

import gevent
from gevent.event import Event

from .. import wire
from ..store import feed
from .coalescing import COMMUNITY, OWN, Coalescing, Kinds, coalescable, urgency
from .owed import recorded
from ..store.db import holding_the_loop, read_transaction
from ..watches import NONE as NO_WATCHES

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class News:
    """One batched re-read, as it concerns one user."""

    rows: list
    communities: list
    notifications_unread: int
    hash: str
    position: object
    # ``coalescing.urgency`` of ``rows``: the answerer takes the most urgent first.
    urgency: int = COMMUNITY
    # What is worked out of ``rows`` once for every user handed the same list.
    handed: "Handed" = field(default=None, compare=False, repr=False)

    def __post_init__(self):
        if self.handed is None:
            object.__setattr__(self, "handed", Handed(self.rows))


class Handed:
    """One list of rows handed to many users (``News.rows``), and what is worked out of it
    once for all of them.

    A fan-out hands one list to thousands of members whose clients hold a few
    cursors between them. In a tenfold burst each member was handed 20,000
    rows, and going through them member by member kept the worker busy for
    minutes.
    """

    __slots__ = ("rows", "watched", "by_position")

    def __init__(self, rows):
        self.rows = rows
        self.watched = {}
        self.by_position = {}

    def unseen(self, position, watches=NO_WATCHES):
        """``(rows, kinds)``: the rows ``position`` does not see, of topics' rows those ``watches``
        cover, as many of each published type as an answer tells of (``wire.newest``), and their
        ``Kinds``; worked out once per cursor and watches.

        Usually a cursor saw none of the newest rows, and they are the answer:
        the whole list is gone through once, not once per cursor. One that saw
        some of them may not have seen older ones (PostgreSQL's commits come in
        any order): then the whole list is gone through for it.
        """
        key = (position, watches)
        known = self.by_position.get(key)
        if known is None:
            if watches not in self.watched:
                kept = watches.kept(self.rows)
                self.watched[watches] = (kept, wire.newest(kept))
            kept, newest = self.watched[watches]
            rows = [row for row in newest if not position.sees(row)]
            if len(rows) < len(newest) < len(kept):
                rows = wire.newest([row for row in kept if not position.sees(row)])
            known = self.by_position[key] = (rows, Kinds.of(rows))
        return known


def read_head(engine):
    """The change log's epoch and current position, to take a position from."""
    with read_transaction(engine, single_statement=True) as connection:
        return feed.read_head(connection)


class Reread:
    """Re-reads on every hint, and every ``safety_interval`` seconds while polls wait.

    ``users`` is the hub's registry (user id -> ``Waiters``), read here and
    written only by the hub; ``vouching`` holds the position read from;
    ``owed`` (``Owed``) is told what each re-read leaves owed to whom.
    """

    def __init__(self, engine, users, vouching, owed, *, safety_interval=5.0, coalesce=0.0,
                 coalesce_max=None, hold_the_loop=2.0, metrics=None, watchers=feed.nobody_watches):
        self.engine = engine
        # (community id, topic) -> the users watching it (``registry.Watching``).
        self.watchers = watchers
        # How long a re-read's statements may keep the worker's event loop, in all
        # (``holding_the_loop``, ``HOLD_THE_LOOP``): the states of ten thousand members take about a second.
        self.hold_the_loop = hold_the_loop
        self.users = users
        self.vouching = vouching
        self.owed = owed
        self.safety_interval = safety_interval
        self.coalescing = Coalescing(coalesce, ceiling=coalesce_max)
        self.metrics = metrics
        if metrics:
            metrics.coalesce_window.set(coalesce)
        self.closed = False
        # When the last waiting poll left, or a snapshot asked (see ``keep``).
        self.emptied_at = float("-inf")
        self._hint = Event()

    def notify(self):
        """A hint that the change log may have grown; cheap, callable anywhere."""
        if self.users and self.vouching.position is not None:
            # Owed until read: by a re-read, which runs while there is a position.
            self.owed.hint()
        self._hint.set()

    def keep(self):
        """Keep the position, reading on hints, for one safety interval from now.

        Called when the last waiting poll leaves (its client polls again within
        moments) and on conditional snapshots the hub vouches for.
        """
        self.emptied_at = time.monotonic()

    def refresh(self):
        """Read what changed since the position and hand it to the waiters it concerns.

        With nobody waiting for a safety interval, forget the position instead.
        """
        vouching, owed = self.vouching, self.owed
        if not self.users and time.monotonic() - self.emptied_at >= self.safety_interval:
            vouching.forget()
        owed.read_begins()
        if vouching.position is None:
            owed.read_ends()
            return
        start, position, woken = vouching.position, None, {}
        handed, delivered = set(), 0
        writes = vouching.writes  # committed before this read's snapshot
        rank = feed.per_list(urgency)
        try:
            with read_transaction(self.engine) as connection, holding_the_loop(self.hold_the_loop):
                batch = feed.read_news(connection, start, self._waiting_users, self.watchers)
                position = batch.position
                if self.metrics:
                    self.metrics.rereads.observe(len(batch.rows))
                # Noted before the next query yields: from here on a poll of a
                # user with rows in this batch is not vouched for, and one
                # already waiting is among those woken below.
                vouching.advance(batch.rows, position, writes)
                woken = self._woken(batch.by_user(self.users, self.watchers))
                # A user's own changes first, in a statement of their own: a
                # busy community's thousands of members woken by its activity
                # are read after, while those few are being answered.
                ranks = {user_id: rank(rows) for user_id, rows in woken.items()}
                for group in (OWN, COMMUNITY):
                    users = [user_id for user_id in woken if ranks[user_id] == group]
                    if users:
                        delivered += self._deliver(users, woken, feed.read_states(connection, users), position,
                                                   ranks)
                        handed.update(users)
                    if group == OWN and users and len(users) < len(woken):
                        # Answered now, not once the members' states are read: this
                        # block holds the event loop through its statements.
                        gevent.sleep(0)
        except BaseException:
            # The rest of this batch did not reach its waiters (the database
            # went away mid-read, say): read it again next time, or its rows
            # would stay behind the position, lost to every waiting poll. Those
            # handed their news already see its rows again, and skip them.
            vouching.rewind(start, position)
            # The rows held from earlier batches are not read again: hold them again.
            undelivered = {user_id: rows for user_id, rows in woken.items() if user_id not in handed}
            self.coalescing.hold_again(undelivered, {row.id for row in batch.rows} if position is not None else set())
            owed.read_ends(failed=True)
            raise
        if self.metrics and delivered:
            self.metrics.wakeups.inc(delivered)
        owed.read_ends()

    def hand(self, user_id, rows):
        """A waiting poll of the user is owed ``rows``, read by an earlier re-read before it came.

        Held for the user's window (``Coalescing.hold``), then delivered with
        its state by the re-read that follows, as if this one had found them.
        """
        self.coalescing.hold(user_id, rows)
        self.owed.owe(user_id, recorded(rows).timestamp())
        self.notify()  # they may be due now: the re-read's next wait was set before they were held

    def _deliver(self, users, woken, states, position, ranks):
        """Hand each of ``users`` still waiting its ``woken`` rows and its state as ``News``; how many were."""
        oldest = feed.per_list(lambda rows: recorded(rows).timestamp())
        handed = feed.per_list(Handed)
        delivered = 0
        for user_id in users:
            waiters = self.users.get(user_id)
            if waiters is None:
                continue  # left while the states were read; its next poll reads these rows
            state, rows = states[user_id], woken[user_id]
            waiters.deliver(News(rows, state.communities, state.notifications_unread, state.hash, position,
                                 ranks[user_id], handed(rows)))
            self.owed.owe(user_id, oldest(rows))
            delivered += 1
        return delivered

    def _woken(self, by_user):
        """``{user: rows}`` to wake now: what coalescing lets through of ``by_user``; and held rows now due.

        Only users still waiting: rows of one that left go nowhere (its
        cursor never saw them, its next poll reads them). Members with the
        same rows share one list (``Batch.by_user``): each list is looked at once.
        """
        addressed = feed.per_list(feed.addressed)
        activity_only = feed.per_list(coalescable)
        oldest = feed.per_list(lambda rows: recorded(rows).timestamp())
        woken, users = {}, self.users
        if self.coalescing.adapt() and self.metrics:
            self.metrics.coalesce_window.set(self.coalescing.window)
        for user_id, rows in by_user.items():
            kept = addressed(rows)
            if kept:
                offered = self.coalescing.offer(user_id, kept, activity_only(kept))
                if offered is not None:
                    woken[user_id] = offered
                elif user_id in users:
                    self.owed.owe(user_id, oldest(kept))  # held for its window: owed meanwhile
        woken.update(self.coalescing.due())
        return {user_id: rows for user_id, rows in woken.items() if user_id in self.users}

    def _waiting_users(self):
        """The users to resolve a batch's community rows to, once its snapshot is taken."""
        self.vouching.listed()
        return list(self.users)

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
            # Held rows go with a re-read when their window ends.
            held = self.coalescing.next_due() if self.users else None
            self._hint.wait(max(0.0, until_read if held is None else min(held, until_read)))
            self._hint.clear()
            if self.closed:
                return
            try:
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
            # Whatever became ready runs before the next re-read. Under load a hint
            # comes during every re-read, and waiting on a set event does not yield:
            # re-reads back to back, each keeping the loop while its statements
            # wait, would starve everything else, the worker's heartbeat included.
            gevent.sleep(0)
