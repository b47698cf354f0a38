"""The poll session: one waiting poll, whichever way it waits.

A long poll with nothing to say yet waits for news, in one of two ways: in
its own greenlet (``Hub.hold``: the view's greenlet blocks in ``Hub.wait``),
or parked, as its socket and a small record that the hub's answerer greenlet
answers (``app/live/parking.py``). Both drive one ``PollSession`` through the same
steps, written once here and in the hub:

1. ``begin(reply)``: where the client's knowledge stands after the poll's
   own read (or the hub's vouching for it), and until when it may wait;
2. ``take(news)``: what a re-read brought is gathered; True when the poll
   has something to answer now (or who types in a topic it watches changed,
   ``app/live/typing.py``);
3. ``reply()``: the answer as of now, ``changed`` with what was gathered or
   ``unchanged``; ``Hub.finish`` and ``Hub.conclude`` then note it for
   coalescing and vouching.

``Hub.poll()`` makes a session and releases its place when the block is
left, unless parking has taken the session over; parking then releases it,
once, when it is answered or let go.
"""
import time
from dataclasses import dataclass, replace
from datetime import datetime

from .. import wire
from ..store import cursors
from ..store.feed import merged
from .coalescing import Kinds
from .owed import recorded
from ..intervals import jittered_wait
from ..watches import NONE as NO_WATCHES, Watches


# Gathered rows past this are cut to what an answer tells of (``wire.newest``):
# a few times that, so that cutting is rare.
GATHERED = 4 * (wire.MAX_PUBLISHED_PER_ANSWER + 1)


@dataclass(frozen=True)
class Known:
    """What a client knows: its cursor, the hash of its state, when that state last changed."""

    cursor: cursors.Cursor | None
    hash: str | None
    last_change_at: datetime | None = None


@dataclass(frozen=True)
class Ask:
    """What a poll asks: what its client knows, how long it may wait, the ``Prefer`` it honoured,
    and the topics it watches."""

    known: Known
    timeout: int
    preference_applied: str | None = None
    watches: Watches = NO_WATCHES


@dataclass(frozen=True)
class Reply:
    """An answer to give: its status, what the client will know, and what it brings."""

    status: str
    known: Known
    communities: list | None = None
    changes: tuple = ()
    notifications_unread: int | None = None
    # Without ``communities`` (``unchanged``): their ids, for the online
    # counts; None when this process does not know them.
    community_ids: tuple | None = None
    # Made after the poll waited (woken, held or parked), not at once from its own read.
    waited: bool = False


@dataclass(frozen=True)
class StateSeen:
    """The newest state of the user that news (or a held reply) brought."""

    hash: str
    communities: list
    notifications_unread: int


