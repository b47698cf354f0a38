"""Parked polls (``PARKED_POLLS``, app/live/parking.py): a waiting poll kept as its socket and a
record, answered by the worker's answerer, against real gunicorn servers.

The rest of the suite's server tests run on the parking worker too (it is
the default); these pin down what only it can get wrong: the answer's
headers against the greenlet path's, the connection handed back for the
client's next request, hang-ups, shutdown, the framings it must write as
gunicorn would (HTTP/1.0, ``Connection: close``, ``Content-Length: 0``), and
the requests it must leave to a greenlet.
"""
import gc
import http.client
import json
import signal
import socket
import time
import weakref
from collections import namedtuple
from urllib.parse import urlencode

import gevent
import gevent.socket
import pytest
import requests

from app.live.coalescing import Coalescing, urgency
from app.live.parking import ParkedPoll
from app.live.reread import News
from app.live.worker import ParkedSocket
from conftest import bearer
from test_coalescing import Clock
from harness.servers import wait_for

# The tests against real servers, on PostgreSQL (its wake source wakes at once).
SERVERS = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.parametrize("backend", ["postgres"])]



def apply(marks):
    def decorate(test):
        for mark in reversed(marks):
            test = mark(test)
        return test
    return decorate


ORIGIN = "https://platform.example"
POLL = "/community-changes/poll"


# -- the answerer, on its own ---------------------------------------------------------


class Gathered:
    """A parked poll's ``PollSession``, reduced to what the answerer asks of it; its
    answer padded to ``size`` bytes."""

    def __init__(self, ticket, size, deadline):
        self.ticket, self.size, self.deadline = ticket, size, deadline
        self.community_ids = []
        self.parked = None
        self.news = []

    def take(self, fresh):
        self.news.extend(fresh)
        return bool(self.news)

    def communities(self):
        return None

    def urgency(self):
        return urgency([row for news in self.news for row in news.rows])


Row = namedtuple("Row", "id type shared topic collapse public", defaults=(None, False, False))
ACTIVITY = Row(1, "activity", True)


def respond(session):
    status = "changed" if session.news else "unchanged"
    body = json.dumps({"status": status, "padding": "x" * session.size}).encode()
    return "200 OK", body, {"Content-Type": "application/json", "X-Poll-Result": status}


@pytest.fixture
def parked(app):
    """``parked(user_id, timeout=30, size=0, **framing)``: a poll parked on the app's hub, as
    (record, client socket, connections handed back); ``framing``: ``ParkedSocket``'s
    ``protocol`` and ``keep_alive``. Every parked socket closed after."""
    hub = app.extensions["hub"]
    sockets = []
    hub.answer_parked_with(respond, app)

    def park(user_id, timeout=30, size=0, **framing):
        # gevent's sockets, as the worker's are (the suite's process is not patched).
        server_side, client_side = gevent.socket.socketpair()
        sockets.extend((server_side, client_side))
        handed_back = []
        with hub.waiting(user_id) as ticket:
            record = hub.park(Gathered(ticket, size, time.monotonic() + timeout))
        hub.parking.settle(record, ParkedSocket(server_side, b"X-Fixed: kept\r\n", handed_back.append,
                                                **framing))
        return record, client_side, handed_back

    yield park
    for sock in sockets:
        sock.close()


def read_answer(sock, timeout=5):
    """One answer from ``sock``: (head lines, body)."""
    data = b""
    with gevent.Timeout(timeout):
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            assert chunk, "the connection closed without an answer"
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        length = int(next(line.split(": ")[1] for line in lines if line.startswith("Content-Length")))
        while len(body) < length:
            body += sock.recv(65536)
    return lines, body


def deliver(hub, user_id, row=ACTIVITY):
    hub.users[user_id].deliver(News([row], [], 0, "h", None, urgency([row])))


