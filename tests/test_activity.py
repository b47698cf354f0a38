"""Activity and notifications: publishing (HTTP and SQL), delivery in polls, bad input."""
import sqlite3
import subprocess
import threading
from datetime import datetime, timedelta, timezone

import gevent
import pytest
from sqlalchemy import text

from app.store import cursors, feed
from app import wire
from app.store.db import read_transaction
from conftest import eventually, table_dump, until_blocked, until_lock_waited_for

ADMIN = ("u-admin", True)


def snapshot(client, headers):
    body = client.get("/me/communities", headers=headers).json
    return body["cursor"], body["hash"]


def poll(client, headers, cursor, digest, timeout=0):
    return client.get(f"/community-changes/poll?cursor={cursor}&hash={digest}&timeout={timeout}",
                      headers=headers)


def publish(client, auth, community_id, **body):
    return client.post(f"/communities/{community_id}/activity", json=body,
                       headers=auth("u-admin", admin=True))


def entry(body, community_id):
    return next(c for c in body["communities"] if c["id"] == community_id)


def rows(app, sql):
    with app.extensions["db"].connect() as connection:
        return [tuple(row) for row in connection.execute(text(sql))]


def test_activity_is_recorded_once_and_reaches_members_only(seeded, client, auth):
    ada, alan = auth("u-ada"), auth("u-alan")
    ada_cursor, ada_hash = snapshot(client, ada)
    alan_cursor, alan_hash = snapshot(client, alan)
    response = publish(client, auth, "c-python", kind="post_created", ref="p-42", actor="u-7")
    assert response.status_code == 201
    assert response.json == {"community_id": "c-python", "kind": "post_created", "ref": "p-42",
                             "actor": "u-7"}
    # One community-scoped row, and the outbox is left empty.
    assert rows(seeded, "SELECT user_id, community_id, kind, ref, actor FROM changes "
                        "WHERE type = 'activity'") == [(None, "c-python", "post_created", "p-42", "u-7")]
    assert rows(seeded, "SELECT * FROM activity") == []
    body = poll(client, ada, ada_cursor, ada_hash).json
    assert body["status"] == "changed" and "truncated" not in body
    change = body["changes"][0]
    assert change == {"type": "activity", "community_id": "c-python", "at": change["at"],
                      "by": "u-7", "kind": "post_created", "ref": "p-42"}
    assert body["added"] == [] and body["removed"] == []
    # Alan is not in c-python.
    assert poll(client, alan, alan_cursor, alan_hash).json["status"] == "unchanged"


def test_a_notification_reaches_its_user_only(seeded, client, auth):
    ada, grace = auth("u-ada"), auth("u-grace")
    ada_cursor, ada_hash = snapshot(client, ada)
    grace_cursor, grace_hash = snapshot(client, grace)
    response = client.post("/users/u-ada/notifications", json={"kind": "mention", "ref": "c-9"},
                           headers=auth("u-admin", admin=True))
    assert response.status_code == 201
    assert response.json == {"user_id": "u-ada", "kind": "mention", "ref": "c-9"}
    change = poll(client, ada, ada_cursor, ada_hash).json["changes"][0]
    assert change == {"type": "notification", "at": change["at"], "by": None,
                      "kind": "mention", "ref": "c-9"}
    assert poll(client, grace, grace_cursor, grace_hash).json["status"] == "unchanged"


def test_a_notification_provisions_an_unknown_user(seeded, client, auth):
    response = client.post("/users/u-newcomer/notifications", json={"kind": "welcome", "ref": "w-1"},
                           headers=auth("u-admin", admin=True))
    assert response.status_code == 201
    assert rows(seeded, "SELECT id FROM users WHERE id = 'u-newcomer'") == [("u-newcomer",)]


def test_a_later_member_receives_none_of_the_earlier_activity(seeded, client, auth):
    alan = auth("u-alan")
    cursor, digest = snapshot(client, alan)
    assert publish(client, auth, "c-python", kind="post_created", ref="p-1").status_code == 201
    assert client.put("/communities/c-python/members/me", headers=alan).status_code == 201
    assert publish(client, auth, "c-python", kind="post_created", ref="p-2").status_code == 201
    body = poll(client, alan, cursor, digest).json
    assert [(c["type"], c.get("ref")) for c in body["changes"]] == [("joined", None), ("activity", "p-2")]
    assert body["added"] == ["c-python"]


