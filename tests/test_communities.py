"""The write API and GET /communities/{id}: permissions, idempotency, bad input."""
import threading
from contextlib import contextmanager

import pytest
from sqlalchemy import create_engine, text

from app.store.db import normalize_url

from conftest import statements, table_dump


def memberships(app, user_id):
    with app.extensions["db"].connect() as connection:
        rows = connection.execute(
            text("SELECT community_id, role FROM memberships WHERE user_id = :u ORDER BY 1"),
            {"u": user_id},
        ).all()
    return [tuple(row) for row in rows]


def change_count(app):
    with app.extensions["db"].connect() as connection:
        return connection.execute(text("SELECT count(*) FROM changes")).scalar()


# -- memberships ------------------------------------------------------------------


def test_self_join_public_creates_then_is_idempotent(seeded, client, auth):
    before = change_count(seeded)
    first = client.put("/communities/c-go/members/me", headers=auth("u-ada"))
    assert first.status_code == 201
    assert first.headers["Location"].endswith("/communities/c-go/members/u-ada")
    assert first.json["role"] == "member" and first.json["user_id"] == "u-ada"
    again = client.put("/communities/c-go/members/me", json={"role": "member"}, headers=auth("u-ada"))
    assert again.status_code == 200
    assert change_count(seeded) == before + 1


def test_self_join_rules(seeded, client, auth):
    # A private community is absent to those outside it.
    private = client.put("/communities/c-ops/members/me", headers=auth("u-ada"))
    assert private.status_code == 404 and private.content_type == "application/problem+json"
    as_admin = client.put("/communities/c-go/members/me", json={"role": "admin"}, headers=auth("u-ada"))
    assert as_admin.status_code == 403
    other = client.put("/communities/c-go/members/u-grace", headers=auth("u-ada"))
    assert other.status_code == 403
    assert ("c-go", "member") not in memberships(seeded, "u-ada")


def test_admins_add_anyone_and_set_roles(seeded, client, auth):
    admin = auth("u-admin", admin=True)
    created = client.put("/communities/c-ops/members/u-new", json={"role": "moderator"}, headers=admin)
    assert created.status_code == 201
    assert memberships(seeded, "u-new") == [("c-ops", "moderator")]
    # A community admin (grace in c-design) may add people there, but not owners.
    grace = auth("u-grace")
    assert client.put("/communities/c-design/members/u-alan", headers=grace).status_code == 201
    promoted = client.put("/communities/c-design/members/u-alan", json={"role": "admin"}, headers=grace)
    assert promoted.status_code == 200 and promoted.json["role"] == "admin"
    owner = client.put("/communities/c-design/members/u-alan", json={"role": "owner"}, headers=grace)
    assert owner.status_code == 403
    assert ("c-design", "admin") in memberships(seeded, "u-alan")


def test_leaving_and_removing(seeded, client, auth):
    assert client.delete("/communities/c-rust/members/me", headers=auth("u-ada")).status_code == 204
    assert client.delete("/communities/c-rust/members/me", headers=auth("u-ada")).status_code == 204
    assert ("c-rust", "member") not in memberships(seeded, "u-ada")
    forbidden = client.delete("/communities/c-python/members/u-ada", headers=auth("u-alan"))
    assert forbidden.status_code == 403
    # grace owns c-python: she may remove ada.
    assert client.delete("/communities/c-python/members/u-ada", headers=auth("u-grace")).status_code == 204
    assert memberships(seeded, "u-ada") == []


def test_unknown_community_is_404(seeded, client, auth):
    for method in (client.put, client.delete):
        response = method("/communities/c-nope/members/me", headers=auth("u-ada"))
        assert response.status_code == 404
        assert response.content_type == "application/problem+json"