def test_a_woken_parked_poll_is_answered_and_its_connection_handed_back(app, parked):
    hub = app.extensions["hub"]
    record, client_side, handed_back = parked("u-ada")
    assert hub.waiting_polls == hub.parking.count == 1 and hub.users["u-ada"].parked == [record]
    deliver(hub, "u-ada")
    lines, body = read_answer(client_side)
    assert lines[0] == "HTTP/1.1 200 OK" and lines[1] == "X-Fixed: kept"
    assert "Connection: keep-alive" in lines and "X-Poll-Result: changed" in lines
    assert json.loads(body)["status"] == "changed"
    gevent.sleep(0)
    assert len(handed_back) == 1
    assert hub.waiting_polls == hub.parking.count == 0 and "u-ada" not in hub.users


def answered_in_order(app, parked, members, join_during=True):
    """The order the answerer writes a fan-out to ``members`` in, with u-ada's join woken
    while the first of their answers is written (``join_during``) or just after their news."""
    hub = app.extensions["hub"]
    clients = [parked(user_id)[1] for user_id in [*members, "u-ada"]]
    written = []
    join = Row(2, "joined", False)

    def respond_in_order(session):
        written.append(session.ticket.user_id)
        if join_during and len(written) == 1:
            deliver(hub, "u-ada", join)
        return respond(session)

    hub.answer_parked_with(respond_in_order, app)
    for user_id in members:
        deliver(hub, user_id)
    if not join_during:
        deliver(hub, "u-ada", join)
    for client_side in clients:
        read_answer(client_side)
    return written


def test_a_users_own_change_is_answered_before_a_fan_out_of_activity(app, parked):
    """In one batch, the poll woken by its user's join is written before a busy community's."""
    members = [f"u-m{n}" for n in range(50)]
    written = answered_in_order(app, parked, members, join_during=False)
    assert len(written) == len(members) + 1
    assert written[0] == "u-ada"


@pytest.mark.parametrize("take_slice", [200, 10])
def test_a_users_own_change_woken_during_a_fan_out_goes_ahead_of_what_is_left_of_it(
    app, parked, monkeypatch, take_slice
):
    """The answerer works a fan-out in slices: a join woken while the first slice is written
    is answered next, ahead of the members answered after it, whether their news was taken
    already (200 a slice: all of them) or not yet (10 a slice)."""
    from app.live import parking as parking_module

    monkeypatch.setattr(parking_module, "ANSWER_SLICE", 10)
    monkeypatch.setattr(parking_module, "TAKE_SLICE", take_slice)
    monkeypatch.setattr(parking_module, "ANSWER_SECONDS", 0.0)  # one slice a turn
    members = [f"u-m{n}" for n in range(50)]
    written = answered_in_order(app, parked, members)
    assert sorted(written) == sorted([*members, "u-ada"])
    assert written.index("u-ada") == 10  # right after the first slice


def test_the_answerer_goes_on_answering_slices_until_its_turn_is_spent(app, parked, monkeypatch):
    """A turn answers slice after slice while its time lasts: a fan-out is not held to one
    slice per turn of a loop that other work makes long. A join woken meanwhile waits for the turn."""
    from app.live import parking as parking_module

    monkeypatch.setattr(parking_module, "ANSWER_SLICE", 10)
    monkeypatch.setattr(parking_module, "ANSWER_SECONDS", 3600.0)
    members = [f"u-m{n}" for n in range(50)]
    assert answered_in_order(app, parked, members) == [*members, "u-ada"]


