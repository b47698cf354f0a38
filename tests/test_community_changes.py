"""GET /community-changes/poll: every status and header of the contract, both backends."""
import random
import time

import gevent
import pytest

from app.store import cursors
from app import intervals, wire
from app.http import community_changes
from conftest import eventually, until_blocked


def snapshot(client, headers):
    body = client.get("/me/communities", headers=headers).json
    return body["cursor"], body["hash"]


def poll(client, headers, **params):
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return client.get(f"/community-changes/poll?{query}", headers=headers)


def in_background(client, headers, **params):
    """A poll in a greenlet, returned once it waits in the hub (a test failure if it answers first)."""
    greenlet = gevent.spawn(poll, client, headers, **params)
    return until_blocked(client.application.extensions["hub"], greenlet)


def test_no_cursor_resets_with_full_state(seeded, client, auth):
    response = poll(client, auth("u-ada"))
    assert response.status_code == 200
    assert response.headers["X-Poll-Result"] == "reset"
    body = response.json
    assert body["status"] == "reset" and "changes" not in body
    assert [c["id"] for c in body["communities"]] == ["c-python", "c-rust"]
    assert response.headers["ETag"] == f'"{body["hash"]}"'
    assert response.headers["Cache-Control"] == "no-store"
    assert int(response.headers["X-Poll-Interval"]) >= 1


def test_changes_after_cursor_answer_at_once(seeded, client, auth):
    cursor, digest = snapshot(client, auth("u-ada"))
    client.put("/communities/c-go/members/me", headers=auth("u-ada"))
    client.put("/communities/c-go/members/u-ada", json={"role": "moderator"},
               headers=auth("u-admin", admin=True))
    started = time.monotonic()
    response = poll(client, auth("u-ada"), cursor=cursor, hash=digest, timeout=30)
    assert time.monotonic() - started < 10  # it did not wait for the timeout
    body = response.json
    assert body["status"] == "changed" and response.headers["X-Poll-Result"] == "changed"
    assert [(c["type"], c["community_id"], c["by"]) for c in body["changes"]] == [
        ("joined", "c-go", "u-ada"), ("role_changed", "c-go", "u-admin"),
    ]
    assert body["added"] == ["c-go"] and body["removed"] == []
    assert "c-go" in [c["id"] for c in body["communities"]]
    assert body["hash"] == wire.user_state_hash(body["communities"], body["notifications_unread"])
    # Following the returned cursor: nothing more.
    again = poll(client, auth("u-ada"), cursor=body["cursor"], hash=body["hash"], timeout=0)
    assert again.json["status"] == "unchanged" and "communities" not in again.json


def test_waiting_poll_is_woken_by_a_write(seeded, client, auth):
    cursor, digest = snapshot(client, auth("u-ada"))
    waiting = in_background(client, auth("u-ada"), cursor=cursor, hash=digest, timeout=20)
    assert not waiting.ready()
    started = time.monotonic()
    client.delete("/communities/c-rust/members/me", headers=auth("u-ada"))
    response = waiting.get(timeout=10)
    assert time.monotonic() - started < 10
    body = response.json
    assert body["status"] == "changed"
    assert [(c["type"], c["community_id"]) for c in body["changes"]] == [("left", "c-rust")]
    assert body["removed"] == ["c-rust"]


def test_raw_sql_change_wakes_a_waiting_poll(seeded, client, auth, database):
    cursor, digest = snapshot(client, auth("u-alan"))
    waiting = in_background(client, auth("u-alan"), cursor=cursor, hash=digest, timeout=20)
    database.psql("INSERT INTO memberships (user_id, community_id, role) VALUES ('u-alan', 'c-ops', 'admin')")
    body = waiting.get(timeout=15).json
    assert body["status"] == "changed"
    assert body["changes"][0]["type"] == "joined" and body["changes"][0]["by"] is None


def test_timeout_answers_unchanged_with_a_usable_cursor(seeded, client, auth):
    cursor, digest = snapshot(client, auth("u-ada"))
    response = poll(client, auth("u-ada"), cursor=cursor, hash=digest, timeout=1)
    assert response.status_code == 200
    body = response.json
    assert body["status"] == "unchanged" and response.headers["X-Poll-Result"] == "unchanged"
    assert "communities" not in body and "changes" not in body
    assert body["hash"] == digest
    client.put("/communities/c-go/members/me", headers=auth("u-ada"))
    follow = poll(client, auth("u-ada"), cursor=body["cursor"], hash=body["hash"], timeout=0).json
    assert [c["community_id"] for c in follow["changes"]] == ["c-go"]


def test_changes_of_other_users_do_not_answer(seeded, client, auth):
    cursor, digest = snapshot(client, auth("u-ada"))
    waiting = in_background(client, auth("u-ada"), cursor=cursor, hash=digest, timeout=1)
    client.put("/communities/c-rust/members/me", headers=auth("u-alan"))
    assert waiting.get(timeout=10).json["status"] == "unchanged"


