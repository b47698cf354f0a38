"""Topics, watches, payloads and latest values: publishing (HTTP and SQL), who gets what, bad input."""
import sqlite3
import subprocess
import threading
from urllib.parse import urlencode

import gevent
import pytest

from app import wire
from app.store import feed
from app.store.db import read_transaction
from app.watches import MAX_WATCHES, InvalidWatch, Watches
from conftest import assert_problem, eventually, statements, table_dump, until_blocked, until_lock_waited_for

POLL = "/community-changes/poll"


def snapshot(client, headers):
    body = client.get("/me/communities", headers=headers).json
    return body["cursor"], body["hash"]


def poll_url(cursor, digest, timeout=0, watch=()):
    return f"{POLL}?" + urlencode([("cursor", cursor), ("hash", digest), ("timeout", timeout)]
                                  + [("watch", w) for w in watch])


def waiting(client, headers, watch=()):
    """A long poll of the user's, blocked in the hub, watching ``watch``."""
    cursor, digest = snapshot(client, headers)
    greenlet = gevent.spawn(client.get, poll_url(cursor, digest, 30, watch), headers=headers)
    return until_blocked(client.application.extensions["hub"], greenlet)


def topic_sql(community_id, topic, ref, data="NULL", collapse="false", actor="NULL"):
    return ("INSERT INTO activity (community_id, topic, kind, ref, actor, data, collapse) "
            f"VALUES ('{community_id}', '{topic}', 'reply', '{ref}', {actor}, {data}, {collapse})")


def publish(client, auth, community_id, **body):
    return client.post(f"/communities/{community_id}/activity", json=body, headers=auth("u-admin", admin=True))


# -- parsing ------------------------------------------------------------------------


def test_watches_parse_named_topics_and_every_topic_of_a_community():
    watches = Watches.parse(["c-1/thread:t-9", "c-1/*", "c-2/story:s-4", "c-1/thread:t-9"])
    assert watches.pairs == {("c-1", "thread:t-9"), ("c-1", "*"), ("c-2", "story:s-4")}
    assert watches.communities == {"c-1", "c-2"}
    assert watches.covers("c-1", "board:b-3") and watches.covers("c-2", "story:s-4")
    assert not watches.covers("c-2", "story:s-5") and not watches.covers("c-3", "story:s-4")
    assert not Watches.parse([])


@pytest.mark.parametrize("value", [
    "c-1", "c-1/", "/thread:t-1", "c-1/Thread", "c-1/1thread", "c-1/thread t", "c-1/" + "t" * 65,
    "c-1/thread/t-1x/", "../thread:t-1", "c 1/thread:t-1", "c-1/**", "c-1/thread:t-1\n", "c-1/ä",
])
def test_a_malformed_watch_is_refused(value):
    with pytest.raises(InvalidWatch):
        Watches.parse([value])


def test_more_than_twenty_watches_are_refused():
    Watches.parse([f"c-1/thread:t-{n}" for n in range(MAX_WATCHES)])
    with pytest.raises(InvalidWatch):
        Watches.parse([f"c-1/thread:t-{n}" for n in range(MAX_WATCHES + 1)])


# -- delivery -----------------------------------------------------------------------


def test_sql_topic_activity_reaches_the_polls_watching_it_and_no_others(seeded, client, auth, database):
    ada, grace = auth("u-ada"), auth("u-grace")
    reader = waiting(client, ada, watch=["c-python/thread:t-1"])
    everything = waiting(client, grace, watch=["c-python/*"])
    member = waiting(client, grace)  # a member of c-python watching no topic
    elsewhere = waiting(client, ada, watch=["c-python/thread:t-2"])
    database.psql("BEGIN; INSERT INTO users (id) VALUES ('u-outbox'); "
                  + topic_sql("c-python", "thread:t-1", "r-1", data="'{\"title\":  \"Re: hi\"}'", actor="'u-7'")
                  + "; COMMIT;")
    for greenlet in (reader, everything):
        body = greenlet.get(timeout=20).json
        assert body["status"] == "changed"
        assert body["changes"] == [{"type": "activity", "community_id": "c-python", "topic": "thread:t-1",
                                    "at": body["changes"][0]["at"], "by": "u-7", "kind": "reply", "ref": "r-1",
                                    "data": {"title": "Re: hi"}}]
        # Events, not state: nothing unread, the hash as it was.
        assert all(entry["unread"] == 0 for entry in body["communities"])
        assert body["hash"] == wire.user_state_hash(body["communities"], body["notifications_unread"])
    gevent.sleep(0.5)
    assert not member.ready() and not elsewhere.ready()
    gevent.killall([member, elsewhere])