def test_each_kind_is_capped_per_answer_oldest_dropped_first(seeded, client, auth, database):
    ada = auth("u-ada")
    cursor, digest = snapshot(client, ada)
    values = ", ".join(f"('c-rust', 'post_created', 'p-{n}')" for n in range(105))
    notes = ", ".join(f"('u-ada', 'mention', 'm-{n}')" for n in range(3))
    database.psql(f"INSERT INTO activity (community_id, kind, ref) VALUES {values}; "
                  f"INSERT INTO activity (user_id, kind, ref) VALUES {notes};")
    body = poll(client, ada, cursor, digest).json
    activity = [c["ref"] for c in body["changes"] if c["type"] == "activity"]
    assert activity == [f"p-{n}" for n in range(5, 105)]
    assert [c["ref"] for c in body["changes"] if c["type"] == "notification"] == ["m-0", "m-1", "m-2"]
    assert body["truncated"] is True


def test_a_poll_reads_one_activity_row_more_than_an_answer_carries(seeded, client, auth, database):
    """Behind a busy community a cursor's backlog is thousands of rows: the read stops at the cap."""
    cursor, _digest = snapshot(client, auth("u-ada"))
    values = ", ".join(f"('c-rust', 'post_created', 'p-{n}')" for n in range(300))
    database.psql(f"INSERT INTO activity (community_id, kind, ref) VALUES {values}; "
                  "INSERT INTO memberships (user_id, community_id) VALUES ('u-ada', 'c-go')")
    position = seeded.extensions["cursor_key"].decode(cursor).position
    with seeded.app_context(), read_transaction() as connection:
        rows = feed.read_changes(connection, "u-ada", position)
    assert [row.ref for row in rows if row.type == "activity"] == [f"p-{n}" for n in range(199, 300)]
    assert [(row.type, row.community_id) for row in rows if row.type != "activity"] == [("joined", "c-go")]


def test_capped_keeps_the_newest_of_each_type():
    class Row:
        def __init__(self, kind, n):
            self.type, self.n, self.collapse = kind, n, False

    changes = [Row("activity", n) for n in range(102)] + [Row("joined", 0)]
    changes += [Row("notification", n) for n in range(100)]
    kept, truncated = wire.capped(changes)
    assert truncated
    assert [r.n for r in kept if r.type == "activity"] == list(range(2, 102))
    assert len([r for r in kept if r.type == "notification"]) == 100
    assert [r.type for r in kept].count("joined") == 1
    assert wire.capped(changes[:50]) == (changes[:50], False)


def test_only_platform_admins_publish(seeded, client, auth):
    before = table_dump(seeded)
    # grace owns c-python's membership list but is no platform admin.
    owner = client.post("/communities/c-python/activity", json={"kind": "x", "ref": "p"},
                        headers=auth("u-grace"))
    assert owner.status_code == 403
    # A private community stays hidden from outsiders: 404, as for every write.
    hidden = client.post("/communities/c-ops/activity", json={"kind": "x", "ref": "p"},
                         headers=auth("u-ada"))
    assert hidden.status_code == 404
    note = client.post("/users/u-ada/notifications", json={"kind": "x", "ref": "p"},
                       headers=auth("u-grace"))
    assert note.status_code == 403
    assert all(r.content_type == "application/problem+json" for r in (owner, hidden, note))
    assert table_dump(seeded) == before