def test_taking_a_fan_outs_news_yields_within_its_time(app, parked, monkeypatch):
    """Each due poll's news can be thousands of rows: the answerer takes news for TAKE_SECONDS
    and lets the rest of the worker run (its heartbeat among it) before it takes more."""
    from app.live import parking as parking_module

    monkeypatch.setattr(parking_module, "TAKE_SECONDS", 0.05, raising=False)
    hub = app.extensions["hub"]
    clients = [parked(f"u-m{n}")[1] for n in range(30)]
    events = []
    ready = parking_module.Parking._ready

    def slow_ready(self, record, expired):
        time.sleep(0.01)  # not patched: blocks the loop, as a long take does
        events.append("take")
        return ready(self, record, expired)

    def other():
        while True:
            events.append("other")
            gevent.sleep(0)

    monkeypatch.setattr(parking_module.Parking, "_ready", slow_ready)
    ticker = gevent.spawn(other)
    gevent.sleep(0)
    for n in range(30):
        deliver(hub, f"u-m{n}")
    for client_side in clients:
        read_answer(client_side)
    ticker.kill()
    takes = [index for index, name in enumerate(events) if name == "take"]
    assert len(takes) == 30
    assert "other" in events[takes[0]:takes[-1]]


def test_what_answering_parked_polls_costs_widens_the_coalescing_window(app, parked):
    hub = app.extensions["hub"]
    clock = Clock()
    hub.reread.coalescing = Coalescing(1.0, clock, ceiling=10.0)

    def respond_slowly(session):
        clock.now += 0.5
        return respond(session)

    hub.answer_parked_with(respond_slowly, app)
    clients = [parked(user_id)[1] for user_id in ("u-ada", "u-grace")]
    deliver(hub, "u-ada")
    deliver(hub, "u-grace")
    for client_side in clients:
        read_answer(client_side)
    # The answerer spent the whole second since the window began answering: it doubles.
    hub.reread.coalescing.adapt()
    assert hub.reread.coalescing.window == 2.0


def test_a_parked_poll_not_kept_alive_is_answered_in_its_version_and_closed(app, parked):
    """HTTP/1.0, or a client that said Connection: close: the answer says so, and the connection
    is closed rather than handed back for a next request."""
    hub = app.extensions["hub"]
    _, client_side, handed_back = parked("u-ada", protocol=b"HTTP/1.0", keep_alive=False)
    deliver(hub, "u-ada")
    lines, body = read_answer(client_side)
    assert lines[0] == "HTTP/1.0 200 OK" and "Connection: close" in lines
    assert int(next(line for line in lines if line.startswith("Content-Length")).split(": ")[1]) == len(body)
    assert json.loads(body)["status"] == "changed"
    with gevent.Timeout(3):
        assert client_side.recv(1) == b""  # closed by the server
    assert handed_back == [] and hub.parking.count == hub.waiting_polls == 0


def test_a_parked_poll_is_answered_at_its_deadline(app, parked):
    hub = app.extensions["hub"]
    _, client_side, handed_back = parked("u-ada", timeout=0.2)
    _, other_side, _ = parked("u-grace", timeout=30)
    lines, body = read_answer(client_side)
    assert json.loads(body)["status"] == "unchanged" and len(handed_back) == 1
    # The other poll's later deadline is untouched.
    assert hub.waiting_polls == hub.parking.count == 1 and list(hub.users) == ["u-grace"]
    other_side.setblocking(False)
    with pytest.raises(BlockingIOError):
        other_side.recv(1)


def test_news_between_parking_and_settling_is_answered_at_once(app):
    """News may reach the user after the view parked its poll and before the worker handed
    the socket over: the answerer takes it then, not at the deadline."""
    hub = app.extensions["hub"]
    hub.answer_parked_with(respond, app)
    server_side, client_side = gevent.socket.socketpair()
    try:
        with hub.waiting("u-ada") as ticket:
            record = hub.park(Gathered(ticket, 0, time.monotonic() + 30))
        deliver(hub, "u-ada")
        hub.parking.settle(record, ParkedSocket(server_side, b"", [].append))
        lines, body = read_answer(client_side, timeout=5)
        assert json.loads(body)["status"] == "changed"
    finally:
        server_side.close()
        client_side.close()


