"""PATCH /communities/{id}/members: many members at once, all or nothing, both backends."""
import io
import json
import threading

import pytest
from sqlalchemy import text

from conftest import assert_problem, table_dump, until_lock_waited_for
from test_community_changes import in_background, snapshot

ADMIN = ("u-admin", True)


def sync(client, headers, community_id="c-design", **body):
    return client.patch(f"/communities/{community_id}/members", json=body, headers=headers)


def members(app, community_id):
    """{user_id: role} of the community's members."""
    query = text("SELECT user_id, role FROM memberships WHERE community_id = :c")
    with app.extensions["db"].connect() as connection:
        return dict(connection.execute(query, {"c": community_id}).all())


def users(app):
    with app.extensions["db"].connect() as connection:
        return set(connection.scalars(text("SELECT id FROM users")))


def provisioned(client, auth, *callers):
    """Headers for each caller, its user provisioned (a first request), so dumps compare only the write."""
    headers = [auth(user_id, admin=admin) for user_id, admin in callers]
    for each in headers:
        assert client.get("/me/communities", headers=each).status_code == 200
    return headers


# -- what it does ---------------------------------------------------------------


def test_counts_each_outcome_and_provisions_unknown_users(seeded, client, auth):
    grace, = provisioned(client, auth, ("u-grace", False))  # an admin of c-design
    first = sync(client, grace, add=[
        {"user_id": "u-new"}, {"user_id": "u-ada", "role": "moderator"}, {"user_id": "u-grace"},
    ], remove=["u-alan"])
    assert first.status_code == 200, first.json
    assert first.json == {"created": 2, "updated": 0, "unchanged": 2, "removed": 0}
    assert members(seeded, "c-design") == {"u-ada": "moderator", "u-grace": "admin", "u-new": "member"}
    assert "u-new" in users(seeded)

    second = sync(client, grace, add=[
        {"user_id": "u-new", "role": "admin"}, {"user_id": "u-ada"}, {"user_id": "u-other", "role": "member"},
    ], remove=["u-alan"])
    assert second.json == {"created": 1, "updated": 1, "unchanged": 2, "removed": 0}
    third = sync(client, grace, remove=["u-new", "u-ada", "u-nobody"])
    assert third.json == {"created": 0, "updated": 0, "unchanged": 1, "removed": 2}
    assert members(seeded, "c-design") == {"u-grace": "admin", "u-other": "member"}


def test_repeating_a_sync_records_no_change(seeded, client, auth):
    admin, = provisioned(client, auth, ADMIN)
    body = {"add": [{"user_id": "u-1", "role": "moderator"}, {"user_id": "u-2"}], "remove": ["u-ada"]}
    assert sync(client, admin, "c-rust", **body).json == {"created": 2, "updated": 0, "unchanged": 0, "removed": 1}
    before = table_dump(seeded)
    again = sync(client, admin, "c-rust", **body)
    assert again.json == {"created": 0, "updated": 0, "unchanged": 3, "removed": 0}
    assert table_dump(seeded) == before


def test_the_change_log_has_one_row_per_change_by_the_caller(seeded, client, auth):
    admin, = provisioned(client, auth, ADMIN)
    before = set(table_dump(seeded)["changes"])
    sync(client, admin, "c-go", add=[{"user_id": "u-ada"}, {"user_id": "u-alan", "role": "admin"}],
         remove=["u-nobody"])
    with seeded.extensions["db"].connect() as connection:
        rows = connection.execute(text("SELECT * FROM changes")).all()
    recorded = sorted((row.user_id, row.community_id, row.type, row.role, row.actor)
                      for row in rows if tuple(row) not in before)
    assert recorded == [("u-ada", "c-go", "joined", "member", "u-admin"),
                        ("u-alan", "c-go", "role_changed", "admin", "u-admin")]


# -- who may ------------------------------------------------------------------------


