"""GET /me/communities: body, headers and conditional requests, per the contract."""
import re

import pytest

from app import cursors, wire


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
    cursors.Cursor.decode(body["cursor"])
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
