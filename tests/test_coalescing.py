"""Coalescing: a burst of activity wakes a waiting user at most once per window, losing nothing."""
from collections import namedtuple

import gevent
import pytest

from app.store import feed
from app.live.coalescing import Coalescing, urgency
from conftest import until_blocked

Row = namedtuple("Row", "id type shared topic collapse public", defaults=(True, None, False, False))


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def activity(n):
    return Row(n, "activity")


def test_activity_within_the_window_is_held_then_released_merged():
    clock = Clock()
    state = Coalescing(1.0, clock)
    assert state.offer("u-ada", [activity(1)]) == [activity(1)]
    assert state.offer("u-ada", [activity(2)]) is None
    clock.now += 0.5
    assert state.offer("u-ada", [activity(3)]) is None
    assert state.due() == [] and state.next_due() == pytest.approx(0.5)
    clock.now += 0.5
    assert state.due() == [("u-ada", [activity(2), activity(3)])]
    # The release was a wake-up: the next activity waits a window again.
    assert state.offer("u-ada", [activity(4)]) is None


def test_urgent_rows_go_at_once_and_take_the_held_rows_with_them():
    state = Coalescing(1.0, Clock())
    state.offer("u-ada", [activity(1)])
    assert state.offer("u-ada", [activity(2)]) is None
    joined = Row(3, "joined")
    # Older held rows first: newer rows never overtake them.
    assert state.offer("u-ada", [joined]) == [activity(2), joined]
    assert state.held == {} and state.due() == []


def test_users_are_held_independently_and_a_zero_window_holds_nothing():
    state = Coalescing(1.0, Clock())
    state.offer("u-ada", [activity(1)])
    assert state.offer("u-grace", [activity(1)]) is not None
    unwindowed = Coalescing(0.0, Clock())
    assert all(unwindowed.offer("u-ada", [activity(n)]) for n in range(5))


def test_rows_a_poll_is_owed_are_held_for_its_window_ahead_of_later_ones():
    clock = Clock()
    state = Coalescing(1.0, clock)
    owed = (activity(1), activity(2))
    state.hold("u-ada", owed)  # no window runs: due at once
    assert state.due() == [("u-ada", owed)]
    clock.now += 0.2
    state.hold("u-ada", (activity(3),))  # answered 0.2 s ago: waits out the window
    assert state.offer("u-ada", [activity(4)]) is None
    assert state.due() == [] and state.next_due() == pytest.approx(0.8)
    clock.now += 0.8
    assert state.due() == [("u-ada", [activity(3), activity(4)])]


def test_users_holding_the_same_rows_are_given_one_list():
    """The members of a fan-out hold the same lists: merged once, worked out from once."""
    clock = Clock()
    state = Coalescing(1.0, clock)
    batch, owed = [activity(3)], (activity(1), activity(2))
    for user in ("u-ada", "u-grace"):
        state.answered(user)  # a window runs
        state.hold(user, owed)
        assert state.offer(user, batch) is None
    clock.now += 1.0
    (_, first), (_, second) = state.due()
    assert first == [activity(1), activity(2), activity(3)] and first is second


def test_rows_taken_by_a_re_read_that_failed_are_held_again_but_those_it_reads_again():
    clock = Clock()
    state = Coalescing(1.0, clock)
    state.offer("u-ada", [activity(1)])
    state.offer("u-ada", [activity(2)])
    clock.now += 1
    # A re-read takes the due rows with a join of its own batch, then fails.
    taken = {"u-ada": state.offer("u-ada", [Row(3, "joined")])}
    assert taken == {"u-ada": [activity(2), Row(3, "joined")]}
    state.hold_again(taken, reread={3})
    clock.now += 1
    assert state.due() == [("u-ada", [activity(2)])]


def test_check_catches_held_urgent_rows(monkeypatch):
    state = Coalescing(1.0, Clock())
    state.woken_at["u-ada"] = 100.0
    state.held["u-ada"] = [[Row(1, "left")]]
    with pytest.raises(AssertionError, match="urgent"):
        state.check()


def answer(state, clock, cost, rows=(Row(1, "activity"),)):
    """An answer to a poll woken with ``rows`` that takes ``cost`` seconds of the worker's time."""
    with state.measure(urgency(list(rows))):
        clock.now += cost


def saturated(clock, windows):
    """A coalescing (1 s, at most 10 s) whose worker answered all the time for ``windows`` windows."""
    state = Coalescing(1.0, clock, ceiling=10.0)
    for _ in range(windows):
        answer(state, clock, state.window)
        state.adapt()
    return state