@pytest.mark.parametrize(("caller", "community_id", "status"), [
    (("u-admin", True), "c-ops", 200),        # platform admin, private community
    (("u-grace", False), "c-design", 200),    # the community's admin
    (("u-grace", False), "c-python", 200),    # its owner
    (("u-ada", False), "c-rust", 403),        # a member
    (("u-ada", False), "c-python", 403),      # a moderator
    (("u-alan", False), "c-rust", 403),       # public, not a member
    (("u-alan", False), "c-ops", 404),        # private, not a member
    (("u-alan", False), "c-nope", 404),       # unknown
])
def test_who_may_sync(seeded, client, auth, caller, community_id, status):
    headers, = provisioned(client, auth, caller)
    before = table_dump(seeded)
    response = sync(client, headers, community_id, add=[{"user_id": "u-new"}], remove=["u-ada"])
    if status == 200:
        assert response.status_code == 200 and response.json["created"] == 1
        assert "u-new" in members(seeded, community_id)
        return
    body = assert_problem(response, status)
    assert body["type"].endswith(":forbidden" if status == 403 else ":unknown-community")
    assert table_dump(seeded) == before


def test_a_private_community_answers_outsiders_as_an_unknown_one(seeded, client, auth):
    alan, = provisioned(client, auth, ("u-alan", False))
    private = sync(client, alan, "c-ops", add=[{"user_id": "u-new"}])
    unknown = sync(client, alan, "c-nope", add=[{"user_id": "u-new"}])
    assert private.status_code == unknown.status_code == 404
    assert json.dumps(private.json).replace("c-ops", "c-nope") == json.dumps(unknown.json)


@pytest.mark.parametrize(("caller", "body", "status", "pointer"), [
    # A community admin may not grant the owner role, nor remove an owner.
    (("u-grace", False), {"add": [{"user_id": "u-a"}, {"user_id": "u-b", "role": "owner"}]}, 403, "/add/1"),
    (("u-grace", False), {"add": [{"user_id": "u-a"}], "remove": ["u-owner"]}, 403, "/remove/0"),
    # An owner may not leave the community without one.
    (("u-owner", False), {"add": [{"user_id": "u-a"}], "remove": ["u-owner"]}, 409, "/remove/0"),
    (("u-owner", False), {"add": [{"user_id": "u-a"}, {"user_id": "u-owner", "role": "admin"}]}, 409, "/add/1"),
])
def test_a_refused_entry_refuses_the_whole_request(seeded, client, auth, caller, body, status, pointer):
    admin, headers = provisioned(client, auth, ADMIN, caller)
    assert sync(client, admin, add=[{"user_id": "u-owner", "role": "owner"}]).status_code == 200
    before = table_dump(seeded)
    response = sync(client, headers, **body)
    problem = assert_problem(response, status)
    assert [error["pointer"] for error in problem["errors"]] == [pointer]
    assert table_dump(seeded) == before


# -- waiting polls ------------------------------------------------------------------


def test_waiting_polls_are_woken_with_the_join_and_the_removal(seeded, client, auth):
    admin, alan, ada = provisioned(client, auth, ADMIN, ("u-alan", False), ("u-ada", False))
    polls = {}
    for name, headers in (("alan", alan), ("ada", ada)):
        cursor, digest = snapshot(client, headers)
        polls[name] = in_background(client, headers, cursor=cursor, hash=digest, timeout=20)
    alan_poll, ada_poll = polls["alan"], polls["ada"]
    assert not alan_poll.ready() and not ada_poll.ready()
    response = sync(client, admin, "c-rust", add=[{"user_id": "u-alan", "role": "moderator"},
                                                  {"user_id": "u-new"}], remove=["u-ada"])
    assert response.status_code == 200
    joined = alan_poll.get(timeout=10).json
    assert joined["status"] == "changed" and joined["added"] == ["c-rust"]
    assert [(c["type"], c["community_id"], c["role"], c["by"]) for c in joined["changes"]] == [
        ("joined", "c-rust", "moderator", "u-admin")]
    left = ada_poll.get(timeout=10).json
    assert left["status"] == "changed" and left["removed"] == ["c-rust"]
    assert [(c["type"], c["community_id"]) for c in left["changes"]] == [("left", "c-rust")]


