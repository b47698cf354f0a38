"""Many long-poll clients in one gevent process, for the fault tests.

Run as ``python tests/fault_client.py '<json settings>'`` with the repository
root on PYTHONPATH. Each client is a harness.polls follower of one user's
changes (a first poll without a cursor, then polls with the returned cursor
and hash), retrying after connection errors and refusals with the cursor it
has, so an answer lost to a fault is asked for again.

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

import json  # noqa: E402
import random  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from urllib.parse import urlsplit  # noqa: E402

import gevent  # noqa: E402
from gevent.event import Event  # noqa: E402
from gevent.fileobject import FileObjectThread  # noqa: E402

from harness.polls import Follower, HTTPError, bearer_token, header_value  # noqa: E402


class Hangup(Exception):
    """This client chose to drop its connection mid-wait."""


class Client:
    """A harness follower, plus what the fault tests check: hang-ups, refusals and late changes."""

    def __init__(self, settings, user_id, index):
        self.settings = settings
        self.user_id = user_id
        self.index = index
        split = urlsplit(settings["base"])
        # One connect attempt a poll: a refusal is a failure to count and retry here.
        self.follower = Follower(split.port, bearer_token(settings["secret"], user_id),
                                 host=split.hostname, connect_retry=0,
                                 watches=settings.get("watches", {}).get(user_id, ()))
        self.hangups = 0
        self.failures = []
        self.events = []
        self.caught_up_from = None  # changes from here on arrived only when asked again
        self.most_published = 0  # the most activity (or notification) changes in one answer
        self.ready = Event()

    def poll_once(self, timeout, hangup_after=None):
        """One poll; returns the answer's status, or None after a failure."""
        try:
            with gevent.Timeout(hangup_after, Hangup):  # no hang-up when None
                response = self.follower.poll(timeout)
        except Hangup:
            self.hangups += 1
            self.follower.close()
            return None
        except (OSError, HTTPError) as error:
            self.events.append([time.time(), type(error).__name__, None])
            gevent.sleep(random.uniform(0.05, 0.3))
            return None
        if response.status != 200:
            self.failures.append([time.time(), response.status])
            self.events.append([time.time(), response.status, None])
            retry = header_value(response.head, b"retry-after")
            delay = min(float(retry), 1.0) if retry and retry.isdigit() else 0.2
            gevent.sleep(delay * random.uniform(0.5, 1.0))
            return None
        status = response.answer["status"]
        self.events.append([time.time(), 200, status])
        published = Counter(c["type"] for c in response.answer.get("changes", ())
                            if c["type"] in ("activity", "notification"))
        self.most_published = max(self.most_published, *published.values(), 0)
        return status

    def follow(self):
        """Wait for changes until killed."""
        try:
            while self.follower.cursor is None:
                self.poll_once(0)
            self.ready.set()
            while True:
                hangup = None
                if random.random() < self.settings.get("disconnect", 0):
                    hangup = random.uniform(0.05, self.settings["timeout"])
                self.poll_once(self.settings["timeout"], hangup)
        finally:
            self.follower.close()

    def catch_up(self):
        """Non-waiting polls until the server has nothing newer for this client."""
        # Changes from here on are ones the live path should have delivered while waiting.
        self.caught_up_from = len(self.follower.changes)
        for _attempt in range(200):
            if self.follower.cursor is not None and self.poll_once(0) == "unchanged":
                return True
            if self.follower.cursor is None:
                self.poll_once(0)
        return False

    def report(self):
        follower = self.follower
        late = follower.changes[self.caught_up_from:] if self.caught_up_from is not None else []
        return {
            "user": self.user_id,
            "index": self.index,
            "received": [[c["type"], c.get("community_id"), c.get("role"), c["at"], c["by"], c.get("ref"),
                          c.get("topic"), c.get("data")]
                         for c in follower.changes],
            "communities": follower.communities,
            "notifications_unread": follower.notifications_unread,
            "truncated": follower.truncated,
            "most_published": self.most_published,
            "hash": follower.hash,
            "resets": follower.resets,
            "answers": dict(follower.answers),
            "statuses": {str(k): v for k, v in follower.statuses.items()},
            "errors": dict(follower.errors),
            "hangups": self.hangups,
            "late": len(late),
            "late_changes": [c.get("community_id") for c in late],
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