def test_a_poll_parked_with_an_earlier_deadline_is_answered_at_its_own(app, parked):
    """The answerer sleeps until the earliest deadline it knows: a nearer one parked later wakes it."""
    _, far_side, _ = parked("u-grace", timeout=30)
    gevent.sleep(0.05)  # the answerer now sleeps until the far deadline
    _, near_side, _ = parked("u-ada", timeout=0.2)
    lines, body = read_answer(near_side, timeout=5)
    assert json.loads(body)["status"] == "unchanged"


def test_an_answered_or_closed_poll_keeps_nothing_alive_until_its_deadline(app, parked):
    """The deadline heap holds a record until its deadline; what the poll held (its session, its
    news, its socket) is let go when it is answered or its client leaves."""
    hub = app.extensions["hub"]
    answered, answered_side, _ = parked("u-ada")
    closed, closed_side, _ = parked("u-grace")
    session = weakref.ref(answered.session)
    deliver(hub, "u-ada")
    read_answer(answered_side)
    closed_side.close()
    with gevent.Timeout(3):
        while hub.parking.count:
            gevent.sleep(0.01)
    in_heap = [record for _deadline, _order, record in hub.parking._deadlines]
    assert answered in in_heap and closed in in_heap
    assert (answered.session, answered.connection, closed.session, closed.connection) == (None,) * 4
    gc.collect()
    assert session() is None


def test_a_hang_up_releases_a_parked_poll_without_an_answer(app, parked):
    hub = app.extensions["hub"]
    _, client_side, handed_back = parked("u-ada")
    client_side.close()
    with gevent.Timeout(3):
        while hub.parking.count:
            gevent.sleep(0.01)
    assert hub.waiting_polls == 0 and handed_back == [] and "u-ada" not in hub.users


def test_a_hang_up_of_one_of_a_users_parked_polls_leaves_only_the_other_parked(app, parked):
    hub = app.extensions["hub"]
    _, gone_side, _ = parked("u-ada")
    staying, staying_side, _ = parked("u-ada")
    gone_side.close()
    with gevent.Timeout(3):
        while hub.parking.count > 1:
            gevent.sleep(0.01)
    assert hub.users["u-ada"].parked == [staying]
    deliver(hub, "u-ada")
    _, body = read_answer(staying_side)
    assert json.loads(body)["status"] == "changed"


def test_an_answer_larger_than_the_socket_buffer_arrives_whole(app, parked):
    hub = app.extensions["hub"]
    size = 4 * 1024 * 1024
    _, client_side, handed_back = parked("u-ada", size=size)
    deliver(hub, "u-ada")
    gevent.sleep(0.1)  # the first send fills the buffers; the rest waits for the reader
    assert handed_back == [] and hub.parking.count == 0
    lines, body = read_answer(client_side)
    assert len(json.loads(body)["padding"]) == size
    with gevent.Timeout(3):
        while not handed_back:
            gevent.sleep(0.01)


def test_shutdown_answers_parked_polls_and_closes_them(app, parked):
    hub = app.extensions["hub"]
    _, client_side, handed_back = parked("u-ada")
    hub.close()
    lines, body = read_answer(client_side)
    assert "Connection: close" in lines and json.loads(body)["status"] == "unchanged"
    with gevent.Timeout(3):
        assert client_side.recv(1) == b""  # closed by the server
    assert handed_back == [] and hub.parking.count == hub.waiting_polls == 0


def test_a_parked_poll_record_only_moves_forward():
    record = ParkedPoll(session=None)
    assert record.state == ParkedPoll.PARKED and not record.done
    assert record.take() is True and record.take() is False
    assert record.state == ParkedPoll.TAKEN
    assert record.finish() is True and record.finish() is False
    assert record.take() is False and record.state == ParkedPoll.DONE and record.done
    # A poll let go before it was taken (a hang-up, a cancel) is never taken after.
    left = ParkedPoll(session=None)
    assert left.finish() is True and left.take() is False and left.done