def test_topic_activity_answered_alone_keeps_the_hash_and_its_data_verbatim(seeded, client, auth, database):
    ada = auth("u-ada")
    cursor, digest = snapshot(client, ada)
    database.psql(topic_sql("c-python", "thread:t-1", "r-1", data="'{\"n\":  1.50, \"a\": [1,2]}'"))
    response = client.get(poll_url(cursor, digest, watch=["c-python/thread:t-1"]), headers=ada)
    body = response.json
    assert body["status"] == "changed" and body["hash"] == digest
    # The stored text goes out as it is: its spacing, its spelling of numbers.
    assert b'"data":{"n":  1.50, "a": [1,2]}' in response.data
    # The same cursor without the watch: nothing.
    assert client.get(poll_url(cursor, digest), headers=ada).json["status"] == "unchanged"


def test_a_rolled_back_topic_activity_reaches_nobody(seeded, client, auth, database):
    ada = auth("u-ada")
    cursor, digest = snapshot(client, ada)
    database.psql("BEGIN; " + topic_sql("c-python", "thread:t-1", "r-1") + "; ROLLBACK;")
    seeded.extensions["hub"].notify()
    body = client.get(poll_url(cursor, digest, 1, ["c-python/*"]), headers=ada).json
    assert body["status"] == "unchanged"


def test_a_visitor_follows_a_public_communitys_topics_and_gets_nothing_else_of_it(seeded, client, auth,
                                                                                   database):
    alan = auth("u-alan")  # not in c-python, which is public
    cursor, digest = snapshot(client, alan)
    follower = waiting(client, alan, watch=["c-python/story:s-4"])
    database.psql("INSERT INTO activity (community_id, kind, ref) VALUES ('c-python', 'post_created', 'p-1')")
    database.psql("UPDATE communities SET name = 'Pythonistas' WHERE id = 'c-python'")
    database.psql(topic_sql("c-python", "story:s-4", "ch-2"))
    body = follower.get(timeout=20).json
    assert [(c["type"], c.get("topic"), c["ref"]) for c in body["changes"]] == [("activity", "story:s-4", "ch-2")]
    assert [c["id"] for c in body["communities"]] == ["c-go"]
    # Read from scratch (no hub), the same.
    again = client.get(poll_url(cursor, digest, watch=["c-python/story:s-4"]), headers=alan).json
    assert [(c["type"], c.get("topic")) for c in again["changes"]] == [("activity", "story:s-4")]


def test_a_community_that_goes_private_stops_reaching_its_visitors(seeded, client, auth, database):
    alan = auth("u-alan")
    cursor, digest = snapshot(client, alan)
    database.psql("UPDATE communities SET is_public = false WHERE id = 'c-python'")
    database.psql(topic_sql("c-python", "story:s-4", "ch-2"))
    assert_problem(client.get(poll_url(cursor, digest, watch=["c-python/story:s-4"]), headers=alan), 404)
    with seeded.app_context(), read_transaction() as connection:
        state = feed.read_state(connection, "u-alan")
        start = state.cursor.position
    database.psql(topic_sql("c-python", "story:s-4", "ch-3"))
    with seeded.app_context(), read_transaction() as connection:
        changes = feed.read_changes(connection, "u-alan", start, Watches.parse(["c-python/*"]))
    assert changes == []


def test_a_member_who_leaves_a_private_community_stops_getting_its_topics_at_once(seeded, client, auth,
                                                                                  database):
    grace = auth("u-grace")
    cursor, digest = snapshot(client, grace)
    reader = waiting(client, grace, watch=["c-design/thread:t-1"])
    database.psql("DELETE FROM memberships WHERE user_id = 'u-grace' AND community_id = 'c-design'")
    database.psql(topic_sql("c-design", "thread:t-1", "r-after"))
    body = reader.get(timeout=20).json
    assert "r-after" not in [c.get("ref") for c in body["changes"]]
    assert body["removed"] == ["c-design"]
    # Read from where it stood, the same; and the watch itself is now the unknown id's 404.
    with seeded.app_context(), read_transaction() as connection:
        start = client.application.extensions["cursor_key"].decode(cursor).position
        rows = feed.read_changes(connection, "u-grace", start, Watches.parse(["c-design/*"]))
    assert [(row.type, row.ref) for row in rows] == [("left", None)]
    assert_problem(client.get(poll_url(body["cursor"], body["hash"], watch=["c-design/thread:t-1"]),
                              headers=grace), 404)


