"""The load generator: a gevent process of its own, driven over stdin/stdout.

The benchmark driver starts ``python -m bench.client`` and sends it one JSON
command per line; the client answers with one JSON event per line. Its polls
are harness.polls followers, on that module's lean HTTP/1.1 connections.

Times are ``time.monotonic()``: CLOCK_MONOTONIC is system-wide on Linux, so
the driver's commit times and the client's arrival times share one clock.
"""
from gevent import monkey

monkey.patch_all()

import json  # noqa: E402
import random  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402

import gevent  # noqa: E402
import gevent.pool  # noqa: E402
from gevent.event import Event  # noqa: E402
from gevent.fileobject import FileObject  # noqa: E402
from gevent.lock import Semaphore  # noqa: E402

from harness.polls import (  # noqa: E402
    POLL_PATH, Connection, Follower, HTTPError, authorization, bearer_token, header_value,
)

from .stack import raise_fd_limit  # noqa: E402


class Poller:
    """One simulated browser tab: a reset poll, then long polls that follow the cursor.

    Of the changes it receives it keeps a tally (by type, the last activity's
    ``ref``, answers truncated), not the changes themselves: a member of a busy
    community receives thousands.
    """

    def __init__(self, client, index, user_id, spec):
        self.client = client
        self.index = index
        self.timeout = spec.get("timeout", 25)
        self.port = spec["ports"][index % len(spec["ports"])]
        self.token = bearer_token(spec["secret"], user_id)
        self.follower = Follower(self.port, self.token, path=spec.get("path", POLL_PATH),
                                 http10=spec.get("http10", False))
        self.types = Counter()
        self.last_ref = None
        self.truncated = 0
        self.greenlet = None  # a primed tab's polls, once the storm starts them

    def tally(self, answer):
        """Count what an answer brought, and let go of its changes."""
        if answer is None:
            return
        for change in answer.get("changes", ()):
            self.types[change["type"]] += 1
            if change["type"] == "activity":
                self.last_ref = change["ref"]
        self.truncated += bool(answer.get("truncated"))
        self.follower.changes.clear()

    def summary(self):
        """What this tab holds now: its state's hash, its communities' unread counts, its tally."""
        communities = self.follower.communities or []
        return {
            "index": self.index, "hash": self.follower.hash,
            "unread": {c["id"]: [c.get("unread"), c.get("last_activity_at")] for c in communities},
            "types": dict(self.types), "last_ref": self.last_ref, "truncated": self.truncated,
        }

    def run(self, ramp):
        client = self.client
        follower = self.follower
        try:
            with ramp:
                for attempt in range(6):
                    status, body = 0, b""
                    try:
                        status, _head, body, answer, _arrived = follower.poll(0)
                    except (OSError, HTTPError):
                        pass
                    if status == 200:
                        self.tally(answer)
                        break
                    # A restarting database or a full backlog is retried, as browsers do.
                    client.retries += 1
                    gevent.sleep(0.5 * 2**attempt * random.uniform(0.5, 1.5))
                else:
                    raise HTTPError(f"reset poll answered {status}: {body[:200]!r}")
            while not client.closing:
                client.sent += 1
                client.requests += 1
                self.answered(follower.poll(self.timeout))
        except Exception as error:  # every failure is reported, none is fatal
            if not client.closing:
                client.failures.append([self.index, 0, f"{error.__class__.__name__}: {error}",
                                        round(time.monotonic(), 6)])
        finally:
            follower.close()

    def prime(self, path):
        """Take this tab's cursor and hash from ``GET path`` (the snapshot), then hang up.

        The tab then polls from that state without a reset poll, as a page
        that has its snapshot does; its polls open connections of their own.
        """
        connection = self.follower.connection
        try:
            status, _head, body = connection.request(path, self.follower.auth, 60)
            if status != 200:
                return status
            snapshot = json.loads(body)
            self.follower.cursor, self.follower.hash = snapshot["cursor"], snapshot["hash"]
            self.follower.communities = snapshot.get("communities")
            return status
        except (OSError, HTTPError):
            return 0
        finally:
            connection.close()

    def arrive(self, at, spread):
        """Long polls from the primed cursor, the first at ``at`` (``time.monotonic()``).

        Unlike :meth:`run`, a poll whose connection fails (closed, reset,
        refused) is reported and sent again on a new connection, within
        ``spread`` seconds, as a browser's fetch loop retries; a refusal
        (a status other than 200) is retried after 1-3 s.
        """
        client = self.client
        follower = self.follower
        gevent.sleep(max(0.0, at - time.monotonic()))
        while not client.closing:
            client.sent += 1
            client.requests += 1
            try:
                response = follower.poll(self.timeout)
            except (OSError, HTTPError) as error:
                client.sent -= 1
                if client.closing:
                    return
                client.failures.append([self.index, 0, f"{error.__class__.__name__}: {error}",
                                        round(time.monotonic(), 6)])
                gevent.sleep(random.uniform(0, spread))
                continue
            self.answered(response)

    def answered(self, response):
        """Note a poll's answer (a refusal: wait 1-3 s), then wait while polling again is paused.

        A refusal is noted as ``[index, status, body's start, arrival time]``;
        an answer as ``[index, arrival time, status, size]``.
        """
        client = self.client
        client.sent -= 1
        if response.status != 200:
            client.failures.append([self.index, response.status, response.body[:200].decode(errors="replace"),
                                    round(response.arrived, 6)])
            gevent.sleep(random.uniform(1, 3))
            return
        self.tally(response.answer)
        client.answers.append([self.index, round(response.arrived, 6), response.answer["status"],
                               len(response.body)])
        while not client.repoll and not client.closing:
            client.resume.wait()


