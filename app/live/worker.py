"""The gunicorn worker class: gunicorn's gevent worker, with problem+json errors.

Named by ``worker_class`` in gunicorn.conf.py as a dotted path, so that the
master loads it only as gunicorn loads any worker class; nothing of the app is
imported until a worker answers an error.
"""
import functools
import logging
import time
from datetime import datetime
from typing import NamedTuple

import gevent
from gunicorn import util
from gunicorn.workers.ggevent import GeventWorker


class _Page:
    """Stands in for the client's socket while gunicorn writes its HTML error page."""

    def __init__(self):
        self.written = b""

    def gettimeout(self):
        return 0.0

    def sendall(self, data):
        self.written += data

    def status(self):
        try:
            return int(self.written.split(b" ", 2)[1])
        except (IndexError, ValueError):
            return 500


class ProblemWorker(GeventWorker):
    """gunicorn's gevent worker, whose own error answers are problem+json too.

    gunicorn answers what it cannot hand to the app itself (a bad request
    line 400, one over limit_request_line 414, headers over the limits 431,
    an error before the app answered 500), with an HTML page and none of the
    app's headers. Its classification, logging and access log are kept: the
    page is written to a stand-in and replaced by app.errors.raw_problem.
    """

    def run(self):
        # Named while they are open (see handle).
        self.listener_names = {listener: listener.getsockname() for listener in self.sockets}
        super().run()

    def handle(self, listener, client, addr):
        """gunicorn's handling of a connection, told its listener's name even once that is closed.

        gunicorn asks the listening socket its name as a connection's greenlet
        starts. On a reload or a shutdown the worker closes that socket after
        its last accept, and a connection accepted just before whose greenlet
        starts just after would find it closed: gunicorn logs EBADF and closes
        the connection with the client's request unread, which the kernel
        turns into a reset rather than an answer (a draining worker answers
        such a poll ``unchanged`` at once).
        """
        try:
            listener.getsockname()
        except OSError:
            listener = _Listener(self.listener_names[listener])
        return super().handle(listener, client, addr)

    def handle_error(self, req, client, addr, exc):
        page = _Page()
        super().handle_error(req, page, addr, exc)
        # Imported here, in the worker, where the app is already loaded: the
        # master imports this module to find the worker class, before the
        # workers monkey-patch, and must not load Flask or SQLAlchemy.
        from ..errors import raw_problem

        try:
            util.write_nonblock(client, raw_problem(page.status()))
        except Exception:
            self.log.debug("Failed to send error message.")


# The longest the rest of an answer may take to reach a client whose receive
# buffer was full.
SEND_TIMEOUT = 10.0


class ParkedSocket:
    """A parked poll's connection, handed to the hub: it writes the answer the hub makes.

    ``head``: the answer's fixed header lines, as bytes (what the framework
    added to the request's stand-in answer); ``resume(sock)`` reads the
    client's next request; ``access(status, headers, length)`` logs;
    ``protocol``: the status line's version, as gunicorn answers the request;
    ``keep_alive``: False when the connection closes after the answer (the
    client asked for it, or HTTP/1.0 without ``Connection: keep-alive``).
    """

    __slots__ = ("sock", "head", "resume", "access", "protocol", "keep_alive")

    def __init__(self, sock, head, resume, access=None, protocol=b"HTTP/1.1", keep_alive=True):
        # Written to without waiting: one slow client must not hold up a batch.
        sock.settimeout(0.0)
        self.sock, self.head, self.resume, self.access = sock, head, resume, access
        self.protocol, self.keep_alive = protocol, keep_alive

    def answer(self, status, body, headers, close):
        """Write the answer with one send; the rest, if the client's buffer is full, in a
        greenlet of its own; then hand the connection back (or close it, when ``close``
        or when the connection is not kept alive)."""
        close = close or not self.keep_alive
        lines = [self.protocol, b" ", status.encode("latin-1"), b"\r\n", self.head,
                 f"Date: {util.http_date()}\r\nConnection: {'close' if close else 'keep-alive'}\r\n"
                 f"Content-Length: {len(body)}\r\n".encode("latin-1")]
        lines.extend(f"{name}: {value}\r\n".encode("latin-1") for name, value in headers.items())
        lines.append(b"\r\n")
        lines.append(body)
        payload = b"".join(lines)
        try:
            sent = self.sock.send(payload)
        except BlockingIOError:
            sent = 0
        except OSError:
            self.close()
            return
        if self.access is not None:
            self.access(status, headers, len(body))
        if sent < len(payload):
            gevent.spawn(self._send_rest, payload[sent:], close)
        else:
            self._hand_back(close)

    def close(self):
        """Nothing (more) to write: the connection is closed."""
        sock, self.sock = self.sock, None
        if sock is not None:
            util.close(sock)

    def _send_rest(self, rest, close):
        try:
            self.sock.settimeout(SEND_TIMEOUT)
            self.sock.sendall(rest)
        except OSError:
            self.close()
            return
        self._hand_back(close)

    def _hand_back(self, close):
        if close:
            self.close()
            return
        sock, self.sock = self.sock, None
        sock.settimeout(None)
        self.resume(sock)