def test_collapsed_values_arrive_as_the_newest_per_key_and_never_count_as_unread(seeded, client, auth, database):
    ada, grace = auth("u-ada"), auth("u-grace")
    cursor, digest = snapshot(client, ada)
    votes = "; ".join(
        topic_sql("c-python", "thread:t-1", ref, data=f"'{{\"votes\": {n}}}'", collapse="true")
        for n, ref in [(1, "p-1"), (1, "p-2"), (2, "p-1"), (3, "p-1"), (2, "p-2")])
    database.psql(votes)
    # A collapsed community-level value (a pinned notice, say): delivered to members, never unread.
    database.psql("INSERT INTO activity (community_id, kind, ref, data, collapse) "
                  "VALUES ('c-python', 'pinned', 'n-1', '{\"v\": 1}', true), "
                  "('c-python', 'pinned', 'n-1', '{\"v\": 2}', true)")
    body = client.get(poll_url(cursor, digest, watch=["c-python/thread:t-1"]), headers=ada).json
    assert [(c["ref"], c["data"]) for c in body["changes"]] == [
        ("p-1", {"votes": 3}), ("p-2", {"votes": 2}), ("n-1", {"v": 2})]
    assert body["hash"] != digest or all(e["unread"] == 0 for e in body["communities"])
    state = client.get("/me/communities", headers=grace).json
    assert all(entry["unread"] == 0 for entry in state["communities"])


@pytest.mark.parametrize("backend", [pytest.param("postgres", marks=pytest.mark.postgres)])
def test_a_publisher_waits_for_an_earlier_writer_of_the_same_collapsed_key(seeded, database):
    """Two writers of one vote count: the second row's id comes after the first's commit, so no
    reader is handed the older value after the newer."""
    engine = seeded.extensions["db"]
    first = engine.raw_connection()
    try:
        cursor = first.cursor()
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
        cursor.execute(topic_sql("c-python", "thread:t-1", "p-1", data="'{\"votes\": 1}'", collapse="true"))
        second = threading.Thread(target=database.psql, args=(
            topic_sql("c-python", "thread:t-1", "p-1", data="'{\"votes\": 2}'", collapse="true"),))
        second.start()
        until_lock_waited_for(engine, pid)  # the second writer waits for the first to commit
        first.commit()
        second.join(timeout=20)
    finally:
        first.close()
    with engine.connect() as connection:
        rows = connection.exec_driver_sql(
            "SELECT data::text FROM changes WHERE ref = 'p-1' ORDER BY id").scalars().all()
    assert rows == ['{"votes": 1}', '{"votes": 2}']


def test_the_authors_own_activity_reaches_their_tabs_but_is_not_unread_for_them(seeded, client, auth, database):
    ada, grace = auth("u-ada"), auth("u-grace")
    cursor, digest = snapshot(client, ada)
    other_tab = waiting(client, ada)
    response = publish(client, auth, "c-python", kind="post_created", ref="p-1", actor="u-ada")
    assert response.status_code == 201
    body = other_tab.get(timeout=20).json
    assert [(c["ref"], c["by"]) for c in body["changes"]] == [("p-1", "u-ada")]
    assert next(e for e in body["communities"] if e["id"] == "c-python")["unread"] == 0
    grace_state = client.get("/me/communities", headers=grace).json
    assert next(e for e in grace_state["communities"] if e["id"] == "c-python")["unread"] == 1


def test_an_authors_unread_count_is_exact_when_they_wrote_among_the_newest_hundred(seeded, database):
    """Past the newest hundred a member's count is not counted but known (100): unless the member
    wrote some of them. Read alone and read with others, the same count."""
    database.psql("INSERT INTO activity (community_id, kind, ref, actor) VALUES "
                  + ", ".join(f"('c-python', 'post_created', 'o-{n}', 'u-7')" for n in range(60))
                  + ", " + ", ".join(f"('c-python', 'post_created', 'a-{n}', 'u-ada')" for n in range(50)))
    database.psql("INSERT INTO activity (community_id, kind, ref, actor) VALUES "
                  + ", ".join(f"('c-rust', 'post_created', 'r-{n}', 'u-7')" for n in range(120)))
    with seeded.app_context(), read_transaction() as connection:
        alone = {user: feed.read_state(connection, user).communities for user in ("u-ada", "u-grace")}
        together = feed.read_states(connection, ["u-ada", "u-grace"])
    unread = {user: {e["id"]: e["unread"] for e in entries} for user, entries in alone.items()}
    assert unread["u-ada"] == {"c-python": 60, "c-rust": 100}
    assert unread["u-grace"]["c-python"] == 100
    assert {user: state.communities for user, state in together.items()} == alone