def test_a_costly_answer_widens_the_next_window_and_a_cheap_one_narrows_it():
    clock = Clock()
    state = Coalescing(1.0, clock, ceiling=10.0)
    answer(state, clock, 0.5)
    clock.now += 0.5
    # Half the worker's time: the window holds.
    assert state.adapt() is False and state.window == 1.0
    answer(state, clock, 1.5)
    # Answering all the time: the window doubles.
    assert state.adapt() is True and state.window == 2.0
    clock.now += 0.5
    answer(state, clock, 1.5)
    # 1.5 s of answers per window of 2 s: a window of 3 s halves it.
    assert state.adapt() is True and state.window == 3.0
    clock.now += 1.5
    answer(state, clock, 0.6)
    assert state.adapt() is False  # not before a window has passed
    clock.now += 0.9
    assert state.adapt() is True and state.window == pytest.approx(1.2)
    clock.now += 1.2
    assert state.adapt() is True and state.window == 1.0  # never below ACTIVITY_COALESCE


def test_the_window_stops_at_its_ceiling_and_a_zero_window_stays_zero():
    clock = Clock()
    assert saturated(clock, 6).window == 10.0
    unwindowed = Coalescing(0.0, clock, ceiling=10.0)
    answer(unwindowed, clock, 60.0)
    assert unwindowed.adapt() is False and unwindowed.window == 0.0


def test_only_answers_of_community_wide_rows_are_measured():
    clock = Clock()
    state = Coalescing(1.0, clock, ceiling=10.0)
    answer(state, clock, 5.0, rows=[Row(1, "joined", False)])
    answer(state, clock, 5.0, rows=[])
    assert state.spent == 0.0 and (state.adapt(), state.window) == (False, 1.0)


def test_a_widened_window_holds_activity_and_never_a_users_own_change():
    clock = Clock()
    state = saturated(clock, 3)
    assert state.window == 8.0
    assert state.offer("u-ada", [activity(1)]) == [activity(1)]
    clock.now += 3  # past the configured window, inside the widened one
    assert state.offer("u-ada", [activity(2)]) is None
    assert state.pause("u-ada", [activity(3)]) > 0
    joined = Row(3, "joined", False)
    assert state.pause("u-ada", [joined]) == 0
    assert state.offer("u-ada", [joined]) == [activity(2), joined]


@pytest.fixture
def hub_app(app_factory):
    app = app_factory(HUB_AUTOSTART=False, SAFETY_NET_INTERVAL=3600, ACTIVITY_COALESCE=1)
    app.test_cli_runner().invoke(args=["seed-demo"])
    return app


def test_a_burst_wakes_a_waiting_member_once_then_once_more_at_the_window_end(hub_app, database):
    hub = hub_app.extensions["hub"]
    clock = Clock()
    hub.reread.coalescing.clock = clock
    with hub.waiting("u-ada") as ticket:
        deliveries = []
        for n in range(10):
            database.psql(f"INSERT INTO activity (community_id, kind, ref) "
                          f"VALUES ('c-python', 'post_created', 'p-{n}')")
            hub.reread.refresh()
            clock.now += 0.05
            deliveries += hub.wait(ticket, 0)
        assert [[row.ref for row in d.rows] for d in deliveries] == [["p-0"]]
        clock.now += 1
        hub.reread.refresh()
        [late] = hub.wait(ticket, 0)
    assert [row.ref for row in late.rows] == [f"p-{n}" for n in range(1, 10)]
    assert late.position.covers(deliveries[0].position)
    assert [c["unread"] for c in late.communities if c["id"] == "c-python"] == [10]


def test_a_re_read_reads_the_states_of_the_users_it_wakes_only(hub_app, database, monkeypatch):
    """In a burst most members are inside their window: their states are not read for nothing."""
    hub = hub_app.extensions["hub"]
    clock = Clock()
    hub.reread.coalescing.clock = clock
    read, read_states = [], feed.read_states

    def spy(connection, users):
        read.append(sorted(users))
        return read_states(connection, users)

    monkeypatch.setattr(feed, "read_states", spy)

    def publish(ref):
        database.psql(f"INSERT INTO activity (community_id, kind, ref) VALUES ('c-python', 'post_created', '{ref}')")
        hub.reread.refresh()

    with hub.waiting("u-ada"), hub.waiting("u-grace"):
        publish("p-0")
        assert read == [["u-ada", "u-grace"]]
        for n in range(1, 5):
            clock.now += 0.1
            publish(f"p-{n}")
        assert read == [["u-ada", "u-grace"]]
        clock.now += 1
        hub.reread.refresh()
        assert read == [["u-ada", "u-grace"]] * 2