BAD_PUBLICATIONS = [
    ("/communities/c-nope/activity", {"json": {"kind": "x", "ref": "p"}}, 404),
    ("/communities/../activity", {"json": {"kind": "x", "ref": "p"}}, 400),
    ("/users/../notifications", {"json": {"kind": "x", "ref": "p"}}, 400),
    ("/communities/c-go/activity", {"json": {"ref": "p"}}, 422),
    ("/communities/c-go/activity", {"json": {"kind": "x"}}, 422),
    ("/communities/c-go/activity", {"json": {"kind": "Post", "ref": "p"}}, 422),
    ("/communities/c-go/activity", {"json": {"kind": "1post", "ref": "p"}}, 422),
    ("/communities/c-go/activity", {"json": {"kind": "x" * 33, "ref": "p"}}, 422),
    ("/communities/c-go/activity", {"json": {"kind": "a b", "ref": "p"}}, 422),
    ("/communities/c-go/activity", {"json": {"kind": "x", "ref": ""}}, 422),
    ("/communities/c-go/activity", {"json": {"kind": "x", "ref": "p" * 65}}, 422),
    ("/communities/c-go/activity", {"json": {"kind": "x", "ref": "p\u0007"}}, 422),
    ("/communities/c-go/activity", {"json": {"kind": "x", "ref": 5}}, 422),
    ("/communities/c-go/activity", {"json": {"kind": "x", "ref": "p", "actor": None}}, 422),
    ("/communities/c-go/activity", {"json": {"kind": "x", "ref": "p", "extra": 1}}, 422),
    ("/communities/c-go/activity", {"json": ["x"]}, 422),
    ("/communities/c-go/activity", {"data": "{", "content_type": "application/json"}, 400),
    ("/communities/c-go/activity", {"data": "kind=x", "content_type": "text/plain"}, 415),
    ("/users/u-ada/notifications", {"json": {"kind": "x", "ref": "p", "actor": "a\nb"}}, 422),
    ("/users/u-ada/notifications", {"json": {"kind": "x.y-z_", "ref": "p", "community_id": "c-go"}}, 422),
]


@pytest.mark.parametrize("path, kwargs, status", BAD_PUBLICATIONS)
def test_bad_publications_are_refused_and_change_nothing(seeded, client, auth, path, kwargs, status):
    headers = auth("u-admin", admin=True)
    client.get("/me/communities", headers=headers)  # provision the caller first
    before = table_dump(seeded)
    response = client.post(path, headers=headers, **kwargs)
    assert response.status_code == status, response.json
    assert response.content_type == "application/problem+json"
    assert table_dump(seeded) == before


def test_the_database_refuses_what_the_api_would(seeded, database):
    before = table_dump(seeded)
    # psql exits non-zero on an error; SQLite raises the constraint's own error.
    refusal = subprocess.CalledProcessError if database.backend == "postgres" else sqlite3.IntegrityError
    for values in ["(community_id, user_id, kind, ref) VALUES ('c-go', 'u-ada', 'x', 'p')",
                   "(kind, ref) VALUES ('x', 'p')",
                   "(community_id, kind, ref) VALUES ('c-go', 'Bad', 'p')",
                   "(community_id, kind, ref) VALUES ('c-go', 'x', '')",
                   "(community_id, kind, ref) VALUES ('c-nope', 'x', 'p')"]:
        with pytest.raises(refusal) as refused:
            database.psql(f"INSERT INTO activity {values}")
        if database.backend == "postgres":
            assert "ERROR" in refused.value.stderr  # refused by the server, not a psql that failed to start
    assert table_dump(seeded) == before


def wait_for(client, headers):
    cursor, digest = snapshot(client, headers)
    url = f"/community-changes/poll?cursor={cursor}&hash={digest}&timeout=30"
    greenlet = gevent.spawn(client.get, url, headers=headers)
    return until_blocked(client.application.extensions["hub"], greenlet)


def test_sql_activity_reaches_every_waiting_member_on_commit(seeded, client, auth, database):
    waiting = {user: wait_for(client, auth(user)) for user in ("u-ada", "u-grace")}
    outsider = wait_for(client, auth("u-alan"))
    database.psql(
        "BEGIN; INSERT INTO users (id) VALUES ('u-outbox'); "
        "INSERT INTO activity (community_id, kind, ref, actor) "
        "VALUES ('c-python', 'post_created', 'p-42', 'u-7'); COMMIT;"
    )
    for user, greenlet in waiting.items():
        body = greenlet.get(timeout=20).json
        assert body["status"] == "changed", user
        assert [(c["type"], c["ref"]) for c in body["changes"]] == [("activity", "p-42")]
        assert entry(body, "c-python")["unread"] == 1, user
        assert body["hash"] == wire.user_state_hash(body["communities"], body["notifications_unread"])
    assert not outsider.ready()
    outsider.kill()