# -- bad input ----------------------------------------------------------------------


GOOD = [{"user_id": "u-good"}, {"user_id": "u-ada", "role": "admin"}]
DEEP = "[" * 60_000 + "]" * 60_000  # within the larger body limit, past the parser's recursion
BAD_BODIES = [
    # (the body as sent, or a value to send as JSON; status, problem slug, pointers named)
    ("", 422, "invalid-body", None),
    ({}, 422, "invalid-body", None),
    ({"add": [], "remove": []}, 422, "invalid-body", None),
    ("{not json", 400, "malformed-json", None),
    (DEEP, 400, "malformed-json", None),
    ('{"add": %s}' % DEEP, 400, "malformed-json", None),
    ("add=u-1", 400, "malformed-json", None),
    ('"u-1"', 422, "invalid-body", None),
    (7, 422, "invalid-body", None),
    ("null", 400, "malformed-json", None),  # as the other writes answer it
    ([GOOD], 422, "invalid-body", None),
    ({"add": GOOD, "extra": []}, 422, "invalid-body", None),
    ({"add": "u-1"}, 422, "invalid-body", ["/add"]),
    ({"add": GOOD, "remove": {"u-1": True}}, 422, "invalid-body", ["/remove"]),
    ({"add": GOOD + [{"user_id": "u-bad", "role": "emperor"}]}, 422, "invalid-entries", ["/add/2/role"]),
    ({"add": GOOD + [{"user_id": "u-bad", "role": None}]}, 422, "invalid-entries", ["/add/2/role"]),
    ({"add": GOOD + [{"user_id": "u-bad", "role": ["member"]}]}, 422, "invalid-entries", ["/add/2/role"]),
    ({"add": GOOD + [{"role": "member"}]}, 422, "invalid-entries", ["/add/2/user_id"]),
    ({"add": GOOD + [{"user_id": "u" * 65}]}, 422, "invalid-entries", ["/add/2/user_id"]),
    ({"add": GOOD + [{"user_id": "me"}]}, 422, "invalid-entries", ["/add/2/user_id"]),
    ({"add": GOOD + [{"user_id": ".."}]}, 422, "invalid-entries", ["/add/2/user_id"]),
    ({"add": GOOD + [{"user_id": "u\x00"}]}, 422, "invalid-entries", ["/add/2/user_id"]),
    ({"add": GOOD + [{"user_id": 12}, {"user_id": None}, {"user_id": {"id": "u-1"}}]}, 422,
     "invalid-entries", ["/add/2/user_id", "/add/3/user_id", "/add/4/user_id"]),
    ({"add": GOOD + [{"user_id": "u-1", "a/b~": 1}]}, 422, "invalid-entries", ["/add/2/a~1b~0"]),
    ({"add": GOOD + ["u-1", 5, None, [[["nested"]]], True]}, 422, "invalid-entries",
     ["/add/2", "/add/3", "/add/4", "/add/5", "/add/6"]),
    ({"add": GOOD, "remove": ["u-x", 1, 2.5, None, True, {}, [], "u" * 65, "me"]}, 422, "invalid-entries",
     [f"/remove/{index}" for index in range(1, 9)]),
    # Each user named once: not twice in a list, not added and removed.
    ({"add": GOOD + [{"user_id": "u-good", "role": "member"}]}, 422, "invalid-entries", ["/add/2"]),
    ({"add": GOOD, "remove": ["u-ada"]}, 422, "invalid-entries", ["/remove/0"]),
    ({"remove": ["u-1", "u-2", "u-1"]}, 422, "invalid-entries", ["/remove/2"]),
    ({"add": GOOD, "remove": ["u-1"] * 999}, 422, "too-many-entries", None),
    ({"add": [{"user_id": f"u-{i}"} for i in range(1001)]}, 422, "too-many-entries", None),
]