def test_news_at_the_deadline_answers_a_parked_poll_once(app, parked, caplog):
    """Woken and expired in one batch: one answer, one count, nothing written twice."""
    hub = app.extensions["hub"]
    answered = []

    def respond_counting(session):
        answered.append(session)
        return respond(session)

    # Large enough that the first send is partial: a second answer would be
    # written to the socket behind the rest of the first.
    record, client_side, handed_back = parked("u-ada", timeout=0.05, size=4 * 1024 * 1024)
    session = record.session  # let go once answered
    hub.parking.render = respond_counting
    # The test process is not monkey-patched: time.sleep blocks the answerer
    # too, so the deadline passes before it sees the news.
    time.sleep(0.1)
    deliver(hub, "u-ada")
    lines, body = read_answer(client_side)
    assert json.loads(body)["status"] == "changed"
    with gevent.Timeout(3):
        while not handed_back:
            gevent.sleep(0.01)
    assert answered == [session]
    client_side.setblocking(False)
    with pytest.raises(BlockingIOError):
        client_side.recv(1)
    assert not [r for r in caplog.records if r.levelname == "ERROR"]
    assert hub.waiting_polls == hub.parking.count == 0 and "u-ada" not in hub.users


# -- against real servers --------------------------------------------------------------


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


def until_parked(server, count):
    wait_for(lambda: gauge(server, "parked") == count == gauge(server, "waiting"), 10,
             message=f"{count} parked polls")


@apply(SERVERS)
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
        headers = {name.lower(): value for name, value in response.getheaders()}
        # Exact for each, not compared between the two: the cursor's length
        # follows the transaction ids in progress, which other clients of a
        # shared PostgreSQL move between the two polls.
        assert int(headers.pop("content-length")) == len(body.encode() if isinstance(body, str) else body)
        answers[kind] = (headers, json.loads(body))
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
                 "content-type"):
        assert name in parked_headers, name
    assert parked_headers["x-request-id"] == "req-1"
    assert parked_headers["x-poll-result"] == "unchanged"
    assert parked_body.keys() == held_body.keys()
    assert (parked_body["status"], parked_body["hash"]) == (held_body["status"], held_body["hash"])


@apply(SERVERS)
def test_a_change_wakes_a_parked_poll_once(server_factory, database, connect):
    server = server_factory(database, SAFETY_NET_INTERVAL="3600")
    requests.post(server.url + "/communities", headers=bearer("u-admin", admin=True),
                  json={"id": "c-x", "slug": "x", "name": "X"}).raise_for_status()
    client = connect(server, "u-ada")
    state = client.snapshot()
    client.poll(state, 30)
    until_parked(server, 1)
    requests.put(server.url + "/communities/c-x/members/me", headers=bearer("u-ada")).raise_for_status()
    response, body = client.receive()
    changed = json.loads(body)
    assert response.status == 200 and changed["status"] == "changed", changed
    assert [(c["type"], c["community_id"]) for c in changed["changes"]] == [("joined", "c-x")]
    assert [c["id"] for c in changed["communities"]] == ["c-x"]
    # Counted by the answerer, as the view counts an answer.
    assert server.metrics()['community_sync_poll_answers_total{result="changed"}'] == 1
    # The next poll, on the same connection, parks again and is not told the change twice.
    client.poll(changed, 1)
    until_parked(server, 1)
    response, body = client.receive()
    assert json.loads(body)["status"] == "unchanged"
    assert json.loads(body)["cursor"] == changed["cursor"]
    client.close()


@apply(SERVERS)
def test_a_client_hanging_up_frees_its_parked_poll(server_factory, database, connect):
    server = server_factory(database)
    clients = [connect(server, f"u-{n}") for n in range(3)]
    for client in clients:
        client.poll(client.snapshot(), 30)
    until_parked(server, 3)
    clients[0].close()
    # Long before the poll's 30 s: the hang-up itself frees it.
    until_parked(server, 2)
    for client in clients[1:]:
        client.close()
    until_parked(server, 0)