def test_sql_activity_rolled_back_reaches_nobody(seeded, client, auth, database):
    ada = auth("u-ada")
    cursor, digest = snapshot(client, ada)
    database.psql(
        "BEGIN; INSERT INTO users (id) VALUES ('u-outbox'); "
        "INSERT INTO activity (community_id, kind, ref) VALUES ('c-python', 'post_created', 'p-42'); "
        "ROLLBACK;"
    )
    seeded.extensions["hub"].notify()
    body = poll(client, ada, cursor, digest, timeout=1).json
    assert body["status"] == "unchanged"
    assert rows(seeded, "SELECT count(*) FROM changes WHERE type = 'activity'") == [(0,)]


@pytest.fixture
def demo_client(app_factory):
    app = app_factory(DEMO_MODE=True)
    app.test_cli_runner().invoke(args=["seed-demo"])
    return app.test_client()


def test_demo_sql_activity_publishes_through_the_outbox(demo_client):
    local = {"environ_base": {"REMOTE_ADDR": "127.0.0.1"}, "base_url": "http://localhost"}
    response = demo_client.post("/demo/sql-activity", json={
        "community_id": "c-go", "kind": "post_created", "ref": "p-1"}, **local)
    assert response.status_code == 201
    assert response.json == {"community_id": "c-go", "kind": "post_created", "ref": "p-1"}
    note = demo_client.post("/demo/sql-activity", json={
        "user_id": "u-ada", "kind": "mention", "ref": "p-1", "actor": "u-grace"}, **local)
    assert note.status_code == 201
    app = demo_client.application
    assert rows(app, "SELECT type, community_id, user_id FROM changes "
                     "WHERE type IN ('activity', 'notification') ORDER BY id") == [
        ("activity", "c-go", None), ("notification", None, "u-ada")]
    before = table_dump(app)
    for body, status in [({"kind": "x", "ref": "p"}, 422),
                         ({"community_id": "c-go", "user_id": "u-ada", "kind": "x", "ref": "p"}, 422),
                         ({"community_id": "c-nope", "kind": "x", "ref": "p"}, 404),
                         ({"community_id": "c-go", "kind": "X", "ref": "p"}, 422)]:
        refused = demo_client.post("/demo/sql-activity", json=body, **local)
        assert refused.status_code == status and refused.content_type == "application/problem+json"
    assert table_dump(app) == before


def test_demo_sql_activity_is_refused_to_other_machines(demo_client):
    body = {"community_id": "c-go", "kind": "post_created", "ref": "p-1"}
    app = demo_client.application
    before = table_dump(app)
    remote = demo_client.post("/demo/sql-activity", json=body,
                              environ_base={"REMOTE_ADDR": "203.0.113.9"})
    forwarded = demo_client.post("/demo/sql-activity", json=body, base_url="http://localhost",
                                 headers={"X-Forwarded-For": "203.0.113.9"},
                                 environ_base={"REMOTE_ADDR": "127.0.0.1"})
    assert remote.status_code == forwarded.status_code == 403
    assert table_dump(app) == before


def test_demo_sql_activity_is_absent_without_demo_mode(seeded, client):
    response = client.post("/demo/sql-activity", json={"community_id": "c-go", "kind": "x", "ref": "p"},
                           environ_base={"REMOTE_ADDR": "127.0.0.1"}, base_url="http://localhost")
    assert response.status_code == 404


# -- unread counts and read markers ---------------------------------------------------


def test_unread_counts_activity_after_the_read_marker_up_to_100(seeded, client, auth, database):
    ada = auth("u-ada")
    before = client.get("/me/communities", headers=ada).json
    assert entry(before, "c-python")["unread"] == 0
    assert entry(before, "c-python")["last_activity_at"] is None
    for n in range(3):
        assert publish(client, auth, "c-python", kind="post_created", ref=f"p-{n}").status_code == 201
    after = client.get("/me/communities", headers=ada).json
    assert entry(after, "c-python")["unread"] == 3 and entry(after, "c-rust")["unread"] == 0
    assert entry(after, "c-python")["last_activity_at"].endswith("Z")
    assert after["hash"] != before["hash"]
    values = ", ".join(f"('c-python', 'post_created', 'q-{n}')" for n in range(120))
    database.psql(f"INSERT INTO activity (community_id, kind, ref) VALUES {values}")
    capped = client.get("/me/communities", headers=ada).json
    assert entry(capped, "c-python")["unread"] == 100