def test_hash_mismatch_resets(seeded, client, auth):
    cursor, _ = snapshot(client, auth("u-ada"))
    response = poll(client, auth("u-ada"), cursor=cursor, hash="0000000000000000", timeout=30)
    assert response.json["status"] == "reset"
    assert len(response.json["communities"]) == 2


@pytest.mark.parametrize("form", ['"{h}"', 'W/"{h}"'])
def test_hash_in_if_none_match_compared_weakly(seeded, client, auth, form):
    cursor, digest = snapshot(client, auth("u-ada"))
    headers = {**auth("u-ada"), "If-None-Match": form.format(h=digest)}
    assert poll(client, headers, cursor=cursor, timeout=0).json["status"] == "unchanged"
    weak_query = poll(client, auth("u-ada"), cursor=cursor, hash=f'W/"{digest}"', timeout=0)
    assert weak_query.json["status"] == "unchanged"


def test_cursor_from_a_rebuilt_database_resets(seeded, client, auth):
    cursor, digest = snapshot(client, auth("u-ada"))
    key = seeded.extensions["cursor_key"]
    foreign = key.encode(cursors.Cursor("feedfacefeedface", key.decode(cursor).position))
    assert poll(client, auth("u-ada"), cursor=foreign, hash=digest, timeout=0).json["status"] == "reset"


@pytest.mark.parametrize("cursor", ["%%%", "bm90LWEtY3Vyc29y", "MXxhYmNkfHN4"])
def test_undecodable_cursor_is_400(seeded, client, auth, cursor):
    response = poll(client, auth("u-ada"), cursor=cursor)
    assert response.status_code == 400
    assert response.content_type == "application/problem+json"


@pytest.mark.parametrize("timeout", ["-1", "abc", "1.5", "", "99999999", "1" * 4400,
                                     "\uff11", "\u0663", "+1", " 1", "1_0"])
def test_bad_timeout_is_400(seeded, client, auth, timeout):
    response = poll(client, auth("u-ada"), timeout=timeout)
    assert response.status_code == 400
    assert response.content_type == "application/problem+json"


def test_long_timeouts_are_clamped(seeded, app_factory, auth):
    app = app_factory(POLL_MAX_TIMEOUT=1, POLL_DEFAULT_TIMEOUT=1)
    client = app.test_client()
    cursor, digest = snapshot(client, auth("u-ada"))
    started = time.monotonic()
    response = poll(client, auth("u-ada"), cursor=cursor, hash=digest, timeout=600)
    assert response.json["status"] == "unchanged"
    assert time.monotonic() - started < 5


def test_prefer_wait_is_honoured_and_echoed(seeded, client, auth):
    cursor, digest = snapshot(client, auth("u-ada"))
    headers = {**auth("u-ada"), "Prefer": "respond-async, wait=1"}
    response = poll(client, headers, cursor=cursor, hash=digest)
    assert response.json["status"] == "unchanged"
    assert response.headers["Preference-Applied"] == "wait=1"
    # An explicit timeout wins, and then the preference is not applied.
    explicit = poll(client, headers, cursor=cursor, hash=digest, timeout=0)
    assert "Preference-Applied" not in explicit.headers


@pytest.mark.parametrize("preference", ["wait=1234567", "wait=" + "1" * 4400, "wait=1x", "wait=+1",
                                        "wait=\u00b2"])
def test_a_wait_preference_that_is_not_a_number_is_ignored(seeded, app_factory, auth, preference):
    """RFC 7240: a preference the server does not understand is ignored, not refused."""
    client = app_factory(POLL_DEFAULT_TIMEOUT=0).test_client()
    cursor, digest = snapshot(client, auth("u-ada"))
    response = poll(client, {**auth("u-ada"), "Prefer": preference}, cursor=cursor, hash=digest)
    assert response.status_code == 200 and response.json["status"] == "unchanged"
    assert "Preference-Applied" not in response.headers


def test_requires_a_token(seeded, client):
    response = client.get("/community-changes/poll")
    assert response.status_code == 401
    assert response.content_type == "application/problem+json"


def test_per_user_cap_gives_429(seeded, app_factory, auth):
    app = app_factory(POLL_MAX_PER_USER=2)
    client = app.test_client()
    cursor, digest = snapshot(client, auth("u-ada"))
    held = [in_background(client, auth("u-ada"), cursor=cursor, hash=digest, timeout=3) for _ in range(2)]
    refused = poll(client, auth("u-ada"), cursor=cursor, hash=digest, timeout=3)
    assert refused.status_code == 429
    assert int(refused.headers["Retry-After"]) >= 1
    assert refused.content_type == "application/problem+json"
    # Another user is not affected.
    other_cursor, other_hash = snapshot(client, auth("u-alan"))
    assert poll(client, auth("u-alan"), cursor=other_cursor, hash=other_hash, timeout=0).status_code == 200
    app.extensions["hub"].close()
    assert all(g.get(timeout=10).json["status"] == "unchanged" for g in held)