@pytest.mark.parametrize(("body", "status", "slug", "pointers"), BAD_BODIES,
                         ids=[f"{index}" for index in range(len(BAD_BODIES))])
def test_bad_bodies_are_refused_and_change_nothing(seeded, client, auth, body, status, slug, pointers):
    admin, = provisioned(client, auth, ADMIN)
    raw = body if isinstance(body, str) else json.dumps(body)
    before = table_dump(seeded)
    response = client.patch("/communities/c-design/members", data=raw, content_type="application/json",
                            headers=admin)
    problem = assert_problem(response, status)
    assert problem["type"].endswith(f":{slug}"), problem
    if pointers is not None:
        assert [error["pointer"] for error in problem["errors"]] == pointers
        assert all(error["detail"] for error in problem["errors"])
    assert table_dump(seeded) == before


def test_a_body_that_is_not_json_is_unsupported(seeded, client, auth):
    admin, = provisioned(client, auth, ADMIN)
    before = table_dump(seeded)
    response = client.patch("/communities/c-design/members", data='{"remove": ["u-ada"]}',
                            content_type="text/plain", headers=admin)
    assert_problem(response, 415)
    assert table_dump(seeded) == before


def test_every_bad_entry_is_named_up_to_a_hundred(seeded, client, auth):
    admin, = provisioned(client, auth, ADMIN)
    response = sync(client, admin, add=[{"user_id": "u-ok"}] + [{"user_id": i} for i in range(500)])
    problem = assert_problem(response, 422)
    assert problem["detail"].startswith("500 problem(s)")
    assert [e["pointer"] for e in problem["errors"]] == [f"/add/{i}/user_id" for i in range(1, 101)]


# -- size ---------------------------------------------------------------------------


def longest_entries(count):
    """``count`` additions of the longest user ids and role, compact: the largest valid body."""
    return [{"user_id": f"u-{index:062d}", "role": "moderator"} for index in range(count)]


def test_a_thousand_entries_fit_the_larger_body_limit(seeded, client, auth):
    admin, = provisioned(client, auth, ADMIN)
    body = json.dumps({"add": longest_entries(1000)})
    assert 16 * 1024 < len(body) < 128 * 1024
    response = client.patch("/communities/c-design/members", data=body, content_type="application/json",
                            headers=admin)
    assert response.status_code == 200, response.json
    assert response.json == {"created": 1000, "updated": 0, "unchanged": 0, "removed": 0}
    assert len(members(seeded, "c-design")) == 1001


