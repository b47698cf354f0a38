"""The hub, directly: the waiter registry, shared waits, drops, caps, shutdown."""
import os
import signal
import socket
import threading
import time

import gevent
import gevent.event
import pytest
import requests
from sqlalchemy import text

from app.live.registry import OverCapacity, TooManyPolls
from conftest import bearer, blocked_polls, eventually, statements, until_blocked


def test_polls_of_one_user_share_one_wait(quiet_app, database):
    hub = quiet_app.extensions["hub"]
    with hub.waiting("u-ada") as first, hub.waiting("u-ada") as second:
        assert len(hub.users) == 1 and hub.users["u-ada"].count == 2
        results = [gevent.spawn(hub.wait, ticket, 5) for ticket in (first, second)]
        gevent.sleep(0)
        database.psql("DELETE FROM memberships WHERE user_id = 'u-ada' AND community_id = 'c-rust'")
        hub.reread.refresh()
        news = [greenlet.get(timeout=5) for greenlet in results]
    assert news[0] == news[1] and len(news[0]) == 1
    assert news[0][0].rows[0].type == "left"


def test_leaving_the_wait_however_releases_everything_it_took(quiet_app):
    hub = quiet_app.extensions["hub"]
    gauge = quiet_app.extensions["metrics"].waiting
    server_side, client_side = socket.socketpair()
    with pytest.raises(RuntimeError, match="the poll failed"):
        with hub.waiting("u-ada", server_side) as ticket:
            assert hub.users["u-ada"].count == 1 and hub.waiting_polls == 1
            assert hub.disconnects.tickets == {ticket.fd: ticket}
            assert gauge._value.get() == 1
            assert hub.vouching.position is not None
            raise RuntimeError("the poll failed")
    assert hub.users == {} and hub.waiting_polls == 0
    assert hub.disconnects.tickets == {} and ticket.fd is None
    assert gauge._value.get() == 0
    # Nobody waits: the position is kept for the re-polls (a safety interval), not dropped here.
    assert hub.vouching.position is not None
    server_side.close()
    client_side.close()


def test_one_user_leaving_keeps_the_others_entries(quiet_app):
    hub = quiet_app.extensions["hub"]
    with hub.waiting("u-alan") as alan:
        with hub.waiting("u-ada"), hub.waiting("u-ada"):
            assert hub.users["u-ada"].count == 2
        assert list(hub.users) == ["u-alan"] and hub.users["u-alan"] is alan.waiters
        assert hub.waiting_polls == 1 and hub.vouching.position is not None


def test_caps_are_domain_refusals(app_factory):
    app = app_factory(HUB_AUTOSTART=False, POLL_MAX_WAITING=3, POLL_MAX_PER_USER=2)
    hub = app.extensions["hub"]
    with hub.waiting("u-ada"), hub.waiting("u-ada"):
        with pytest.raises(TooManyPolls) as refused:
            hub.admit("u-ada")
        assert refused.value.limit == 2
        hub.admit("u-alan")
        with hub.waiting("u-alan"):
            with pytest.raises(OverCapacity):
                hub.admit("u-grace")
    hub.admit("u-ada")


def test_dropped_ticket_wakes_and_close_wakes_everyone(quiet_app):
    hub = quiet_app.extensions["hub"]
    with hub.waiting("u-ada") as ticket:
        waiting = gevent.spawn(hub.wait, ticket, 30)
        gevent.sleep(0)
        hub.drop(ticket)
        assert waiting.get(timeout=2) == [] and ticket.gone

    with hub.waiting("u-ada") as ada, hub.waiting("u-alan") as alan:
        waiting = [gevent.spawn(hub.wait, ticket, 30) for ticket in (ada, alan)]
        gevent.sleep(0)
        hub.close()
        assert [g.get(timeout=2) for g in waiting] == [[], []]


def test_drain_waits_for_a_quiet_moment_but_not_forever(quiet_app):
    hub = quiet_app.extensions["hub"]
    hub.in_flight = 1
    gevent.spawn_later(0.2, setattr, hub, "in_flight", 0)
    assert hub.drain(timeout=5, quiet=0.1) is True and hub.closing
    hub.in_flight = 1  # a request that never ends
    assert hub.drain(timeout=0.3, quiet=0.1) is False
    hub.in_flight = 0