# Every request that names a community, in an order whose writes leave the
# later ones meaningful, with its status for each kind of caller.
COMMUNITY_PATHS = [
    ("get", "", {}),
    ("patch", "", {"json": {"name": "Renamed"}}),
    ("put", "/members/u-ada", {"json": {"role": "moderator"}}),
    ("delete", "/members/u-ada", {}),
    ("put", "/members/me", {"json": {"role": "admin"}}),
    ("put", "/members/me", {}),
    ("delete", "", {}),
    ("delete", "/members/me", {}),
]
CALLERS = {
    # kind: (community, caller, admin, statuses along COMMUNITY_PATHS)
    "unknown community": ("c-nope", "u-alan", False, [404] * 8),
    "private, not a member": ("c-ops", "u-alan", False, [404] * 8),
    "public, not a member": ("c-rust", "u-alan", False, [200, 403, 403, 403, 403, 201, 403, 204]),
    "private, a member without rights": ("c-design", "u-alan", False,
                                         [200, 403, 403, 403, 403, 200, 403, 204]),
    # The community is gone by the last request.
    "platform admin": ("c-ops", "u-admin", True, [200, 200, 201, 204, 201, 200, 204, 404]),
}


def walk(client, headers, community_id):
    """Every request of COMMUNITY_PATHS on ``community_id``: (status, problem body or None)."""
    answers = []
    for method, suffix, kwargs in COMMUNITY_PATHS:
        response = getattr(client, method)(f"/communities/{community_id}{suffix}", headers=headers, **kwargs)
        problem = response.json if response.content_type == "application/problem+json" else None
        answers.append((response.status_code, problem))
    return answers


@pytest.mark.parametrize("kind", list(CALLERS))
def test_who_gets_what_on_every_community_path(seeded, client, auth, kind):
    community_id, caller, admin, statuses = CALLERS[kind]
    client.put("/communities/c-design/members/u-alan", headers=auth("u-admin", admin=True))
    headers = auth(caller, admin=admin)
    client.get("/me/communities", headers=headers)  # provision the caller first
    before = table_dump(seeded)
    answers = walk(client, headers, community_id)
    assert [status for status, _ in answers] == statuses, answers
    if statuses == [404] * 8:
        assert table_dump(seeded) == before


def test_a_private_community_answers_outsiders_exactly_as_an_unknown_one(seeded, client, auth):
    headers = auth("u-alan")
    client.get("/me/communities", headers=headers)
    unknown = walk(client, headers, "c-nope")
    private = walk(client, headers, "c-ops")
    assert repr(private).replace("c-ops", "c-nope") == repr(unknown)


# Every request naming a community (COMMUNITY_PATHS and the rest), as (method, path, kwargs).
EVERY_COMMUNITY_PATH = [(method, "/communities/{}" + suffix, kwargs) for method, suffix, kwargs in COMMUNITY_PATHS] + [
    ("get", "/communities/{}/presence", {}),
    ("put", "/me/communities/{}/read", {}),
    ("post", "/communities/{}/activity", {"json": {"kind": "post", "ref": "p-1"}}),
    ("patch", "/communities/{}/members", {"json": {"add": [{"user_id": "u-ada"}], "remove": ["u-grace"]}}),
]


@pytest.mark.parametrize("method, path, kwargs", EVERY_COMMUNITY_PATH,
                         ids=[f"{method} {path}" for method, path, _ in EVERY_COMMUNITY_PATH])
def test_a_private_community_costs_outsiders_the_same_work_as_an_unknown_one(seeded, client, auth,
                                                                              method, path, kwargs):
    """Not only the same answer: the same statements, so its timing cannot tell that it exists."""
    headers = auth("u-alan")
    client.get("/me/communities", headers=headers)
    answers = {}
    for community_id in ("c-nope", "c-ops"):
        with statements(seeded.extensions["db"]) as seen:
            response = getattr(client, method)(path.format(community_id), headers=headers, **kwargs)
        answers[community_id] = (response.status_code, response.get_data(as_text=True).replace(community_id, "?"),
                                 seen)
    assert answers["c-nope"][0] == 404
    assert answers["c-ops"] == answers["c-nope"]


