"""The load generator: a gevent process of its own, driven over stdin/stdout.

The benchmark driver starts ``python -m bench.client`` and sends it one JSON
command per line; the client answers with one JSON event per line. It speaks
just enough HTTP/1.1 (keep-alive, Content-Length bodies) to hold thousands of
connections from one process without a general-purpose client's overhead.

Times are ``time.monotonic()``: CLOCK_MONOTONIC is system-wide on Linux, so
the driver's commit times and the client's arrival times share one clock.
"""
from gevent import monkey

monkey.patch_all()

import json  # noqa: E402
import random  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from urllib.parse import quote  # noqa: E402

import gevent  # noqa: E402
from gevent.event import Event  # noqa: E402
from gevent.fileobject import FileObject  # noqa: E402
from gevent.lock import Semaphore  # noqa: E402

from .stack import raise_fd_limit, token  # noqa: E402


class HTTPError(Exception):
    pass


class Connection:
    """One keep-alive HTTP/1.1 connection to the server under test."""

    def __init__(self, port, host="127.0.0.1", connect_timeout=30.0):
        self.port = port
        self.host = host
        self.connect_timeout = connect_timeout
        self.sock = None
        self.buffer = b""

    def open(self):
        delay = 0.05
        deadline = time.monotonic() + self.connect_timeout
        while True:
            try:
                sock = socket.create_connection((self.host, self.port), timeout=self.connect_timeout)
                sock.settimeout(None)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self.sock = sock
                self.buffer = b""
                return
            except OSError:
                # A full accept backlog refuses or times out: back off and retry.
                if time.monotonic() > deadline:
                    raise
                gevent.sleep(delay * random.uniform(0.5, 1.5))
                delay = min(delay * 2, 1.0)

    def close(self):
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
            self.sock = None

    def request(self, path, headers=b""):
        """Send a GET and return ``(status, header_block, body)``."""
        if self.sock is None:
            self.open()
        self.sock.sendall(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: bench\r\n" + headers + b"\r\n")
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
    lowered = head.lower()
    index = lowered.find(b"\r\n" + name + b":")
    if index < 0:
        return None
    start = index + len(name) + 3
    end = lowered.find(b"\r\n", start)
    return head[start:end if end >= 0 else None].strip().decode()


class Poller:
    """One simulated browser tab: a reset poll, then long polls that follow the cursor."""

    def __init__(self, client, index, user_id, spec):
        self.client = client
        self.index = index
        self.user_id = user_id
        self.port = spec["ports"][index % len(spec["ports"])]
        self.path = spec.get("path", "/community-changes/poll")
        self.timeout = spec.get("timeout", 25)
        self.auth = b"Authorization: Bearer " + token(spec["secret"], user_id).encode() + b"\r\n"
        self.cursor = None
        self.hash = None

    def run(self, ramp):
        client = self.client
        connection = Connection(self.port)
        try:
            with ramp:
                for attempt in range(6):
                    try:
                        status, head, body = connection.request(f"{self.path}?timeout=0", self.auth)
                    except (OSError, HTTPError):
                        status, body = 0, b""
                        connection.close()
                    if status == 200:
                        break
                    # A restarting database or a full backlog is retried, as browsers do.
                    client.retries += 1
                    gevent.sleep(0.5 * 2**attempt * random.uniform(0.5, 1.5))
                else:
                    raise HTTPError(f"reset poll answered {status}: {body[:200]!r}")
                self.follow(body)
            while not client.closing:
                query = f"{self.path}?timeout={self.timeout}&hash={self.hash}"
                if self.cursor:
                    query += f"&cursor={quote(self.cursor)}"
                client.sent += 1
                client.requests += 1
                status, head, body = connection.request(query, self.auth)
                arrived = time.monotonic()
                client.sent -= 1
                if status != 200:
                    client.failures.append([self.index, status, body[:200].decode(errors="replace")])
                    gevent.sleep(random.uniform(1, 3))
                    continue
                result = self.follow(body)
                client.answers.append([self.index, round(arrived, 6), result, len(body)])
                while not client.repoll and not client.closing:
                    client.resume.wait()
        except Exception as error:  # every failure is reported, none is fatal
            if not client.closing:
                client.failures.append([self.index, 0, f"{error.__class__.__name__}: {error}"])
        finally:
            connection.close()

    def follow(self, body):
        answer = json.loads(body)
        self.cursor = answer.get("cursor")
        self.hash = answer.get("hash")
        return answer.get("status")


class Client:
    def __init__(self):
        self.closing = False
        self.repoll = True
        self.resume = Event()
        self.answers = []
        self.failures = []
        self.sent = 0
        self.requests = 0
        self.retries = 0
        self.greenlets = []

    def emit(self, **event):
        sys.stdout.write(json.dumps(event) + "\n")
        sys.stdout.flush()

    # -- commands -------------------------------------------------------------

    def hold(self, spec):
        """Start one poller per user; report when every waiting poll has been sent."""
        ramp = Semaphore(spec.get("ramp", 200))
        users = spec["users"]
        offset = len(self.greenlets)
        for number, user_id in enumerate(users):
            poller = Poller(self, offset + number, user_id, spec)
            self.greenlets.append(gevent.spawn(poller.run, ramp))
        deadline = time.monotonic() + spec.get("deadline", 120)
        while time.monotonic() < deadline:
            done = sum(1 for g in self.greenlets[offset:] if g.dead)
            if self.sent + done >= len(users) and self.requests >= len(users):
                break
            gevent.sleep(0.05)
        self.emit(event="held", sent=self.sent, failures=len(self.failures), retries=self.retries)

    def set_repoll(self, spec):
        self.repoll = bool(spec["value"])
        if self.repoll:
            event, self.resume = self.resume, Event()
            event.set()
        self.emit(event="ok")

    def report(self, _spec):
        answers, self.answers = self.answers, []
        failures, self.failures = self.failures, []
        self.emit(event="report", answers=answers, failures=failures, sent=self.sent)

    def load(self, spec):
        """Keep-alive GETs as fast as the server answers, on ``connections`` connections."""
        duration = spec["duration"]
        counts = {}
        latencies = []
        errors = []
        stop_at = [None]
        started = Event()

        def worker(number):
            connection = Connection(spec["port"])
            headers = b""
            user = spec.get("users", [None])[number % len(spec.get("users", [None]))]
            if user:
                headers += b"Authorization: Bearer " + token(spec["secret"], user).encode() + b"\r\n"
            try:
                if spec.get("conditional"):
                    status, head, _body = connection.request(spec["path"], headers)
                    headers += b"If-None-Match: " + header_value(head, b"etag").encode() + b"\r\n"
                else:
                    connection.request(spec["path"], headers)
                started.wait()
                while time.monotonic() < stop_at[0]:
                    begin = time.monotonic()
                    status, _head, _body = connection.request(spec["path"], headers)
                    latencies.append(time.monotonic() - begin)
                    counts[status] = counts.get(status, 0) + 1
            except Exception as error:
                errors.append(f"{error.__class__.__name__}: {error}")
            finally:
                connection.close()

        workers = [gevent.spawn(worker, n) for n in range(spec["connections"])]
        gevent.sleep(0.5)
        begin = time.monotonic()
        stop_at[0] = begin + duration
        started.set()
        gevent.joinall(workers, timeout=duration + 30)
        elapsed = time.monotonic() - begin
        latencies.sort()

        def pct(p):
            return latencies[min(len(latencies) - 1, int(p * len(latencies)))] if latencies else None

        self.emit(
            event="load", begin=begin, elapsed=elapsed, counts={str(k): v for k, v in counts.items()},
            requests=len(latencies), p50=pct(0.5), p99=pct(0.99), errors=errors[:5],
        )

    def periodic(self, spec):
        """Fixed-interval or advised-interval polling of the snapshot, for ``duration`` seconds."""
        duration = spec["duration"]
        stop_at = time.monotonic() + duration
        log = []
        errors = []

        def tab(number, user_id):
            connection = Connection(spec["port"])
            headers = b"Authorization: Bearer " + token(spec["secret"], user_id).encode() + b"\r\n"
            etag = None
            interval = spec.get("interval") or 10
            # Steady state: tabs are out of phase with each other.
            phase = random.uniform(0, interval if spec.get("interval") else spec.get("spread", 1))
            gevent.sleep(min(phase, max(0.0, stop_at - time.monotonic())))
            try:
                while time.monotonic() < stop_at:
                    extra = b"If-None-Match: " + etag.encode() + b"\r\n" if etag and spec.get("etag") else b""
                    status, head, body = connection.request(spec["path"], headers + extra)
                    arrived = time.monotonic()
                    if status == 200:
                        answer = json.loads(body)
                        etag = header_value(head, b"etag")
                        digest = answer.get("hash")
                    else:
                        digest = None
                    advice = header_value(head, b"x-poll-interval")
                    log.append([number, round(arrived, 6), status, digest, len(body), advice])
                    if not spec.get("interval"):
                        interval = float(advice or 10)
                    connection.close()  # a browser tab minutes apart reuses nothing
                    gevent.sleep(max(0.0, min(interval, stop_at - time.monotonic() + 0.001)))
            except Exception as error:
                errors.append(f"{error.__class__.__name__}: {error}")
            finally:
                connection.close()

        tabs = [gevent.spawn(tab, n, user) for n, user in enumerate(spec["users"])]
        gevent.joinall(tabs, timeout=duration + 30)
        self.emit(event="periodic", tag=spec.get("tag"), log=log, errors=errors[:5], error_count=len(errors))

    def close(self, _spec):
        self.closing = True
        self.resume.set()
        gevent.killall(self.greenlets, block=True, timeout=5)
        self.emit(event="closed")

    def serve(self):
        commands = {
            "hold": self.hold, "repoll": self.set_repoll, "report": self.report,
            "load": self.load, "periodic": self.periodic, "close": self.close,
        }
        stdin = FileObject(sys.stdin, "r")
        for line in stdin:
            if not line.strip():
                continue
            spec = json.loads(line)
            command = spec.pop("cmd")
            if command == "close":
                self.close(spec)
                return
            # Commands run in their own greenlet so that pollers keep going.
            gevent.spawn(commands[command], spec)
        self.close({})


def main():
    limit = raise_fd_limit()
    client = Client()
    client.emit(event="ready", fd_limit=limit)
    client.serve()


if __name__ == "__main__":
    main()