def test_the_in_flight_count_balances_on_every_path(app_factory, auth):
    """Refused before the view (431, 429), answered with an error (400, 500), or
    failing before any view: each request counts as one while it runs, and none after."""
    app = app_factory(HUB_AUTOSTART=False, RATELIMIT_WRITES="1 per minute")
    hub = app.extensions["hub"]
    client = app.test_client()
    during = []

    def broken():
        during.append(hub.in_flight)
        raise RuntimeError("a view that fails")

    app.view_functions["health.healthz"] = broken
    refusals = [
        (lambda: client.get("/readyz", headers={"X-Large": "x" * 9000}), 431),
        (lambda: client.put("/communities/c-none/members/me", headers=auth("u-ada")), 404),
        (lambda: client.put("/communities/c-none/members/me", headers=auth("u-ada")), 429),
        (lambda: client.post("/communities", data="{", headers=auth("u-admin", admin=True),
                             content_type="application/json"), 400),
        (lambda: client.get("/healthz"), 500),
    ]
    for send, status in refusals:
        assert send().status_code == status
        assert hub.in_flight == 0, status
    assert during == [1]

    def failing_before_any_view():
        during.append(hub.in_flight)
        raise RuntimeError("a request hook that fails")

    app.before_request_funcs.setdefault(None, []).insert(0, failing_before_any_view)
    assert client.get("/readyz").status_code == 500
    assert hub.in_flight == 0 and during == [1, 1]


def test_a_closed_peer_wakes_its_waiting_poll(quiet_app):
    hub = quiet_app.extensions["hub"]
    server_side, client_side = socket.socketpair()
    with hub.waiting("u-ada", server_side) as ticket:
        assert ticket.fd is not None
        waiting = until_blocked(hub, gevent.spawn(hub.wait, ticket, 30))
        client_side.close()
        assert waiting.get(timeout=3) == []
        assert ticket.gone
    server_side.close()
    assert hub.disconnects.tickets == {}


# -- several processes -------------------------------------------------------------


def wait_in_thread(url, headers, params):
    result = {}

    def run():
        result["response"] = requests.get(url + "/community-changes/poll", headers=headers,
                                          params=params, timeout=60)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, result


@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.parametrize("backend", ["postgres"])
def test_changes_wake_polls_in_another_process(server_factory, database):
    # Two app processes, as on two hosts: polls wait on one, writes land on the other.
    waiting_host = server_factory(database, SAFETY_NET_INTERVAL="3600")
    writing_host = server_factory(database, SAFETY_NET_INTERVAL="3600")
    requests.post(writing_host.url + "/communities", headers=bearer("u-admin", admin=True),
                  json={"id": "c-x", "slug": "x", "name": "X"}).raise_for_status()
    ada = bearer("u-ada")
    snap = requests.get(waiting_host.url + "/me/communities", headers=ada).json()

    for write in ("api", "sql"):
        thread, result = wait_in_thread(
            waiting_host.url, ada, {"cursor": snap["cursor"], "hash": snap["hash"], "timeout": 30}
        )
        time.sleep(0.5)
        started = time.monotonic()
        if write == "api":
            requests.put(writing_host.url + "/communities/c-x/members/me", headers=ada).raise_for_status()
        else:
            database.psql("DELETE FROM memberships WHERE user_id = 'u-ada' AND community_id = 'c-x'")
        thread.join(timeout=30)
        elapsed = time.monotonic() - started
        body = result["response"].json()
        assert body["status"] == "changed", body
        expected = "joined" if write == "api" else "left"
        assert [c["type"] for c in body["changes"]] == [expected]
        # Far below the safety net's hour: the NOTIFY did it.
        assert elapsed < 10
        snap = body


