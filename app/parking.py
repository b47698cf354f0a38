"""Parked polls: a waiting poll kept as its socket and a small record, with no greenlet.

Under the parking worker (``PARKED_POLLS``, app/worker.py), a poll with
nothing to say yet does not block its greenlet in ``Hub.wait``: the view
hands the hub a ``ParkedPoll`` (its ticket, what it has gathered, its
deadline), the framework finishes the request as usual, and the worker keeps
the connection's socket instead of closing it while the greenlet ends. What
the framework added to that request's answer (the request id, CORS, the
security headers) is kept as the parked answer's fixed header lines.

One greenlet per process, the answerer, then does what the waiting
greenlets did: woken with the users' ``Waiters`` (news, a hang-up,
shutdown) or at the earliest deadline, it takes each parked poll's news and
writes the answers of the batch to their sockets itself, then hands each
connection back to the worker for the client's next request.
"""
import heapq
import itertools
import logging
import time
from contextlib import nullcontext

import gevent
from gevent.event import Event
from gunicorn import util

log = logging.getLogger(__name__)

# Where a worker that parks offers it, and where a parked poll's record waits
# for the worker to take its socket.
PARKABLE_KEY = "community_sync.parkable"
PARKED_KEY = "community_sync.parked"
# Marks the stand-in answer the view returns for a parked poll; the worker
# takes it off (the client never sees it).
PARKED_HEADER = "X-Community-Sync-Parked"
# The longest the rest of an answer may take to reach a client whose receive
# buffer was full.
SEND_TIMEOUT = 10.0


class ParkedPoll:
    """One parked poll: what its answer needs, and its socket once the worker hands it over.

    Its ``state`` only moves forward, ``PARKED`` to ``TAKEN`` (in a batch,
    its news taken, to be answered) to ``DONE`` (its place released: answered,
    let go or cancelled), so that whatever races with its deadline (news, a
    hang-up, shutdown) it is taken into one batch once and answered once.
    """

    PARKED, TAKEN, DONE = range(3)

    __slots__ = ("ticket", "ask", "waiting", "community_ids", "deadline", "sock", "head",
                 "resume", "access", "state")

    def __init__(self, ticket, ask, waiting, community_ids, deadline):
        self.ticket = ticket
        self.ask = ask
        self.waiting = waiting
        self.community_ids = community_ids
        self.deadline = deadline
        self.sock = None
        # The answer's fixed header lines, as bytes; ``resume(sock)`` reads the
        # client's next request; ``access(status, headers, length)`` logs.
        self.head = b""
        self.resume = None
        self.access = None
        self.state = self.PARKED

    @property
    def done(self):
        return self.state == self.DONE

    def take(self):
        """Into a batch to be answered: True the first time, False ever after."""
        return self._advance(self.TAKEN)

    def finish(self):
        """Its place released: True the first time, False ever after."""
        return self._advance(self.DONE)

    def _advance(self, state):
        if self.state >= state:
            return False
        self.state = state
        return True