def test_a_new_member_starts_with_nothing_unread(seeded, client, auth):
    assert publish(client, auth, "c-go", kind="post_created", ref="p-1").status_code == 201
    joined = client.put("/communities/c-go/members/me", headers=auth("u-ada"))
    assert joined.status_code == 201
    body = client.get("/me/communities", headers=auth("u-ada")).json
    assert entry(body, "c-go")["unread"] == 0
    assert entry(body, "c-go")["last_activity_at"] is not None
    assert publish(client, auth, "c-go", kind="post_created", ref="p-2").status_code == 201
    assert entry(client.get("/me/communities", headers=auth("u-ada")).json, "c-go")["unread"] == 1


def test_reading_a_community_wakes_the_users_other_tabs(seeded, client, auth):
    ada = auth("u-ada")
    publish(client, auth, "c-python", kind="post_created", ref="p-1")
    other_tab = wait_for(client, ada)
    response = client.put("/me/communities/c-python/read", headers=ada)
    assert response.status_code == 200
    assert response.json["id"] == "c-python" and response.json["unread"] == 0
    body = other_tab.get(timeout=20).json
    assert body["status"] == "changed"
    change = body["changes"][0]
    assert change == {"type": "read", "community_id": "c-python", "at": change["at"], "by": "u-ada"}
    assert entry(body, "c-python")["unread"] == 0
    # Nothing more to read: the marker stays, and nothing is recorded.
    count = rows(seeded, "SELECT count(*) FROM changes")
    assert client.put("/me/communities/c-python/read", headers=ada).status_code == 200
    assert rows(seeded, "SELECT count(*) FROM changes") == count


def test_reading_a_community_one_is_not_in_is_404_and_changes_nothing(seeded, client, auth):
    client.get("/me/communities", headers=auth("u-ada"))
    before = table_dump(seeded)
    for path, status in [("/me/communities/c-go/read", 404), ("/me/communities/c-ops/read", 404),
                         ("/me/communities/c-nope/read", 404), ("/me/communities/../read", 400)]:
        response = client.put(path, headers=auth("u-ada"))
        assert response.status_code == status, path
        assert response.content_type == "application/problem+json"
    assert table_dump(seeded) == before


def test_notifications_unread_and_their_read_marker(seeded, client, auth, database):
    ada = auth("u-ada")
    cursor, digest = snapshot(client, ada)
    database.psql("INSERT INTO activity (user_id, kind, ref) VALUES "
                  "('u-ada', 'mention', 'm-1'), ('u-ada', 'mention', 'm-2'), ('u-grace', 'mention', 'm-3')")
    body = poll(client, ada, cursor, digest).json
    assert body["notifications_unread"] == 2
    other_tab = wait_for(client, ada)
    response = client.put("/me/notifications/read", headers=ada)
    assert response.status_code == 200 and response.json == {"notifications_unread": 0}
    woken = other_tab.get(timeout=20).json
    assert [(c["type"], c.get("community_id")) for c in woken["changes"]] == [("read", None)]
    assert woken["notifications_unread"] == 0
    grace = client.get("/me/communities", headers=auth("u-grace")).json
    assert grace["notifications_unread"] == 1


def test_a_poll_woken_by_notifications_carries_the_unread_count_it_was_woken_with(seeded, client, auth,
                                                                                  database):
    """A waiting poll's ``changed`` answer gives the state the news brought, count included."""
    waiting = wait_for(client, auth("u-ada"))
    database.psql("INSERT INTO activity (user_id, kind, ref) VALUES ('u-ada', 'mention', 'm-1'), "
                  "('u-ada', 'mention', 'm-2')")
    body = waiting.get(timeout=20).json
    assert body["status"] == "changed"
    assert [c["ref"] for c in body["changes"]] == ["m-1", "m-2"]
    assert body["notifications_unread"] == 2
    assert body["hash"] == wire.user_state_hash(body["communities"], 2)


