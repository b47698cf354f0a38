"""Typing and who is reading, per the contract's v3 section: ephemeral, members only, never hashed."""
import time
from urllib.parse import urlencode

import gevent
import pytest
from sqlalchemy import func, select

from app.live.typing import Typing
from app.store.db import read_transaction
from app.store.models import Change, Typing as TypingRow
from app.watches import Watches
from conftest import assert_problem, bearer, eventually, statements, table_dump, until_blocked
from harness.servers import wait_for

POLL = "/community-changes/poll"
THREAD = "c-python/thread:t-1"
PLACE = {"community_id": "c-python", "topic": "thread:t-1"}
# Typing lapses within a test; presence never does.
SETTINGS = {"TYPING_TTL": 3.0, "PRESENCE_TTL": 600.0, "PRESENCE_INTERVAL": 0.2}


@pytest.fixture
def typing_app(app_factory):
    app = app_factory(**SETTINGS)
    app.test_cli_runner().invoke(args=["seed-demo"])
    return app


def poll_url(first, timeout, watch=(THREAD,)):
    return f"{POLL}?" + urlencode([("cursor", first["cursor"]), ("hash", first["hash"]), ("timeout", timeout)]
                                  + [("watch", w) for w in watch])


def first_answer(client, headers, watch=(THREAD,)):
    response = client.get(f"{POLL}?" + urlencode([("timeout", 0)] + [("watch", w) for w in watch]),
                          headers=headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.json


def waiting(client, headers, watch=(THREAD,)):
    """A long poll of the user's, watching ``watch``, blocked in the hub; and the answer it started from."""
    first = first_answer(client, headers, watch)
    greenlet = gevent.spawn(client.get, poll_url(first, 30, watch), headers=headers)
    return until_blocked(client.application.extensions["hub"], greenlet), first


def change_count(app):
    with read_transaction(app.extensions["db"], single_statement=True) as connection:
        return connection.scalar(select(func.count()).select_from(Change))


def typists(answer, key=THREAD):
    return [typist["id"] for typist in answer["typing"].get(key, [])]


# -- what polls are told ----------------------------------------------------------------


def test_a_typist_wakes_the_polls_watching_the_topic_unchanged_with_the_typing_map(typing_app, auth):
    client = typing_app.test_client()
    ada, grace = auth("u-ada", name="Ada"), auth("u-grace")
    changes = change_count(typing_app)
    held, first = waiting(client, grace)
    assert first["typing"] == {}
    assert client.put("/me/typing", json=PLACE, headers=ada).status_code == 204
    answer = held.get(timeout=5)
    body = answer.json
    assert body["status"] == "unchanged" and answer.headers["X-Poll-Result"] == "unchanged"
    assert body["typing"] == {THREAD: [{"id": "u-ada", "name": "Ada"}]}
    # Ephemeral: nothing in the change log, nothing in the state's hash.
    assert body["hash"] == first["hash"] and change_count(typing_app) == changes
    # On every answer of a poll watching it, even one that did not wait.
    assert typists(first_answer(client, grace)) == ["u-ada"]
    # A poll that watches no topic carries no map at all.
    assert "typing" not in client.get(f"{POLL}?timeout=0", headers=grace).json


def test_a_typists_own_polls_never_see_themselves_nor_wake_for_it(typing_app, auth):
    client = typing_app.test_client()
    ada = auth("u-ada", name="Ada")
    held, _first = waiting(client, ada)
    assert client.put("/me/typing", json=PLACE, headers=ada).status_code == 204
    typing = typing_app.extensions["typing"]
    assert eventually(lambda: typing.typists.get("c-python"))
    gevent.sleep(1.5)  # a tick or more past the one that read her
    assert not held.ready()
    assert first_answer(client, ada)["typing"] == {}
    held.kill()


def test_stopping_and_the_ttl_end_typing_and_wake_the_watchers(typing_app, auth):
    client = typing_app.test_client()
    ada, alan, grace = auth("u-ada"), auth("u-alan"), auth("u-grace")
    client.put("/communities/c-python/members/me", headers=alan)
    client.put("/me/typing", json=PLACE, headers=ada)
    client.put("/me/typing", json=PLACE, headers=alan)
    assert eventually(lambda: typists(first_answer(client, grace)) == ["u-ada", "u-alan"])
    held, _first = waiting(client, grace)
    assert client.delete("/me/typing", headers=ada).status_code == 204
    assert typists(held.get(timeout=5).json) == ["u-alan"]
    # Alan's tab dies without a DELETE: his typing lapses after TYPING_TTL.
    held, _first = waiting(client, grace)
    started = time.monotonic()
    assert held.get(timeout=10).json["typing"] == {}
    # Lapsed, not held to the poll's 30 s timeout.
    assert time.monotonic() - started < 20


def test_a_change_between_an_answer_and_the_next_poll_is_answered_at_once(typing_app, auth):
    client = typing_app.test_client()
    ada, grace = auth("u-ada"), auth("u-grace")
    first = first_answer(client, grace)
    client.put("/me/typing", json=PLACE, headers=ada)
    typing = typing_app.extensions["typing"]
    # Grace's client polls only once a tick has read Ada, long after its last answer.
    assert eventually(lambda: typing.typists.get("c-python"))
    started = time.monotonic()
    answer = client.get(poll_url(first, 60), headers=grace).json
    # At once: no other change is coming, so waiting would mean the 60 s timeout.
    assert time.monotonic() - started < 30 and typists(answer) == ["u-ada"]


def test_a_poll_from_a_snapshot_is_told_of_typists_it_was_never_shown(typing_app, auth):
    client = typing_app.test_client()
    ada, grace = auth("u-ada"), auth("u-grace")
    client.put("/me/typing", json=PLACE, headers=ada)
    # Grace's first poll waits from her snapshot's cursor: no answer has shown her anything.
    snapshot = client.get("/me/communities", headers=grace).json
    greenlet = gevent.spawn(client.get, poll_url(snapshot, 30), headers=grace)
    answer = greenlet.get(timeout=5).json
    assert answer["status"] == "unchanged" and typists(answer) == ["u-ada"]


def test_a_watch_of_every_topic_sees_each_topic_typed_in(typing_app, auth):
    client = typing_app.test_client()
    ada, grace = auth("u-ada"), auth("u-grace")
    held, _first = waiting(client, grace, watch=("c-python/*",))
    client.put("/me/typing", json={"community_id": "c-python", "topic": "board:b-2"}, headers=ada)
    assert held.get(timeout=5).json["typing"] == {"c-python/board:b-2": [{"id": "u-ada", "name": "Ada Lovelace"}]}


def test_repeats_within_the_rewrite_interval_cost_no_statement(typing_app, auth):
    client = typing_app.test_client()
    ada = auth("u-ada")
    engine = typing_app.extensions["db"]
    with statements(engine) as first:
        assert client.put("/me/typing", json=PLACE, headers=ada).status_code == 204
    assert [s for s in first if "typing" in s.lower()]
    with statements(engine) as repeats:
        for _ in range(5):
            assert client.put("/me/typing", json=PLACE, headers=ada).status_code == 204
    assert not [s for s in repeats if "typing" in s.lower()]
    # Moving elsewhere is written at once.
    with statements(engine) as moved:
        client.put("/me/typing", json={**PLACE, "topic": "thread:t-2"}, headers=ada)
    assert [s for s in moved if "typing" in s.lower()]


def test_a_worker_reads_typists_once_a_tick_whatever_the_watchers_and_not_at_all_without_any(quiet_app):
    hub = quiet_app.extensions["hub"]
    typing = Typing(quiet_app.extensions["db"], hub.watching, hub.users, ttl=6)
    with statements(quiet_app.extensions["db"]) as idle:
        typing.refresh()
    assert idle == []
    for user in ("u-ada", "u-grace", "u-alan"):
        hub.watching.add(user, Watches.parse([THREAD, "c-rust/*", "c-go/thread:t-3"]))
    with statements(quiet_app.extensions["db"]) as busy:
        typing.refresh()
    read = [s for s in busy if s.split()[0] not in ("BEGIN", "COMMIT", "ROLLBACK", "SET", "SHOW")]
    assert len(read) == 1 and "FROM typing" in read[0]


# -- privacy -----------------------------------------------------------------------------


def test_typing_reaches_members_only_and_an_invisible_typist_nobody(typing_app, auth):
    client = typing_app.test_client()
    ada, grace, alan = auth("u-ada"), auth("u-grace"), auth("u-alan")
    # Alan follows the public community's thread without being a member: he sees no typists.
    client.put("/me/typing", json=PLACE, headers=ada)
    assert eventually(lambda: typists(first_answer(client, grace)) == ["u-ada"])
    assert first_answer(client, alan)["typing"] == {}
    # An invisible typist is typed by nobody.
    client.put("/me/presence", json={"visible": False}, headers=ada)
    assert eventually(lambda: first_answer(client, grace)["typing"] == {})


def test_typing_and_readers_of_a_private_community_never_reach_a_non_member(typing_app, auth):
    client = typing_app.test_client()
    ada, grace = auth("u-ada"), auth("u-grace")
    design = "c-design/thread:t-1"
    held, _first = waiting(client, grace, watch=(design,))
    assert client.put("/me/typing", json={"community_id": "c-design", "topic": "thread:t-1"},
                      headers=grace).status_code == 204
    # Ada, outside it, can neither watch its topics nor list its readers: the unknown id's 404.
    assert_problem(client.get(f"{POLL}?timeout=0&watch={design}", headers=ada), 404)
    assert_problem(readers(client, ada, community="c-design"), 404)
    # Her own polls, watching every topic of her communities, never carry it.
    assert "c-design" not in str(first_answer(client, ada, watch=("c-python/*", "c-rust/*"))["typing"])
    held.kill()


def test_a_member_who_leaves_is_shown_no_typists_of_the_community(typing_app, auth):
    client = typing_app.test_client()
    ada, grace = auth("u-ada"), auth("u-grace")
    client.put("/me/typing", json=PLACE, headers=grace)
    assert eventually(lambda: typists(first_answer(client, ada)) == ["u-grace"])
    held, _first = waiting(client, ada)
    assert client.delete("/communities/c-python/members/me", headers=ada).status_code == 204
    answer = held.get(timeout=5).json
    assert answer["status"] == "changed" and answer["typing"] == {}


@pytest.mark.parametrize("community", ["c-design", "c-nowhere"])
def test_typing_in_a_community_the_user_is_not_in_is_the_unknown_id_404(typing_app, auth, community):
    client = typing_app.test_client()
    before = table_dump(typing_app)
    response = client.put("/me/typing", json={"community_id": community, "topic": "thread:t-1"},
                          headers=auth("u-ada"))
    assert_problem(response, 404)
    assert response.json["type"].endswith("unknown-community")
    assert response.json["detail"] == f"There is no community '{community}'."
    assert table_dump(typing_app) == before and typing_rows(typing_app) == []


def typing_rows(app):
    with read_transaction(app.extensions["db"], single_statement=True) as connection:
        return connection.execute(select(TypingRow.user_id, TypingRow.community_id, TypingRow.topic)).all()


@pytest.mark.parametrize("body, headers, status", [
    ('{"community_id": "c-python"}', {}, 422),
    ('{"topic": "thread:t-1"}', {}, 422),
    ('{"community_id": "c-python", "topic": "Thread"}', {}, 422),
    ('{"community_id": "c-python", "topic": "*"}', {}, 422),
    ('{"community_id": "c-python", "topic": 7}', {}, 422),
    ('{"community_id": "c-python", "topic": "t' + "x" * 64 + '"}', {}, 422),
    ('{"community_id": "c python", "topic": "thread:t-1"}', {}, 422),
    ('{"community_id": ["c-python"], "topic": "thread:t-1"}', {}, 422),
    ('{"community_id": "c-python", "topic": "thread:t-1", "extra": 1}', {}, 422),
    ('["c-python", "thread:t-1"]', {}, 422),
    ("{not json", {}, 400),
    ('{"community_id": "c-python", "topic": "thread:t-1"}', {"Content-Type": "text/plain"}, 415),
])
def test_bad_typing_bodies_are_refused_and_change_nothing(typing_app, auth, body, headers, status):
    client = typing_app.test_client()
    before = table_dump(typing_app)
    response = client.put("/me/typing", data=body,
                          headers={"Content-Type": "application/json", **auth("u-ada"), **headers})
    assert_problem(response, status)
    assert table_dump(typing_app) == before and typing_rows(typing_app) == []


def test_typing_needs_a_token(typing_app):
    client = typing_app.test_client()
    assert_problem(client.put("/me/typing", json=PLACE), 401)
    assert_problem(client.delete("/me/typing"), 401)


# -- who is reading ----------------------------------------------------------------------


def readers(client, headers, topic="thread:t-1", community="c-python", **extra):
    return client.get(f"/communities/{community}/presence?topic={topic}", headers={**headers, **extra})


def test_readers_are_the_members_whose_held_polls_watch_the_topic(typing_app, auth):
    client = typing_app.test_client()
    ada, grace, alan = auth("u-ada"), auth("u-grace"), auth("u-alan")
    held = [waiting(client, grace)[0], waiting(client, ada, watch=("c-python/*",))[0],
            waiting(client, alan)[0]]  # alan follows the public thread: not a member, not listed
    assert eventually(lambda: sorted(u["id"] for u in readers(client, grace).json["users"]) == ["u-ada", "u-grace"])
    response = readers(client, grace)
    assert response.json["online"] == 2 and response.json["truncated"] is False
    tag = response.headers["ETag"]
    assert readers(client, grace, **{"If-None-Match": tag}).status_code == 304
    assert readers(client, grace, **{"If-None-Match": f"W/{tag}"}).status_code == 304
    # Another topic is read by ada's every-topic watch alone.
    assert [u["id"] for u in readers(client, grace, topic="thread:t-2").json["users"]] == ["u-ada"]
    # An invisible reader is listed nowhere.
    client.put("/me/presence", json={"visible": False}, headers=ada)
    assert [u["id"] for u in readers(client, grace).json["users"]] == ["u-grace"]
    for greenlet in held:
        greenlet.kill()


@pytest.mark.parametrize("community, user", [("c-design", "u-ada"), ("c-nowhere", "u-ada"), ("c-python", "u-alan")])
def test_readers_are_for_members_only(typing_app, auth, community, user):
    response = readers(typing_app.test_client(), auth(user), community=community)
    assert_problem(response, 404)
    assert response.json["detail"] == f"There is no community '{community}'."


@pytest.mark.parametrize("topic", ["Thread", "*", "t" * 65, "thread%20t", ""])
def test_a_bad_reading_topic_is_a_400(typing_app, auth, topic):
    response = readers(typing_app.test_client(), auth("u-ada"), topic=topic)
    assert_problem(response, 400)
    assert response.json["type"].endswith("invalid-topic")


# -- across worker processes -----------------------------------------------------------------


@pytest.mark.slow
def test_typing_and_reading_cross_worker_processes(two_workers):
    _server, polling, typing = two_workers(TYPING_TTL=3, PRESENCE_TTL=600, PRESENCE_INTERVAL=0.5)
    assert polling.worker != typing.worker
    watch = urlencode([("watch", THREAD)])
    status, first = polling.get(f"{POLL}?timeout=0&{watch}", headers=bearer("u-grace"))
    assert status == 200 and first["typing"] == {}
    # Who reads the thread, on the other worker.
    polling.send(f"{POLL}?cursor={first['cursor']}&hash={first['hash']}&timeout=30&{watch}",
                 headers=bearer("u-grace"))
    wait_for(lambda: [u["id"] for u in typing.get("/communities/c-python/presence?topic=thread:t-1",
                                                  headers=bearer("u-ada"))[1]["users"]] == ["u-grace"],
             30, message="grace reads the thread for the other worker")
    started = time.monotonic()
    status, _ = typing.call("PUT", "/me/typing", bearer("u-ada"), PLACE)
    assert status == 204
    status, answer = polling.answer()
    assert status == 200 and answer["status"] == "unchanged"
    assert [t["id"] for t in answer["typing"][THREAD]] == ["u-ada"]
    # Woken by the typing, not answered at the poll's 30 s timeout (the
    # latency itself is the benchmark's: docs/benchmarks.md, scenario 18).
    assert time.monotonic() - started < 15
    # Ada's tab dies without a DELETE: the other worker's watcher sees her lapse.
    polling.send(f"{POLL}?cursor={answer['cursor']}&hash={answer['hash']}&timeout=30&{watch}",
                 headers=bearer("u-grace"))
    status, lapsed = polling.answer()
    assert status == 200 and lapsed["typing"] == {}
    # Grace closes her tab mid-poll: she stops reading at once, not after a grace period.
    polling.send(f"{POLL}?cursor={lapsed['cursor']}&hash={lapsed['hash']}&timeout=30&{watch}",
                 headers=bearer("u-grace"))
    gevent.sleep(0.5)
    polling.close()
    wait_for(lambda: typing.get("/communities/c-python/presence?topic=thread:t-1",
                                headers=bearer("u-ada"))[1]["users"] == [],
             4, message="grace stops reading when her tab hangs up")