BAD_WRITES = [
    ("put", "/communities/c-go/members/me", {"data": "{not json", "content_type": "application/json"}, 400),
    ("put", "/communities/c-go/members/me", {"json": ["member"]}, 422),
    ("put", "/communities/c-go/members/me", {"json": {"role": 7}}, 422),
    ("put", "/communities/c-go/members/me", {"json": {"role": "emperor"}}, 422),
    ("put", "/communities/c-go/members/me", {"json": {"role": "member", "extra": 1}}, 422),
    ("put", "/communities/c-go/members/me", {"data": "role=member", "content_type": "text/plain"}, 415),
    ("put", "/communities/c-go/members/" + "u" * 65, {}, 400),
    ("put", "/communities/c-go/members/u%01ada", {}, 400),
    ("put", "/communities/" + "c" * 65 + "/members/me", {}, 400),
    ("put", "/communities/c-nope/members/me", {}, 404),
    # Browsers resolve "." and ".." out of a path: no client could reach such ids.
    ("put", "/communities/c-go/members/..", {}, 400),
    ("put", "/communities/c-go/members/%2E", {}, 400),
    ("delete", "/communities/c-go/members/..", {}, 400),
    ("patch", "/communities/..", {"json": {"name": "X"}}, 400),
    ("post", "/communities", {"json": {"id": ".", "slug": "dot", "name": "Dot"}}, 422),
    ("post", "/communities", {"json": {"id": "..", "slug": "dots", "name": "Dots"}}, 422),
    ("post", "/communities", {"json": {"slug": "Bad Slug", "name": "X"}}, 422),
    ("post", "/communities", {"json": {"slug": "ok", "name": "x\u0007y"}}, 422),
    ("post", "/communities", {"json": {"slug": "ok", "name": ""}}, 422),
    ("post", "/communities", {"json": {"slug": "ok", "name": "Ok", "is_public": "yes"}}, 422),
    ("post", "/communities", {"json": {"slug": "ok", "name": "Ok", "logo_url": "javascript:x"}}, 422),
    ("post", "/communities", {"json": {"name": "Ok"}}, 422),
    ("post", "/communities", {"json": {"slug": "rust", "name": "Dup"}}, 409),
    ("post", "/communities", {"json": {"id": "c-rust", "slug": "other", "name": "Dup"}}, 409),
    # JSON escapes can carry lone surrogates, which no database can store.
    ("post", "/communities", {"data": '{"slug": "ok", "name": "Ok \\ud800"}', "content_type": "application/json"}, 422),
    ("post", "/communities", {"data": '{"slug": "ok", "name": "Ok", "logo_url": "https://x.example/\\udfff"}',
                              "content_type": "application/json"}, 422),
    ("patch", "/communities/c-rust", {"json": {"name": 5}}, 422),
    ("patch", "/communities/c-rust", {"json": {"slug": "python"}}, 409),
    ("patch", "/communities/c-nope", {"json": {"name": "X"}}, 404),
    ("delete", "/communities/c-nope", {}, 404),
]


@pytest.mark.parametrize("method, path, kwargs, status", BAD_WRITES)
def test_bad_input_is_refused_and_changes_nothing(seeded, client, auth, method, path, kwargs, status):
    headers = auth("u-admin", admin=True)
    client.get("/me/communities", headers=headers)  # provision the caller first
    before = table_dump(seeded)
    response = getattr(client, method)(path, headers=headers, **kwargs)
    assert response.status_code == status, response.json
    assert response.content_type == "application/problem+json"
    body = response.json
    assert {"type", "title", "status", "detail"} <= set(body) and body["status"] == status
    assert table_dump(seeded) == before


