"""Cursors are signed, and no cursor opens a community's past (app/store/cursors.py, app/store/feed.py).

Two defences, each tested on its own: a cursor the service did not issue is
refused, or answered with a reset (``CursorKey``); and which community rows a
user receives is decided from the change log (its joins and departures),
never from where the cursor says its range starts. The second is tested with
cursors signed with the server's own key, as if the key had leaked.
"""
import base64
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from app.store import cursors

POSTGRES_ONLY = pytest.mark.parametrize("backend", [pytest.param("postgres", marks=pytest.mark.postgres)])
FORGERIES = ["unsigned", "signed with the server's key"]


def unsigned(epoch, token):
    """A cursor as this service wrote them before signing, and as anyone can write one."""
    return base64.urlsafe_b64encode(f"1|{epoch}|{token}".encode()).decode().rstrip("=")


def forger(app, epoch, forgery):
    """``token -> cursor text`` for a position text (``x1:5:3`` or ``s7``), as ``forgery`` makes them."""
    key = app.extensions["cursor_key"]

    def forge(token):
        if forgery == "unsigned":
            return unsigned(epoch, token)
        return key.encode(cursors.Cursor(epoch, cursors.parse_position(token[1:])))

    return forge


def write(app, sql, **params):
    with app.extensions["db"].begin() as connection:
        connection.execute(text(sql), params)


def rows(app, sql, **params):
    with app.extensions["db"].connect() as connection:
        return connection.execute(text(sql), params).all()


def epoch_of(app, client, headers):
    return app.extensions["cursor_key"].decode(client.get("/me/communities", headers=headers).json["cursor"]).epoch


def activity_refs(response):
    body = response.get_json()
    return {change["ref"] for change in body.get("changes", []) if change["type"] == "activity"}


@POSTGRES_ONLY
@pytest.mark.parametrize("forgery", FORGERIES)
def test_a_member_cannot_bisect_and_forge_a_cursor_into_activity_from_before_it_joined(
        seeded, client, auth, forgery):
    """The attack as found: bisect the join's transaction id, then mark it seen and earlier ones not."""
    alan = auth("u-alan")
    for n in range(3):
        write(seeded, f"INSERT INTO activity (community_id, kind, ref) VALUES ('c-design', 'post_created', 'p-before-{n}')")
    assert client.put("/communities/c-design/members/u-alan", headers=auth("u-grace")).status_code == 201
    (joined,) = rows(seeded, "SELECT xid FROM changes WHERE user_id = 'u-alan' AND type = 'joined' "
                             "AND community_id = 'c-design'")
    forge = forger(seeded, epoch_of(seeded, client, alan), forgery)

    def poll(token):
        return client.get("/community-changes/poll", headers=alan,
                          query_string={"timeout": 0, "cursor": forge(token)})

    def sees_join(bound):
        changes = poll(f"x{bound}:{bound}:").get_json().get("changes", [])
        return any(c["type"] == "joined" and c["community_id"] == "c-design" for c in changes)

    if sees_join(1):
        low, high = 1, 2**40
        while low < high:
            middle = (low + high + 1) // 2
            low, high = (middle, high) if sees_join(middle) else (low, middle - 1)
        assert low == joined.xid  # the probe works: what is read must not depend on it
    else:
        assert forgery == "unsigned"  # refused or reset: the probe learns nothing

    earlier = sorted(r.xid for r in rows(seeded, "SELECT xid FROM changes WHERE community_id = 'c-design' "
                                                 "AND type = 'activity'"))
    answer = poll(f"x{earlier[0]}:{joined.xid + 1}:{','.join(map(str, earlier))}")
    assert answer.status_code in (200, 400)
    assert activity_refs(answer) == set()


@POSTGRES_ONLY
@pytest.mark.parametrize("forgery", FORGERIES)
def test_a_forged_cursor_brings_no_activity_from_while_the_user_was_removed(seeded, client, auth, forgery):
    alan, admin = auth("u-alan"), auth("u-admin", admin=True)
    write(seeded, "INSERT INTO activity (community_id, kind, ref) VALUES ('c-go', 'post_created', 'p-member')")
    assert client.delete("/communities/c-go/members/u-alan", headers=admin).status_code == 204
    for n in range(2):
        write(seeded, f"INSERT INTO activity (community_id, kind, ref) VALUES ('c-go', 'post_created', 'p-away-{n}')")
    assert client.put("/communities/c-go/members/u-alan", headers=admin).status_code == 201
    away = sorted(r.xid for r in rows(seeded, "SELECT xid FROM changes WHERE ref LIKE 'p-away-%'"))
    (head,) = rows(seeded, "SELECT max(xid) AS xid FROM changes")
    forge = forger(seeded, epoch_of(seeded, client, alan), forgery)
    # Everything seen (the removal and the return included) but the activity of the window.
    answer = client.get("/community-changes/poll", headers=alan, query_string={
        "timeout": 0, "cursor": forge(f"x{away[0]}:{head.xid + 1}:{','.join(map(str, away))}")})
    assert answer.status_code in (200, 400)
    assert activity_refs(answer) == set()


@pytest.mark.parametrize("text_of", [
    lambda key, cursor: unsigned(cursor.epoch, cursor.position.token()),
    lambda key, cursor: cursors.CursorKey("the key before it was rotated").encode(cursor),
])
def test_a_cursor_from_before_signing_or_from_another_key_is_answered_with_a_reset(
        seeded, client, auth, text_of):
    """Clients in the field keep working: one reset, with the full state, then signed cursors."""
    ada = auth("u-ada")
    snapshot = client.get("/me/communities", headers=ada).json
    cursor = seeded.extensions["cursor_key"].decode(snapshot["cursor"])
    answer = client.get("/community-changes/poll", headers=ada,
                        query_string={"timeout": 0, "cursor": text_of(None, cursor), "hash": snapshot["hash"]})
    assert answer.status_code == 200
    assert answer.json["status"] == "reset" and "changes" not in answer.json
    assert answer.json["communities"] == snapshot["communities"]
    again = client.get("/community-changes/poll", headers=ada,
                       query_string={"timeout": 0, "cursor": answer.json["cursor"], "hash": answer.json["hash"]})
    assert again.json["status"] == "unchanged"


