"""Fire many requests at a real server at the same instant, and collect what each answered.

Each request gets a connection of its own, opened (and the server reached)
before a barrier releases them all, so they arrive together and spread over
the server's workers: what races there is what races in production.
"""
import threading
from dataclasses import dataclass, field

import requests


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    headers: dict = field(default_factory=dict)
    json: object = None


@dataclass(frozen=True)
class Answer:
    status: int
    body: object

    @property
    def problem_type(self):
        """The problem's slug (``id-taken``), or None for an answer that is not a problem."""
        if not isinstance(self.body, dict) or "type" not in self.body:
            return None
        return self.body["type"].rpartition(":")[2]


def at_once(base_url, calls, timeout=30):
    """Send every :class:`Call` together; their :class:`Answer` in the order of ``calls``.

    A request that fails at the HTTP level (refused, reset, timed out) is
    raised, not answered: that is never part of the contract.
    """
    barrier = threading.Barrier(len(calls))
    answers = [None] * len(calls)
    errors = []

    def fire(index, call):
        with requests.Session() as session:
            try:
                # Open the connection first, so the barrier releases requests, not handshakes.
                session.get(base_url + "/healthz", timeout=timeout).raise_for_status()
                barrier.wait(timeout=timeout)
                response = session.request(call.method, base_url + call.path, headers=call.headers,
                                           json=call.json, timeout=timeout)
            except Exception as error:  # noqa: BLE001 - re-raised in the caller's thread
                barrier.abort()
                errors.append(error)
                return
        body = response.json() if "json" in response.headers.get("Content-Type", "") else None
        answers[index] = Answer(response.status_code, body)

    threads = [threading.Thread(target=fire, args=item) for item in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return answers