@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.parametrize("backend", ["postgres"])
def test_client_following_cursors_sees_every_change_once_under_out_of_order_commits(
    server_factory, database
):
    import random

    from sqlalchemy import create_engine

    from app.store.db import normalize_url

    server = server_factory(database)
    admin = bearer("u-admin", admin=True)
    communities = [f"c-{n}" for n in range(12)]
    for cid in communities:
        requests.post(server.url + "/communities", headers=admin,
                      json={"id": cid, "slug": cid, "name": cid.upper()}).raise_for_status()

    ada = bearer("u-ada")
    snap = requests.get(server.url + "/me/communities", headers=ada).json()
    seen = []
    state = {"cursor": snap["cursor"], "hash": snap["hash"], "communities": snap["communities"]}
    stop = threading.Event()

    def follow():
        while True:
            response = requests.get(server.url + "/community-changes/poll", headers=ada, timeout=30,
                                    params={"cursor": state["cursor"], "hash": state["hash"], "timeout": 2})
            body = response.json()
            assert body["status"] in ("changed", "unchanged"), body
            if body["status"] == "changed":
                seen.extend((c["type"], c["community_id"]) for c in body["changes"])
                state["communities"] = body["communities"]
            state["cursor"], state["hash"] = body["cursor"], body["hash"]
            if stop.is_set() and body["status"] == "unchanged":
                return

    engine = create_engine(normalize_url(database.url), pool_size=8)

    def writer(seed):
        rng = random.Random(seed)
        for _ in range(15):
            cid = rng.choice(communities)
            with engine.begin() as connection:
                # Take a change id, then linger so later writers commit first.
                exists = connection.execute(
                    text("SELECT 1 FROM memberships WHERE user_id = 'u-ada' AND community_id = :c FOR UPDATE"),
                    {"c": cid},
                ).first()
                if exists:
                    connection.execute(
                        text("DELETE FROM memberships WHERE user_id = 'u-ada' AND community_id = :c"), {"c": cid}
                    )
                else:
                    connection.execute(
                        text("INSERT INTO memberships (user_id, community_id) VALUES ('u-ada', :c) "
                             "ON CONFLICT DO NOTHING"), {"c": cid}
                    )
                time.sleep(rng.uniform(0, 0.05))

    follower = threading.Thread(target=follow)
    follower.start()
    writers = [threading.Thread(target=writer, args=(seed,)) for seed in range(4)]
    for thread in writers:
        thread.start()
    for thread in writers:
        thread.join()
    stop.set()
    follower.join(timeout=60)
    assert not follower.is_alive()

    with engine.connect() as connection:
        logged = connection.execute(
            text("SELECT type, community_id FROM changes WHERE user_id = 'u-ada' AND community_id LIKE 'c-%' "
                 "AND community_id NOT IN ('c-rust', 'c-python') ORDER BY id")
        ).all()
        final = sorted(row[0] for row in connection.execute(
            text("SELECT community_id FROM memberships WHERE user_id = 'u-ada'")))
    engine.dispose()
    # Exactly once each: the same multiset, no duplicates, none missing.
    assert sorted(seen) == sorted(map(tuple, logged))
    assert len(seen) == len(logged) > 0
    assert sorted(c["id"] for c in state["communities"]) == final
    # Per community, the client saw the changes in commit order.
    for cid in communities:
        mine = [kind for kind, c in seen if c == cid]
        assert mine == [kind for kind, c in logged if c == cid]


@pytest.mark.slow
def test_sigterm_answers_waiting_polls_and_leaves_despite_idle_connections(server_factory, database):
    server = server_factory(database, graceful=60)
    ada = bearer("u-ada")
    snap = requests.get(server.url + "/me/communities", headers=ada).json()
    # An idle keep-alive connection, as a browser keeps one open between fetches.
    idle = socket.create_connection(("127.0.0.1", server.port))
    idle.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n")
    assert b"200 OK" in idle.recv(4096)
    thread, result = wait_in_thread(server.url, ada, {"cursor": snap["cursor"], "hash": snap["hash"],
                                                      "timeout": 50})
    time.sleep(0.5)
    started = time.monotonic()
    server.process.terminate()
    thread.join(timeout=20)
    answered = time.monotonic() - started
    server.process.wait(timeout=50)
    left = time.monotonic() - started
    idle.close()
    response = result["response"]
    assert response.status_code == 200 and response.json()["status"] == "unchanged"
    assert answered < 5
    # Far inside the 60 s graceful timeout that idle connections used to take.
    assert left < 15


