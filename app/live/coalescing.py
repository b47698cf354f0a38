"""Coalescing: a burst of activity wakes each waiting user at most once per window.

A busy community publishes many activity rows a second; each one woken poll
answers and its client polls again at once, so waking every member for every
row would cost an answer and a read per member per row. The hub's re-read
offers each user's rows here first (``offer``): rows that are only activity,
for a user woken less than ``window`` seconds ago, are held back; anything
else (a join, a rename, a notification, a read marker) goes at once, and
takes the held rows with it. Held rows are released when their window ends
(``due``), by the re-read that follows. Nothing is lost: held rows are
merged, never dropped; rows held for a user whose polls have all left
meanwhile go nowhere, and their cursors, which never saw them, read them on
the next poll.

Rows, not states, are held: the re-read reads the state of a user only when
it delivers to that user, in the snapshot of the rows it delivers with it.
In a burst most members are inside their window at every re-read, and
reading their states for nothing is what would make a busy community's
activity cost a worker its CPU.

Order: rows for one user are delivered oldest first, never newer rows before
held older ones, because delivering merges what is held into what goes out.
A poll skips news whose position does not cover what it already has, so
delivering older rows after newer would lose them.

The window widens with what answering costs (``adapt``): a burst woken in
one window is answered, on this worker, before the next can be, so when its
answers take more than ``ANSWERING_SHARE`` of the worker's time the worker
falls behind, and every poll it holds (a user's own changes included) waits
behind the burst. The window is set so that they take at most that share,
between the configured window and ``ceiling`` (``ACTIVITY_COALESCE_MAX``).

Updated by the re-read greenlet and, for what answers cost, by whoever
answers, with no yield inside a call; ``check()`` states what holds between
calls (tests switch it on, like vouching's).
"""
import time
from contextlib import contextmanager
from dataclasses import dataclass

from ..store.feed import merged

# At most this share of a worker's time goes to answering polls woken with
# community-wide rows; the rest is left for its other polls and requests.
ANSWERING_SHARE = 0.5

# ``urgency``: a row addressed to the user alone, community-wide rows only, nothing.
OWN, COMMUNITY, NOTHING = range(3)


def coalescable(rows):
    """Only activity rows: news that may wait for its user's window to end."""
    return all(row.type == "activity" for row in rows)


def urgency(rows):
    """Where news of ``rows`` goes among the answers of one wake-up: lower goes first.

    ``OWN``: a row addressed to the user alone (a join, a departure, a role,
    a notification, a read marker); ``COMMUNITY``: community-wide rows only
    (activity, a rename); ``NOTHING``: an ``unchanged`` answer. A re-read in a busy
    community wakes thousands of members with its activity; answered in the
    order they were found, one user's own change in the same re-read would
    wait behind all of them.
    """
    if not rows:
        return NOTHING
    return OWN if any(not row.shared for row in rows) else COMMUNITY


@dataclass(frozen=True)
class Kinds:
    """What a poll's gathered rows are (``urgency``, ``coalescable``), kept up to date
    as it gathers: asked at each wake-up of a fan-out, they would otherwise cost a
    pass over a member's hundreds of rows each time."""

    urgency: int = NOTHING
    coalescable: bool = True

    @classmethod
    def of(cls, rows):
        return cls(urgency(rows), coalescable(rows))

    def joined(self, other):
        """The kinds of rows of both these kinds."""
        return Kinds(min(self.urgency, other.urgency), self.coalescable and other.coalescable)