def test_oversized_body_is_refused(seeded, client, auth):
    before = table_dump(seeded)
    response = client.post(
        "/communities", headers=auth("u-admin", admin=True),
        json={"slug": "big", "name": "x" * 20000},
    )
    assert response.status_code == 413
    assert response.content_type == "application/problem+json"
    assert table_dump(seeded) == before


# -- communities ------------------------------------------------------------------


def test_community_lifecycle(seeded, client, auth):
    admin = auth("u-admin", admin=True)
    created = client.post(
        "/communities", headers=admin,
        json={"slug": "elixir", "name": "Elixir", "logo_url": "https://img.example/e.png"},
    )
    assert created.status_code == 201
    cid = created.json["id"]
    assert created.headers["Location"].endswith(f"/communities/{cid}")
    assert created.json == {"id": cid, "slug": "elixir", "name": "Elixir",
                            "logo_url": "https://img.example/e.png", "is_public": True}
    client.put(f"/communities/{cid}/members/u-ada", json={"role": "admin"}, headers=admin)
    renamed = client.patch(f"/communities/{cid}", json={"name": "Elixir Lang"}, headers=auth("u-ada"))
    assert renamed.status_code == 200 and renamed.json["name"] == "Elixir Lang"
    assert client.patch(f"/communities/{cid}", json={"name": "X"}, headers=auth("u-alan")).status_code == 403
    assert client.delete(f"/communities/{cid}", headers=auth("u-ada")).status_code == 403
    assert client.delete(f"/communities/{cid}", headers=admin).status_code == 204
    assert client.get(f"/communities/{cid}", headers=admin).status_code == 404
    assert client.post("/communities", json={"slug": "x", "name": "X"},
                       headers=auth("u-ada")).status_code == 403


def test_show_community_with_etag(seeded, client, auth):
    first = client.get("/communities/c-rust", headers=auth("u-alan"))
    assert first.status_code == 200
    assert first.json["member_count"] == 1
    tag = first.headers["ETag"]
    for header in (tag, f"W/{tag}", f'"zzz", {tag}', "*"):
        again = client.get("/communities/c-rust", headers={**auth("u-alan"), "If-None-Match": header})
        assert again.status_code == 304 and again.data == b""
        assert again.headers["ETag"] == tag
    miss = client.get("/communities/c-rust", headers={**auth("u-alan"), "If-None-Match": '"other"'})
    assert miss.status_code == 200
    # Private communities are invisible to outsiders, visible to members.
    assert client.get("/communities/c-design", headers=auth("u-alan")).status_code == 404
    assert client.get("/communities/c-design", headers=auth("u-grace")).status_code == 200


def test_listing_shows_public_and_own(seeded, client, auth):
    ids = lambda r: [c["id"] for c in r.json["communities"]]  # noqa: E731
    alan = client.get("/communities", headers=auth("u-alan"))
    assert set(ids(alan)) == {"c-rust", "c-python", "c-go"}
    grace = client.get("/communities", headers=auth("u-grace"))
    assert set(ids(grace)) == {"c-rust", "c-python", "c-go", "c-design"}
    admin = client.get("/communities", headers=auth("u-admin", admin=True))
    assert len(ids(admin)) == 5


def test_actor_is_recorded_as_by(seeded, client, auth):
    client.put("/communities/c-ops/members/u-ada", headers=auth("u-admin", admin=True))
    with seeded.extensions["db"].connect() as connection:
        actor = connection.execute(
            text("SELECT actor FROM changes WHERE user_id = 'u-ada' AND community_id = 'c-ops'")
        ).scalar()
        leftover = connection.execute(text("SELECT count(*) FROM change_actor")).scalar()
    assert actor == "u-admin"
    assert leftover == 0


