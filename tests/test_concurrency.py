"""Simultaneous writes against a real gunicorn with several workers: only the contract's answers.

Each scenario sends N requests at once (tests/concurrency.py) that compete for
one key, then checks the statuses (no 5xx, exactly one winner where there is
one) and that the database holds exactly what the winners wrote.
"""
from collections import Counter

import pytest
from sqlalchemy import create_engine, text

from app.store.db import normalize_url
from concurrency import Call, at_once
from conftest import bearer

pytestmark = pytest.mark.slow

N = 20
ADMIN = bearer("u-root", admin=True)


def admins():
    """Headers of N distinct platform admins."""
    return [bearer(f"u-admin-{i}", admin=True) for i in range(N)]


def rows(engine, sql, **params):
    with engine.connect() as connection:
        return [tuple(row) for row in connection.execute(text(sql), params).all()]


def tally(answers):
    """Counter of (status, problem type or None): what the crowd was answered."""
    return Counter((answer.status, answer.problem_type) for answer in answers)


@pytest.fixture
def crowd(server_factory, database):
    """A server of several workers with room for bursts of writes, a database engine, and N communities."""
    server = server_factory(database, workers=3, RATELIMIT_WRITES="100000 per minute")
    engine = create_engine(normalize_url(database.url))
    created = at_once(server.url, [
        Call("POST", "/communities", ADMIN, {"id": f"c-{i}", "slug": f"s-{i}", "name": f"C {i}"})
        for i in range(N)
    ])
    assert tally(created) == {(201, None): N}, created
    yield server, engine
    engine.dispose()


def test_creates_of_one_id_or_one_slug_have_one_winner(crowd):
    server, engine = crowd
    same_id = at_once(server.url, [
        Call("POST", "/communities", ADMIN, {"id": "c-race", "slug": f"race-{i}", "name": "Race"})
        for i in range(N)
    ])
    assert tally(same_id) == {(201, None): 1, (409, "id-taken"): N - 1}, same_id
    winner = next(answer.body for answer in same_id if answer.status == 201)
    assert rows(engine, "SELECT id, slug FROM communities WHERE id = 'c-race' OR slug LIKE 'race-%'") == [
        ("c-race", winner["slug"])
    ]

    same_slug = at_once(server.url, [
        Call("POST", "/communities", ADMIN, {"id": f"c-slug-{i}", "slug": "wanted", "name": "Wanted"})
        for i in range(N)
    ])
    assert tally(same_slug) == {(201, None): 1, (409, "slug-taken"): N - 1}, same_slug
    winner = next(answer.body for answer in same_slug if answer.status == 201)
    assert rows(engine, "SELECT id FROM communities WHERE slug = 'wanted' OR id LIKE 'c-slug-%'") == [
        (winner["id"],)
    ]

    renames = at_once(server.url, [
        Call("PATCH", f"/communities/c-{i}", ADMIN, {"slug": "renamed"}) for i in range(N)
    ])
    assert tally(renames) == {(200, None): 1, (409, "slug-taken"): N - 1}, renames
    winner = next(answer.body for answer in renames if answer.status == 200)
    assert rows(engine, "SELECT id FROM communities WHERE slug = 'renamed'") == [(winner["id"],)]
    assert len(rows(engine, "SELECT id FROM communities WHERE slug LIKE 's-%'")) == N - 1


def test_one_new_user_added_everywhere_and_one_membership_put_and_deleted(crowd):
    server, engine = crowd
    # N admins add the same unseen user to N communities: each provisions it.
    added = at_once(server.url, [
        Call("PUT", f"/communities/c-{i}/members/u-fresh", headers) for i, headers in enumerate(admins())
    ])
    assert tally(added) == {(201, None): N}, added
    assert rows(engine, "SELECT id FROM users WHERE id = 'u-fresh'") == [("u-fresh",)]
    assert len(rows(engine, "SELECT community_id FROM memberships WHERE user_id = 'u-fresh'")) == N

    # The same user's own first requests, at once, while it is still unseen.
    fresh = bearer("u-first")
    first = at_once(server.url, [Call("GET", "/me/communities", fresh) for _ in range(N)])
    assert tally(first) == {(200, None): N}, first
    assert rows(engine, "SELECT id FROM users WHERE id = 'u-first'") == [("u-first",)]

    put = at_once(server.url, [
        Call("PUT", "/communities/c-0/members/u-same", ADMIN, {"role": "moderator"}) for _ in range(N)
    ])
    assert tally(put) == {(201, None): 1, (200, None): N - 1}, put
    assert rows(engine, "SELECT role FROM memberships WHERE user_id = 'u-same'") == [("moderator",)]

    deleted = at_once(server.url, [Call("DELETE", "/communities/c-0/members/u-same", ADMIN)] * N)
    assert tally(deleted) == {(204, None): N}, deleted
    assert rows(engine, "SELECT role FROM memberships WHERE user_id = 'u-same'") == []
    # Idempotent: one join and one leave recorded, however many asked.
    assert rows(engine, "SELECT type FROM changes WHERE user_id = 'u-same' ORDER BY id") == [
        ("joined",), ("left",)
    ]
