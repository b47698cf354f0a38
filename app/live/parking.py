"""Parked polls: a waiting poll kept as its socket and a small record, with no greenlet.

Under the parking worker (``PARKED_POLLS``, app/live/worker.py), a poll with
nothing to say yet does not block its greenlet in ``Hub.wait``: the view
hands its ``PollSession`` (app/live/session.py) to the hub (``Hub.park``), the
framework finishes the request as usual, and the worker keeps the
connection's socket instead of closing it while the greenlet ends. What
the framework added to that request's answer (the request id, CORS, the
security headers) is kept as the parked answer's fixed header lines.

One greenlet per process, the answerer, then does what the waiting
greenlets did: woken with the users' ``Waiters`` (news, a hang-up,
shutdown) or at the earliest deadline, it takes each parked poll's news
(``PollSession.take``) and answers the batch, each answer made by the
renderer the poll view registered once at start-up
(``Hub.answer_parked_with``) and written by the connection the worker
handed over (``app.live.worker.ParkedSocket``), which then reads the
client's next request. This module knows sessions and deadlines; the worker
knows sockets and HTTP.
"""
import heapq
import itertools
import logging
import time
from collections import deque
from contextlib import nullcontext

import gevent
from gevent.event import Event

from .coalescing import OWN

log = logging.getLogger(__name__)

# Where a worker that parks offers it, and where a parked poll's record waits
# for the worker to take its socket.
PARKABLE_KEY = "community_sync.parkable"
PARKED_KEY = "community_sync.parked"
# Marks the stand-in answer the view returns for a parked poll; the worker
# takes it off (the client never sees it).
PARKED_HEADER = "X-Community-Sync-Parked"


class ParkedPoll:
    """One parked poll: its session, and its connection once the worker hands it over.

    Its ``state`` only moves forward, ``PARKED`` to ``TAKEN`` (in a batch,
    its news taken, to be answered) to ``DONE`` (its place released: answered,
    let go or cancelled), so that whatever races with its deadline (news, a
    hang-up, shutdown) it is taken into one batch once and answered once.
    """

    PARKED, TAKEN, DONE = range(3)

    __slots__ = ("session", "connection", "state")

    def __init__(self, session):
        self.session = session
        # What writes its answer, once the worker hands it over (``settle``).
        self.connection = None
        self.state = self.PARKED

    @property
    def ticket(self):
        return self.session.ticket

    @property
    def deadline(self):
        return self.session.deadline

    @property
    def done(self):
        return self.state == self.DONE

    def take(self):
        """Into a batch to be answered: True the first time, False ever after."""
        return self._advance(self.TAKEN)

    def finish(self):
        """Its place released: True the first time, False ever after."""
        return self._advance(self.DONE)

    def let_go(self):
        """Answered or closed: keep nothing of the poll. The deadline heap keeps the record
        until its deadline passes (up to POLL_MAX_TIMEOUT); its session, the news it was
        answered with and its socket must not stay alive with it (a burst's fan-outs
        answer each member several times within one deadline)."""
        self.session = self.connection = None

    def _advance(self, state):
        if self.state >= state:
            return False
        self.state = state
        return True


# A fan-out to thousands is worked a turn at a time, with the re-read and
# arriving polls between turns: each turn takes up to TAKE_SLICE due polls
# their news, for at most TAKE_SECONDS (in a tenfold burst each poll's news is
# thousands of rows: 2,000 polls' took long enough to starve the worker's
# heartbeat), then answers slices of ANSWER_SLICE (the most urgent first)
# until ANSWER_SECONDS are spent, one slice at least. A share of time, not a number of polls: the
# re-read keeps the loop for its statements (``Reread.refresh``), so turns are
# long under load, and a fixed slice a turn would answer a fan-out that slowly.
ANSWER_SLICE = 100
ANSWER_SECONDS = 0.1
TAKE_SLICE = 2000
TAKE_SECONDS = 0.5