# -- who is woken, and at what cost ---------------------------------------------------


def test_a_topic_wakes_its_watchers_only_with_the_statements_of_a_community_change(seeded, client, auth,
                                                                                  database):
    hub = seeded.extensions["hub"]
    members = [f"u-m{n}" for n in range(30)]
    database.psql("".join(f"INSERT INTO users (id) VALUES ('{user}'); INSERT INTO memberships "
                          f"(user_id, community_id) VALUES ('{user}', 'c-python');" for user in members))
    watchers = members[:3]
    polls = {user: waiting(client, auth(user), watch=["c-python/thread:t-1"] if user in watchers else ())
             for user in members}
    counted = {"topic": [], "community": []}
    refresh = hub.reread.refresh

    def measured(label):
        """The re-reads' statements, each re-read's count (those that found nothing count fewer)."""
        def run():
            with statements(seeded.extensions["db"]) as seen:
                refresh()
            counted[label].append(len(seen))
        return run

    hub.reread.refresh = measured("topic")
    database.psql(topic_sql("c-python", "thread:t-1", "r-1"))
    hub.notify()
    assert eventually(lambda: all(polls[user].ready() for user in watchers))
    gevent.sleep(0.5)
    assert [user for user in members if polls[user].ready()] == watchers
    # A community-level change: every member's poll, for the same statements.
    hub.reread.refresh = measured("community")
    database.psql("INSERT INTO activity (community_id, kind, ref) VALUES ('c-python', 'post_created', 'p-1')")
    hub.notify()
    assert eventually(lambda: all(greenlet.ready() for greenlet in polls.values()))
    hub.reread.refresh = refresh
    assert max(counted["topic"]) == max(counted["community"])


def test_a_poll_with_twenty_watches_reads_with_the_statements_of_one_with_none(seeded, client, auth):
    ada = auth("u-ada")
    cursor, digest = snapshot(client, ada)
    engine = seeded.extensions["db"]
    watch = [f"c-python/thread:t-{n}" for n in range(MAX_WATCHES - 1)] + ["c-rust/*"]
    counts, typists = [], []
    for watches in ((), watch):
        with statements(engine) as seen:
            assert client.get(poll_url(cursor, digest, watch=watches), headers=ada).status_code == 200
        # Who types in the watched communities is read apart, once for them all (app/live/typing.py).
        typists.append([s for s in seen if "FROM typing" in s])
        counts.append(len([s for s in seen if "FROM typing" not in s and s not in ("BEGIN", "COMMIT")]))
    assert counts[0] == counts[1]
    assert [len(read) for read in typists] == [0, 1]


# -- refusals -------------------------------------------------------------------------


@pytest.mark.parametrize("watch, status, problem", [
    (["c-python"], 400, "invalid-watch"),
    (["c-python/Thread"], 400, "invalid-watch"),
    (["c-python/thread:t-1", "../x"], 400, "invalid-watch"),
    ([f"c-python/t-{n}" for n in range(MAX_WATCHES + 1)], 400, "invalid-watch"),
    (["c-nope/thread:t-1"], 404, "unknown-community"),
    (["c-ops/thread:t-1"], 404, "unknown-community"),
    (["c-python/*", "c-ops/*"], 404, "unknown-community"),
])
def test_a_bad_or_forbidden_watch_is_refused_and_changes_nothing(seeded, client, auth, watch, status, problem):
    ada = auth("u-ada")
    cursor, digest = snapshot(client, ada)
    before = table_dump(seeded)
    body = assert_problem(client.get(poll_url(cursor, digest, watch=watch), headers=ada), status)
    assert body["type"].endswith(problem)
    assert table_dump(seeded) == before


def test_a_private_community_is_watched_exactly_as_an_unknown_one_is(seeded, client, auth):
    """A forged watch list: the same status, body (but for the id) and statements for a private
    community the user is not in as for one that does not exist."""
    alan = auth("u-alan")
    cursor, digest = snapshot(client, alan)
    engine = seeded.extensions["db"]
    answers = {}
    for community_id in ("c-ops", "c-zzz"):
        with statements(engine) as seen:
            response = client.get(poll_url(cursor, digest, watch=["c-go/*", f"{community_id}/thread:t-1"]),
                                  headers=alan)
        answers[community_id] = (response.status_code, response.data.replace(community_id.encode(), b"ID"),
                                 [" ".join(s.split()) for s in seen])
    assert answers["c-ops"][0] == 404
    assert answers["c-ops"] == answers["c-zzz"]