class Coalescing:
    """Who was woken when, and the news held back for them.

    ``woken_at``: user id -> when rows were last delivered to the user (kept
    for one window). ``held``: user id -> the lists of rows held back, in the
    order offered (merged only when delivered: in a burst each offer then
    costs the same however much is held), due at ``woken_at[user] + window``.

    ``window`` moves between ``floor`` (the configured window) and
    ``ceiling`` with ``spent``, the seconds spent answering polls woken with
    community-wide rows since ``measured_since`` (``adapt``). A zero window
    stays zero: no coalescing was asked for.
    """

    checking = False

    def __init__(self, window, clock=time.monotonic, ceiling=None):
        self.window = self.floor = window
        self.ceiling = max(window, ceiling) if window and ceiling is not None else window
        self.clock = clock
        self.woken_at = {}
        self.held = {}
        self.spent = 0.0
        self.measured_since = clock()
        self._merges = {}

    def offer(self, user_id, rows, activity_only=None):
        """The rows to deliver to the user now (merged with any held), or None: held back.

        ``activity_only``: ``coalescable(rows)``, when the caller knows it already.
        """
        held = self.held.pop(user_id, None)
        if activity_only is None:
            activity_only = coalescable(rows)
        now = self.clock()
        last = self.woken_at.get(user_id)
        if activity_only and last is not None and now - last < self.window:
            if held:
                held.append(rows)
            self.held[user_id] = held or [rows]
            self._checked()
            return None
        self.woken_at[user_id] = now
        self._checked()
        return self._merged([*held, rows]) if held else rows

    def pause(self, user_id, rows):
        """Seconds a poll that read only activity ``rows`` itself should wait before answering.

        A poll whose own read finds activity answers at once otherwise, and
        its client polls again at once: in a burst each member would loop
        read-answer-read at the rate of the burst. It waits out the window
        of the user's last answer instead (gathering what comes meanwhile),
        and its answer starts the next window (``answered``).
        """
        last = self.woken_at.get(user_id)
        if last is None or not rows or not coalescable(rows):
            return 0.0
        return max(0.0, last + self.window - self.clock())

    def answered(self, user_id):
        """The user's poll answered with changes it read itself: a window starts."""
        if self.window > 0:
            self.woken_at[user_id] = self.clock()
        self._checked()

    @contextmanager
    def measure(self, rank):
        """Time the answer made in the block, when its ``urgency`` is ``COMMUNITY``: what ``adapt`` reads."""
        if rank != COMMUNITY or not self.window:
            yield
            return
        started = self.clock()
        try:
            yield
        finally:
            self.spent += self.clock() - started

    def adapt(self):
        """Set the window from what answering cost since the last time; once a window has passed.

        Each member is woken at most once per window, so answering the polls
        one window wakes costs about ``spent * window / elapsed``; that takes
        at most ``ANSWERING_SHARE`` of the worker's time when the next window
        is that cost over the share. When answers get cheaper (fewer members
        waiting, a quieter community) the window narrows again, never below
        the configured one. True when the window changed.
        """
        now = self.clock()
        elapsed = now - self.measured_since
        if not self.window or elapsed < self.window:
            return False
        cost = self.spent * self.window / elapsed
        window = min(self.ceiling, max(self.floor, cost / ANSWERING_SHARE))
        self.spent, self.measured_since = 0.0, now
        changed, self.window = window != self.window, window
        self._checked()
        return changed

    def hold(self, user_id, rows):
        """Hold ``rows``, activity older than anything offered for the user since, until its window ends.

        For a re-poll the hub vouched for with the rows its cursor missed
        (``Vouching.unseen``): they go with the user's next batch, at once
        if no window of the user's runs now.
        """
        self.woken_at.setdefault(user_id, self.clock() - self.window)
        self.held[user_id] = [rows, *self.held.get(user_id, ())]
        self._checked()

    def hold_again(self, woken, reread):
        """A re-read failed after ``woken`` ({user: rows}) was taken from here: hold its rows again.

        Those in ``reread`` (ids of rows the next re-read reads again) are
        left out; the rest came from earlier batches and are held for the
        next re-read to deliver, whatever their type.
        """
        for user_id, rows in woken.items():
            older = [row for row in rows if row.id not in reread]
            if older:
                self.held[user_id] = [older, *self.held.get(user_id, ())]
                self.woken_at.setdefault(user_id, self.clock())
        self._checked()

    def due(self):
        """``[(user_id, rows)]`` whose window has ended, taken out of ``held``."""
        now = self.clock()
        released = [(user, self._merged(chunks)) for user, chunks in self.held.items()
                    if now - self.woken_at[user] >= self.window]
        for user, _news in released:
            del self.held[user]
            self.woken_at[user] = now
        # Forget wake-ups older than a window: they hold nothing back.
        for user in [u for u, at in self.woken_at.items() if now - at >= self.window]:
            if user not in self.held:
                del self.woken_at[user]
        self._merges.clear()
        self._checked()
        return released

    def _merged(self, chunks):
        """``merged(*chunks)``, one list for every user holding the same chunks.

        The members of one fan-out hold the same lists (one batch's rows, the
        rows owed to one cursor): merged once, what is worked out from the
        result (its urgency, its oldest row) is worked out once too. Kept until
        the next ``due``; the chunks are kept with it, so no other object takes
        their ids meanwhile.
        """
        if len(chunks) == 1:
            return chunks[0]
        key = tuple(map(id, chunks))
        known = self._merges.get(key)
        if known is None:
            known = self._merges[key] = (chunks, merged(*chunks))
        return known[1]

    def next_due(self):
        """Seconds until the earliest held rows are due (None: nothing held)."""
        if not self.held:
            return None
        earliest = min(self.woken_at[user] for user in self.held)
        return max(0.0, earliest + self.window - self.clock())

    def check(self):
        """Assert what ``offer`` and ``due`` rest on; run after every update when ``checking``."""
        assert self.floor <= self.window <= self.ceiling, f"window {self.window} out of its bounds"
        for user, chunks in self.held.items():
            assert user in self.woken_at, f"{user}: rows held with no wake-up to wait out"
            assert chunks and all(chunks), f"{user}: nothing held"
            for rows in chunks:
                assert coalescable(rows), f"{user}: urgent rows held back"
                ids = [row.id for row in rows]
                assert ids == sorted(set(ids)), f"{user}: held rows out of order or twice"

    def _checked(self):
        if self.checking:
            self.check()
