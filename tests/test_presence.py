"""Presence: who is online, counted from the polls themselves, per the contract's v2 section."""
import os
import signal
import time
from datetime import datetime, timezone

import gevent
import pytest
from sqlalchemy import create_engine, event, text

from app import wire
from app.store.db import normalize_url
from conftest import assert_problem, bearer, build_app, eventually, statements, table_dump, until_blocked
from harness.servers import wait_for

# Short enough that a test sees a TTL run out; the refresh well inside it.
QUICK = {"PRESENCE_TTL": 1.0, "PRESENCE_INTERVAL": 0.2}
# A TTL no test outlives, with the same quick refresh.
STEADY = {"PRESENCE_TTL": 600.0, "PRESENCE_INTERVAL": 0.2}


def seeded_app(app_factory, settings):
    app = app_factory(**settings)
    app.test_cli_runner().invoke(args=["seed-demo"])
    return app


@pytest.fixture
def quick_app(app_factory):
    return seeded_app(app_factory, QUICK)


@pytest.fixture
def steady_app(app_factory):
    return seeded_app(app_factory, STEADY)


def listed(client, headers, community="c-python"):
    response = client.get(f"/communities/{community}/presence", headers=headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    return [user["id"] for user in response.json["users"]]


def poll_in_greenlet(client, headers, timeout):
    """A long poll of the caller, held in a greenlet until it is answered."""
    first = client.get("/community-changes/poll?timeout=0", headers=headers).json
    return gevent.spawn(
        client.get,
        f"/community-changes/poll?cursor={first['cursor']}&hash={first['hash']}&timeout={timeout}",
        headers=headers,
    )


# -- the presence endpoint ---------------------------------------------------------


def test_presence_lists_members_online_with_etag_and_poll_interval(steady_app, auth):
    client = steady_app.test_client()
    ada, grace = auth("u-ada", name="Ada"), auth("u-grace")
    client.get("/me/communities", headers=grace)
    assert eventually(lambda: set(listed(client, ada)) == {"u-ada", "u-grace"})
    response = client.get("/communities/c-python/presence", headers=ada)
    body = response.json
    assert list(body) == ["online", "users", "truncated"]
    assert body["online"] == 2 and body["truncated"] is False
    assert {u["id"]: u["name"] for u in body["users"]} == {"u-ada": "Ada", "u-grace": "Grace Hopper"}
    assert all(set(user) == {"id", "name", "since"} for user in body["users"])
    tag = response.headers["ETag"]
    assert tag == f'"{wire.state_hash(body)}"'
    assert response.headers["Cache-Control"] == "private, no-cache"
    assert response.headers["Vary"] == "Authorization"
    assert int(response.headers["X-Poll-Interval"]) >= 1
    for header in (tag, f"W/{tag}", f'"other", {tag}', "*"):
        again = client.get("/communities/c-python/presence", headers={**ada, "If-None-Match": header})
        assert again.status_code == 304 and again.data == b""
        assert again.headers["ETag"] == tag and again.headers["X-Poll-Interval"]
    stale = client.get("/communities/c-python/presence", headers={**ada, "If-None-Match": '"other"'})
    assert stale.status_code == 200


def test_presence_is_for_members_only(steady_app, auth):
    client = steady_app.test_client()
    alan = auth("u-alan")
    client.get("/me/communities", headers=auth("u-ada"))
    unknown = assert_problem(client.get("/communities/c-nope/presence", headers=alan), 404)
    # A public community alan is not in, a private one, a platform admin who is
    # in neither: each answered like an unknown id.
    for community, headers in (("c-python", alan), ("c-ops", alan),
                               ("c-python", auth("u-admin", admin=True))):
        body = assert_problem(client.get(f"/communities/{community}/presence", headers=headers), 404)
        assert body["type"] == unknown["type"] and body["title"] == unknown["title"]
        assert community in body["detail"]
    assert_problem(client.get("/communities/bad%20id/presence", headers=alan), 400)
    assert_problem(client.get("/communities/c-python/presence"), 401)


def test_counts_ride_every_answer_outside_the_hash(steady_app, auth):
    client = steady_app.test_client()
    ada, grace = auth("u-ada"), auth("u-grace")
    alone = client.get("/me/communities", headers=ada).json
    assert set(alone["online"]) == {c["id"] for c in alone["communities"]}
    client.get("/me/communities", headers=grace)

    def counted():
        body = client.get("/me/communities", headers=ada).json
        return body if body["online"]["c-python"] == 2 else None

    both = eventually(counted) and counted()
    assert both and both["hash"] == alone["hash"]
    answer = client.get(f"/community-changes/poll?cursor={both['cursor']}&hash={both['hash']}&timeout=0",
                        headers=ada)
    assert answer.json["status"] == "unchanged" and answer.json["online"]["c-python"] >= 1
    assert answer.headers["ETag"] == f'"{both["hash"]}"'


def test_an_answer_whose_communities_this_worker_does_not_know_reads_them(steady_app, auth):
    from app.http.community_changes import community_ids
    from app.live.session import Known, Reply

    steady_app.test_client().get("/me/communities", headers=auth("u-grace"))

    def counts():
        with steady_app.app_context():
            ids = community_ids("u-ada", Reply("unchanged", Known(None, None)))
            return steady_app.extensions["online_counts"].counts(ids)

    assert eventually(lambda: counts() == {"c-python": 1, "c-rust": 0})


def test_a_count_that_changes_wakes_no_poll(steady_app, auth):
    client = steady_app.test_client()
    hub = steady_app.extensions["hub"]
    ada = auth("u-ada")
    poll = until_blocked(hub, poll_in_greenlet(client, ada, timeout=2))
    client.get("/me/communities", headers=auth("u-grace"))  # grace comes online in c-python
    answer = poll.get(timeout=10).json
    # Answered at its timeout, unchanged, carrying the counts as they are by then.
    assert answer["status"] == "unchanged"
    assert answer["online"] == {"c-python": 2, "c-rust": 1}


def test_a_held_poll_keeps_its_user_online_past_the_ttl(quick_app, auth):
    client = quick_app.test_client()
    hub = quick_app.extensions["hub"]
    poll = until_blocked(hub, poll_in_greenlet(client, auth("u-ada"), timeout=4))
    grace = auth("u-grace")
    gevent.sleep(2 * QUICK["PRESENCE_TTL"])  # well past the TTL of ada's last request
    assert "u-ada" in listed(client, grace)
    poll.get(timeout=10)
    # Answered: online for one TTL more, then gone.
    assert eventually(lambda: "u-ada" not in listed(client, grace))


def test_a_request_keeps_its_user_online_until_the_ttl_is_nearly_over(app_factory, auth):
    """Online for the whole TTL after a request, not merely offline at some point after it."""
    from freezegun import freeze_time

    ttl = STEADY["PRESENCE_TTL"]
    # No presence loop: each refresh below is the one the loop would make by then.
    app = seeded_app(app_factory, {**STEADY, "HUB_AUTOSTART": False})
    client, presence = app.test_client(), app.extensions["presence"]
    ada, grace = auth("u-ada"), auth("u-grace")
    with freeze_time() as clock:
        assert client.get("/me/communities", headers=ada).status_code == 200
        presence.refresh()
        assert "u-ada" in listed(client, grace)
        clock.tick(ttl - 5)
        presence.refresh()
        assert "u-ada" in listed(client, grace)  # a few seconds before the TTL ends: still online
        clock.tick(10)
        presence.refresh()
        assert "u-ada" not in listed(client, grace)


def test_only_rows_of_workers_refreshed_within_the_ttl_count(app_factory, auth, database):
    """A row counts while its worker's refresh is within PRESENCE_TTL of the database's clock."""
    ttl = STEADY["PRESENCE_TTL"]
    # This worker writes no row of its own: only the two below can count.
    app = seeded_app(app_factory, {**STEADY, "HUB_AUTOSTART": False})
    client = app.test_client()

    def ago(seconds):
        if database.backend == "postgres":
            return f"now() - interval '{seconds} seconds'"
        return f"strftime('%Y-%m-%d %H:%M:%f', 'now', '-{seconds} seconds')"

    database.psql(
        "INSERT INTO presence_workers (id, refreshed_at) VALUES "
        f"('stale:1:ab', {ago(ttl + 100)}), ('fresh:1:cd', {ago(ttl - 100)});"
        "INSERT INTO presence (user_id, worker_id) VALUES ('u-grace', 'stale:1:ab'), ('u-ada', 'fresh:1:cd')"
    )
    ada = auth("u-ada")
    assert listed(client, ada) == ["u-ada"]
    assert client.get("/me/communities", headers=ada).json["online"]["c-python"] == 1


def test_a_hang_up_ends_presence_without_waiting_for_the_ttl(app_factory, auth):
    app = app_factory(PRESENCE_TTL=3600, PRESENCE_INTERVAL=0.2)
    app.test_cli_runner().invoke(args=["seed-demo"])
    presence, hub = app.extensions["presence"], app.extensions["hub"]
    app.test_client().get("/me/communities", headers=auth("u-ada"))
    with hub.waiting("u-ada") as ticket:
        assert "u-ada" in presence.online()
        hub.drop(ticket)  # what app/live/disconnects.py does when the client hangs up
    assert "u-ada" not in presence.online()
    with hub.waiting("u-grace"), hub.waiting("u-grace") as ticket:
        hub.drop(ticket)
    # Her other poll ended normally: she is only between two polls.
    assert "u-grace" in presence.online()


def test_dead_workers_rows_are_swept_and_a_swept_worker_writes_its_users_again(steady_app, auth):
    client = steady_app.test_client()
    presence = steady_app.extensions["presence"]
    client.get("/me/communities", headers=auth("u-ada"))
    assert eventually(lambda: "u-ada" in listed(client, auth("u-ada")))
    engine = steady_app.extensions["db"]
    with engine.begin() as connection:
        connection.execute(text("INSERT INTO presence_workers (id, refreshed_at) "
                                "VALUES ('gone:1:ab', '2000-01-01 00:00:00')"))
        connection.execute(text("INSERT INTO presence (user_id, worker_id, since) "
                                "VALUES ('u-grace', 'gone:1:ab', '2000-01-01 00:00:00')"))
    # Long dead: not counted even before it is swept.
    assert "u-grace" not in listed(client, auth("u-ada"))
    # A live worker stalled as long would be swept too (its row made stale here).
    with engine.begin() as connection:
        connection.execute(text("UPDATE presence_workers SET refreshed_at = '2000-01-01 00:00:00'"))
    presence.sweep()
    with engine.connect() as connection:
        assert connection.scalars(text("SELECT worker_id FROM presence")).all() == []
    # Its next refresh finds its row gone and writes all of its users again.
    assert eventually(lambda: "u-ada" in listed(client, auth("u-ada")))


def test_a_worker_sweeps_only_when_its_sweep_is_due_and_not_again_until_half_a_ttl(quiet_app, monkeypatch):
    """Workers started together sweep apart, and a sweep is not repeated on every refresh."""
    presence = quiet_app.extensions["presence"]
    sweeps = []
    monkeypatch.setattr(presence, "sweep", lambda: sweeps.append(presence._next_sweep))
    presence.seen_now("u-ada")  # an idle worker writes nothing, sweeps included
    for _ in range(3):
        presence.refresh()
    assert sweeps == []  # a new worker's first sweep is half a TTL away at the soonest
    presence._next_sweep = 0.0  # due now
    presence.refresh()
    presence.refresh()
    assert len(sweeps) == 1
    assert sweeps[0] >= time.monotonic() + presence.ttl * 0.5 - 1


def test_a_failed_refresh_is_retried_and_the_loop_goes_on(quiet_app, monkeypatch):
    presence = quiet_app.extensions["presence"]
    presence.interval = 0.05
    calls = []

    def refresh():
        calls.append(len(calls))
        if len(calls) == 1:
            raise OSError("database unreachable")

    monkeypatch.setattr(presence, "refresh", refresh)
    loop = presence.start()
    try:
        assert eventually(lambda: len(calls) >= 3)
    finally:
        presence._stopping = True
        presence._wake.set()
        loop.join(timeout=5)
    assert loop.dead


def test_counts_are_one_statement_per_read_and_reused_within_the_interval(app_factory, auth, database):
    app = seeded_app(app_factory, {"PRESENCE_TTL": 600.0, "PRESENCE_INTERVAL": 300.0})
    client = app.test_client()
    joins = "".join(f"INSERT INTO memberships (user_id, community_id) VALUES ('u-ada', '{c}');"
                    for c in ("c-go", "c-design", "c-ops"))
    database.psql(joins)
    with statements(app.extensions["db"]) as run:
        body = client.get("/me/communities", headers=auth("u-ada")).json
    assert len(body["online"]) == 5
    # One count for the five, and (once per interval) which workers are alive.
    assert len([s for s in run if "presence" in s and "memberships" in s]) == 1
    assert len([s for s in run if "presence" in s and "memberships" not in s]) <= 1
    with statements(app.extensions["db"]) as run:
        client.get("/community-changes/poll?timeout=0", headers=auth("u-ada"))
        client.get("/me/communities", headers=auth("u-ada"))
    assert [s for s in run if "presence" in s] == []


def counts_read_together(app, monkeypatch, wanted):
    """``online_counts.counts`` of each of ``wanted`` in a greenlet of its own, all at once.

    Returns the answers and the count statements run; the reads yield, as they
    do under gunicorn's gevent worker.
    """
    online_counts, engine = app.extensions["online_counts"], app.extensions["db"]
    live_workers = online_counts.live_workers

    def yielding(connection):
        gevent.sleep(0.01)
        return live_workers(connection)

    monkeypatch.setattr(online_counts, "live_workers", yielding)
    run = []

    def note(_conn, _cursor, statement, *_args):
        run.append(statement)

    event.listen(engine, "before_cursor_execute", note)
    try:
        with app.app_context():
            answers = [gevent.spawn(online_counts.counts, ids) for ids in wanted]
            gevent.joinall(answers, raise_error=True)
    finally:
        event.remove(engine, "before_cursor_execute", note)
    return [answer.value for answer in answers], [s for s in run if "presence" in s and "memberships" in s]


def test_answers_that_find_a_count_stale_together_read_it_once(app_factory, monkeypatch):
    """A fan-out answers thousands of polls at once: they share one count read, not one each."""
    app = seeded_app(app_factory, {"PRESENCE_TTL": 600.0, "PRESENCE_INTERVAL": 300.0})
    answers, reads = counts_read_together(app, monkeypatch, [["c-python", "c-rust"]] * 50)
    assert len({tuple(sorted(answer.items())) for answer in answers}) == 1
    assert len(reads) == 1


def test_answers_waiting_for_different_counts_share_the_next_read(app_factory, monkeypatch):
    """The users of a fan-out are in different communities: those queued behind a read share the next."""
    app = seeded_app(app_factory, {"PRESENCE_TTL": 600.0, "PRESENCE_INTERVAL": 300.0})
    communities = ["c-python", "c-rust", "c-go", "c-design", "c-ops"]
    answers, reads = counts_read_together(app, monkeypatch, [[communities[n % 5]] for n in range(50)])
    assert [list(answer) for answer in answers] == [[communities[n % 5]] for n in range(50)]
    # The first read is of the first answer's community; everyone queued meanwhile shares the second.
    assert len(reads) == 2


def aged(online_counts, community_id, count, intervals):
    """Make ``community_id``'s cached count ``count``, read ``intervals`` intervals ago."""
    read_at = time.monotonic() - intervals * online_counts.interval
    online_counts.cache.put(community_id, (count, read_at))


def test_a_count_one_interval_stale_is_answered_at_once_and_read_again_behind_the_answer(app_factory):
    """A woken poll does not wait for a count read: the count lags one more interval at most."""
    app = seeded_app(app_factory, {"PRESENCE_TTL": 600.0, "PRESENCE_INTERVAL": 300.0})
    online_counts, engine = app.extensions["online_counts"], app.extensions["db"]
    aged(online_counts, "c-python", 99, 1.5)
    with statements(engine) as run:
        assert online_counts.counts(["c-python"]) == {"c-python": 99}
    assert [s for s in run if "presence" in s] == []
    assert online_counts._rereading is not None
    online_counts._rereading.join(timeout=10)
    assert online_counts._rereading is None
    count, read_at = online_counts.cache.get("c-python")
    assert count != 99 and time.monotonic() - read_at < online_counts.interval
    with statements(engine) as run:
        assert online_counts.counts(["c-python"]) == {"c-python": count}
    assert [s for s in run if "presence" in s] == []


def test_a_count_two_intervals_stale_is_read_before_the_answer(app_factory):
    app = seeded_app(app_factory, {"PRESENCE_TTL": 600.0, "PRESENCE_INTERVAL": 300.0})
    online_counts, engine = app.extensions["online_counts"], app.extensions["db"]
    aged(online_counts, "c-python", 99, 2.5)
    aged(online_counts, "c-rust", 98, 0.5)
    with statements(engine) as run:
        counts = online_counts.counts(["c-python", "c-rust"])
    assert counts["c-python"] != 99 and counts["c-rust"] == 98
    assert len([s for s in run if "presence" in s and "memberships" in s]) == 1
    assert online_counts._rereading is None


def test_a_failed_read_behind_the_answer_leaves_the_next_answer_to_read(app_factory, monkeypatch):
    app = seeded_app(app_factory, {"PRESENCE_TTL": 600.0, "PRESENCE_INTERVAL": 300.0})
    online_counts = app.extensions["online_counts"]
    aged(online_counts, "c-python", 99, 1.5)

    def unreachable(_community_ids):
        raise OSError("database unreachable")

    monkeypatch.setattr(online_counts, "_read", unreachable)
    assert online_counts.counts(["c-python"]) == {"c-python": 99}
    online_counts._rereading.join(timeout=10)
    assert online_counts._rereading is None and online_counts._later == set()
    monkeypatch.undo()
    aged(online_counts, "c-python", 99, 2.5)
    assert online_counts.counts(["c-python"])["c-python"] != 99


def test_a_worker_writes_transitions_in_one_statement_each_and_refreshes_in_one(quiet_app, auth):
    presence, hub = quiet_app.extensions["presence"], quiet_app.extensions["hub"]
    engine = quiet_app.extensions["db"]
    users = [f"u-{n}" for n in range(50)]
    for user in users:
        presence.seen_now(user)
    with statements(engine) as run:
        presence.refresh()  # registers the worker, then every arrival at once
    assert [s.split()[0] for s in run if "presence" in s] == ["UPDATE", "INSERT", "INSERT"]
    with statements(engine) as run:
        presence.refresh()  # nobody came or went: the worker's own row only
    assert [s.split()[:2] for s in run if "presence" in s] == [["UPDATE", "presence_workers"]]
    for user in users[:10]:
        with hub.waiting(user) as ticket:
            hub.drop(ticket)
    with statements(engine) as run:
        presence.refresh()
    assert [s.split()[0] for s in run if "presence" in s] == ["UPDATE", "DELETE"]
    with engine.connect() as connection:
        written = set(connection.scalars(text("SELECT user_id FROM presence")))
    assert written == set(users[10:])


@pytest.mark.postgres
def test_a_worker_whose_rows_doubled_has_postgresql_read_the_statistics(pg_database, monkeypatch):
    """Else the planner counts from the wrong side until autovacuum comes by (a minute or more)."""
    from app.live import presence as presence_module

    app = build_app(pg_database, HUB_AUTOSTART=False, PRESENCE_TTL=600.0, PRESENCE_INTERVAL=300.0)
    presence, engine = app.extensions["presence"], app.extensions["db"]
    monkeypatch.setattr(presence_module, "ANALYZE_AFTER_ROWS", 20)

    def online(count):
        """The worker's users become the first ``count``; the statistics it had read (ANALYZE run, rows planned)."""
        presence.seen.clear()
        for number in range(count):
            presence.seen_now(f"u-{number}")
        with statements(engine) as run:
            presence.refresh()
        with engine.connect() as connection:
            planned = connection.scalar(text("SELECT reltuples FROM pg_class WHERE oid = 'presence'::regclass"))
        return [s for s in run if s.startswith("ANALYZE")], planned

    try:
        assert online(19)[0] == []  # fewer than ANALYZE_AFTER_ROWS: left to autovacuum
        assert online(60) == (["ANALYZE (SKIP_LOCKED) presence"], 60)
        assert online(100)[0] == []  # not doubled since
        assert online(120) == (["ANALYZE (SKIP_LOCKED) presence"], 120)
        assert online(50)[0] == []  # shrunk below half: doubling counts from here
        assert online(100) == (["ANALYZE (SKIP_LOCKED) presence"], 100)
    finally:
        app.extensions["hub"].stop()
        engine.dispose()


def test_a_refresh_whose_statistics_cannot_be_read_still_writes(quiet_app, monkeypatch):
    from app.live import presence as presence_module

    presence = quiet_app.extensions["presence"]
    monkeypatch.setattr(presence_module, "ANALYZE_AFTER_ROWS", 2)
    monkeypatch.setattr(presence_module.queries, "analyze", lambda *_args: text("ANALYZE no_such_table"))
    for number in range(3):
        presence.seen_now(f"u-{number}")
    presence.refresh()
    with quiet_app.extensions["db"].connect() as connection:
        written = set(connection.scalars(text("SELECT user_id FROM presence")))
    assert written == {"u-0", "u-1", "u-2"}


def test_a_worker_leaving_waits_for_its_refresh_in_flight(quiet_app, monkeypatch):
    """Both delete the worker's rows: run at once, their transactions could deadlock."""
    from app.live import presence as presence_module

    presence = quiet_app.extensions["presence"]
    presence.seen_now("u-ada")
    presence.refresh()
    del presence.seen["u-ada"]  # a departure for the next refresh to write
    order, depart = [], presence_module.queries.depart

    def slow_depart(*args):
        order.append("refresh writes")
        gevent.sleep(0.3)
        order.append("refresh done")
        return depart(*args)

    monkeypatch.setattr(presence_module.queries, "depart", slow_depart)
    refreshing = gevent.spawn(presence.refresh)
    gevent.sleep(0.05)
    presence.leave()
    order.append("left")
    refreshing.get(timeout=5)
    assert order == ["refresh writes", "refresh done", "left"]


# -- visibility ------------------------------------------------------------------------


def test_an_invisible_user_appears_nowhere_and_can_come_back(steady_app, auth):
    client = steady_app.test_client()
    ada, grace = auth("u-ada"), auth("u-grace")
    assert client.get("/me/presence", headers=grace).json == {"visible": True}
    client.get("/me/communities", headers=grace)
    assert eventually(lambda: "u-grace" in listed(client, ada))
    hidden = client.put("/me/presence", json={"visible": False}, headers=grace)
    assert hidden.status_code == 200 and hidden.json == {"visible": False}
    assert client.get("/me/presence", headers=grace).json == {"visible": False}

    def hidden_everywhere():
        body = client.get("/communities/c-python/presence", headers=ada).json
        counts = client.get("/me/communities", headers=ada).json["online"]
        return "u-grace" not in [u["id"] for u in body["users"]] and body["online"] == counts["c-python"] == 1

    assert eventually(hidden_everywhere)
    # Her own view counts her out too.
    assert "u-grace" not in listed(client, grace)
    assert client.put("/me/presence", json={"visible": True}, headers=grace).json == {"visible": True}
    assert eventually(lambda: "u-grace" in listed(client, ada))


def test_since_starts_when_a_hidden_user_shows_themselves(steady_app, auth):
    """Nothing of a hidden period reaches anyone: not even how long it lasted."""
    client = steady_app.test_client()
    ada, grace = auth("u-ada"), auth("u-grace")
    client.put("/me/presence", json={"visible": False}, headers=grace)
    client.get("/me/communities", headers=grace)
    engine = steady_app.extensions["db"]

    def online_hidden():
        with engine.connect() as connection:
            return connection.scalar(text("SELECT count(*) FROM presence WHERE user_id = 'u-grace'"))

    assert eventually(online_hidden)
    # Online for an hour while hidden, as if she had come online then.
    with engine.begin() as connection:
        connection.execute(text("UPDATE presence SET since = '2000-01-01 00:00:00' "
                                "WHERE user_id = 'u-grace'"))
    shown_at = datetime.now(timezone.utc).replace(microsecond=0)
    client.put("/me/presence", json={"visible": True}, headers=grace)
    users = client.get("/communities/c-python/presence", headers=ada).json["users"]
    since = {user["id"]: user["since"] for user in users}["u-grace"]
    assert datetime.fromisoformat(since.replace("Z", "+00:00")) >= shown_at


@pytest.mark.parametrize(("body", "headers", "status"), [
    ('{"visible": "no"}', {"Content-Type": "application/json"}, 422),
    ('{"visible": null}', {"Content-Type": "application/json"}, 422),
    ('{"visible": 0}', {"Content-Type": "application/json"}, 422),
    ('{}', {"Content-Type": "application/json"}, 422),
    ('{"visible": false, "extra": 1}', {"Content-Type": "application/json"}, 422),
    ('[false]', {"Content-Type": "application/json"}, 422),
    ('{"visible": fal', {"Content-Type": "application/json"}, 400),
    ('visible=false', {"Content-Type": "application/x-www-form-urlencoded"}, 415),
])
def test_bad_visibility_bodies_are_refused_and_change_nothing(seeded, client, auth, body, headers, status):
    grace = auth("u-grace")
    client.get("/me/communities", headers=grace)
    before = table_dump(seeded)
    response = client.put("/me/presence", data=body, headers={**grace, **headers})
    assert_problem(response, status)
    assert table_dump(seeded) == before
    assert client.get("/me/presence", headers=grace).json == {"visible": True}


# -- across worker processes ------------------------------------------------------------


def present(connection, community="c-python", user="u-grace"):
    status, body = connection.get(f"/communities/{community}/presence", headers=bearer(user))
    assert status == 200, body
    return [u["id"] for u in body["users"]]


def presence_rows(server):
    """The users with a presence row, fresh or not."""
    engine = create_engine(normalize_url(server.env["DATABASE_URL"]))
    try:
        with engine.connect() as connection:
            return set(connection.scalars(text("SELECT user_id FROM presence")))
    finally:
        engine.dispose()


def hold_a_poll(connection, user):
    """Send a long poll of ``user`` on ``connection`` and leave it waiting (unread)."""
    status, first = connection.get("/community-changes/poll?timeout=0", headers=bearer(user))
    assert status == 200
    connection.send(f"/community-changes/poll?cursor={first['cursor']}&hash={first['hash']}&timeout=50",
                    headers=bearer(user))


@pytest.mark.slow
def test_a_poll_on_one_worker_is_online_for_a_reader_on_the_other(two_workers):
    # A TTL far longer than the test: whatever makes ada go offline here is the hang-up.
    _server, polling, reading = two_workers(PRESENCE_TTL=600, PRESENCE_INTERVAL=0.5)
    assert polling.worker != reading.worker
    hold_a_poll(polling, "u-ada")
    wait_for(lambda: "u-ada" in present(reading), 30, message="ada online for the other worker")
    wait_for(lambda: reading.get("/me/communities", headers=bearer("u-grace"))[1]["online"]
             == {"c-python": 2, "c-design": 1}, 30, message="both counted in grace's snapshot")
    polling.close()  # ada closes her tab
    wait_for(lambda: "u-ada" not in present(reading), 30, message="ada offline after hanging up")


@pytest.mark.slow
def test_a_killed_workers_users_go_offline_within_the_ttl(two_workers):
    ttl, interval = 3, 0.5
    server, polling, reading = two_workers(PRESENCE_TTL=ttl, PRESENCE_INTERVAL=interval)
    hold_a_poll(polling, "u-ada")
    wait_for(lambda: "u-ada" in present(reading), 30, message="ada online for the other worker")
    # Longer than the TTL: her held poll, refreshed by its worker, keeps her online.
    wait_for(lambda: False, ttl + 2 * interval)
    assert "u-ada" in present(reading)
    os.kill(polling.worker, signal.SIGKILL)  # nothing of that worker cleans up after it
    wait_for(lambda: "u-ada" not in present(reading), 60, message="ada offline once her worker died")
    # Not deleted: her row is still there, and no longer counts.
    assert presence_rows(server) == {"u-ada", "u-grace"}
    assert "u-grace" in present(reading)