@apply(SERVERS)
def test_shutdown_answers_parked_polls_and_closes_their_connections(server_factory, database, connect):
    server = server_factory(database)
    client = connect(server, "u-ada")
    client.poll(client.snapshot(), 30)
    until_parked(server, 1)
    signalled = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    response, body = client.receive()
    assert response.status == 200 and json.loads(body)["status"] == "unchanged", body
    assert response.getheader("Connection") == "close"
    assert time.monotonic() - signalled < 5
    assert server.process.wait(15) == 0
    client.close()


# How clients and proxies send a poll, each parked: (request line version, headers, whether
# the connection is kept after the answer, as gunicorn keeps it).
FRAMINGS = {
    "http-1.1": ("HTTP/1.1", {}, True),
    # Some HTTP libraries and proxies announce an empty body on a GET.
    "content-length-0": ("HTTP/1.1", {"Content-Length": "0"}, True),
    "connection-close": ("HTTP/1.1", {"Connection": "close"}, False),
    # nginx's default upstream: proxy_http_version 1.0, which says Connection: close too.
    "http-1.0-close": ("HTTP/1.0", {"Connection": "close"}, False),
    "http-1.0": ("HTTP/1.0", {}, False),
    "http-1.0-keep-alive": ("HTTP/1.0", {"Connection": "keep-alive"}, True),
}


class RawPoll:
    """One user's polls, written byte by byte on a socket of their own, framed as
    ``FRAMINGS[framing]`` says; answers read to the byte, to see the connection close."""

    def __init__(self, server, user_id, framing, **headers):
        self.version, framed, self.kept = FRAMINGS[framing]
        self.headers = {"Host": "localhost", **bearer(user_id), **framed, **headers}
        self.sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
        self.buffer = b""

    def send(self, state, timeout, behind=b""):
        """A poll from ``state`` (its cursor and hash); ``behind``: bytes sent with it."""
        query = urlencode({"cursor": state["cursor"], "hash": state["hash"], "timeout": timeout})
        self.sock.sendall(self.request(f"{POLL}?{query}") + behind)

    def get(self, path):
        self.sock.sendall(self.request(path))

    def request(self, path):
        lines = "".join(f"{name}: {value}\r\n" for name, value in self.headers.items())
        return f"GET {path} {self.version}\r\n{lines}\r\n".encode()

    def answer(self):
        """(status line, {lower-case header: value}, body), the body read to its Content-Length."""
        while b"\r\n\r\n" not in self.buffer:
            self.buffer += self._receive()
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        status, *lines = head.decode("latin-1").split("\r\n")
        headers = {name.lower(): value for name, _, value in (line.partition(": ") for line in lines)}
        length = int(headers["content-length"])
        while len(self.buffer) < length:
            self.buffer += self._receive()
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return status, headers, body

    def closed(self):
        """Whether the server closed the connection after its answer (waits for it up to 10 s)."""
        self.sock.settimeout(10)
        try:
            return self.buffer == b"" and self.sock.recv(1) == b""
        except TimeoutError:
            return False

    def close(self):
        self.sock.close()

    def _receive(self):
        chunk = self.sock.recv(65536)
        assert chunk, "the connection closed without a whole answer"
        return chunk


@pytest.fixture
def raw_poll(request):
    """``raw_poll(server, user_id, framing, **headers)``: a ``RawPoll``, closed after the test."""

    def factory(server, user_id, framing, **headers):
        poll = RawPoll(server, user_id, framing, **headers)
        request.addfinalizer(poll.close)
        return poll

    return factory


def snapshot(server, user_id):
    answer = requests.get(server.url + POLL + "?timeout=0", headers=bearer(user_id))
    answer.raise_for_status()
    return answer.json()