BAD_TOPIC_PUBLICATIONS = [
    {"kind": "reply", "ref": "r", "topic": "Thread"},
    {"kind": "reply", "ref": "r", "topic": ""},
    {"kind": "reply", "ref": "r", "topic": "t" * 65},
    {"kind": "reply", "ref": "r", "topic": 5},
    {"kind": "reply", "ref": "r", "topic": None},
    {"kind": "reply", "ref": "r", "data": [1]},
    {"kind": "reply", "ref": "r", "data": "text"},
    {"kind": "reply", "ref": "r", "data": {"a": "x" * 505}},
    {"kind": "reply", "ref": "r", "data": {"a": 2 ** 70}},
    {"kind": "reply", "ref": "r", "collapse": "yes"},
    {"kind": "reply", "ref": "r", "collapse": 1},
]


@pytest.mark.parametrize("body", BAD_TOPIC_PUBLICATIONS)
def test_a_bad_topic_data_or_collapse_is_refused_over_http_and_changes_nothing(seeded, client, auth, body):
    headers = auth("u-admin", admin=True)
    client.get("/me/communities", headers=headers)
    before = table_dump(seeded)
    problem = assert_problem(client.post("/communities/c-go/activity", json=body, headers=headers), 422)
    assert problem["type"].endswith("invalid-field")
    assert table_dump(seeded) == before


def test_a_non_finite_number_in_data_is_refused(seeded, client, auth):
    headers = auth("u-admin", admin=True)
    response = client.post("/communities/c-go/activity", headers=headers, content_type="application/json",
                           data='{"kind": "reply", "ref": "r", "data": {"n": NaN}}')
    assert_problem(response, 422)


def test_topic_data_and_collapse_are_published_over_http(seeded, client, auth):
    ada = auth("u-ada")
    cursor, digest = snapshot(client, ada)
    response = publish(client, auth, "c-python", kind="votes", ref="p-1", topic="thread:t-1",
                       data={"votes": 3, "by": "é"}, collapse=True)
    assert response.status_code == 201
    assert response.json == {"community_id": "c-python", "kind": "votes", "ref": "p-1", "topic": "thread:t-1",
                             "data": {"votes": 3, "by": "é"}, "collapse": True}
    body = client.get(poll_url(cursor, digest, watch=["c-python/thread:t-1"]), headers=ada).json
    assert [(c["topic"], c["data"]) for c in body["changes"]] == [("thread:t-1", {"votes": 3, "by": "é"})]


def test_a_notification_takes_no_topic_or_collapse(seeded, client, auth):
    headers = auth("u-admin", admin=True)
    for extra in ({"topic": "thread:t-1"}, {"collapse": True}):
        response = client.post("/users/u-ada/notifications", headers=headers,
                               json={"kind": "mention", "ref": "m-1", **extra})
        assert_problem(response, 422)


def test_the_database_refuses_a_bad_topic_or_data(seeded, database):
    before = table_dump(seeded)
    refusal = subprocess.CalledProcessError if database.backend == "postgres" else (
        sqlite3.IntegrityError, sqlite3.OperationalError)
    for values in [
        "(community_id, topic, kind, ref) VALUES ('c-go', 'Thread', 'x', 'p')",
        "(community_id, topic, kind, ref) VALUES ('c-go', '', 'x', 'p')",
        f"(community_id, topic, kind, ref) VALUES ('c-go', '{'t' * 65}', 'x', 'p')",
        "(community_id, kind, ref, data) VALUES ('c-go', 'x', 'p', '[1, 2]')",
        "(community_id, kind, ref, data) VALUES ('c-go', 'x', 'p', '\"text\"')",
        "(community_id, kind, ref, data) VALUES ('c-go', 'x', 'p', '{')",
        f"(community_id, kind, ref, data) VALUES ('c-go', 'x', 'p', '{{\"a\": \"{'x' * 510}\"}}')",
        "(user_id, topic, kind, ref) VALUES ('u-ada', 'thread:t-1', 'x', 'p')",
        "(user_id, kind, ref, collapse) VALUES ('u-ada', 'x', 'p', true)",
    ]:
        with pytest.raises(refusal) as refused:
            database.psql(f"INSERT INTO activity {values}")
        if database.backend == "postgres":
            assert "ERROR" in refused.value.stderr
    assert table_dump(seeded) == before
