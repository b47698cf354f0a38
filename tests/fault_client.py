"""Many long-poll clients in one gevent process, for the fault tests.

Run as ``python tests/fault_client.py '<json settings>'``. Each client follows
one user's changes the way the browser client does: a first poll without a
cursor (``reset``), then polls with the returned cursor and hash, retrying
after connection errors and refusals with the cursor it has. Cursors advance
only on answers received, so an answer lost to a fault is asked for again.

Settings: ``base`` (URL), ``secret`` (to mint tokens), ``users`` (ids),
``per_user`` (clients per user), ``timeout`` (poll seconds), ``disconnect``
(chance per poll of hanging up mid-wait, then reconnecting).

Protocol: prints ``{"event": "ready"}`` once every client holds a cursor. On a
``stop`` line from stdin the clients stop waiting, catch up with non-waiting
polls until each is told ``unchanged``, and the process prints
``{"event": "done", "clients": [...]}`` with what every client received.
"""
from gevent import monkey

monkey.patch_all()

import http.client  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from urllib.parse import urlencode, urlsplit  # noqa: E402

import gevent  # noqa: E402
import jwt  # noqa: E402
from gevent.event import Event  # noqa: E402
from gevent.fileobject import FileObjectThread  # noqa: E402


class Hangup(Exception):
    """This client chose to drop its connection mid-wait."""


class Client:
    def __init__(self, settings, user_id, index):
        self.settings = settings
        self.user_id = user_id
        self.index = index
        split = urlsplit(settings["base"])
        self.host, self.port = split.hostname, split.port
        now = int(time.time())
        token = jwt.encode({"sub": user_id, "iat": now, "exp": now + 3600},
                           settings["secret"], algorithm="HS256")
        self.headers = {"Authorization": f"Bearer {token}"}
        self.connection = None
        self.cursor = None
        self.hash = None
        self.communities = None
        self.received = []
        self.resets = 0
        self.answers = Counter()
        self.statuses = Counter()
        self.errors = Counter()
        self.hangups = 0
        self.late = 0
        self.late_changes = []
        self.failures = []
        self.events = []
        self.catching_up = False
        self.ready = Event()

    def request(self, timeout):
        query = {"timeout": timeout}
        if self.cursor:
            query.update(cursor=self.cursor, hash=self.hash)
        if self.connection is None:
            self.connection = http.client.HTTPConnection(self.host, self.port, timeout=timeout + 30)
        self.connection.request("GET", "/community-changes/poll?" + urlencode(query),
                                headers=self.headers)
        response = self.connection.getresponse()
        body = response.read()
        if response.getheader("Connection", "").lower() == "close":
            self.drop()
        return response, body

    def drop(self):
        connection, self.connection = self.connection, None
        if connection is not None:
            connection.close()

    def poll_once(self, timeout, hangup_after=None):
        """One poll; returns the answer's status, or None after a failure."""
        try:
            if hangup_after is not None:
                with gevent.Timeout(hangup_after, Hangup):
                    response, body = self.request(timeout)
            else:
                response, body = self.request(timeout)
        except Hangup:
            self.hangups += 1
            self.drop()
            return None
        except (OSError, http.client.HTTPException) as error:
            self.errors[type(error).__name__] += 1
            self.events.append([time.time(), type(error).__name__, None])
            self.drop()
            gevent.sleep(random.uniform(0.05, 0.3))
            return None
        self.statuses[response.status] += 1
        if response.status != 200:
            self.failures.append([time.time(), response.status])
            self.events.append([time.time(), response.status, None])
            retry = response.getheader("Retry-After")
            delay = min(float(retry), 1.0) if retry and retry.isdigit() else 0.2
            gevent.sleep(delay * random.uniform(0.5, 1.0))
            return None
        answer = json.loads(body)
        status = answer["status"]
        self.answers[status] += 1
        self.events.append([time.time(), 200, status])
        if status == "reset":
            if self.cursor is not None:
                self.resets += 1
            self.communities = answer["communities"]
        elif status == "changed":
            if self.catching_up:
                # Changes the live path should have delivered while waiting.
                self.late += len(answer["changes"])
                self.late_changes.extend(c["community_id"] for c in answer["changes"])
            self.received.extend(
                [c["type"], c["community_id"], c.get("role"), c["at"], c["by"]]
                for c in answer["changes"]
            )
            self.communities = answer["communities"]
        self.cursor = answer["cursor"]
        self.hash = answer["hash"]
        return status

    def follow(self):
        """Wait for changes until killed."""
        try:
            while self.cursor is None:
                self.poll_once(0)
            self.ready.set()
            while True:
                hangup = None
                if random.random() < self.settings.get("disconnect", 0):
                    hangup = random.uniform(0.05, self.settings["timeout"])
                self.poll_once(self.settings["timeout"], hangup)
        finally:
            self.drop()

    def catch_up(self):
        """Non-waiting polls until the server has nothing newer for this client."""
        self.catching_up = True
        for _attempt in range(200):
            if self.cursor is not None and self.poll_once(0) == "unchanged":
                return True
            if self.cursor is None:
                self.poll_once(0)
        return False

    def report(self):
        return {
            "user": self.user_id,
            "index": self.index,
            "received": self.received,
            "communities": self.communities,
            "hash": self.hash,
            "resets": self.resets,
            "answers": dict(self.answers),
            "statuses": {str(k): v for k, v in self.statuses.items()},
            "errors": dict(self.errors),
            "hangups": self.hangups,
            "late": self.late,
            "late_changes": self.late_changes,
            "failures": self.failures,
            "events": self.events if self.settings.get("events") else [],
        }


def emit(event):
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def main():
    settings = json.loads(sys.argv[1])
    clients = [
        Client(settings, user_id, index)
        for user_id in settings["users"]
        for index in range(settings.get("per_user", 1))
    ]
    followers = []
    for client in clients:
        followers.append(gevent.spawn(client.follow))
        # Spread the first requests a little, as real page loads would be.
        gevent.sleep(0.001)
    for client in clients:
        client.ready.wait()
    emit({"event": "ready", "clients": len(clients)})

    stdin = FileObjectThread(sys.stdin)
    while True:
        line = stdin.readline()
        if not line or line.strip() == "stop":
            break
    gevent.killall(followers, block=True)
    catchers = [gevent.spawn(client.catch_up) for client in clients]
    gevent.joinall(catchers)
    emit({
        "event": "done",
        "caught_up": sum(1 for g in catchers if g.value),
        "clients": [client.report() for client in clients],
    })


if __name__ == "__main__":
    main()