def assert_framed(poll, status, headers, body, result):
    """An answer framed as gunicorn frames one to ``poll``'s request, ``result`` its X-Poll-Result."""
    assert status == f"{poll.version} 200 OK"
    assert headers["connection"] == ("keep-alive" if poll.kept else "close")
    assert int(headers["content-length"]) == len(body)
    assert headers["x-poll-result"] == json.loads(body)["status"] == result


def assert_connection_ends_as_framed(poll):
    """A connection kept alive serves the client's next request; another is closed after the answer."""
    if poll.kept:
        poll.get("/healthz")
        assert poll.answer()[0] == f"{poll.version} 200 OK"
    else:
        assert poll.closed()


@apply(SERVERS)
def test_polls_of_every_framing_are_parked_and_answered(server_factory, database, raw_poll):
    """An empty body announced, Connection: close and HTTP/1.0 park like any poll: news answers
    them, and so does their timeout; a connection not kept alive is closed after the answer."""
    server = server_factory(database, SAFETY_NET_INTERVAL="3600")
    requests.post(server.url + "/communities", headers=bearer("u-admin", admin=True),
                  json={"id": "c-x", "slug": "x", "name": "X"}).raise_for_status()
    polls = {framing: raw_poll(server, f"u-{framing}", framing) for framing in FRAMINGS}
    for framing, poll in polls.items():
        poll.send(snapshot(server, f"u-{framing}"), 30)
    until_parked(server, len(FRAMINGS))

    for framing in FRAMINGS:
        requests.put(server.url + "/communities/c-x/members/me",
                     headers=bearer(f"u-{framing}")).raise_for_status()
    for framing, poll in polls.items():
        status, headers, body = poll.answer()
        assert_framed(poll, status, headers, body, "changed")
        assert [c["type"] for c in json.loads(body)["changes"]] == ["joined"], framing
        assert_connection_ends_as_framed(poll)
    assert server.metrics()['community_sync_poll_answers_total{result="changed"}'] == len(FRAMINGS)
    until_parked(server, 0)

    # Their timeouts answer them too: on the connection kept, or on a new one.
    for framing, poll in polls.items():
        if not poll.kept:
            polls[framing] = poll = raw_poll(server, f"u-{framing}", framing)
        poll.send(snapshot(server, f"u-{framing}"), 1)
    until_parked(server, len(FRAMINGS))
    for framing, poll in polls.items():
        status, headers, body = poll.answer()
        assert_framed(poll, status, headers, body, "unchanged")
        assert_connection_ends_as_framed(poll)
    until_parked(server, 0)


@apply(SERVERS)
def test_a_parked_answer_is_framed_as_gunicorn_frames_a_held_one(server_factory, database, raw_poll):
    """For every framing, the parked answer's status line, headers and end of connection are
    those gunicorn writes for the same request held in a greenlet (PARKED_POLLS=0)."""
    servers = {"parked": server_factory(database), "held": server_factory(database, PARKED_POLLS="0")}
    for framing in FRAMINGS:
        answers = {}
        for kind, server in servers.items():
            poll = raw_poll(server, "u-ada", framing, **{"X-Request-ID": "req-1"})
            poll.send(snapshot(server, "u-ada"), 1)
            expected = 1 if kind == "parked" else 0
            wait_for(lambda: gauge(server, "waiting") == 1 and gauge(server, "parked") == expected, 10,
                     message=f"the {framing} poll waiting")
            status, headers, body = poll.answer()
            assert_framed(poll, status, headers, body, "unchanged")
            # Exact for each, not compared: the cursor's length follows transaction ids.
            headers.pop("content-length")
            assert headers.pop("date")
            answers[kind] = (status, headers)
            assert_connection_ends_as_framed(poll)
        assert answers["parked"] == answers["held"], framing