@contextmanager
def another_writer(database, sql, hold=0.5):
    """Run ``sql`` in another transaction and keep it open ``hold`` seconds.

    The block runs once the statement has executed, so whatever it does meets
    the other writer's uncommitted row and its commit.
    """
    engine = create_engine(normalize_url(database.url))
    executed = threading.Event()

    def write():
        with engine.begin() as connection:
            connection.execute(text(sql))
            executed.set()
            threading.Event().wait(hold)

    thread = threading.Thread(target=write)
    thread.start()
    try:
        assert executed.wait(10)
        yield
    finally:
        thread.join()
        engine.dispose()


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgres"])
def test_put_racing_another_writer_for_the_same_membership(seeded, client, auth, database):
    with another_writer(database, "INSERT INTO memberships (user_id, community_id) VALUES ('u-alan', 'c-rust')"):
        # The PUT sees no membership, blocks on the other writer's row, then
        # loses the race: it must answer as a PUT on the existing membership.
        response = client.put("/communities/c-rust/members/u-alan", json={"role": "moderator"},
                              headers=auth("u-admin", admin=True))
    assert response.status_code == 200, response.json
    assert response.json["role"] == "moderator"
    assert memberships(seeded, "u-alan") == [("c-go", "member"), ("c-rust", "moderator")]


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgres"])
def test_put_racing_a_delete_of_the_same_membership(seeded, client, auth, database):
    with another_writer(database, "DELETE FROM memberships WHERE user_id = 'u-ada' AND community_id = 'c-rust'"):
        # The PUT must not update a row that is gone by the time it writes.
        response = client.put("/communities/c-rust/members/u-ada", json={"role": "moderator"},
                              headers=auth("u-admin", admin=True))
    assert response.status_code == 201, response.json
    assert ("c-rust", "moderator") in memberships(seeded, "u-ada")


# Another writer takes a unique key (and holds its transaction open) between
# this request's check and its write: the request must answer as the contract
# says once the other commits, never 500.
KEY_RACES = {
    "create, same id": (
        "INSERT INTO communities (id, slug, name) VALUES ('c-new', 'taken', 'Other')",
        ("post", "/communities", {"json": {"id": "c-new", "slug": "new", "name": "New"}}),
        409, "id-taken",
    ),
    "create, same slug": (
        "INSERT INTO communities (id, slug, name) VALUES ('c-other', 'new', 'Other')",
        ("post", "/communities", {"json": {"id": "c-new", "slug": "new", "name": "New"}}),
        409, "slug-taken",
    ),
    "rename to a slug being taken": (
        "INSERT INTO communities (id, slug, name) VALUES ('c-other', 'new', 'Other')",
        ("patch", "/communities/c-rust", {"json": {"slug": "new"}}),
        409, "slug-taken",
    ),
    "add a user being provisioned": (
        "INSERT INTO users (id) VALUES ('u-new')",
        ("put", "/communities/c-ops/members/u-new", {}),
        201, None,
    ),
    # Not a unique key but a foreign one: the membership's community goes.
    "add to a community being deleted": (
        "DELETE FROM communities WHERE id = 'c-go'",
        ("put", "/communities/c-go/members/u-ada", {}),
        404, "unknown-community",
    ),
}


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgres"])
@pytest.mark.parametrize("race", list(KEY_RACES))
def test_a_write_racing_another_for_a_unique_key(seeded, client, auth, database, race):
    sql, (method, path, kwargs), status, slug = KEY_RACES[race]
    headers = auth("u-admin", admin=True)
    client.get("/me/communities", headers=headers)
    before = table_dump(seeded)
    with another_writer(database, sql):
        response = getattr(client, method)(path, headers=headers, **kwargs)
    assert response.status_code == status, response.json
    if slug is not None:
        assert response.json["type"].endswith(f":{slug}")
    if status == 409:
        # Refused: only the other writer's row is new.
        after = table_dump(seeded)
        theirs = [row for row in after["communities"] if row not in before["communities"]]
        assert [row[:2] for row in theirs] == [tuple(sql.split("'")[1:4:2])]
        assert {**after, "communities": before["communities"]} == before
        assert after["communities"] == sorted(before["communities"] + theirs, key=repr)


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgres"])
def test_first_sight_of_a_token_racing_another_provisioning(seeded, client, auth, database):
    with another_writer(database, "INSERT INTO users (id) VALUES ('u-new')"):
        response = client.get("/me/communities", headers=auth("u-new", name="New Person"))
    assert response.status_code == 200, response.json
    with seeded.extensions["db"].connect() as connection:
        name = connection.execute(text("SELECT name FROM users WHERE id = 'u-new'")).scalar()
    assert name == "New Person"


