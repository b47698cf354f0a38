"""Long-poll clients for the gevent load processes of the tests and the benchmarks.

:class:`Connection` speaks just enough HTTP/1.1 (keep-alive, Content-Length
bodies), or HTTP/1.0 as nginx's default upstream speaks it, to hold thousands
of connections from one process without a general-purpose client's overhead.
:class:`Follower` is one user's poll loop state, kept the way the browser
client keeps it. Beyond a connection's retries of a refused connect, nothing
here sleeps or spawns: the callers decide how to retry, pace and stop, in
their own processes, which patch the standard library with gevent before
importing this module.
"""
import json
import random
import socket
import time
from collections import Counter
from typing import NamedTuple
from urllib.parse import urlencode

import jwt

POLL_PATH = "/community-changes/poll"
# A poll still unanswered this long after its own timeout has failed.
ANSWER_GRACE = 30


class HTTPError(Exception):
    """The server hung up before a whole answer came, or sent one this client does not read."""


class Connection:
    """One keep-alive HTTP/1.1 connection to the server under test.

    A connect refused or timed out is tried again for ``connect_retry`` s (a
    full accept backlog clears); 0 gives up after one attempt, for callers
    that count every failure themselves. With ``http10``, each request is
    HTTP/1.0 with ``Connection: close``, as nginx proxies by default
    (``proxy_http_version 1.0``): the server closes the connection after its
    answer, and the next request opens another.
    """

    def __init__(self, port, host="127.0.0.1", connect_timeout=30.0, connect_retry=30.0, http10=False):
        self.port = port
        self.host = host
        self.request_line_end = b" HTTP/1.0\r\nConnection: close\r\n" if http10 else b" HTTP/1.1\r\n"
        self.connect_timeout = connect_timeout
        self.connect_retry = connect_retry
        self.sock = None
        self.buffer = b""

    def open(self):
        delay = 0.05
        deadline = time.monotonic() + self.connect_retry
        while True:
            try:
                sock = socket.create_connection((self.host, self.port), timeout=self.connect_timeout)
                sock.settimeout(None)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self.sock = sock
                self.buffer = b""
                return
            except OSError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(delay * random.uniform(0.5, 1.5))
                delay = min(delay * 2, 1.0)

    def close(self):
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
            self.sock = None

    def request(self, path, headers=b"", timeout=None, method=b"GET", body=None):
        """Send a request and return ``(status, header_block, body)``; ``timeout`` bounds the wait for it.

        A GET unless ``method`` says otherwise; ``body``, if given, is sent as JSON.
        """
        if self.sock is None:
            self.open()
        self.sock.settimeout(timeout)
        if body is not None:
            headers += b"Content-Type: application/json\r\nContent-Length: %d\r\n" % len(body)
        self.sock.sendall(method + b" " + path.encode() + self.request_line_end
                          + b"Host: bench\r\n" + headers + b"\r\n" + (body or b""))
        return self.read_response()

    def read_response(self):
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end >= 0:
                break
            chunk = self.sock.recv(65536)
            if not chunk:
                self.close()
                raise HTTPError("connection closed by the server")
            self.buffer += chunk
        head = self.buffer[:end]
        status = int(head[9:12])
        length = 0
        lowered = head.lower()
        index = lowered.find(b"\r\ncontent-length:")
        if index >= 0:
            line_end = lowered.find(b"\r\n", index + 2)
            length = int(lowered[index + 17:line_end if line_end >= 0 else None])
        elif b"transfer-encoding: chunked" in lowered:
            raise HTTPError("chunked responses are not expected here")
        total = end + 4 + length
        while len(self.buffer) < total:
            chunk = self.sock.recv(65536)
            if not chunk:
                self.close()
                raise HTTPError("connection closed mid-body")
            self.buffer += chunk
        body = self.buffer[end + 4:total]
        self.buffer = self.buffer[total:]
        if b"\r\nconnection: close" in lowered:
            self.close()
        return status, head, body


def header_value(head, name):
    """The value of header ``name`` (lower-case bytes) in a response's header block, or None."""
    lowered = head.lower()
    index = lowered.find(b"\r\n" + name + b":")
    if index < 0:
        return None
    start = index + len(name) + 3
    end = lowered.find(b"\r\n", start)
    return head[start:end if end >= 0 else None].strip().decode()


def bearer_token(secret, user_id, *, admin=False, ttl=3 * 3600):
    """A token as the platform in front of the service mints it, valid for ``ttl`` s (the longest run)."""
    now = int(time.time())
    claims = {"sub": user_id, "iat": now, "exp": now + ttl}
    if admin:
        claims["adm"] = True
    return jwt.encode(claims, secret, algorithm="HS256")


def authorization(token):
    """An Authorization header line for :meth:`Connection.request`."""
    return b"Authorization: Bearer " + token.encode() + b"\r\n"


class Response(NamedTuple):
    status: int
    head: bytes
    body: bytes
    answer: dict | None  # the decoded body of a 200
    arrived: float  # time.monotonic() when the whole response was read


class Follower:
    """One user's communities, followed the way the browser client follows them.

    The first poll carries no cursor and is answered ``reset`` with a
    snapshot; every later one sends the cursor and hash of the last answer.
    They advance only on answers received, so an answer lost to a fault is
    asked for again. Keeps what it saw: the communities, every change in
    order, answers by status, HTTP statuses, and errors by name. Also the
    unread notifications of the last state, and how many answers left
    activity or notifications out (``truncated``: over an answer's cap).
    """

    def __init__(self, port, token, *, host="127.0.0.1", path=POLL_PATH, connect_retry=30.0, http10=False,
                 watches=()):
        self.connection = Connection(port, host, connect_retry=connect_retry, http10=http10)
        self.path = path
        self.watches = list(watches)  # topics the polls watch (``watch=c-1/thread:t-9``)
        self.auth = authorization(token)
        self.cursor = None
        self.hash = None
        self.communities = None
        self.notifications_unread = None
        self.changes = []
        self.truncated = 0
        self.resets = 0  # resets after the first: the server gave up on a cursor
        self.answers = Counter()
        self.statuses = Counter()
        self.errors = Counter()

    def poll(self, timeout):
        """One poll waiting up to ``timeout`` s on the server.

        Returns a :class:`Response`, whatever its status. A connection that
        fails (refused, reset, closed, timed out) raises OSError or HTTPError,
        counted and with the connection closed, ready for the next poll.
        """
        query = {"timeout": timeout}
        if self.cursor is not None:
            query.update(cursor=self.cursor, hash=self.hash)
        if self.watches:
            query["watch"] = self.watches
        try:
            status, head, body = self.connection.request(
                f"{self.path}?{urlencode(query, doseq=True)}", self.auth, timeout + ANSWER_GRACE)
        except (OSError, HTTPError) as error:
            self.errors[type(error).__name__] += 1
            self.connection.close()
            raise
        arrived = time.monotonic()
        self.statuses[status] += 1
        answer = json.loads(body) if status == 200 else None
        if answer is not None:
            self._follow(answer)
        return Response(status, head, body, answer, arrived)

    def _follow(self, answer):
        self.answers[answer["status"]] += 1
        if answer["status"] == "reset" and self.cursor is not None:
            self.resets += 1
        self.changes.extend(answer.get("changes", ()))
        if answer.get("truncated"):
            self.truncated += 1
        if "communities" in answer:
            self.communities = answer["communities"]
            self.notifications_unread = answer.get("notifications_unread")
        self.cursor = answer["cursor"]
        self.hash = answer["hash"]

    def close(self):
        """Hang up; the next poll connects again."""
        self.connection.close()