def test_activity_a_members_cursor_missed_reaches_its_poll_with_the_unread_count(seeded, client, auth):
    hub = seeded.extensions["hub"]
    holder = wait_for(client, auth("u-alan"))  # keeps the hub reading
    ada = auth("u-ada")
    cursor, digest = snapshot(client, ada)
    publish(client, auth, "c-python", kind="post_created", ref="p-1")
    assert eventually(lambda: hub.vouching.recent_communities.get("c-python"))
    body = poll(client, ada, cursor, digest, timeout=5).json
    assert body["status"] == "changed"
    assert entry(body, "c-python")["unread"] == 1
    holder.kill()


def test_a_members_re_poll_right_after_an_answer_reads_nothing(seeded, client, auth, monkeypatch):
    """A busy community's member polls again behind the hub's read: it is handed what the hub read.

    Its answer's cursor missed only its community's activity, which the hub
    read for the members waiting (``Vouching.unseen``): the poll waits for the
    next batch of its community instead of reading those rows itself.
    """
    hub = seeded.extensions["hub"]
    holder = wait_for(client, auth("u-grace"))  # a member waiting: the hub reads c-python's rows
    ada = auth("u-ada")
    cursor, digest = snapshot(client, ada)
    publish(client, auth, "c-python", kind="post_created", ref="p-1")
    answered = poll(client, ada, cursor, digest, timeout=10).json
    assert [c["ref"] for c in answered["changes"]] == ["p-1"]
    publish(client, auth, "c-python", kind="post_created", ref="p-2")
    assert eventually(lambda: len(hub.vouching.recent_communities.get("c-python") or ()) == 2)
    reads = []
    look = hub.admission.look
    monkeypatch.setattr(hub.admission, "look", lambda user_id, known: reads.append(user_id) or look(user_id, known))
    body = poll(client, ada, answered["cursor"], answered["hash"], timeout=10).json
    assert reads == []
    assert body["status"] == "changed" and [c["ref"] for c in body["changes"]] == ["p-2"]
    assert entry(body, "c-python")["unread"] == 2
    assert body["hash"] == client.get("/me/communities", headers=ada).json["hash"]
    holder.kill()


def test_pruned_activity_leaves_unread(seeded, client, auth):
    ada = auth("u-ada")
    for n in range(2):
        publish(client, auth, "c-python", kind="post_created", ref=f"p-{n}")
    client.post("/users/u-ada/notifications", json={"kind": "mention", "ref": "m-1"},
                headers=auth("u-admin", admin=True))
    body = client.get("/me/communities", headers=ada).json
    assert entry(body, "c-python")["unread"] == 2 and body["notifications_unread"] == 1
    pruner = seeded.extensions["hub"].pruner
    assert pruner.prune(now=datetime.now(timezone.utc) + timedelta(seconds=pruner.retention + 60))
    after = client.get("/me/communities", headers=ada).json
    assert entry(after, "c-python")["unread"] == 0 and after["notifications_unread"] == 0
    assert entry(after, "c-python")["last_activity_at"] is None
    publish(client, auth, "c-python", kind="post_created", ref="p-9")
    assert entry(client.get("/me/communities", headers=ada).json, "c-python")["unread"] == 1


# -- the notification list ----------------------------------------------------------


def test_notifications_are_listed_newest_first_a_page_at_a_time(seeded, client, auth, database):
    values = ", ".join(f"('u-ada', 'mention', 'm-{n}', 'u-{n}')" for n in range(5))
    database.psql(f"INSERT INTO activity (user_id, kind, ref, actor) VALUES {values}; "
                  "INSERT INTO activity (user_id, kind, ref) VALUES ('u-grace', 'mention', 'g-1')")
    ada = auth("u-ada")
    first = client.get("/me/notifications?limit=2", headers=ada)
    assert first.status_code == 200
    page = first.json
    assert [n["ref"] for n in page["notifications"]] == ["m-4", "m-3"]
    assert page["notifications"][0] == {"kind": "mention", "ref": "m-4", "by": "u-4",
                                        "at": page["notifications"][0]["at"], "unread": True}
    refs = [n["ref"] for n in page["notifications"]]
    while page["next_cursor"] is not None:
        page = client.get(f"/me/notifications?limit=2&cursor={page['next_cursor']}", headers=ada).json
        refs += [n["ref"] for n in page["notifications"]]
    assert refs == ["m-4", "m-3", "m-2", "m-1", "m-0"]
    client.put("/me/notifications/read", headers=ada)
    everything = client.get("/me/notifications", headers=ada).json
    assert len(everything["notifications"]) == 5 and everything["next_cursor"] is None
    assert not any(n["unread"] for n in everything["notifications"])
    assert client.get("/me/notifications", headers=auth("u-alan")).json == {
        "notifications": [], "next_cursor": None}