class Client:
    # The tab each held user gets (a scenario with tabs of its own subclasses it).
    poller = Poller

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
        self.pollers = []

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
            poller = self.poller(self, offset + number, user_id, spec)
            self.pollers.append(poller)
            poller.greenlet = gevent.spawn(poller.run, ramp)
            self.greenlets.append(poller.greenlet)
        deadline = time.monotonic() + spec.get("deadline", 120)
        while time.monotonic() < deadline:
            done = sum(1 for g in self.greenlets[offset:] if g.dead)
            if self.sent + done >= len(users) and self.requests >= len(users):
                break
            gevent.sleep(0.05)
        self.emit(event="held", sent=self.sent, failures=len(self.failures), retries=self.retries)

    def prime(self, spec):
        """One tab per user, each with the cursor and hash of its user's snapshot; no poll yet."""
        gate = Semaphore(spec.get("connections", 50))
        offset = len(self.pollers)
        pollers = [self.poller(self, offset + number, user_id, spec) for number, user_id in enumerate(spec["users"])]
        self.pollers.extend(pollers)

        def fetch(poller):
            with gate:
                return poller.prime(spec["snapshot_path"])

        statuses = Counter(str(status) for status in gevent.pool.Group().map(fetch, pollers))
        self.emit(event="primed", statuses=dict(statuses))

    def storm(self, spec):
        """Every primed tab sends its long poll, spread evenly over ``spread`` seconds (an arrival storm)."""
        spread = spec.get("spread", 1.0)
        pollers = [poller for poller in self.pollers if poller.greenlet is None]
        begin = time.monotonic() + 0.05
        for number, poller in enumerate(pollers):
            poller.greenlet = gevent.spawn(poller.arrive, begin + spread * number / len(pollers), spread)
            self.greenlets.append(poller.greenlet)
        gevent.sleep(max(0.0, begin + spread - time.monotonic()))
        self.emit(event="stormed", begin=begin, tabs=len(pollers))

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

    def followers(self, spec):
        """Each poller's :meth:`Poller.summary` (those of ``indices``, default all)."""
        indices = spec.get("indices")
        chosen = self.pollers if indices is None else [self.pollers[i] for i in indices]
        self.emit(event="followers", followers=[poller.summary() for poller in chosen])

    def snapshots(self, spec):
        """``GET /me/communities`` as the user of each poller of ``indices``, ``connections`` at a time.

        Emits, per poller, the snapshot's status, hash and unread counts, in the
        shape of :meth:`Poller.summary`, to compare with what the poller holds.
        """
        gate = Semaphore(spec.get("connections", 20))
        found = []

        def fetch(poller):
            with gate:
                connection = Connection(poller.port)
                try:
                    status, _head, body = connection.request("/me/communities", authorization(poller.token),
                                                             spec.get("timeout", 60))
                    entry = {"index": poller.index, "status": status}
                    if status == 200:
                        snapshot = json.loads(body)
                        entry.update(hash=snapshot["hash"], unread={
                            c["id"]: [c.get("unread"), c.get("last_activity_at")] for c in snapshot["communities"]})
                except (OSError, HTTPError) as error:
                    entry = {"index": poller.index, "status": 0, "error": f"{error.__class__.__name__}: {error}"}
                finally:
                    connection.close()
                found.append(entry)

        indices = spec.get("indices", range(len(self.pollers)))
        gevent.joinall([gevent.spawn(fetch, self.pollers[i]) for i in indices])
        self.emit(event="snapshots", snapshots=sorted(found, key=lambda entry: entry["index"]))

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
                headers += authorization(bearer_token(spec["secret"], user))
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
            headers = authorization(bearer_token(spec["secret"], user_id))
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

    def commands(self):
        """The commands by name (a scenario's client adds its own)."""
        return {
            "hold": self.hold, "repoll": self.set_repoll, "report": self.report,
            "load": self.load, "periodic": self.periodic, "close": self.close,
            "followers": self.followers, "snapshots": self.snapshots,
            "prime": self.prime, "storm": self.storm,
        }

    def serve(self):
        commands = self.commands()
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