def test_a_chunked_thousand_entries_fit_too(seeded, client, auth):
    admin, = provisioned(client, auth, ADMIN)
    body = json.dumps({"remove": [f"u-{index:062d}" for index in range(1000)]}).encode()
    assert len(body) > 16 * 1024
    response = client.patch(
        "/communities/c-design/members", input_stream=io.BytesIO(body),
        headers={**admin, "Content-Type": "application/json", "Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},
    )
    assert response.status_code == 200, response.json
    assert response.json["unchanged"] == 1000


@pytest.mark.parametrize("chunked", [False, True])
def test_bodies_over_128_kib_are_refused(seeded, client, auth, chunked):
    admin, = provisioned(client, auth, ADMIN)
    body = json.dumps({"add": longest_entries(1000)}, indent=8).encode()
    assert len(body) > 128 * 1024
    before = table_dump(seeded)
    framing = {"input_stream": io.BytesIO(body), "environ_overrides": {"wsgi.input_terminated": True},
               "headers": {**admin, "Content-Type": "application/json", "Transfer-Encoding": "chunked"}}
    if not chunked:
        framing = {"data": body, "content_type": "application/json", "headers": admin}
    assert_problem(client.patch("/communities/c-design/members", **framing), 413)
    assert table_dump(seeded) == before


def test_other_writes_keep_the_16_kib_limit(seeded, client, auth):
    admin, = provisioned(client, auth, ADMIN)
    body = json.dumps({"role": "member", "pad": "x" * 20_000})
    response = client.put("/communities/c-design/members/u-new", data=body,
                          content_type="application/json", headers=admin)
    assert_problem(response, 413)


@pytest.mark.parametrize("backend", [pytest.param("postgres", marks=pytest.mark.postgres)])
@pytest.mark.parametrize("sqlstate", ["40P01", "40001"], ids=["deadlock", "serialization-failure"])
def test_a_batch_rolled_back_by_a_conflict_is_a_retryable_conflict_not_an_outage(
        seeded, client, auth, monkeypatch, caplog, sqlstate):
    """Batches that deadlock (or fail to serialize): PostgreSQL rolls one back, and it may simply retry."""
    from app.store import writes

    def collides(session, *_args):
        # The very error PostgreSQL raises for the batch it picks as the victim.
        session.execute(text(f"DO $$ BEGIN RAISE EXCEPTION 'collided' USING ERRCODE = '{sqlstate}'; END $$"))

    grace, = provisioned(client, auth, ("u-grace", False))
    before = table_dump(seeded)
    monkeypatch.setattr(writes, "sync_memberships", collides)
    response = sync(client, grace, add=[{"user_id": "u-new"}])
    body = assert_problem(response, 503)
    assert body["type"].endswith(":write-conflict") and body["title"] == "Write conflict"
    assert 1 <= int(response.headers["Retry-After"]) <= 5
    assert table_dump(seeded) == before
    logged = " ".join(record.getMessage() for record in caplog.records)
    assert "conflict" in logged and "unavailable" not in logged


@pytest.mark.parametrize("backend", [pytest.param("postgres", marks=pytest.mark.postgres)])
def test_overlapping_batches_given_in_opposite_orders_wait_for_each_other(seeded, client, auth, monkeypatch):
    """Two platform admins' batches (which take no owner lock) lock their rows in user id order.

    The first batch holds the row of its first entry until the second waits
    for it. Taken in the order given, the second would hold the other row by
    then, and PostgreSQL would roll one of them back as a deadlock.
    """
    from app.store import writes

    admin, = provisioned(client, auth, ADMIN)
    assert sync(client, admin, add=[{"user_id": "u-ada"}, {"user_id": "u-alan"}]).status_code == 200
    put_membership = writes.put_membership
    answers, backend_pid = {}, []
    holding, go_on = threading.Event(), threading.Event()

    def holds_its_first_row(session, *args, **kwargs):
        written = put_membership(session, *args, **kwargs)
        if threading.current_thread().name == "first" and not holding.is_set():
            backend_pid.append(session.scalar(text("SELECT pg_backend_pid()")))
            holding.set()
            assert go_on.wait(30)
        return written

    def batch(name, user_ids, role):
        headers = auth("u-admin", admin=True)
        entries = [{"user_id": user_id, "role": role} for user_id in user_ids]
        answers[name] = sync(seeded.test_client(), headers, add=entries)

    monkeypatch.setattr(writes, "put_membership", holds_its_first_row)
    first = threading.Thread(target=batch, args=("first", ["u-ada", "u-alan"], "moderator"), name="first")
    second = threading.Thread(target=batch, args=("second", ["u-alan", "u-ada"], "admin"), name="second")
    first.start()
    try:
        assert holding.wait(10), "the first batch never wrote its first entry"
        second.start()
        until_lock_waited_for(seeded.extensions["db"], backend_pid[0])
    finally:
        go_on.set()
        first.join(30)
        if second.ident is not None:
            second.join(30)
    assert answers["first"].status_code == 200, answers["first"].json
    assert answers["second"].status_code == 200, answers["second"].json
    assert answers["second"].json["updated"] == 2  # it read the first batch's roles, once committed
    assert members(seeded, "c-design") == {"u-ada": "admin", "u-alan": "admin", "u-grace": "admin"}