def test_a_tampered_cursor_is_refused(seeded, client, auth):
    ada = auth("u-ada")
    issued = client.get("/me/communities", headers=ada).json["cursor"]
    raw = base64.urlsafe_b64decode(issued + "==").decode()
    version, epoch, token, key_id, signature = raw.split("|")
    moved = token[0] + str((int(token[1]) + 1) % 10) + token[2:]
    tampered = base64.urlsafe_b64encode("|".join((version, epoch, moved, key_id, signature)).encode()).decode()
    answer = client.get("/community-changes/poll", headers=ada, query_string={"timeout": 0, "cursor": tampered})
    assert answer.status_code == 400
    assert answer.json["type"].endswith("invalid-cursor")


# -- the property ------------------------------------------------------------------

STEPS = st.lists(st.sampled_from(["activity", "join", "activity", "leave", "activity", "join", "removal"]),
                 min_size=1, max_size=10)
FORMS = st.sampled_from(["signed", "signed", "signed", "unsigned", "another epoch", "another key"])


@pytest.fixture
def unlimited(app_factory):
    """An app whose writes are not rate limited: every example writes a dozen times."""
    return app_factory(RATELIMIT_WRITES="1000000 per minute", RATELIMIT_PLATFORM_WRITES="1000000 per minute")


def test_no_cursor_brings_a_row_from_outside_the_users_membership_periods(unlimited, auth, backend):
    """Any membership history, then a poll with any cursor: only activity from while the user was a member.

    Each example makes a community and a user of its own, lives through a
    history of joins, departures, removals by an admin, re-joins and
    activity (and perhaps the community's deletion), noting which activity
    was written while the user was a member; then polls with a cursor drawn
    from the example's own ids or transaction ids, signed with the server's
    key or not. Whatever it sends, the answer carries no other activity.
    """
    app, client = unlimited, unlimited.test_client()
    key = app.extensions["cursor_key"]
    admin = auth("u-admin", admin=True)
    epoch = epoch_of(app, client, admin)
    serial = itertools.count()
    number_column = "xid" if backend == "postgres" else "id"

    @settings(max_examples=100, deadline=None)
    @given(steps=STEPS, deleted=st.booleans(), form=FORMS, data=st.data())
    def check(steps, deleted, form, data):
        n = next(serial)
        user, community = f"u-p{n}", f"c-p{n}"
        member_path = f"/communities/{community}/members/{user}"
        created = client.post("/communities", headers=admin, json={"id": community, "slug": f"p{n}", "name": "P"})
        assert created.status_code == 201
        member, entitled = False, set()
        for index, step in enumerate(steps):
            if step == "activity":
                write(app, "INSERT INTO activity (community_id, kind, ref) VALUES (:c, 'post_created', :r)",
                      c=community, r=f"a-{index}")
                if member:
                    entitled.add(f"a-{index}")
            elif step == "join":
                assert client.put(member_path, headers=admin).status_code in (200, 201)
                member = True
            elif step == "leave":
                assert client.delete(f"/communities/{community}/members/me", headers=auth(user)).status_code == 204
                member = False
            else:
                assert client.delete(member_path, headers=admin).status_code == 204
                member = False
        if deleted:
            assert client.delete(f"/communities/{community}", headers=admin).status_code == 204

        found = [r[0] for r in rows(app, f"SELECT {number_column} FROM changes "
                                         "WHERE community_id = :c OR user_id = :u", c=community, u=user)]
        # Drawn as indexes into the example's own numbers (each one, or just
        # past it), whatever they are: the choices keep their shape from one
        # example to the next, and land on the rows that matter.
        numbers = sorted(found) or [1]
        near = st.tuples(st.integers(0, 15), st.integers(0, 1)).map(
            lambda pick: numbers[pick[0] % len(numbers)] + pick[1])
        if backend == "postgres":
            xmin, xmax = sorted((data.draw(near), data.draw(near)))
            # Each of the example's transactions in progress, or not.
            picked = data.draw(st.lists(st.booleans(), min_size=16, max_size=16))
            xip = {x for x, pick in zip(numbers, picked) if pick and xmin <= x < xmax}
            position = cursors.SnapshotPosition(xmin, xmax, frozenset(xip))
        else:
            position = cursors.SequencePosition(data.draw(near) - 1)
        cursor = cursors.Cursor(epoch, position)
        sent = {
            "signed": lambda: key.encode(cursor),
            "unsigned": lambda: unsigned(epoch, position.token()),
            "another epoch": lambda: key.encode(cursors.Cursor("0123456789abcdef", position)),
            "another key": lambda: cursors.CursorKey("another key").encode(cursor),
        }[form]()

        answer = client.get("/community-changes/poll", headers=auth(user),
                            query_string={"timeout": 0, "cursor": sent})
        assert answer.status_code == 200, answer.get_data(as_text=True)
        body = answer.get_json()
        if form != "signed":
            assert body["status"] == "reset" and "changes" not in body
        for change in body.get("changes", []):
            assert change["type"] != "notification"
            if change["type"] == "activity":
                assert change["community_id"] == community
                assert change["ref"] in entitled, (steps, position, change)

    check()
