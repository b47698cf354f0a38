"""Parked polls (``PARKED_POLLS``, app/parking.py): a waiting poll kept as its socket and a
record, answered by the worker's answerer, against real gunicorn servers.

The rest of the suite's server tests run on the parking worker too (it is
the default); these pin down what only it can get wrong: the answer's
headers against the greenlet path's, the connection handed back for the
client's next request, hang-ups, shutdown, and the requests it must leave to
a greenlet.
"""
import http.client
import json
import signal
import socket
import time
from urllib.parse import urlencode

import pytest
import requests

from conftest import bearer
from harness.servers import wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.parametrize("backend", ["postgres"])]

ORIGIN = "https://platform.example"
POLL = "/community-changes/poll"


class Client:
    """One user's HTTP/1.1 keep-alive connection to ``server``."""

    def __init__(self, server, user_id, **headers):
        self.server = server
        self.connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        self.headers = {**bearer(user_id), **headers}

    def send(self, path, **headers):
        self.connection.request("GET", path, headers={**self.headers, **headers})

    def receive(self):
        response = self.connection.getresponse()
        return response, response.read()

    def get(self, path, **headers):
        self.send(path, **headers)
        return self.receive()

    def snapshot(self):
        response, body = self.get(POLL + "?timeout=0")
        assert response.status == 200, body
        return json.loads(body)

    def poll(self, state, timeout, **headers):
        """Send a poll from ``state`` (its cursor and hash), without reading the answer."""
        self.send(POLL + "?" + urlencode({"cursor": state["cursor"], "hash": state["hash"],
                                          "timeout": timeout}), **headers)

    def close(self):
        self.connection.close()


@pytest.fixture
def connect():
    """``connect(server, user_id, **headers)``: a ``Client``, closed after the test."""
    made = []

    def factory(server, user_id, **headers):
        made.append(Client(server, user_id, **headers))
        return made[-1]

    yield factory
    for client in made:
        client.close()


def gauge(server, name):
    return server.metrics()[f"community_sync_{name}_polls"]


def parked(server, count):
    wait_for(lambda: gauge(server, "parked") == count == gauge(server, "waiting"), 10,
             message=f"{count} parked polls")


def test_a_parked_answer_carries_what_a_held_one_does(server_factory, database, connect):
    """Every contract, CORS and security header, the same as the greenlet path writes them."""
    servers = {"parked": server_factory(database, CORS_ORIGINS=ORIGIN),
               "held": server_factory(database, CORS_ORIGINS=ORIGIN, PARKED_POLLS="0")}
    answers = {}
    for kind, server in servers.items():
        client = connect(server, "u-ada", Origin=ORIGIN)
        state = client.snapshot()
        client.poll(state, 1, **{"X-Request-ID": "req-1"})
        expected = 1 if kind == "parked" else 0
        wait_for(lambda: gauge(server, "waiting") == 1 and gauge(server, "parked") == expected, 10,
                 message="the poll waiting")
        response, body = client.receive()
        assert response.status == 200, body
        answers[kind] = ({name.lower(): value for name, value in response.getheaders()}, json.loads(body))
        # The connection serves the client's next request.
        again, _ = client.get("/healthz")
        assert again.status == 200
        client.close()
        assert gauge(server, "waiting") == gauge(server, "parked") == 0

    (parked_headers, parked_body), (held_headers, held_body) = answers["parked"], answers["held"]
    assert parked_headers.pop("date") and held_headers.pop("date")
    assert parked_headers == held_headers
    for name in ("etag", "x-poll-result", "x-poll-interval", "cache-control",
                 "access-control-allow-origin", "x-content-type-options", "x-request-id",
                 "content-type", "content-length"):
        assert name in parked_headers, name
    assert parked_headers["x-request-id"] == "req-1"
    assert parked_headers["x-poll-result"] == "unchanged"
    assert parked_body.keys() == held_body.keys()
    assert (parked_body["status"], parked_body["hash"]) == (held_body["status"], held_body["hash"])


def test_a_change_wakes_a_parked_poll_once(server_factory, database, connect):
    server = server_factory(database, SAFETY_NET_INTERVAL="3600")
    requests.post(server.url + "/communities", headers=bearer("u-admin", admin=True),
                  json={"id": "c-x", "slug": "x", "name": "X"}).raise_for_status()
    client = connect(server, "u-ada")
    state = client.snapshot()
    client.poll(state, 30)
    parked(server, 1)
    requests.put(server.url + "/communities/c-x/members/me", headers=bearer("u-ada")).raise_for_status()
    response, body = client.receive()
    changed = json.loads(body)
    assert response.status == 200 and changed["status"] == "changed", changed
    assert [(c["type"], c["community_id"]) for c in changed["changes"]] == [("joined", "c-x")]
    assert [c["id"] for c in changed["communities"]] == ["c-x"]
    # The next poll, on the same connection, parks again and is not told the change twice.
    client.poll(changed, 1)
    parked(server, 1)
    response, body = client.receive()
    assert json.loads(body)["status"] == "unchanged"
    assert json.loads(body)["cursor"] == changed["cursor"]
    client.close()


def test_a_client_hanging_up_frees_its_parked_poll(server_factory, database, connect):
    server = server_factory(database)
    clients = [connect(server, f"u-{n}") for n in range(3)]
    for client in clients:
        client.poll(client.snapshot(), 30)
    parked(server, 3)
    clients[0].close()
    # Long before the poll's 30 s: the hang-up itself frees it.
    parked(server, 2)
    for client in clients[1:]:
        client.close()
    parked(server, 0)


def test_shutdown_answers_parked_polls_and_closes_their_connections(server_factory, database, connect):
    server = server_factory(database)
    client = connect(server, "u-ada")
    client.poll(client.snapshot(), 30)
    parked(server, 1)
    signalled = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    response, body = client.receive()
    assert response.status == 200 and json.loads(body)["status"] == "unchanged", body
    assert response.getheader("Connection") == "close"
    assert time.monotonic() - signalled < 5
    assert server.process.wait(15) == 0
    client.close()


def test_polls_that_cannot_be_parked_wait_in_greenlets(server_factory, database, connect, request):
    """HTTP/1.0, and a client that asks for its connection to be closed, keep the greenlet path."""
    server = server_factory(database)
    closing = connect(server, "u-closing")
    closing.poll(closing.snapshot(), 2, Connection="close")
    state = connect(server, "u-old").snapshot()
    old = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    request.addfinalizer(old.close)
    query = urlencode({"cursor": state["cursor"], "hash": state["hash"], "timeout": 2})
    headers = "".join(f"{name}: {value}\r\n" for name, value in bearer("u-old").items())
    old.sendall(f"GET {POLL}?{query} HTTP/1.0\r\nHost: localhost\r\n{headers}\r\n".encode())
    wait_for(lambda: gauge(server, "waiting") == 2, 10, message="both polls waiting")
    assert gauge(server, "parked") == 0
    response, body = closing.receive()
    assert response.status == 200 and json.loads(body)["status"] == "unchanged"
    answer = b""
    while chunk := old.recv(65536):
        answer += chunk
    old.close()
    closing.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200") or head.startswith(b"HTTP/1.1 200"), head
    assert json.loads(body)["status"] == "unchanged"