# -- the last owner ---------------------------------------------------------------


def assert_last_owner(response):
    assert response.status_code == 409, response.json
    assert response.content_type == "application/problem+json"
    assert response.json["type"].endswith(":last-owner")


def test_the_last_owner_may_neither_leave_nor_step_down(seeded, client, auth):
    grace = auth("u-grace")  # the only owner of c-python
    client.get("/me/communities", headers=grace)
    before = table_dump(seeded)
    assert_last_owner(client.delete("/communities/c-python/members/me", headers=grace))
    assert_last_owner(client.put("/communities/c-python/members/me", json={"role": "admin"}, headers=grace))
    assert table_dump(seeded) == before
    # Setting the role it already has is no demotion.
    same = client.put("/communities/c-python/members/me", json={"role": "owner"}, headers=grace)
    assert same.status_code == 200


def test_an_owner_may_leave_once_another_owner_stays(seeded, client, auth):
    grace = auth("u-grace")
    promoted = client.put("/communities/c-python/members/u-ada", json={"role": "owner"}, headers=grace)
    assert promoted.status_code == 200
    assert client.put("/communities/c-python/members/me", json={"role": "admin"}, headers=grace).status_code == 200
    assert client.delete("/communities/c-python/members/me", headers=grace).status_code == 204
    # Now ada is the last one, whoever asks (another owner, a community admin).
    assert_last_owner(client.delete("/communities/c-python/members/me", headers=auth("u-ada")))
    assert ("c-python", "owner") in memberships(seeded, "u-ada")


def test_a_platform_admin_may_leave_a_community_ownerless(seeded, client, auth):
    admin = auth("u-admin", admin=True)
    demoted = client.put("/communities/c-python/members/u-grace", json={"role": "member"}, headers=admin)
    assert demoted.status_code == 200 and demoted.json["role"] == "member"
    client.put("/communities/c-python/members/u-grace", json={"role": "owner"}, headers=admin)
    assert client.delete("/communities/c-python/members/u-grace", headers=admin).status_code == 204
    assert ("c-python", "owner") not in memberships(seeded, "u-grace")


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgres"])
def test_two_owners_stepping_down_at_once_leave_one(seeded, client, auth, database):
    client.put("/communities/c-python/members/u-ada", json={"role": "owner"}, headers=auth("u-grace"))
    demote_ada = "UPDATE memberships SET role = 'member' WHERE user_id = 'u-ada' AND community_id = 'c-python'"
    with another_writer(database, demote_ada):
        # Grace's check must wait for the other demotion and see its result.
        response = client.delete("/communities/c-python/members/me", headers=auth("u-grace"))
    assert_last_owner(response)
    assert ("c-python", "owner") in memberships(seeded, "u-grace")


# -- conflict-safe edits (If-Match) ----------------------------------------------------


def version(client, headers, community_id="c-python"):
    response = client.get(f"/communities/{community_id}", headers=headers)
    assert response.status_code == 200
    return response.headers["ETag"]


def test_an_edit_naming_the_current_version_lands_and_answers_the_new_one(seeded, client, auth):
    admin = auth("u-admin", admin=True)
    tag = version(client, admin)
    response = client.patch("/communities/c-python", json={"name": "Pythonistas"},
                            headers={**admin, "If-Match": tag})
    assert response.status_code == 200 and response.json["name"] == "Pythonistas"
    assert response.headers["ETag"] == version(client, admin) != tag
    # The old version is gone: an edit naming it changes nothing, and is told the current one.
    before = table_dump(seeded)
    stale = client.patch("/communities/c-python", json={"name": "Snakes"}, headers={**admin, "If-Match": tag})
    assert stale.status_code == 412 and stale.json["type"].endswith("precondition-failed")
    assert stale.headers["ETag"] == response.headers["ETag"]
    assert table_dump(seeded) == before