@apply(SERVERS)
def test_a_worker_without_keep_alive_closes_a_parked_polls_connection(server_factory, database, raw_poll):
    """KEEPALIVE=0: gunicorn closes every connection after its answer, a parked poll's too."""
    server = server_factory(database, KEEPALIVE="0")
    poll = raw_poll(server, "u-ada", "http-1.1")
    poll.send(snapshot(server, "u-ada"), 1)
    until_parked(server, 1)
    status, headers, body = poll.answer()
    assert status == "HTTP/1.1 200 OK" and headers["connection"] == "close"
    assert json.loads(body)["status"] == "unchanged"
    assert poll.closed()


@apply(SERVERS)
def test_polls_with_a_body_or_pipelined_requests_wait_in_greenlets(server_factory, database, raw_poll):
    """A body still to come, or a request sent behind the poll, keep the greenlet path: a parked
    socket would lose them."""
    server = server_factory(database)
    with_body = raw_poll(server, "u-body", "content-length-0", **{"Content-Length": "2"})
    with_body.send(snapshot(server, "u-body"), 2)
    pipelined = raw_poll(server, "u-pipelined", "content-length-0")
    pipelined.send(snapshot(server, "u-pipelined"), 2, behind=pipelined.request("/healthz"))
    wait_for(lambda: gauge(server, "waiting") == 2, 10, message="both polls waiting")
    # Sent once the poll waits, so that only its Content-Length tells there is a body.
    with_body.sock.sendall(b"{}")
    assert gauge(server, "parked") == 0
    for poll in (with_body, pipelined):
        status, headers, body = poll.answer()
        assert_framed(poll, status, headers, body, "unchanged")
    assert pipelined.answer()[0] == "HTTP/1.1 200 OK"


@apply(SERVERS)
def test_a_parked_answer_measures_delivery_and_what_the_worker_owed(server_factory, database, connect):
    """Held for a coalescing window while parked: the scrape shows the change owed (the worst
    worker's age); answered, its lag counts the wait and nothing is owed any more."""
    server = server_factory(database, SAFETY_NET_INTERVAL="3600", ACTIVITY_COALESCE="3600")
    admin = bearer("u-admin", admin=True)
    requests.post(server.url + "/communities", headers=admin,
                  json={"id": "c-x", "slug": "x", "name": "X"}).raise_for_status()
    requests.post(server.url + "/communities", headers=admin,
                  json={"id": "c-y", "slug": "y", "name": "Y"}).raise_for_status()
    requests.put(server.url + "/communities/c-x/members/me", headers=bearer("u-ada")).raise_for_status()
    client = connect(server, "u-ada")
    state = client.snapshot()
    database.psql("INSERT INTO activity (community_id, kind, ref) VALUES ('c-x', 'post_created', 'p-0')")
    client.poll(state, 30)
    response, body = client.receive()
    first = json.loads(body)
    assert [c["ref"] for c in first["changes"]] == ["p-0"]  # answered at once; the window starts
    client.poll(first, 30)
    until_parked(server, 1)
    database.backdated_activity("c-x", "p-old", 30)
    wait_for(lambda: server.metrics()["community_sync_oldest_owed_change_seconds"] >= 30, 10,
             message="the held change owed")
    # Anything but activity ends the window.
    requests.put(server.url + "/communities/c-y/members/me", headers=bearer("u-ada")).raise_for_status()
    response, body = client.receive()
    answer = json.loads(body)
    assert [(c["type"], c.get("ref")) for c in answer["changes"]] == [("activity", "p-old"), ("joined", None)]
    found = server.metrics()
    assert found["community_sync_oldest_owed_change_seconds"] == 0
    assert found['community_sync_delivery_lag_seconds_count{answered="after_wait"}'] == 1
    assert found['community_sync_delivery_lag_seconds_sum{answered="after_wait"}'] >= 30
    assert found['community_sync_delivery_lag_seconds_count{answered="at_once"}'] == 1
    client.close()
