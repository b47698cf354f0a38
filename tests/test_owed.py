"""What a worker owes its waiting polls (app/live/owed.py): the oldest-owed-change gauge."""
import gevent
import pytest

from app.live.owed import Owed
from app.store import feed
from conftest import eventually

AGO = 30  # how old a backdated change is, in seconds


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


class Gauge:
    """Notes every value written."""

    def __init__(self):
        self.values = []

    def set(self, value):
        self.values.append(value)


def test_the_oldest_change_owed_to_anyone_is_what_ages():
    clock, gauge = Clock(), Gauge()
    owed = Owed(gauge, clock)
    owed.owe("u-ada", 990.0)
    owed.owe("u-ada", 995.0)  # newer: the user is still owed since 990
    owed.owe("u-grace", 993.0)
    assert owed.oldest() == 990.0 and owed.age() == 10.0
    owed.paid("u-ada")
    assert owed.oldest() == 993.0
    owed.owe("u-ada", 998.0)  # owed again, newer than what was paid
    assert owed.oldest() == 993.0
    owed.paid("u-grace")
    assert owed.oldest() == 998.0 and gauge.values == []  # written only on report...
    owed.paid("u-ada")
    assert gauge.values == []  # ...or, once something was reported, when the last debt is paid
    owed.owe("u-ada", 990.0)
    owed.report()
    owed.paid("u-ada")
    assert gauge.values == [10.0, 0.0] and owed.oldest() is None


def test_a_report_of_nothing_owed_is_written_once():
    gauge = Gauge()
    owed = Owed(gauge, Clock())
    owed.report()
    owed.report()
    assert gauge.values == []
    owed.owe("u-ada", 999.0)
    owed.report()
    owed.paid("u-ada")
    owed.report()
    assert gauge.values == [1.0, 0.0]


def test_a_hint_is_owed_until_a_re_read_has_read_it_and_a_failed_one_keeps_it():
    clock = Clock()
    owed = Owed(Gauge(), clock)
    owed.hint()
    clock.now += 1
    owed.hint()  # the first hint dates what is unread
    clock.now += 1
    assert owed.age() == 2.0
    owed.read_begins()
    owed.hint()  # during the read: for the next one
    assert owed.age() == 2.0
    owed.read_ends(failed=True)
    assert owed.age() == 2.0
    owed.read_begins()
    owed.read_ends()
    assert owed.age() == 0.0


def test_while_anything_is_owed_the_age_is_reported_as_it_grows():
    clock, gauge = Clock(), Gauge()
    owed = Owed(gauge, clock, interval=0.01)
    greenlet = owed.start()
    try:
        owed.owe("u-ada", 995.0)
        assert eventually(lambda: gauge.values and gauge.values[-1] == 5.0, 5)
        clock.now += 10
        assert eventually(lambda: gauge.values[-1] == 15.0, 5)
        owed.paid("u-ada")
        written = len(gauge.values)
        gevent.sleep(0.05)
        assert gauge.values[-1] == 0.0 and len(gauge.values) == written  # 0, once
    finally:
        greenlet.kill()


# -- the hub's re-read ------------------------------------------------------------------


@pytest.fixture
def hub_app(app_factory):
    app = app_factory(HUB_AUTOSTART=False, SAFETY_NET_INTERVAL=3600, ACTIVITY_COALESCE=3600)
    app.test_cli_runner().invoke(args=["seed-demo"])
    return app


def owed_gauge(app):
    return app.extensions["metrics"].registry.get_sample_value("community_sync_oldest_owed_change_seconds")


def test_news_delivered_is_owed_until_its_poll_leaves(hub_app, database):
    hub = hub_app.extensions["hub"]
    with hub.waiting("u-ada") as ticket:
        database.backdated_activity("c-rust", "p-old", AGO)
        hub.reread.refresh()
        assert owed_gauge(hub_app) >= AGO  # delivered, not yet answered
        [news] = hub.wait(ticket, 0)
        assert [row.ref for row in news.rows] == ["p-old"]
    assert owed_gauge(hub_app) == 0


def test_activity_held_for_a_coalescing_window_is_owed(hub_app, database):
    hub = hub_app.extensions["hub"]
    with hub.waiting("u-ada") as ticket:
        database.psql("INSERT INTO activity (community_id, kind, ref) VALUES ('c-rust', 'post_created', 'p-0')")
        hub.reread.refresh()
        assert len(hub.wait(ticket, 0)) == 1
        hub.owed.paid("u-ada")  # as the poll's answer would: the window starts
        assert owed_gauge(hub_app) == 0
        database.backdated_activity("c-rust", "p-old", AGO)
        hub.reread.refresh()
        assert hub.wait(ticket, 0) == []  # held, not delivered
        assert owed_gauge(hub_app) >= AGO
    assert owed_gauge(hub_app) == 0


def test_a_re_read_that_fails_leaves_its_hint_owed(hub_app, monkeypatch):
    hub = hub_app.extensions["hub"]

    def lost(*_args):
        raise RuntimeError("the database went away")

    with hub.waiting("u-ada"):
        hub.reread.notify()
        hinted = hub.owed.hinted
        with monkeypatch.context() as patched:
            patched.setattr(feed, "read_news", lost)
            with pytest.raises(RuntimeError):
                hub.reread.refresh()
        assert hub.owed.hinted == hinted and hub.owed.age() > 0
        hub.reread.refresh()
        assert hub.owed.age() == 0


def test_a_hint_is_owed_only_while_someone_waits(hub_app):
    hub = hub_app.extensions["hub"]
    hub.reread.notify()
    assert hub.owed.hinted is None
    with hub.waiting("u-ada"):
        hub.reread.notify()
        assert hub.owed.hinted is not None
        hub.reread.refresh()
        assert hub.owed.hinted is None and owed_gauge(hub_app) == 0
