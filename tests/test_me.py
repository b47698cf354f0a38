"""GET /me/communities: body, headers and conditional requests, per the contract."""
import re

import pytest

from app.store import cursors
from app import wire


def test_snapshot_body_and_headers(seeded, client, auth):
    response = client.get("/me/communities", headers=auth("u-ada", name="Ada"))
    assert response.status_code == 200
    body = response.json
    assert set(body) == {"user", "communities", "notifications_unread", "hash", "cursor",
                         "server_time", "online"}
    assert set(body["online"]) == {"c-python", "c-rust"}
    assert body["notifications_unread"] == 0
    assert body["user"] == {"id": "u-ada", "name": "Ada"}
    assert [c["id"] for c in body["communities"]] == ["c-python", "c-rust"]
    entry = body["communities"][0]
    assert set(entry) == {"id", "slug", "name", "logo_url", "is_public", "role", "joined_at",
                          "unread", "last_activity_at"}
    assert entry["unread"] == 0 and entry["last_activity_at"] is None
    assert entry["role"] == "moderator" and entry["is_public"] is True
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", entry["joined_at"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", body["server_time"])
    assert body["hash"] == wire.user_state_hash(body["communities"], body["notifications_unread"])
    assert seeded.extensions["cursor_key"].decode(body["cursor"]) is not None
    assert response.headers["ETag"] == f'"{body["hash"]}"'
    assert response.headers["Cache-Control"] == "private, no-cache"
    assert response.headers["Vary"] == "Authorization"
    assert int(response.headers["X-Poll-Interval"]) >= 1


@pytest.mark.parametrize("template", ['"{h}"', 'W/"{h}"', '"nope", W/"{h}"', "*", "{h}"])
def test_if_none_match_gives_304(seeded, client, auth, template):
    first = client.get("/me/communities", headers=auth("u-ada"))
    tag = template.format(h=first.json["hash"])
    again = client.get("/me/communities", headers={**auth("u-ada"), "If-None-Match": tag})
    assert again.status_code == 304
    assert again.data == b""
    for name in ("ETag", "Cache-Control", "Vary", "X-Poll-Interval"):
        assert again.headers[name], name
    assert again.headers["ETag"] == first.headers["ETag"]


def test_304_stops_after_a_change(seeded, client, auth):
    first = client.get("/me/communities", headers=auth("u-ada"))
    client.put("/communities/c-go/members/me", headers=auth("u-ada"))
    again = client.get("/me/communities", headers={**auth("u-ada"), "If-None-Match": first.headers["ETag"]})
    assert again.status_code == 200
    assert again.json["hash"] != first.json["hash"]
    assert "c-go" in [c["id"] for c in again.json["communities"]]


def test_equal_lists_give_equal_hashes_across_users(seeded, client, auth):
    # The hash covers the state alone, not whose it is.
    empty_a = client.get("/me/communities", headers=auth("u-x1")).json["hash"]
    empty_b = client.get("/me/communities", headers=auth("u-x2")).json["hash"]
    assert empty_a == empty_b == wire.user_state_hash([], 0)


def test_users_see_only_their_own_state(seeded, client, auth):
    ada = client.get("/me/communities", headers=auth("u-ada")).json
    alan = client.get("/me/communities", headers=auth("u-alan")).json
    assert {c["id"] for c in ada["communities"]} == {"c-python", "c-rust"}
    assert {c["id"] for c in alan["communities"]} == {"c-go"}


def test_unreachable_database_is_503_with_retry_after(app_factory, auth):
    # Port 1 refuses connections: an outage, answered as one.
    app = app_factory(DATABASE_URL="postgresql://postgres@127.0.0.1:1/test", AUTO_MIGRATE=False)
    headers = auth("u-ada")
    response = app.test_client().get("/me/communities", headers=headers)
    assert response.status_code == 503
    assert response.content_type == "application/problem+json"
    assert 1 <= int(response.headers["Retry-After"]) <= 5