class Parking:
    """The parked polls of one hub, and the greenlet that answers them."""

    def __init__(self, hub):
        self.hub = hub
        self.count = 0
        # Set by the poll view when it parks: ``prepare(records)`` before a
        # batch is answered, ``respond(record)`` giving each answer as
        # (status line, body, headers); ``app`` for their context.
        self.prepare = None
        self.respond = None
        self.app = None
        self._woken = set()
        self._deadlines = []
        self._order = itertools.count()
        self._signal = Event()
        self._greenlet = None

    def park(self, ticket, ask, waiting, community_ids, deadline, answers, app):
        """Take a poll's place for it: its ticket is released when it is answered.

        ``answers``: (prepare, respond), as the answerer calls them.
        """
        (self.prepare, self.respond), self.app = answers, app
        ticket.parked = True
        return ParkedPoll(ticket, ask, waiting, community_ids, deadline)

    def settle(self, record, sock, head, resume, access=None):
        """The worker hands over the parked poll's socket: it waits from now on."""
        # Written to without waiting: one slow client must not hold up a batch.
        sock.settimeout(0.0)
        record.sock, record.head, record.resume, record.access = sock, head, resume, access
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
        hub.disconnects.watch(ticket, sock)
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
        """``waiters`` has news, a drop or shutdown for its parked polls: answer them soon."""
        self._woken.add(waiters)
        self._signal.set()

    def stop(self):
        if self._greenlet is not None:
            self._greenlet.kill(block=False)
            self._greenlet = None

    # -- the answerer -----------------------------------------------------------

    def _run(self):
        while True:
            timeout = None
            if self._deadlines:
                timeout = max(0.0, self._deadlines[0][0] - time.monotonic())
            self._signal.wait(timeout)
            self._signal.clear()
            due = self._due()
            if due:
                with self.app.app_context():
                    self._answer_batch([record for record, expired in due if self._ready(record, expired)])

    def _due(self):
        """The parked polls to look at now: those of woken users, and those past their deadline."""
        due = []
        woken, self._woken = self._woken, set()
        for waiters in woken:
            due.extend((record, False) for record in waiters.parked or ())
        now = time.monotonic()
        deadlines = self._deadlines
        while deadlines and deadlines[0][0] <= now:
            record = heapq.heappop(deadlines)[2]
            if not record.done:
                due.append((record, True))
        return due

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
            ready = record.waiting.take(hub.take(ticket))
        except Exception:
            log.exception("a parked poll could not take its news")
            ready = True  # answered (an error answer, if it must be) rather than left waiting
        return (ready or expired or hub.closing) and record.take()

    def _answer_batch(self, records):
        if not records:
            return
        try:
            self.prepare(records)
        except Exception:
            log.exception("a batch of parked polls could not be prepared")
        metrics = self.hub.metrics
        with metrics.deferred() if metrics else nullcontext():
            for record in records:
                try:
                    self._answer(record)
                except Exception:
                    log.exception("a parked poll could not be answered")
                    self._close(record)

    def _answer(self, record):
        assert record.state == record.TAKEN, "a parked poll is answered once"
        self._leave(record)
        status, body, headers = self.respond(record)
        close = self.hub.closing
        lines = [b"HTTP/1.1 ", status.encode("latin-1"), b"\r\n", record.head,
                 f"Date: {util.http_date()}\r\nConnection: {'close' if close else 'keep-alive'}\r\n"
                 f"Content-Length: {len(body)}\r\n".encode("latin-1")]
        lines.extend(f"{name}: {value}\r\n".encode("latin-1") for name, value in headers.items())
        lines.append(b"\r\n")
        lines.append(body)
        payload = b"".join(lines)
        sock = record.sock
        try:
            sent = sock.send(payload)
        except BlockingIOError:
            sent = 0
        except OSError:
            self._drop_socket(record)
            return
        if record.access is not None:
            record.access(status, headers, len(body))
        if sent < len(payload):
            # The client's receive buffer is full: finish in a greenlet of its own.
            gevent.spawn(self._send_rest, record, payload[sent:], close)
        else:
            self._hand_back(record, close)

    def _send_rest(self, record, rest, close):
        sock = record.sock
        try:
            sock.settimeout(SEND_TIMEOUT)
            sock.sendall(rest)
        except OSError:
            self._drop_socket(record)
            return
        self._hand_back(record, close)

    def _hand_back(self, record, close):
        sock, record.sock = record.sock, None
        if close:
            util.close(sock)
        else:
            sock.settimeout(None)
            record.resume(sock)

    def _close(self, record):
        """The client left (or the answer failed): nothing to write."""
        self._leave(record)
        self._drop_socket(record)

    def _drop_socket(self, record):
        sock, record.sock = record.sock, None
        if sock is not None:
            util.close(sock)

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