def test_a_burst_costs_a_few_answers_and_loses_nothing(app_factory, database, auth):
    app = app_factory(ACTIVITY_COALESCE=1.5, SAFETY_NET_INTERVAL=0.2)
    app.test_cli_runner().invoke(args=["seed-demo"])
    client = app.test_client()
    ada = auth("u-ada")
    body = client.get("/me/communities", headers=ada).json
    cursor, digest = body["cursor"], body["hash"]
    answers, refs = [], []

    def follow():
        nonlocal cursor, digest
        while len(refs) < 20:
            answer = client.get(f"/community-changes/poll?cursor={cursor}&hash={digest}&timeout=10",
                                headers=ada).json
            answers.append(answer["status"])
            cursor, digest = answer["cursor"], answer["hash"]
            refs.extend(c["ref"] for c in answer.get("changes", ()) if c["type"] == "activity")

    follower = until_blocked(app.extensions["hub"], gevent.spawn(follow))
    admin = auth("u-admin", admin=True)
    for n in range(20):
        response = client.post("/communities/c-python/activity",
                               json={"kind": "post_created", "ref": f"p-{n}"}, headers=admin)
        assert response.status_code == 201
        gevent.sleep(0.02)
    follower.get(timeout=20)
    assert refs == [f"p-{n}" for n in range(20)]
    # Twenty wake-ups without coalescing; here the first, the re-polls that
    # read what had committed, and the window's end.
    assert answers.count("changed") <= 5


def test_a_poll_reading_activity_moments_after_an_answer_waits_out_the_window(hub_app, auth):
    """Its own read finds a post: it waits out the window instead of answering at once."""
    hub = hub_app.extensions["hub"]
    client = hub_app.test_client()
    ada, admin = auth("u-ada"), auth("u-admin", admin=True)

    def publish(ref):
        response = client.post("/communities/c-python/activity",
                               json={"kind": "post_created", "ref": ref}, headers=admin)
        assert response.status_code == 201

    def poll(cursor):
        return client.get(f"/community-changes/poll?cursor={cursor}&timeout=10", headers=ada).json

    cursor = client.get("/me/communities", headers=ada).json["cursor"]
    publish("p-0")
    first = poll(cursor)
    assert [c["ref"] for c in first["changes"]] == ["p-0"]
    publish("p-1")
    poller = until_blocked(hub, gevent.spawn(poll, first["cursor"]))
    assert not poller.dead, "answered p-1 at once, moments after the last answer"
    # The hub holds a later post for the same window; nothing is lost.
    publish("p-2")
    hub.reread.refresh()
    second = poller.get(timeout=10)
    assert second["status"] == "changed"
    assert [c["ref"] for c in second["changes"]] == ["p-1"]
    third = poll(second["cursor"])
    assert [c["ref"] for c in third["changes"]] == ["p-2"]
    assert [c["unread"] for c in third["communities"] if c["id"] == "c-python"] == [3]


def test_a_join_ends_the_pause_at_once(hub_app, auth, database):
    hub = hub_app.extensions["hub"]
    client = hub_app.test_client()
    ada, admin = auth("u-ada"), auth("u-admin", admin=True)
    hub.reread.coalescing = Coalescing(3600)
    cursor = client.get("/me/communities", headers=ada).json["cursor"]
    client.post("/communities/c-python/activity", json={"kind": "post_created", "ref": "p-0"},
                headers=admin)
    first = client.get(f"/community-changes/poll?cursor={cursor}&timeout=10", headers=ada).json
    client.post("/communities/c-python/activity", json={"kind": "post_created", "ref": "p-1"},
                headers=admin)
    poller = until_blocked(hub, gevent.spawn(
        lambda: client.get(f"/community-changes/poll?cursor={first['cursor']}&timeout=10",
                           headers=ada).json))
    database.psql("INSERT INTO memberships (user_id, community_id) VALUES ('u-ada', 'c-go')")
    hub.reread.refresh()
    answer = poller.get(timeout=10)
    assert [(c["type"], c.get("ref")) for c in answer["changes"]] == [
        ("activity", "p-1"), ("joined", None)]


def test_a_re_read_sets_the_window_from_what_answers_cost_and_shows_it(hub_app, auth, monkeypatch):
    """A poll woken with activity, answered in its greenlet at a cost: the next re-read widens the window."""
    hub = hub_app.extensions["hub"]
    registry = hub_app.extensions["metrics"].registry
    clock = Clock()
    hub.reread.coalescing = Coalescing(1.0, clock, ceiling=10.0)
    client = hub_app.test_client()
    ada, admin = auth("u-ada"), auth("u-admin", admin=True)
    conclude = hub.conclude

    def costly(*args):
        clock.now += 1.5
        return conclude(*args)

    monkeypatch.setattr(hub, "conclude", costly)
    cursor = client.get("/me/communities", headers=ada).json["cursor"]
    poller = until_blocked(hub, gevent.spawn(
        lambda: client.get(f"/community-changes/poll?cursor={cursor}&timeout=10", headers=ada).json))
    client.post("/communities/c-python/activity", json={"kind": "post_created", "ref": "p-0"},
                headers=admin)
    hub.reread.refresh()
    assert [c["ref"] for c in poller.get(timeout=10)["changes"]] == ["p-0"]
    assert hub.reread.coalescing.spent == 1.5
    # Answering took all of the 1.5 s since the window began: the next re-read doubles it.
    hub.reread.refresh()
    assert hub.reread.coalescing.window == 2.0
    assert registry.get_sample_value("community_sync_activity_coalesce_seconds") == 2.0
