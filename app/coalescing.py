"""Coalescing: a burst of activity wakes each waiting user at most once per window.

A busy community publishes many activity rows a second; each one woken poll
answers and its client polls again at once, so waking every member for every
row would cost an answer and a read per member per row. The hub's re-read
offers each user's news here first (``offer``): news made only of activity,
for a user woken less than ``window`` seconds ago, is held back; anything
else (a join, a rename, a notification, a read marker) goes at once, and
takes the held news with it. Held news is released when its window ends
(``due``). Nothing is lost: held news is merged, never dropped; news held
for a user whose polls have all left meanwhile goes nowhere, and their
cursors, which never saw it, read it on the next poll.

Order: news for one user is delivered oldest first, never newer news before
held older news, because delivering merges what is held into what goes out.
A poll skips news whose position does not cover what it already has, so
delivering older news after newer would lose its rows.

Updated by the re-read greenlet only, with no yield inside a call; ``check()``
states what holds between calls (tests switch it on, like vouching's).
"""
import time
from dataclasses import replace


def merge(older, newer):
    """One ``News`` with the rows of both, in id order, and the newer state and position."""
    rows = {row.id: row for row in (*older.rows, *newer.rows)}
    return replace(newer, rows=[rows[key] for key in sorted(rows)])


def coalescable(rows):
    """Only activity rows: news that may wait for its user's window to end."""
    return all(row.type == "activity" for row in rows)


class Coalescing:
    """Who was woken when, and the news held back for them.

    ``woken_at``: user id -> when news was last delivered to the user (kept
    for one window). ``held``: user id -> the ``News`` held back, due at
    ``woken_at[user] + window``.
    """

    checking = False

    def __init__(self, window, clock=time.monotonic):
        self.window = window
        self.clock = clock
        self.woken_at = {}
        self.held = {}

    def offer(self, user_id, news):
        """The news to deliver to the user now (merged with any held), or None: held back."""
        held = self.held.pop(user_id, None)
        if held is not None:
            news = merge(held, news)
        now = self.clock()
        last = self.woken_at.get(user_id)
        if coalescable(news.rows) and last is not None and now - last < self.window:
            self.held[user_id] = news
            self._checked()
            return None
        self.woken_at[user_id] = now
        self._checked()
        return news

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

    def due(self):
        """``[(user_id, news)]`` whose window has ended, taken out of ``held``."""
        now = self.clock()
        released = [(user, news) for user, news in self.held.items()
                    if now - self.woken_at[user] >= self.window]
        for user, _news in released:
            del self.held[user]
            self.woken_at[user] = now
        # Forget wake-ups older than a window: they hold nothing back.
        for user in [u for u, at in self.woken_at.items() if now - at >= self.window]:
            if user not in self.held:
                del self.woken_at[user]
        self._checked()
        return released

    def next_due(self):
        """Seconds until the earliest held news is due (None: nothing held)."""
        if not self.held:
            return None
        earliest = min(self.woken_at[user] for user in self.held)
        return max(0.0, earliest + self.window - self.clock())

    def check(self):
        """Assert what ``offer`` and ``due`` rest on; run after every update when ``checking``."""
        for user, news in self.held.items():
            assert user in self.woken_at, f"{user}: news held with no wake-up to wait out"
            assert news.rows, f"{user}: held news without rows"
            assert coalescable(news.rows), f"{user}: urgent news held back"
            ids = [row.id for row in news.rows]
            assert ids == sorted(set(ids)), f"{user}: held rows out of order or twice"

    def _checked(self):
        if self.checking:
            self.check()
