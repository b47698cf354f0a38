"""The registry of waiting polls: admission under the caps, registration, waiting, release.

Waiting polls register under their user (``with hub.waiting(...)``, or
``hub.poll(...)`` for a poll's session) and then hold no database
connection, no transaction and only a small ``Ticket``. Several polls of one
user share one ``Waiters`` entry and one event; a poll loops "check, wait,
re-check" on it, so a spurious or shared wake-up does no harm.

``Registry`` is the half of ``Hub`` that does this (``Hub(Registry)``), in a
module of its own so that each reads in one sitting. It is not used alone:
registering and releasing a poll also tells the hub's vouching, parking,
disconnect watch, presence, re-read and what it owes (``Owed``), which the hub owns.
"""
from collections import Counter, defaultdict
from contextlib import contextmanager

from gevent.event import Event

from .session import PollSession
from ..watches import EVERY_TOPIC, NONE as NO_WATCHES


class OverCapacity(Exception):
    """This process holds as many waiting polls as it can."""


class TooManyPolls(Exception):
    """The user already has as many polls waiting as one user may."""

    def __init__(self, limit):
        super().__init__(f"at most {limit} polls may wait for one user")
        self.limit = limit


class Waiters:
    """The polls of one user in this process: one event they all wait on.

    ``parked``: those of its polls that wait as a socket and a record rather
    than a greenlet (``app/live/parking.py``); ``on_wake`` hands them to the hub's
    answerer.
    """

    __slots__ = ("count", "event", "news", "parked", "on_wake")

    def __init__(self, on_wake=None):
        self.count = 0
        self.event = Event()
        self.news = []
        self.parked = None
        self.on_wake = on_wake

    def deliver(self, news):
        """Hand the user's polls one re-read's ``News`` and wake them."""
        self.news.append(news)
        self.wake()

    def wake(self):
        # Swap the event before setting it, so a poll that loops back to wait
        # blocks on a fresh one instead of spinning on a set one.
        event, self.event = self.event, Event()
        event.set()
        if self.parked:
            self.on_wake(self)


class Watching:
    """Who waits watching what: (community id, topic or ``*``) -> the users whose polls
    watch it, each with how many of its polls do.

    A topic's rows are handed to the users named here and no others, whatever
    the size of the community: a hot thread wakes its readers, not its
    community's members.
    """

    def __init__(self):
        self.users = defaultdict(Counter)

    def add(self, user_id, watches):
        for pair in watches.pairs:
            self.users[pair][user_id] += 1

    def remove(self, user_id, watches):
        for pair in watches.pairs:
            users = self.users[pair]
            users[user_id] -= 1
            if users[user_id] <= 0:
                del users[user_id]
            if not users:
                del self.users[pair]

    def __call__(self, community_id, topic):
        """The users with a poll watching ``topic`` in the community (by name, or by ``*``)."""
        named = self.users.get((community_id, topic), ())
        every = self.users.get((community_id, EVERY_TOPIC), ())
        return set(named) | set(every) if every else named


class Ticket:
    """One waiting poll: which news it has taken, whether its client left, what it watches."""

    __slots__ = ("user_id", "waiters", "seen", "gone", "fd", "parked", "watches")

    def __init__(self, user_id, waiters, watches=NO_WATCHES):
        self.user_id = user_id
        self.watches = watches
        self.waiters = waiters
        self.seen = len(waiters.news)
        self.gone = False
        self.fd = None
        # Its poll waits parked (app/live/parking.py), which releases it.
        self.parked = False


class Registry:
    """The polls waiting in this process, by user (``users``), and their count.

    The caps (``max_waiting`` for the process, ``max_per_user``) are checked
    and a place taken in one step (``waiting``): nothing between the check
    and the count can yield.
    """

    def admit(self, user_id):
        """Refuse a poll that would exceed a cap: ``OverCapacity`` or ``TooManyPolls``.

        A check only, for polls that take no place (``timeout=0``); a waiting
        poll is admitted by ``waiting()``, which takes its place in the same
        step. While closing, polls are admitted but never wait (see the poll
        view).
        """
        if self.waiting_polls >= self.max_waiting:
            raise OverCapacity()
        waiters = self.users.get(user_id)
        if waiters is not None and waiters.count >= self.max_per_user:
            raise TooManyPolls(self.max_per_user)

    @contextmanager
    def waiting(self, user_id, socket=None, watches=NO_WATCHES):
        """Admit a poll and register it *before* it reads the database.

        The caps are checked and the place taken with nothing in between that
        could yield, so a burst of simultaneous polls cannot all pass the check
        before any of them counts (raises ``OverCapacity`` or
        ``TooManyPolls``). The hub's position is taken after that, before the
        poll reads, so no change falls between its read and its wait.

        Yields the poll's ``Ticket``. Leaving the block, however it is left,
        releases what the wait took (``release``), unless the poll was
        parked, which releases it when it is answered.
        """
        self.admit(user_id)
        waiters = self.users.get(user_id)
        if waiters is None:
            waiters = self.users[user_id] = Waiters(self.parking.wake)
        waiters.count += 1
        self.waiting_polls += 1
        ticket = Ticket(user_id, waiters, watches)
        self.watching.add(user_id, watches)
        if self.presence is not None and watches:
            self.presence.reads(user_id, watches)
        self.vouching.subscribed(user_id)
        if self.metrics:
            self.metrics.add(self.metrics.waiting)
        try:
            self.vouching.ensure_position()
            if socket is not None:
                self.disconnects.watch(ticket, socket)
            yield ticket
        finally:
            if not ticket.parked:
                self.release(ticket)

    @contextmanager
    def poll(self, user_id, ask, socket=None):
        """A waiting poll's ``PollSession``: admitted and registered as ``waiting()`` does.

        Leaving the block releases the poll's place, unless parking took the
        session over (``park``), which then releases it once, when it is
        answered or let go.
        """
        with self.waiting(user_id, socket, ask.watches) as ticket:
            yield PollSession(self, ask, ticket)

    def release(self, ticket):
        """What a poll's wait took, given back: the registry entry, the watch on
        its socket, the waiting-polls gauge, what the worker owed its user when it was the last."""
        self.disconnects.forget(ticket)
        waiters, user_id = ticket.waiters, ticket.user_id
        self.watching.remove(user_id, ticket.watches)
        waiters.count -= 1
        self.waiting_polls -= 1
        if self.metrics:
            self.metrics.add(self.metrics.waiting, -1)
        if waiters.count == 0 and self.users.get(user_id) is waiters:
            del self.users[user_id]
            self.owed.paid(user_id)  # nobody left to owe; its next poll reads for itself
        if self.presence is not None:
            self.presence.released(user_id, ticket.gone, ticket.watches)
        if not self.users:
            # Nobody waits: the position is kept, and read on, for the
            # re-polls of the clients just answered; then forgotten.
            self.reread.keep()

    def wait(self, ticket, timeout):
        """Block until news for the ticket's user, a drop, shutdown or ``timeout``.

        Returns the news the ticket has not taken yet (possibly none: a wake-up
        is only a reason to look again).
        """
        waiters = ticket.waiters
        if len(waiters.news) == ticket.seen and not (self.closing or ticket.gone):
            waiters.event.wait(timeout)
        return self.take(ticket)

    def take(self, ticket):
        """The news the ticket has not taken yet, without waiting."""
        waiters = ticket.waiters
        fresh = waiters.news[ticket.seen:]
        ticket.seen = len(waiters.news)
        return fresh

    def drop(self, ticket):
        """The client of ``ticket`` went away: wake its poll so it can leave."""
        ticket.gone = True
        ticket.waiters.wake()