class ParkedConnection(BaseException):
    """A poll was parked: its connection is the hub's now, and gunicorn lets go of it.

    A BaseException, so that it passes gunicorn's request error handling
    (which would answer it) to ``handle_error`` below, which ignores it.
    """


class _Listener:
    """The listening socket's name, which is all gunicorn's handler asks of it."""

    __slots__ = ("name",)

    def __init__(self, name):
        self.name = name

    def getsockname(self):
        return self.name


class ParkingWorker(ProblemWorker):
    """The problem worker, where a waiting poll is parked rather than held in a greenlet.

    ``PARKED_POLLS=1`` selects it (gunicorn.conf.py). The poll view parks a
    poll that would wait (app/live/parking.py) when this worker offers it; the
    worker then keeps a duplicate of the connection's socket for the hub,
    lets its greenlet end, and reads the client's next request in a new one
    once the hub has answered.
    """

    def load_wsgi(self):
        super().load_wsgi()
        if hasattr(self.wsgi, "wsgi_app"):
            self.wsgi.wsgi_app = _ParkingMiddleware(self.wsgi.wsgi_app, self)

    def handle_request(self, listener_name, req, sock, addr):
        req.listener_name = listener_name
        return super().handle_request(listener_name, req, sock, addr)

    def handle_error(self, req, client, addr, exc):
        if not isinstance(exc, ParkedConnection):
            super().handle_error(req, client, addr, exc)

    def resume(self, listener_name, addr, sock):
        """The hub answered a parked poll on ``sock``: read the client's next request.

        No greenlet (and no request parser) until the client sends it: the
        event loop watches the socket, and closes it after ``keepalive``
        seconds of silence as gunicorn's own keep-alive wait would.
        """
        loop = gevent.get_hub().loop
        readable, idle = loop.io(sock.fileno(), 1), loop.timer(self.cfg.keepalive)

        def arrived():
            readable.stop()
            idle.stop()
            gevent.spawn(self.handle, _Listener(listener_name), sock, addr)

        def silent():
            readable.stop()
            idle.stop()
            util.close(sock)

        readable.start(arrived)
        idle.start(silent)

    def run(self):
        """gunicorn's loop, then the parked polls answered before the worker leaves.

        gunicorn waits for the connections its own greenlets hold, which
        parked polls are not among: they are answered (``unchanged``, the
        connection closed) as a drain answers waiting polls.
        """
        super().run()
        hub = self.wsgi.extensions.get("hub") if hasattr(self.wsgi, "extensions") else None
        if hub is None:
            return
        if not hub.closing:
            hub.close()
        deadline = time.monotonic() + self.cfg.graceful_timeout
        while (hub.parking.count or hub.in_flight) and time.monotonic() < deadline:
            gevent.sleep(0.05)
        gevent.sleep(0.2)  # let the last answers reach their sockets


class Exchange(NamedTuple):
    """What parking needs of gunicorn's handling of one request (``gunicorn_exchange``)."""

    protocol: bytes  # the answer's status line version: gunicorn answers in the request's
    close: bool  # whether gunicorn would close the connection after this answer
    pending: bool  # bytes already read past this request (pipelined)
    server: str  # gunicorn's Server header
    listener_name: object  # which listener accepted the connection (``ParkingWorker.resume``)