def test_an_exhausted_pool_is_503_not_500(app):
    from sqlalchemy.exc import TimeoutError as PoolTimeout

    @app.get("/exhausted")
    def exhausted():
        raise PoolTimeout("QueuePool limit of size 10 overflow 10 reached")

    response = app.test_client().get("/exhausted")
    assert response.status_code == 503
    assert response.content_type == "application/problem+json"
    assert response.headers["Retry-After"]


def statements(app):
    return app.extensions["metrics"].queries._value.get()


def test_a_conditional_snapshot_the_hub_has_read_for_needs_no_database(quiet_app, auth, database):
    """A 304 from what the hub read; a change the hub has read since, of the user's, is a 200."""
    client, hub = quiet_app.test_client(), quiet_app.extensions["hub"]
    ada = auth("u-ada")
    tag = client.get("/me/communities", headers=ada).headers["ETag"]
    conditional = {**ada, "If-None-Match": f"W/{tag}"}
    assert client.get("/me/communities", headers=conditional).status_code == 304  # takes a position
    hub.reread.refresh()  # what the loop does on a hint: reads the seeding's writes
    before = statements(quiet_app)
    again = client.get("/me/communities", headers=conditional)
    assert again.status_code == 304 and statements(quiet_app) == before
    assert again.data == b"" and again.headers["ETag"] == tag
    assert int(again.headers["X-Poll-Interval"]) >= 1

    # Another user's change, read by the hub: still nothing to read for Ada.
    database.psql("INSERT INTO users (id) VALUES ('u-zed');"
                  "INSERT INTO memberships (user_id, community_id) VALUES ('u-zed', 'c-go')")
    hub.reread.refresh()
    before = statements(quiet_app)
    assert client.get("/me/communities", headers=conditional).status_code == 304
    assert statements(quiet_app) == before

    # Ada's own, written by another process: once read, never a 304 again for that tag.
    database.psql("INSERT INTO memberships (user_id, community_id) VALUES ('u-ada', 'c-go')")
    hub.reread.refresh()
    changed = client.get("/me/communities", headers=conditional)
    assert changed.status_code == 200 and changed.headers["ETag"] != tag
    assert "c-go" in [c["id"] for c in changed.json["communities"]]


def test_a_write_through_this_process_is_never_answered_304_before_it_is_read(quiet_app, auth):
    client, hub = quiet_app.test_client(), quiet_app.extensions["hub"]
    ada = auth("u-ada")
    conditional = {**ada, "If-None-Match": client.get("/me/communities", headers=ada).headers["ETag"]}
    assert client.get("/me/communities", headers=conditional).status_code == 304
    hub.reread.refresh()
    assert hub.vouching.current("u-ada", hub.vouching.hash_served("u-ada"))
    # The hub has not re-read (its loop is off): only the write's own mark refuses.
    assert client.put("/communities/c-go/members/me", headers=ada).status_code in (200, 201)
    changed = client.get("/me/communities", headers=conditional)
    assert changed.status_code == 200
    assert "c-go" in [c["id"] for c in changed.json["communities"]]


def test_a_write_committed_while_a_re_read_runs_is_not_counted_as_read(quiet_app, auth, monkeypatch):
    """A re-read whose snapshot was taken before the write did not read it: no 304 until one that did."""
    from app.store import feed

    client, hub = quiet_app.test_client(), quiet_app.extensions["hub"]
    ada = auth("u-ada")
    conditional = {**ada, "If-None-Match": client.get("/me/communities", headers=ada).headers["ETag"]}
    assert client.get("/me/communities", headers=conditional).status_code == 304  # takes a position
    hub.reread.refresh()
    assert hub.served_if_current("u-ada") is not None
    original, joined = feed.read_news, []

    def joining_meanwhile(*args):
        batch = original(*args)  # the re-read's snapshot is taken: the join commits after it
        if not joined:
            joined.append(client.put("/communities/c-go/members/me", headers=ada).status_code)
        return batch

    monkeypatch.setattr(feed, "read_news", joining_meanwhile)
    hub.reread.refresh()
    assert joined == [201]
    changed = client.get("/me/communities", headers=conditional)
    assert changed.status_code == 200
    assert "c-go" in [c["id"] for c in changed.json["communities"]]