class PollSession:
    """One waiting poll: who asks (its ``ticket`` in the hub's registry), what its
    client knows, what it has gathered since, and until when it waits.

    ``seen`` is the client's own position: rows it saw are not sent again.
    ``latest`` is where the poll's knowledge stands (its own read, or the
    client's when the hub vouched for it); news from an older snapshot says
    nothing new. ``held``: a ``changed`` reply of activity only, held back
    to gather more until its pause ends; anything but activity ends it.
    ``parked``: the parked connection's record, once parking took it over.
    """

    __slots__ = ("hub", "ask", "ticket", "known", "seen", "latest", "state", "collected", "gathered", "kinds",
                 "held", "community_ids", "deadline", "parked", "typing_since")

    def __init__(self, hub, ask, ticket):
        self.hub = hub
        self.ask = ask
        self.ticket = ticket
        self.known = ask.known
        self.seen = self.latest = None
        self.state = None
        self.collected = []
        self.gathered = 0
        self.kinds = Kinds()
        self.held = None
        self.community_ids = None
        self.deadline = None
        self.parked = None
        self.typing_since = None

    @property
    def user_id(self):
        return self.ticket.user_id

    def vouched(self, settle_timeout):
        """``unchanged`` with no read, when the hub read every change since before
        the client's cursor and none was this user's; else None (the poll reads).

        When the cursor missed only community activity the hub kept, the poll
        waits too, and those rows are handed to it with its community's next
        batch (``Reread.hand``): a busy community's members, answered moments
        ago, each poll again behind the worker's read, which need not be repeated.
        A poll that subscribed while a re-read ran waits up to ``settle_timeout``
        for it to note its rows first (``Vouching.settle``). Of topics' rows it
        is handed those its watches cover.
        """
        vouching, user_id, known, watches = self.hub.vouching, self.user_id, self.ask.known, self.ask.watches
        vouching.settle(user_id, settle_timeout)
        unseen = vouching.unseen(user_id, known.cursor, known.hash, watches.communities)
        if unseen is None:
            return None
        unseen = watches.kept(unseen)
        if unseen:
            self.hub.reread.hand(user_id, unseen)
        return Reply("unchanged", replace(known, last_change_at=vouching.last_change_served(user_id)),
                     community_ids=vouching.communities_served(user_id))

    def waits(self, reply):
        """Whether the poll waits rather than answer ``reply`` now; if so, it begins to gather.

        It waits when there is nothing to say yet, and when it read only
        activity for a user answered moments ago: then it gathers for the rest
        of that user's window rather than answer at the burst's rate.
        """
        if reply.status == "unchanged":
            self.begin(reply)
            # Who types in a watched topic changed since its client was last
            # shown: that is the answer (``unchanged``, with the typists).
            return not self.typing_moved()
        pause = self.hub.reread.coalescing.pause(self.user_id, reply.changes)
        if pause:
            self.begin(reply, pause)
            return True
        return False

    def hold(self):
        """Wait in this greenlet for news, the deadline, shutdown or a hang-up; the reply then."""
        hub, ticket = self.hub, self.ticket
        while True:
            remaining = self.deadline - time.monotonic()
            if remaining <= 0 or hub.closing or ticket.gone:
                break
            if self.take(hub.wait(ticket, remaining)):
                break
        return self.finish(self.reply())

    def finish(self, reply):
        """``reply`` as the poll's answer: a ``changed`` one starts the user's coalescing window.

        Whatever it says, the worker owes the user nothing more: the poll
        read, or took, everything committed before it began waiting.
        """
        if reply.status == "changed":
            self.hub.reread.coalescing.answered(self.user_id)
        self.hub.owed.paid(self.user_id)
        return reply

    def begin(self, reply, pause=0.0):
        """Wait from ``reply``: ``unchanged``, or (with ``pause``) a ``changed`` one held back."""
        held = reply if pause else None
        self.known = reply.known
        self.seen = self.ask.known.cursor.position
        self.latest = reply.known.cursor.position
        self.held = held
        if held:
            self.state = StateSeen(held.known.hash, held.communities, held.notifications_unread)
            self._gather(held.changes, Kinds.of(held.changes))
            self.hub.owed.owe(self.user_id, recorded(held.changes).timestamp())
        self.community_ids = reply.community_ids
        self.deadline = time.monotonic() + (pause if held else jittered_wait(self.ask.timeout))
        if self.ask.watches and self.hub.typing is not None:
            self.typing_since = self.hub.typing.since(self.user_id, self.ask.watches)

    def take(self, fresh):
        """Take news from the hub; True when the poll has something to answer now."""
        for news in fresh:
            if not news.position.covers(self.latest):
                continue
            self.latest = news.position
            self.state = StateSeen(news.hash, news.communities, news.notifications_unread)
            self._gather(*news.handed.unseen(self.seen, self.ask.watches))
        return bool(self.collected) and not (self.held and self.kinds.coalescable) or self.typing_moved()

    def typing_moved(self):
        """Whether who types in a topic the poll watches changed after its client was last shown."""
        return self.typing_since is not None and self.hub.typing.moved(
            self.user_id, self.ask.watches, self.typing_since)

    def _gather(self, rows, kinds):
        """Add ``rows`` (in id order, of ``kinds``) to what the answer carries.

        The lists themselves, shared with the other members handed them, and
        merged only when the answer is made. Kept to what the answer can tell
        of (``wire.newest``): a member waiting through a burst gathers a
        hundred activity rows, not all of them.
        """
        if rows:
            self.collected.append(rows)
            self.gathered += len(rows)
            self.kinds = self.kinds.joined(kinds)
            if self.gathered > GATHERED:
                self.collected = [wire.newest(self._in_order())]
                self.gathered = len(self.collected[0])

    def _in_order(self):
        """The rows gathered, once each, in id order."""
        return self.collected[0] if len(self.collected) == 1 else merged(*self.collected)

    def urgency(self):
        """Where this poll's answer goes among those of one wake-up (``coalescing.urgency``)."""
        return self.kinds.urgency

    def communities(self):
        """The communities of the newest state the news brought, or None."""
        return self.state.communities if self.state else None

    def reply(self):
        """The answer as of now: ``changed`` with what was gathered, else ``unchanged``."""
        cursor = cursors.Cursor(self.known.cursor.epoch, self.latest)
        if self.collected:
            rows = self._in_order()
            state = self.state
            return Reply("changed", Known(cursor, state.hash), state.communities, rows,
                         state.notifications_unread, waited=True)
        return Reply("unchanged", replace(self.known, cursor=cursor), community_ids=self.community_ids,
                     waited=True)