@pytest.mark.parametrize("query", ["limit=0", "limit=101", "limit=x", "limit=-1", "limit=",
                                   # Past Python's integer-string limit (it answered 500), and
                                   # digits that int() reads but are not ASCII (they were accepted).
                                   "limit=" + "1" * 4400, "limit=" + "0" * 4400 + "1",
                                   "limit=%EF%BC%91", "limit=%D9%A3", "limit=+5", "limit=%205",
                                   "cursor=", "cursor=nope", "cursor=bjF8MA", "cursor=MXxhYnxzMQ"])
def test_a_bad_page_request_is_400(seeded, client, auth, query):
    response = client.get(f"/me/notifications?{query}", headers=auth("u-ada"))
    assert response.status_code == 400
    assert response.content_type == "application/problem+json"


# -- read markers only move forward ----------------------------------------------------


def read_through(app, user_id="u-ada", community_id="c-python"):
    return rows(app, f"SELECT read_through FROM memberships "
                     f"WHERE user_id = '{user_id}' AND community_id = '{community_id}'")[0][0]


def test_a_read_marker_does_not_move_back_when_its_activity_is_pruned(seeded, client, auth):
    ada = auth("u-ada")
    for n in range(2):
        publish(client, auth, "c-python", kind="post_created", ref=f"p-{n}")
    assert client.put("/me/communities/c-python/read", headers=ada).status_code == 200
    marker = read_through(seeded)
    assert marker > 0
    pruner = seeded.extensions["hub"].pruner
    assert pruner.prune(now=datetime.now(timezone.utc) + timedelta(seconds=pruner.retention + 60))
    # Nothing left to read: the newest activity is "none" now, older than the marker.
    assert client.put("/me/communities/c-python/read", headers=ada).status_code == 200
    assert read_through(seeded) == marker


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgres"])
def test_of_two_reads_at_once_the_older_does_not_undo_the_newer(quiet_app, auth):
    """A read whose snapshot predates the newest activity waits for a newer read's lock, then
    must leave the newer marker as it is, not write its older one over it."""
    app, client = quiet_app, quiet_app.test_client()
    ada = auth("u-ada")
    publish(client, auth, "c-python", kind="post_created", ref="p-1")
    engine = app.extensions["db"]
    with engine.connect() as newer:
        locker = newer.scalar(text("SELECT pg_backend_pid()"))
        # The newer read holds the row first (its lock, taken before the older read's statement).
        newer.execute(text("SELECT 1 FROM memberships WHERE user_id = 'u-ada' AND community_id = 'c-python' "
                           "FOR UPDATE"))
        older = []
        thread = threading.Thread(
            target=lambda: older.append(client.put("/me/communities/c-python/read", headers=ada)))
        thread.start()
        until_lock_waited_for(engine, locker)
        # The older read's statement has its snapshot; activity commits after it, and the newer read takes it.
        publish(client, auth, "c-python", kind="post_created", ref="p-2")
        newer.execute(text("UPDATE memberships SET read_through = "
                           "(SELECT max(id) FROM changes WHERE type = 'activity' AND community_id = 'c-python') "
                           "WHERE user_id = 'u-ada' AND community_id = 'c-python'"))
        newest = newer.scalar(text("SELECT read_through FROM memberships "
                                   "WHERE user_id = 'u-ada' AND community_id = 'c-python'"))
        newer.commit()
    thread.join(timeout=30)
    assert not thread.is_alive() and older[0].status_code == 200
    assert read_through(app) == newest
    assert entry(client.get("/me/communities", headers=ada).json, "c-python")["unread"] == 0