@pytest.mark.slow
@pytest.mark.parametrize("parked", ["1", "0"], ids=["parked", "greenlets"])
def test_ctrl_c_answers_waiting_polls_as_sigterm_does(server_factory, database, parked):
    """Ctrl-C in the server's terminal: SIGINT to the master and its workers, which drain rather than drop."""
    server = server_factory(database, graceful=60, PARKED_POLLS=parked)
    ada = bearer("u-ada")
    snap = requests.get(server.url + "/me/communities", headers=ada).json()
    thread, result = wait_in_thread(server.url, ada, {"cursor": snap["cursor"], "hash": snap["hash"],
                                                      "timeout": 50})
    assert eventually(lambda: any(value for name, value in server.metrics().items()
                                  if name.startswith("community_sync_waiting_polls")), 20)
    os.killpg(server.process.pid, signal.SIGINT)
    thread.join(timeout=20)
    server.process.wait(timeout=50)
    response = result.get("response")
    assert response is not None, result
    assert response.status_code == 200 and response.json()["status"] == "unchanged"


def exchange(port, request, hang_up=False):
    """Send raw ``request`` bytes on a fresh connection; the status line answered, or None
    when ``hang_up``: the client leaves without reading the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        if hang_up:
            return None
        return sock.makefile("rb").readline()


@pytest.mark.slow
def test_sigterm_leaves_at_once_after_refusals_errors_and_hang_ups(server_factory, database):
    """Requests refused or failing before the view leave no request counted in flight,
    so a drain sees the worker quiet, far inside the graceful timeout."""
    server = server_factory(database, graceful=60, RATELIMIT_WRITES="1 per minute",
                            REQUEST_BODY_TIMEOUT="1")
    ada = bearer("u-ada")
    # 431: a header field over the application's limit (below gunicorn's), no token needed.
    large = requests.get(server.url + "/healthz", headers={"X-Large": "x" * 9000}, timeout=10)
    assert large.status_code == 431
    # 429: over the write limits.
    statuses = [requests.put(server.url + "/communities/c-none/members/me", headers=ada,
                             timeout=10).status_code for _ in range(2)]
    assert statuses == [404, 429]
    chunked = (b"POST /communities HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               b"Transfer-Encoding: chunked\r\nAuthorization: " + ada["Authorization"].encode()
               + b"\r\n\r\n5\r\n{\"id\"\r\n")
    # 408: a streamed body that stops arriving, read before the view.
    assert b" 408 " in exchange(server.port, chunked)
    # A client hanging up in the middle of its streamed body, and one that never reads its answer.
    exchange(server.port, chunked, hang_up=True)
    exchange(server.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", hang_up=True)
    # A client hanging up while its poll waits.
    snap = requests.get(server.url + "/me/communities", headers=ada, timeout=10).json()
    poll = (f"GET /community-changes/poll?cursor={snap['cursor']}&hash={snap['hash']}&timeout=30 HTTP/1.1\r\n"
            f"Host: x\r\nAuthorization: {ada['Authorization']}\r\n\r\n")
    exchange(server.port, poll.encode(), hang_up=True)
    # 400: an error answered by the view.
    broken = requests.post(server.url + "/communities", data="{", timeout=10,
                           headers={**bearer("u-admin", admin=True), "Content-Type": "application/json"})
    assert broken.status_code == 400
    time.sleep(1.5)  # the stalled bodies' deadlines pass
    started = time.monotonic()
    server.process.terminate()
    server.process.wait(timeout=15)  # TimeoutExpired: the drain waits out the graceful timeout


# -- re-polls the hub can vouch for ----------------------------------------------


def start_poll(client, headers, cursor, digest, timeout=20):
    greenlet = gevent.spawn(
        client.get, f"/community-changes/poll?cursor={cursor}&hash={digest}&timeout={timeout}",
        headers=headers,
    )
    return until_blocked(client.application.extensions["hub"], greenlet)


@pytest.fixture
def busy_app(app_factory, auth):
    """A seeded app whose hub keeps reading: another user's poll waits, as on any busy worker."""
    app = app_factory(SAFETY_NET_INTERVAL=0.1)
    app.test_cli_runner().invoke(args=["seed-demo"])
    client = app.test_client()
    grace = client.get("/me/communities", headers=auth("u-grace")).json
    keeper = start_poll(client, auth("u-grace"), grace["cursor"], grace["hash"], timeout=20)
    yield app, client
    app.extensions["hub"].close()
    keeper.get(timeout=5)