class Parking:
    """The parked polls of one hub, and the greenlet that answers them."""

    def __init__(self, hub):
        self.hub = hub
        self.count = 0
        # Registered once by the poll view (``Hub.answer_parked_with``):
        # ``render(session)`` gives a parked poll's answer as (status line,
        # body, headers), in ``app``'s context.
        self.render = None
        self.app = None
        # Waiters woken since the answerer last looked, in the order they were
        # woken: with their own news, and the others.
        self._urgent = {}
        self._woken = {}
        self._deadlines = []
        self._order = itertools.count()
        self._signal = Event()
        self._greenlet = None

    def park(self, session):
        """Take a poll's session over: its place is released when it is answered or let go."""
        session.ticket.parked = True
        session.parked = ParkedPoll(session)
        return session.parked

    def settle(self, record, connection):
        """The worker hands over the parked poll's connection (``app.live.worker.ParkedSocket``,
        which writes its answer): it waits from now on."""
        record.connection = connection
        ticket = record.ticket
        waiters = ticket.waiters
        if waiters.parked is None:
            waiters.parked = []
        waiters.parked.append(record)
        self.count += 1
        hub = self.hub
        if hub.metrics:
            hub.metrics.add(hub.metrics.parked)
        hub.disconnects.forget(ticket)
        hub.disconnects.watch(ticket, connection.sock)
        heapq.heappush(self._deadlines, (record.deadline, next(self._order), record))
        if self._greenlet is None:
            self._greenlet = gevent.spawn(self._run)
        if len(waiters.news) > ticket.seen or ticket.gone or hub.closing:
            self.wake(waiters)
        elif record.deadline <= self._deadlines[0][0]:
            self._signal.set()

    def cancel(self, record):
        """A parked poll whose answer was not the stand-in (an error after the view): released."""
        if record.finish():
            self.hub.release(record.ticket)

    def wake(self, waiters):
        """``waiters`` has news, a drop or shutdown for its parked polls: answer them soon
        (before the others when it is the user's own news)."""
        news = waiters.news
        if news and news[-1].urgency == OWN:
            self._urgent[waiters] = None
        else:
            self._woken[waiters] = None
        self._signal.set()

    def stop(self):
        if self._greenlet is not None:
            self._greenlet.kill(block=False)
            self._greenlet = None

    # -- the answerer -----------------------------------------------------------

    def _run(self):
        # Due and not yet taken (a user's own news at the front), then taken
        # and not yet answered (a heap, most urgent first). Both are worked through a
        # slice at a time, and between slices the re-read and arriving polls
        # run: a fan-out of a busy community's activity to thousands of
        # parked members costs seconds, and a user's own change woken
        # meanwhile goes ahead of what is left of it.
        backlog, pending = deque(), []
        while True:
            timeout = 0.0 if backlog or pending else None
            if timeout is None and self._deadlines:
                timeout = max(0.0, self._deadlines[0][0] - time.monotonic())
            self._signal.wait(timeout)
            self._signal.clear()
            first, rest = self._due()
            backlog.extendleft(reversed(first))
            backlog.extend(rest)
            if not backlog and not pending:
                continue
            with self.app.app_context():
                began = time.monotonic()
                for _ in range(min(TAKE_SLICE, len(backlog))):
                    record, expired = backlog.popleft()
                    if self._ready(record, expired):
                        # Ranked once, as taken; the count keeps each level in the order it was woken.
                        heapq.heappush(pending, (record.session.urgency(), next(self._order), record))
                    if time.monotonic() - began >= TAKE_SECONDS:
                        break
                until = time.monotonic() + ANSWER_SECONDS
                while pending:
                    answering = [heapq.heappop(pending)[2] for _ in range(min(ANSWER_SLICE, len(pending)))]
                    self._answer_batch(answering)
                    if time.monotonic() >= until:
                        break
            gevent.sleep(0)

    def _due(self):
        """The parked polls to look at now: those of users woken with their own news first; then
        those of other woken users, and those past their deadline."""
        first, rest = [], []
        urgent, self._urgent = self._urgent, {}
        woken, self._woken = self._woken, {}
        for waiters in urgent:
            first.extend((record, False) for record in waiters.parked or ())
        for waiters in woken:
            if waiters not in urgent:
                rest.extend((record, False) for record in waiters.parked or ())
        now = time.monotonic()
        deadlines = self._deadlines
        while deadlines and deadlines[0][0] <= now:
            record = heapq.heappop(deadlines)[2]
            if not record.done:
                rest.append((record, True))
        return first, rest

    def _ready(self, record, expired):
        """Whether ``record`` is to be answered now, its news taken; a poll whose client left is let go.

        True once at most for each record, however often it is due (woken and
        past its deadline in one batch): ``take`` moves it on.
        """
        if record.state != record.PARKED:
            return False
        ticket, hub = record.ticket, self.hub
        if ticket.gone:
            self._close(record)
            return False
        try:
            ready = record.session.take(hub.take(ticket))
        except Exception:
            log.exception("a parked poll could not take its news")
            ready = True  # answered (an error answer, if it must be) rather than left waiting
        return (ready or expired or hub.closing) and record.take()

    def _answer_batch(self, records):
        if not records:
            return
        try:
            self._prepare(records)
        except Exception:
            log.exception("a batch of parked polls could not be prepared")
        metrics = self.hub.metrics
        measure = self.hub.reread.coalescing.measure
        with metrics.deferred() if metrics else nullcontext():
            for record in records:
                try:
                    with measure(record.session.urgency()):
                        self._answer(record)
                except Exception:
                    log.exception("a parked poll could not be answered")
                    self._close(record)

    def _prepare(self, records):
        """Before a batch is answered: the online counts of all its polls' communities, read at once.

        The answers of a fan-out find their users' communities stale together;
        answered one after another, each would read its own.
        """
        online = self.hub.online
        if online is None:
            return
        wanted = set()
        for record in records:
            session = record.session
            wanted.update(session.community_ids or ())
            wanted.update(entry["id"] for entry in session.communities() or ())
        online.counts(wanted)

    def _answer(self, record):
        assert record.state == record.TAKEN, "a parked poll is answered once"
        self._leave(record)
        status, body, headers = self.render(record.session)
        record.connection.answer(status, body, headers, close=self.hub.closing)
        record.let_go()

    def _close(self, record):
        """The client left (or the answer failed): nothing to write."""
        self._leave(record)
        record.connection.close()
        record.let_go()

    def _leave(self, record):
        if not record.finish():
            return
        self.count -= 1
        if self.hub.metrics:
            self.hub.metrics.add(self.hub.metrics.parked, -1)
        ticket = record.ticket
        parked = ticket.waiters.parked
        if parked is not None and record in parked:
            parked.remove(record)
        self.hub.release(ticket)