@pytest.mark.parametrize("header, lands", [
    ("{tag}", True),
    ('"other", {tag}', True),
    ("*", True),
    ("W/{tag}", False),  # strong comparison: a weak validator never matches
    ('W/"x", W/{tag}', False),
    ('"other"', False),
    ('"{bare}"x', False),
])
def test_if_match_compares_strongly_with_lists_and_star(seeded, client, auth, header, lands):
    admin = auth("u-admin", admin=True)
    tag = version(client, admin)
    before = table_dump(seeded)
    response = client.patch("/communities/c-python", json={"name": "Pythonistas"},
                            headers={**admin, "If-Match": header.format(tag=tag, bare=tag.strip('"'))})
    assert response.status_code == (200 if lands else 412), response.json
    if not lands:
        assert response.headers["ETag"] == tag and table_dump(seeded) == before


def test_a_delete_naming_another_version_changes_nothing(seeded, client, auth):
    admin = auth("u-admin", admin=True)
    tag = version(client, admin, "c-go")
    client.put("/communities/c-go/members/u-ada", headers=admin)  # a join is a new version too
    before = table_dump(seeded)
    assert client.delete("/communities/c-go", headers={**admin, "If-Match": tag}).status_code == 412
    assert table_dump(seeded) == before
    assert client.delete("/communities/c-go", headers={**admin, "If-Match": version(client, admin, "c-go")}
                         ).status_code == 204


def test_if_match_on_an_unknown_or_hidden_community_is_the_unknown_ids_404(seeded, client, auth):
    for community_id, headers in (("c-nope", auth("u-admin", admin=True)), ("c-ops", auth("u-ada"))):
        response = client.patch(f"/communities/{community_id}", json={"name": "X"},
                                headers={**headers, "If-Match": "*"})
        assert response.status_code == 404 and response.json["type"].endswith("unknown-community")


@pytest.mark.postgres
def test_two_editors_holding_the_same_version_one_wins_every_time(server_factory, pg_database):
    """A hundred races of two PATCHes with the same If-Match: exactly one 200 and one 412 each
    time, and the loser's fields never land."""
    import requests
    from conftest import bearer

    server = server_factory(pg_database, workers=2)
    pg_database.psql("INSERT INTO communities (id, slug, name, is_public) VALUES ('c-1', 'c-1', 'One', true)")
    admin = bearer("u-admin", admin=True)
    sessions = [requests.Session(), requests.Session()]
    url = f"{server.url}/communities/c-1"
    for attempt in range(100):
        tag = sessions[0].get(url, headers=admin, timeout=10).headers["ETag"]
        start = threading.Barrier(2)
        answers = [None, None]

        def edit(index):
            start.wait()
            answers[index] = sessions[index].patch(url, json={"name": f"Editor {index} #{attempt}"},
                                                   headers={**admin, "If-Match": tag}, timeout=30)

        editors = [threading.Thread(target=edit, args=(index,)) for index in (0, 1)]
        for editor in editors:
            editor.start()
        for editor in editors:
            editor.join(30)
        statuses = sorted(answer.status_code for answer in answers)
        assert statuses == [200, 412], (attempt, [answer.text for answer in answers])
        winner = next(index for index, answer in enumerate(answers) if answer.status_code == 200)
        assert sessions[0].get(url, headers=admin, timeout=10).json()["name"] == f"Editor {winner} #{attempt}"
        assert answers[1 - winner].headers["ETag"] == answers[winner].headers["ETag"]