def gunicorn_exchange(start_response):
    """How gunicorn would frame the answer to the request ``start_response`` answers, or None.

    The one place that reads gunicorn's internals. WSGI does not say how the
    server will frame an answer (the status line's version, whether the
    connection stays open), nor whether the client sent more behind the
    request, and a parked answer is written by the worker itself, after
    gunicorn has let go of the connection: it must frame it as gunicorn
    would. gunicorn's ``start_response`` is a method of its ``Response``,
    which holds the parsed request. Anything else (another server, HTTP/2,
    a gunicorn whose internals moved) gives None, and the poll waits in a
    greenlet as it would without parking.
    """
    response = getattr(start_response, "__self__", None)
    try:
        req = response.req
        if req.version not in ((1, 0), (1, 1)):
            return None
        return Exchange(
            protocol=f"HTTP/{req.version[0]}.{req.version[1]}".encode("ascii"),
            # must_close: the worker is leaving or keep-alive is off; should_close:
            # the client said Connection: close, or HTTP/1.0 without keep-alive.
            close=bool(response.must_close or req.should_close()),
            pending=bool(req.unreader.buf.getbuffer().nbytes),
            server=response.version,
            listener_name=req.listener_name,
        )
    except AttributeError:
        return None


class _ParkingMiddleware:
    """Offers parking to the app, and takes the socket of a request the app parked."""

    # What a parked answer's access-log line is made of (gunicorn's atoms).
    LOGGED = ("REMOTE_ADDR", "REQUEST_METHOD", "RAW_URI", "SERVER_PROTOCOL", "PATH_INFO",
              "QUERY_STRING", "HTTP_USER_AGENT", "HTTP_REFERER")
    # Headers each parked answer writes for itself.
    OWN = {"content-type", "content-length"}

    def __init__(self, wsgi_app, worker):
        self.wsgi_app = wsgi_app
        self.worker = worker

    def __call__(self, environ, start_response):
        from .parking import PARKABLE_KEY, PARKED_HEADER, PARKED_KEY

        exchange = gunicorn_exchange(start_response)
        if not self.parkable(environ, exchange):
            return self.wsgi_app(environ, start_response)
        environ[PARKABLE_KEY] = True
        started = datetime.now()
        captured = []

        def capture(status, headers, exc_info=None):
            record = environ.get(PARKED_KEY)
            if record is not None and any(name == PARKED_HEADER for name, _ in headers):
                captured.append(headers)
                return None
            if record is not None:
                # Not the stand-in (an error after the view): answered as usual.
                environ[PARKED_KEY] = None
                self.hub.parking.cancel(record)
            return start_response(status, headers, exc_info)

        result = self.wsgi_app(environ, capture)
        if not captured:
            return result
        if hasattr(result, "close"):
            result.close()
        fixed = [("Server", exchange.server)]
        fixed.extend((name, value) for name, value in captured[0]
                     if name != PARKED_HEADER and name.lower() not in self.OWN)
        head = "".join(f"{name}: {value}\r\n" for name, value in fixed).encode("latin-1")
        sock = environ["gunicorn.socket"].dup()
        resume = functools.partial(self.worker.resume, exchange.listener_name, environ.get("REMOTE_ADDR"))
        self.hub.parking.settle(environ[PARKED_KEY], ParkedSocket(
            sock, head, resume, self.access_logger(environ, fixed, started),
            protocol=exchange.protocol, keep_alive=not exchange.close))
        raise ParkedConnection()

    @property
    def hub(self):
        return self.worker.wsgi.extensions["hub"]

    def parkable(self, environ, exchange):
        """A GET with no body (none announced, or ``Content-Length: 0``) and nothing sent
        behind it, over plain HTTP/1.0 or 1.1, on a worker that stays.

        Whether the connection is then kept alive or closed (``Connection:
        close``, HTTP/1.0) only changes how the parked answer ends. A body,
        bytes pipelined behind the request, or TLS terminated by gunicorn
        (the parked socket would be the raw one) keep the greenlet path.
        """
        worker = self.worker
        return (exchange is not None and worker.alive and not worker.cfg.is_ssl
                and "gunicorn.socket" in environ and environ.get("REQUEST_METHOD") == "GET"
                and environ.get("CONTENT_LENGTH") in (None, "", "0")
                and "HTTP_TRANSFER_ENCODING" not in environ and not exchange.pending)

    def access_logger(self, environ, fixed, started):
        """Logs a parked answer as gunicorn logs others, or None when nothing is logged."""
        log = self.worker.log
        if not (log.access_log_enabled and log.access_log.isEnabledFor(logging.INFO)):
            return None
        logged = {key: environ[key] for key in self.LOGGED if key in environ}

        def access(status, headers, length):
            answer = _Logged(status, [*fixed, *headers.items()], length)
            log.access(answer, [], logged, datetime.now() - started)

        return access


class _Logged:
    """What gunicorn's access log reads of an answer."""

    __slots__ = ("status", "headers", "sent")

    def __init__(self, status, headers, sent):
        self.status, self.headers, self.sent = status, headers, sent