def test_a_quiet_re_poll_reads_nothing_and_still_wakes(busy_app, auth, database, monkeypatch):
    from app.live import admission

    app, client = busy_app
    ada = auth("u-ada")
    body = client.get("/me/communities", headers=ada).json
    read_answer = client.get(
        f"/community-changes/poll?cursor={body['cursor']}&hash={body['hash']}&timeout=1", headers=ada
    )
    first = read_answer.json
    assert first["status"] == "unchanged"

    reads = []
    original = admission.read_alone
    monkeypatch.setattr(admission, "read_alone", lambda *a: reads.append(a) or original(*a))
    with statements(app.extensions["db"]) as seen:
        vouched = client.get(
            f"/community-changes/poll?cursor={first['cursor']}&hash={first['hash']}&timeout=1",
            headers=ada,
        )
    assert vouched.json["status"] == "unchanged" and reads == []
    # Not one statement: no read, no provisioning, no position.
    assert seen == []
    # Same advice as a read answer: clients pace themselves by it.
    assert vouched.headers["X-Poll-Interval"] == read_answer.headers["X-Poll-Interval"]
    again = start_poll(client, ada, first["cursor"], first["hash"])
    assert reads == []  # the hub vouched for the cursor: no read at all
    database.psql("DELETE FROM memberships WHERE user_id = 'u-ada' AND community_id = 'c-rust'")
    woken = again.get(timeout=10).json
    assert woken["status"] == "changed"
    assert [(c["type"], c["community_id"]) for c in woken["changes"]] == [("left", "c-rust")]
    # A forged hash is never vouched for: it is read, and reset.
    forged = client.get(f"/community-changes/poll?cursor={woken['cursor']}&hash={'0' * 16}&timeout=20",
                        headers=ada).json
    assert forged["status"] == "reset" and len(reads) == 1


def test_a_change_between_two_polls_is_not_vouched_away(busy_app, auth, database):
    app, client = busy_app
    ada = auth("u-ada")
    body = client.get("/me/communities", headers=ada).json
    quiet = client.get(f"/community-changes/poll?cursor={body['cursor']}&hash={body['hash']}&timeout=1",
                       headers=ada).json
    # Between ada's polls: a change the hub reads while she has no poll waiting.
    database.psql("INSERT INTO memberships (user_id, community_id) VALUES ('u-ada', 'c-go')")
    hub = app.extensions["hub"]
    deadline = time.monotonic() + 10
    while "u-ada" not in hub.vouching.recent and time.monotonic() < deadline:
        gevent.sleep(0.05)
    assert not hub.vouching.vouches("u-ada", app.extensions["cursor_key"].decode(quiet["cursor"]), quiet["hash"])
    started = time.monotonic()
    response = client.get(
        f"/community-changes/poll?cursor={quiet['cursor']}&hash={quiet['hash']}&timeout=20", headers=ada
    ).json
    assert response["status"] == "changed" and time.monotonic() - started < 5
    assert [c["community_id"] for c in response["changes"]] == ["c-go"]


def test_a_re_poll_right_after_an_immediate_answer_gets_nothing_twice(quiet_app, auth, database):
    """The change an answer carried reaches its re-poll as news too: the cursor must see it."""
    app, client = quiet_app, quiet_app.test_client()
    hub = app.extensions["hub"]
    ada = auth("u-ada")
    body = client.get("/me/communities", headers=ada).json
    with hub.waiting("u-grace"):  # keeps the hub's position from before the change
        database.psql("INSERT INTO memberships (user_id, community_id) VALUES ('u-ada', 'c-go')")
        answer = client.get(f"/community-changes/poll?cursor={body['cursor']}&hash={body['hash']}&timeout=0",
                            headers=ada).json
        assert [c["community_id"] for c in answer["changes"]] == ["c-go"]
        again = start_poll(client, ada, answer["cursor"], answer["hash"], timeout=10)
        hub.reread.refresh()  # the hub reads the same change, and hands it to the re-poll
        assert eventually(lambda: blocked_polls(hub) == 1)
        hub.close()
        assert again.get(timeout=10).json["status"] == "unchanged"