def slow_provisioning(monkeypatch):
    """Provisioning yields, as it does on PostgreSQL: the step between a cap's check and its count."""
    original = community_changes.provision

    def provision(identity):
        gevent.sleep(0.01)
        return original(identity)

    monkeypatch.setattr(community_changes, "provision", provision)


@pytest.mark.parametrize("cap, users, refusal", [
    ({"POLL_MAX_PER_USER": 2}, ["u-ada"] * 6, 429),
    ({"POLL_MAX_WAITING": 2}, ["u-ada", "u-alan", "u-grace"] * 2, 503),
])
def test_a_burst_of_polls_cannot_walk_past_a_cap(seeded, app_factory, auth, monkeypatch, cap, users,
                                                  refusal):
    app = app_factory(**cap)
    client = app.test_client()
    known = {user: snapshot(client, auth(user)) for user in set(users)}
    slow_provisioning(monkeypatch)
    burst = [gevent.spawn(poll, client, auth(user), cursor=known[user][0], hash=known[user][1],
                          timeout=5) for user in users]
    hub = app.extensions["hub"]
    # Every poll is either refused or waiting: their clients are up to date.
    assert eventually(lambda: sum(g.dead for g in burst) + hub.waiting_polls == len(users))
    assert hub.waiting_polls == 2
    hub.close()
    statuses = sorted(g.get(timeout=10).status_code for g in burst)
    assert statuses == [200, 200] + [refusal] * (len(users) - 2)


def test_worker_cap_gives_503_before_any_database_work(seeded, app_factory, auth):
    app = app_factory(POLL_MAX_WAITING=1)
    client = app.test_client()
    cursor, digest = snapshot(client, auth("u-ada"))
    held = in_background(client, auth("u-ada"), cursor=cursor, hash=digest, timeout=3)
    queries = app.extensions["metrics"].queries
    before = queries._value.get()
    refused = poll(client, auth("u-alan"), cursor=cursor, hash=digest, timeout=3)
    assert refused.status_code == 503
    assert 1 <= int(refused.headers["Retry-After"]) <= 10
    assert queries._value.get() == before
    app.extensions["hub"].close()
    assert held.get(timeout=10).json["status"] == "unchanged"


def test_shutdown_answers_waiting_polls_unchanged_and_new_ones_at_once(seeded, client, app, auth):
    cursor, digest = snapshot(client, auth("u-ada"))
    waiting = [in_background(client, auth(u), cursor=cursor, hash=digest, timeout=30)
               for u in ("u-ada", "u-ada")]
    started = time.monotonic()
    app.extensions["hub"].close()
    answers = [g.get(timeout=10) for g in waiting]
    assert time.monotonic() - started < 5
    assert [a.status_code for a in answers] == [200, 200]
    assert {a.json["status"] for a in answers} == {"unchanged"}
    started = time.monotonic()
    late = poll(client, auth("u-ada"), cursor=cursor, hash=digest, timeout=30)
    assert late.status_code == 200 and late.json["status"] == "unchanged"
    assert time.monotonic() - started < 5


def test_retention_resets_old_cursors(seeded, client, app, auth, database):
    from datetime import datetime, timedelta, timezone

    from freezegun import freeze_time

    cursor, digest = snapshot(client, auth("u-ada"))
    client.put("/communities/c-go/members/me", headers=auth("u-ada"))
    pruner = app.extensions["hub"].pruner
    with freeze_time(datetime.now(timezone.utc) + timedelta(seconds=pruner.retention + 3600)):
        assert pruner.prune() >= 1
    response = poll(client, auth("u-ada"), cursor=cursor, hash=digest, timeout=0)
    assert response.json["status"] == "reset"
    assert "c-go" in [c["id"] for c in response.json["communities"]]


# -- smart-polling advice and jitter (pure functions) ----------------------------


def test_interval_advice_grows_with_quiet_and_load(app):
    from datetime import datetime, timedelta, timezone

    from freezegun import freeze_time

    with freeze_time("2026-11-22 10:00:00"):
        now = datetime.now(timezone.utc)
        advice = lambda minutes: intervals.advise_interval(  # noqa: E731
            now - timedelta(minutes=minutes), now, app
        )
        assert advice(0) == app.config["POLL_INTERVAL_MIN"]
        assert advice(0) <= advice(5) <= advice(20)
        assert advice(5) == 30
        assert advice(60) == app.config["POLL_INTERVAL_MAX"]
        assert intervals.advise_interval(None, now, app) == app.config["POLL_INTERVAL_MAX"]
        hub = app.extensions["hub"]
        hub.waiting_polls = int(hub.max_waiting * 0.9)
        try:
            assert advice(0) == 4 * app.config["POLL_INTERVAL_MIN"]
        finally:
            hub.waiting_polls = 0


def test_jitter_stays_within_bounds():
    random.seed(7)
    for timeout in (1, 10, 25, 55):
        for _ in range(200):
            wait = intervals.jittered_wait(timeout)
            assert timeout - min(3.0, timeout * 0.1) <= wait <= timeout
    assert intervals.jittered_wait(0) == 0