def test_a_write_committed_while_a_re_read_runs_reaches_the_writers_vouched_poll(quiet_app, auth,
                                                                               monkeypatch):
    """The re-read's position is its snapshot's: a write that commits after it is read next time.

    The writer's poll is vouched for (its cursor saw every row read), so it
    waits without a read; the write must still reach it as news, not leave it
    with an ``unchanged`` for its own write.
    """
    from app.store import feed

    client, hub = quiet_app.test_client(), quiet_app.extensions["hub"]
    ada = auth("u-ada")
    body = client.get("/me/communities", headers=ada).json
    original, joined = feed.read_news, []

    def joining_meanwhile(*args):
        batch = original(*args)  # the re-read's snapshot is taken: the join commits after it
        if not joined:
            joined.append(client.put("/communities/c-go/members/me", headers=ada).status_code)
        return batch

    with hub.waiting("u-grace"):  # keeps the hub's position and its re-reads going
        monkeypatch.setattr(feed, "read_news", joining_meanwhile)
        hub.reread.refresh()
        assert joined == [201]
        monkeypatch.setattr(feed, "read_news", original)
        # Vouched for: it waits, with no read of its own that would find the join.
        poll = start_poll(client, ada, body["cursor"], body["hash"], timeout=10)
        hub.reread.refresh()  # what the join's hint sets off: this re-read reads it
        hub.close()
    answer = poll.get(timeout=10).json
    assert answer["status"] == "changed"
    assert [(c["type"], c["community_id"]) for c in answer["changes"]] == [("joined", "c-go")]


@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.parametrize("backend", ["postgres"])
def test_waiting_polls_hold_no_database_connection(server_factory, database):
    # Two pooled connections for twenty waiting polls: if any poll kept one
    # through its wait, the snapshot below would find the pool exhausted.
    server = server_factory(database, DB_POOL_SIZE="2", DB_MAX_OVERFLOW="0", DB_POOL_TIMEOUT="3",
                            RATELIMIT_WRITES="10000 per minute")
    fresh = bearer("u-brand-new")
    cursor = requests.get(server.url + "/me/communities", headers=fresh).json()["cursor"]
    # First sight of each user: its polls also provision it on the way in.
    racing = [bearer(f"u-racer-{n}") for n in range(4)]
    polls = [wait_in_thread(server.url, headers, {"cursor": cursor, "timeout": 15})
             for headers in racing for _ in range(5)]
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        metrics = requests.get(server.url + "/metrics").text
        if "community_sync_waiting_polls 20.0" in metrics:
            break
        time.sleep(0.2)
    assert "community_sync_waiting_polls 20.0" in metrics
    snapshot = requests.get(server.url + "/me/communities", headers=fresh, timeout=10)
    assert snapshot.status_code == 200, snapshot.text
    server.stop()
    for thread, _ in polls:
        thread.join(timeout=30)


def test_waiting_takes_its_place_before_anything_yields(app_factory, monkeypatch):
    """The caps are checked and counted in one step: a burst cannot pass the check together."""
    app = app_factory(HUB_AUTOSTART=False, POLL_MAX_PER_USER=2)
    hub = app.extensions["hub"]
    read_head = hub.vouching.read_head
    # Taking the hub's position reads the database, and so yields.
    monkeypatch.setattr(hub.vouching, "read_head", lambda: gevent.sleep(0.01) or read_head())
    release = gevent.event.Event()
    outcomes = []

    def enter():
        try:
            with hub.waiting("u-ada"):
                outcomes.append("waiting")
                release.wait()
        except TooManyPolls:
            outcomes.append("refused")

    burst = [gevent.spawn(enter) for _ in range(6)]
    assert eventually(lambda: len(outcomes) == 6)
    assert sorted(outcomes) == ["refused"] * 4 + ["waiting"] * 2
    release.set()
    gevent.joinall(burst, timeout=5)
    assert hub.users == {} and hub.waiting_polls == 0
