"""The demo page and the browser client in a real Chromium against a real gunicorn.

Every test starts its own server on a fresh SQLite file (see browser_support). Waits
are generous on purpose: these tests prove that things happen without a reload, not
how fast; the observed latency is printed for the curious.
"""

import json
import re
import sqlite3
import subprocess
import time
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.sync_api import expect

from browser_support import (BIN, LAYOUT_PROBLEMS, LAYOUT_WIDTHS, QUICK_PRESENCE, ROOT, Server, StaticSite,
                             demo_scene)

pytestmark = pytest.mark.browser

WAIT = 10_000  # ms; a change normally shows in well under a second
RECOVER = 30_000  # ms; reconnecting after an outage includes a backoff of up to 8 s


@pytest.fixture
def start_server(tmp_path):
    """Start servers with options; stop them and show their logs after the test."""
    servers = []

    def start(env=(), **options):
        server = Server(tmp_path, **options)
        server.env.update(env)
        server.seed()
        servers.append(server.start())
        return server

    yield start
    for server in servers:
        server.stop()
        print(f"--- gunicorn log ({server.url}) ---\n{server.log()[-4000:]}")


@pytest.fixture
def server(start_server):
    return start_server()


@pytest.fixture
def context(browser, start_server):
    # Depends on start_server so that it closes first: pages go, then servers stop.
    context = browser.new_context(viewport={"width": 1280, "height": 820})
    yield context
    context.close()


class Tab:
    """One page of the demo, with the poll requests it sent and any script errors."""

    def __init__(self, context, server, user="u-ada"):
        self.page = context.new_page()
        self.polls = []
        self.errors = []
        self.page.on("request", self._on_request)
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.goto(f"{server.url}/?user={user}")

    def _on_request(self, request):
        if "/community-changes/poll" in request.url:
            self.polls.append(request.url)

    def community(self, community_id):
        return self.page.locator(f'#my-communities li[data-community-id="{community_id}"]')

    def expect_live(self):
        expect(self.page.locator("#status")).to_have_attribute("data-status", "live", timeout=WAIT)

    def is_leader(self):
        return self.page.locator("#tab-role").get_attribute("data-leader") == "true"

    def unread(self, community_id):
        """The community's "N new" badge in the sidebar (hidden when nothing is unread)."""
        return self.community(community_id).locator(".unread")

    def publish(self, button, community_id, ref):
        """Publish a post_created through the page's platform panel, with ``button``."""
        page = self.page
        option = page.locator(f'#platform-community option[value="{community_id}"]')
        expect(option).to_be_attached(timeout=WAIT)
        page.select_option("#platform-community", community_id)
        page.fill("#platform-kind", "post_created")
        page.fill("#platform-ref", ref)
        page.click(button)
        published = f"Published post_created {ref} in {community_id}"
        expect(page.locator("#platform-result")).to_contain_text(published, timeout=WAIT)

    def notify(self, user_id, ref):
        """Send a mention (the notify form's own kind) to ``user_id`` through the platform panel."""
        page = self.page
        expect(page.locator(f'#platform-user option[value="{user_id}"]')).to_be_attached(timeout=WAIT)
        page.select_option("#platform-user", user_id)
        page.fill("#notify-ref", ref)
        page.click("#platform-notify")
        sent = f"Sent mention {ref} to {user_id}"
        expect(page.locator("#notify-result")).to_contain_text(sent, timeout=WAIT)

    def open_thread(self, community_id, thread="t-1"):
        """Open a thread of ``community_id`` in the page's thread panel."""
        page = self.page
        expect(page.locator(f'#thread-community option[value="{community_id}"]')).to_be_attached(timeout=WAIT)
        page.select_option("#thread-community", community_id)
        page.fill("#thread-id", thread)
        page.click("#thread-open")
        expect(page.locator("#thread-title")).to_contain_text(f"thread:{thread}")

    def post(self, ref):
        """A post of the open thread: its first one, or a reply shown."""
        return self.page.locator(f'#thread-posts li[data-post-id="{ref}"]')

    def follow_story(self, community_id, story="s-1"):
        page = self.page
        expect(page.locator(f'#story-community option[value="{community_id}"]')).to_be_attached(timeout=WAIT)
        page.select_option("#story-community", community_id)
        page.fill("#story-id", story)
        page.click("#story-follow")
        expect(page.locator("#story-title")).to_contain_text(f"story:{story}")


def wait_polled(tabs, watch):
    """Wait until a poll of one user's ``tabs`` (their leader polls for them all) carries ``watch``.

    From then on the topic's activity reaches them: the poll resumes from the cursor
    the last answer left, so a publication after this point is never missed.
    """
    deadline = time.monotonic() + WAIT / 1000
    while time.monotonic() < deadline:
        if any(watch in parse_qs(urlsplit(url).query).get("watch", []) for tab in tabs for url in tab.polls):
            return
        tabs[0].page.wait_for_timeout(100)
    raise AssertionError(f"no poll of {len(tabs)} tab(s) carried {watch}")


def test_admin_change_reaches_the_sidebar_without_reload(context, server):
    tab = Tab(context, server)
    tab.expect_live()
    expect(tab.community("c-rust")).to_be_visible()
    expect(tab.community("c-python")).to_be_visible()
    expect(tab.community("c-go")).to_have_count(0)
    navigations = []
    tab.page.on("framenavigated", lambda frame: navigations.append(frame.url))

    started = time.monotonic()
    server.put_member("c-go", "u-ada")
    expect(tab.community("c-go")).to_be_visible(timeout=WAIT)
    latency = time.monotonic() - started
    print(f"admin PUT -> sidebar shows c-go: {latency * 1000:.0f} ms")

    expect(tab.community("c-go").locator(".badge")).to_have_text("member")
    server.put_member("c-go", "u-ada", role="moderator")
    expect(tab.community("c-go").locator(".badge")).to_have_text("moderator", timeout=WAIT)
    server.delete_member("c-rust", "u-ada")
    expect(tab.community("c-rust")).to_have_count(0, timeout=WAIT)
    assert navigations == []
    assert tab.errors == []


def test_one_tab_polls_and_the_other_takes_over_when_it_closes(context, server):
    first = Tab(context, server)
    first.expect_live()
    second = Tab(context, server)
    expect(second.community("c-python")).to_be_visible(timeout=WAIT)
    expect(second.page.locator("#status")).to_have_attribute("data-status", "live")
    assert first.is_leader() and not second.is_leader()

    server.put_member("c-go", "u-ada")
    server.delete_member("c-rust", "u-ada")
    for tab in (first, second):
        expect(tab.community("c-go")).to_be_visible(timeout=WAIT)
        expect(tab.community("c-rust")).to_have_count(0, timeout=WAIT)
    assert len(first.polls) >= 2
    assert second.polls == []

    first.page.close()
    expect(second.page.locator("#tab-role")).to_have_attribute("data-leader", "true", timeout=WAIT)
    server.put_member("c-design", "u-ada", role="admin")
    expect(second.community("c-design")).to_be_visible(timeout=WAIT)
    expect(second.community("c-go")).to_be_visible()
    assert second.polls, "the remaining tab never polled after the leader closed"
    second.expect_live()
    assert first.errors == [] and second.errors == []


def test_join_in_one_tab_shows_in_the_other(context, server):
    leader = Tab(context, server)
    leader.expect_live()
    follower = Tab(context, server)
    expect(follower.community("c-rust")).to_be_visible(timeout=WAIT)

    # Joined from the tab that does not poll: the write goes to the server and comes
    # back to both tabs through the leader's poll.
    follower.page.locator('#public-communities button[data-join="c-go"]').click()
    for tab in (leader, follower):
        expect(tab.community("c-go")).to_be_visible(timeout=WAIT)

    leader.page.locator('#my-communities button[data-leave="c-rust"]').click()
    for tab in (leader, follower):
        expect(tab.community("c-rust")).to_have_count(0, timeout=WAIT)
    assert follower.polls == []
    assert leader.errors == [] and follower.errors == []


def test_catches_up_with_changes_made_while_the_server_was_down(context, server):
    tab = Tab(context, server)
    tab.expect_live()
    expect(tab.community("c-rust")).to_be_visible()

    server.stop()
    expect(tab.page.locator("#status")).to_have_attribute(
        "data-status", _one_of("reconnecting", "offline"), timeout=RECOVER
    )
    # Another writer changes the database while no server is running; the triggers
    # record it like any API write.
    with sqlite3.connect(server.db_path) as db:
        db.execute("INSERT INTO memberships (user_id, community_id, role) VALUES ('u-ada', 'c-go', 'member')")
        db.execute("DELETE FROM memberships WHERE user_id = 'u-ada' AND community_id = 'c-rust'")
    db.close()
    expect(tab.community("c-go")).to_have_count(0)

    server.start()
    expect(tab.community("c-go")).to_be_visible(timeout=RECOVER)
    expect(tab.community("c-rust")).to_have_count(0)
    tab.expect_live()

    # And it is live again, not just caught up once.
    server.put_member("c-ops", "u-ada")
    expect(tab.community("c-ops")).to_be_visible(timeout=WAIT)
    assert tab.errors == []


@pytest.mark.parametrize("button", ["#platform-http", "#platform-sql"], ids=["http", "sql"])
def test_published_activity_raises_the_badge_of_members_only(context, server, button):
    # The platform panel of a third user's page publishes; Ada is in Rust and
    # Python, Grace in Python only (the demo data).
    platform = Tab(context, server, user="u-alan")
    ada = Tab(context, server, user="u-ada")
    grace = Tab(context, server, user="u-grace")
    for tab in (platform, ada, grace):
        tab.expect_live()
    expect(ada.unread("c-rust")).to_be_hidden()
    expect(ada.unread("c-python")).to_be_hidden()
    expect(grace.unread("c-python")).to_be_hidden()

    platform.publish(button, "c-rust", "p-rust-1")
    expect(ada.unread("c-rust")).to_have_text("1 new", timeout=WAIT)
    platform.publish(button, "c-python", "p-python-1")
    expect(ada.unread("c-python")).to_have_text("1 new", timeout=WAIT)
    expect(grace.unread("c-python")).to_have_text("1 new", timeout=WAIT)
    platform.publish(button, "c-rust", "p-rust-2")
    expect(ada.unread("c-rust")).to_have_text("2 new", timeout=WAIT)
    platform.publish(button, "c-python", "p-python-2")
    expect(grace.unread("c-python")).to_have_text("2 new", timeout=WAIT)

    # Grace has answered after both of Rust's posts: they never reached her.
    expect(grace.community("c-rust")).to_have_count(0)
    expect(grace.page.locator("#my-communities .unread:visible")).to_have_count(1)
    expect(grace.page.locator("#log")).not_to_contain_text("p-rust")
    expect(ada.page.locator("#log")).to_contain_text("post_created p-rust-2 in Rust")
    expect(ada.unread("c-rust")).to_have_text("2 new")
    # Nor the publisher's own sidebar: Alan is in neither community.
    expect(platform.page.locator("#my-communities .unread:visible")).to_have_count(0)
    expect(platform.page.locator("#log")).not_to_contain_text("post_created")
    for tab in (platform, ada, grace):
        assert tab.errors == []


def test_reading_a_community_clears_its_badge_in_every_tab_of_the_user(browser, context, server):
    leader = Tab(context, server)
    leader.expect_live()
    follower = Tab(context, server)
    # Another device: its own browser profile, its own poll, no channel to the others.
    other_device = browser.new_context()
    try:
        device = Tab(other_device, server)
        device.expect_live()
        grace = Tab(context, server, user="u-grace")
        grace.expect_live()
        tabs = (leader, follower, device)
        for community_id, ref in [("c-rust", "p-1"), ("c-rust", "p-2"), ("c-python", "p-3")]:
            status, body = server.request("POST", f"/communities/{community_id}/activity",
                                          token=server.token("u-admin"),
                                          body={"kind": "post_created", "ref": ref})
            assert status == 201, body
        for tab in tabs:
            expect(tab.unread("c-rust")).to_have_text("2 new", timeout=WAIT)
            expect(tab.unread("c-python")).to_have_text("1 new", timeout=WAIT)
        expect(grace.unread("c-python")).to_have_text("1 new", timeout=WAIT)

        # Opening Rust in the tab that does not poll marks it read.
        follower.page.locator('#my-communities button[data-open="c-rust"]').click()
        expect(follower.page.locator("#opened-name")).to_have_text("Rust")
        for tab in tabs:
            expect(tab.unread("c-rust")).to_be_hidden(timeout=WAIT)
            expect(tab.unread("c-python")).to_have_text("1 new")
        # The server holds the marker (the other device learnt it from there)...
        status, snapshot = server.request("GET", "/me/communities", token=server.token("u-ada"))
        unread = {c["id"]: c["unread"] for c in snapshot["communities"]}
        assert status == 200 and unread == {"c-rust": 0, "c-python": 1}, snapshot
        # ...and it is Ada's alone: Grace still has Python's post unread.
        expect(grace.unread("c-python")).to_have_text("1 new")

        # While Rust stays open there, its new activity is read as it comes, on
        # every tab and device; Python's still counts.
        for community_id, ref in [("c-rust", "p-4"), ("c-python", "p-5")]:
            server.request("POST", f"/communities/{community_id}/activity", token=server.token("u-admin"),
                           body={"kind": "post_created", "ref": ref})
        expect(follower.page.locator("#opened-activity")).to_contain_text("p-4", timeout=WAIT)
        for tab in tabs:
            expect(tab.unread("c-python")).to_have_text("2 new", timeout=WAIT)
            expect(tab.unread("c-rust")).to_be_hidden(timeout=WAIT)
        for tab in (*tabs, grace):
            assert tab.errors == []
    finally:
        other_device.close()


def test_a_notification_reaches_its_user_and_reading_clears_it_in_every_tab(browser, context, server):
    leader = Tab(context, server)
    leader.expect_live()
    follower = Tab(context, server)
    other_device = browser.new_context()
    try:
        device = Tab(other_device, server)
        device.expect_live()
        grace = Tab(context, server, user="u-grace")
        grace.expect_live()
        tabs = (leader, follower, device)
        for tab in (*tabs, grace):
            expect(tab.page.locator("#notifications-unread")).to_have_text("0", timeout=WAIT)
            expect(tab.page.locator("#notifications-result")).to_have_text("No notifications yet.")

        # Sent from Grace's page, whose platform panel acts as the platform.
        grace.notify("u-ada", "n-first")
        grace.notify("u-ada", "n-second")
        for tab in tabs:
            expect(tab.page.locator("#notifications-unread")).to_have_text("2 new", timeout=WAIT)
            items = tab.page.locator("#notifications li")
            expect(items).to_have_count(2, timeout=WAIT)
            # Newest first.
            expect(items.first).to_contain_text("mention n-second")
            expect(items.last).to_contain_text("mention n-first")
            expect(tab.page.locator("#notifications-read")).to_be_enabled()

        # Marked read in the tab that does not poll.
        follower.page.click("#notifications-read")
        for tab in tabs:
            expect(tab.page.locator("#notifications-unread")).to_have_text("0", timeout=WAIT)
            expect(tab.page.locator("#notifications-read")).to_be_disabled()
            expect(tab.page.locator("#notifications li")).to_have_count(2)
        status, snapshot = server.request("GET", "/me/communities", token=server.token("u-ada"))
        assert status == 200 and snapshot["notifications_unread"] == 0, snapshot

        # They were Ada's: Grace's list and count stayed empty.
        expect(grace.page.locator("#notifications li")).to_have_count(0)
        expect(grace.page.locator("#notifications-unread")).to_have_text("0")
        for tab in (*tabs, grace):
            assert tab.errors == []
    finally:
        other_device.close()


def test_the_notify_form_sends_its_own_kind_not_the_publish_forms(context, server):
    tab = Tab(context, server, user="u-grace")
    tab.expect_live()
    page = tab.page
    page.fill("#platform-kind", "comment_added")
    # The user to notify and the button that notifies sit in a form of their own.
    notify_form = page.locator("form", has=page.locator("#platform-notify"))
    expect(notify_form.locator("#platform-user")).to_have_count(1)
    expect(notify_form.locator("#platform-http, #platform-sql")).to_have_count(0)
    with page.expect_request(lambda r: r.method == "POST" and r.url.endswith("/users/u-ada/notifications")) as sent:
        tab.notify("u-ada", "n-kind")
    assert sent.value.post_data_json["kind"] == "mention"
    page.fill("#notify-kind", "reply")
    with page.expect_request(lambda r: r.method == "POST" and r.url.endswith("/users/u-ada/notifications")) as sent:
        page.click("#platform-notify")
    assert sent.value.post_data_json["kind"] == "reply"
    expect(page.locator("#notify-result")).to_contain_text("Sent reply", timeout=WAIT)
    assert tab.errors == []


@pytest.mark.parametrize("where", ["#my-communities", "#public-communities"], ids=["sidebar", "directory"])
def test_the_last_owner_is_told_why_beside_the_leave_button(context, server, where):
    # Grace is Python's only owner (the demo data): the server refuses her leaving.
    tab = Tab(context, server, user="u-grace")
    tab.expect_live()
    row = tab.page.locator(f'{where} li[data-community-id="c-python"]')
    leave = row.locator('button[data-leave="c-python"]')
    expect(leave).to_be_visible(timeout=WAIT)
    leave.click()
    refusal = row.locator(".row-error")
    expect(refusal).to_contain_text("last owner", timeout=WAIT)
    expect(refusal).to_have_attribute("role", "alert")
    expect(leave).to_be_enabled()
    # Beside the button: within the row, just below it or level with it.
    button_box, refusal_box = leave.bounding_box(), refusal.bounding_box()
    assert refusal_box["y"] - (button_box["y"] + button_box["height"]) < 40, (button_box, refusal_box)
    # Still there after the next answer re-draws the list, gone once she tries again.
    server.put_member("c-go", "u-grace")
    expect(tab.community("c-go")).to_be_visible(timeout=WAIT)
    expect(row.locator(".row-error")).to_contain_text("last owner")
    server.put_member("c-python", "u-ada", role="owner")
    row.locator('button[data-leave="c-python"]').click()
    expect(tab.community("c-python")).to_have_count(0, timeout=WAIT)
    expect(tab.page.locator(f'{where} li[data-community-id="c-python"] .row-error')).to_have_count(0)
    assert tab.errors == []


THREAD = "c-python/thread:t-1"


def test_a_reply_posted_elsewhere_shows_as_one_new_reply_in_the_open_thread(context, server):
    # Ada and Grace are both in Python (the demo data); each opens its thread t-1.
    ada = Tab(context, server)
    grace = Tab(context, server, user="u-grace")
    for tab in (ada, grace):
        tab.expect_live()
        tab.open_thread("c-python")
        wait_polled([tab], THREAD)
    banner = ada.page.locator("#thread-new")
    expect(banner).to_be_hidden()
    expect(ada.page.locator("#thread-posts li")).to_have_count(1)  # the thread's first post

    # Grace's page posts a reply as the platform would: an INSERT with a topic.
    with grace.page.expect_request(lambda r: r.method == "POST" and r.url.endswith("/demo/sql-activity")) as sent:
        grace.page.fill("#thread-reply", "Agreed, ship it")
        grace.page.click("#thread-post")
    body = sent.value.post_data_json
    assert {k: body[k] for k in ("community_id", "topic", "kind", "actor", "data")} == {
        "community_id": "c-python", "topic": "thread:t-1", "kind": "reply", "actor": "u-grace",
        "data": {"excerpt": "Agreed, ship it"}}
    expect(grace.page.locator("#thread-published")).to_contain_text("Posted reply", timeout=WAIT)
    expect(banner).to_have_text("1 new reply", timeout=WAIT)
    # Behind the banner until Ada asks for it: the thread does not move under her eyes.
    expect(ada.page.locator("#thread-posts li")).to_have_count(1)
    # The tab that posted it shows it at once.
    expect(grace.post(body["ref"])).to_contain_text("Agreed, ship it", timeout=WAIT)
    expect(grace.page.locator("#thread-new")).to_be_hidden()

    # Another thread's reply, then one more in t-1 over HTTP: only the latter counts.
    admin = server.token("u-admin")
    for topic, ref, excerpt in [("thread:t-2", "r-other", "Elsewhere"), ("thread:t-1", "r-http", "Over HTTP too")]:
        status, answer = server.request("POST", "/communities/c-python/activity", token=admin,
                                        body={"topic": topic, "kind": "reply", "ref": ref, "actor": "u-grace",
                                              "data": {"excerpt": excerpt}})
        assert status == 201, answer
    expect(banner).to_have_text("2 new replies", timeout=WAIT)
    banner.click()
    expect(banner).to_be_hidden()
    posts = ada.page.locator("#thread-posts li")
    expect(posts).to_have_count(3)
    expect(posts.nth(1)).to_contain_text("Agreed, ship it")
    expect(posts.nth(1)).to_contain_text("by u-grace")
    expect(ada.post("r-http")).to_contain_text("Over HTTP too")
    expect(ada.page.locator("#thread-posts")).not_to_contain_text("Elsewhere")
    # Topic activity is never unread: Python's badge stays as it was.
    expect(ada.unread("c-python")).to_be_hidden()
    assert ada.errors == [] and grace.errors == []


def test_a_vote_updates_the_count_in_every_tab_showing_the_post(context, server):
    ada = Tab(context, server)
    ada.expect_live()
    ada_too = Tab(context, server)  # follows Ada's first tab, which polls for both
    grace = Tab(context, server, user="u-grace")
    alan = Tab(context, server, user="u-alan")  # not in Python: a visitor on its thread
    expect(ada_too.community("c-python")).to_be_visible(timeout=WAIT)
    for tab in (grace, alan):
        tab.expect_live()
    tabs = (ada, ada_too, grace, alan)
    for tab in tabs:
        tab.open_thread("c-python")
    for one_user in ([ada, ada_too], [grace], [alan]):
        wait_polled(one_user, THREAD)
    post = "t-1.p1"
    for tab in tabs:
        expect(tab.post(post).locator(".votes")).to_have_text("0")

    with ada_too.page.expect_request(lambda r: r.method == "POST" and r.url.endswith("/demo/sql-activity")) as sent:
        ada_too.post(post).locator("button.vote").click()
    assert sent.value.post_data_json == {
        "community_id": "c-python", "topic": "thread:t-1", "kind": "votes", "ref": post,
        "data": {"votes": 1}, "collapse": True, "actor": "u-ada"}
    for tab in tabs:
        expect(tab.post(post).locator(".votes")).to_have_text("1", timeout=WAIT)

    grace.post(post).locator("button.vote").click()
    for tab in tabs:
        expect(tab.post(post).locator(".votes")).to_have_text("2", timeout=WAIT)
    # Only the count moved: no reply, no unread badge, no row for Alan.
    for tab in tabs:
        expect(tab.page.locator("#thread-posts li")).to_have_count(1)
        expect(tab.page.locator("#thread-new")).to_be_hidden()
    expect(ada.unread("c-python")).to_be_hidden()
    expect(alan.community("c-python")).to_have_count(0)
    for tab in tabs:
        assert tab.errors == []


def test_a_visitor_follows_a_public_communitys_story_and_nothing_else_of_it(context, server):
    # Alan is only in Go (the demo data); Python is public.
    alan = Tab(context, server, user="u-alan")
    alan.expect_live()
    page = alan.page
    answers = []
    page.on("response", lambda r: "/community-changes/poll" in r.url and answers.append(r))
    alan.follow_story("c-python")
    expect(page.locator("#story-how")).to_contain_text("not a member of Python")
    expect(page.locator("#story-empty")).to_be_visible()
    wait_polled([alan], "c-python/story:s-1")

    # Python's other life first, then a chapter of the story.
    admin = server.token("u-admin")
    for body in [
        {"kind": "post_created", "ref": "p-1", "actor": "u-grace"},
        {"topic": "thread:t-1", "kind": "reply", "ref": "r-1", "data": {"excerpt": "Not for Alan"}},
        {"topic": "story:s-2", "kind": "chapter", "ref": "ch-other", "data": {"title": "Another story"}},
        {"topic": "story:s-1", "kind": "chapter", "ref": "ch-2", "data": {"title": "Chapter 2: The Machine"}},
    ]:
        status, answer = server.request("POST", "/communities/c-python/activity", token=admin, body=body)
        assert status == 201, answer
    chapters = page.locator("#story-chapters li")
    expect(chapters).to_have_count(1, timeout=WAIT)
    expect(chapters.first).to_contain_text("Chapter 2: The Machine")
    expect(page.locator("#story-empty")).to_be_hidden()

    # A member's page publishes the next one through its own story panel.
    grace = Tab(context, server, user="u-grace")
    grace.expect_live()
    grace.follow_story("c-python")
    wait_polled([grace], "c-python/story:s-1")
    grace.page.fill("#story-chapter", "Chapter 3: The Game")
    grace.page.click("#story-publish")
    expect(grace.page.locator("#story-published")).to_contain_text("Published Chapter 3", timeout=WAIT)
    expect(chapters).to_have_count(2, timeout=WAIT)
    expect(chapters.last).to_contain_text("Chapter 3: The Game")
    expect(grace.page.locator("#story-chapters li")).to_have_count(1)

    # Following is not joining: no sidebar row, and nothing else of Python reached the page.
    expect(alan.community("c-python")).to_have_count(0)
    expect(page.locator("#my-communities li")).to_have_count(1)
    expect(page.locator("#log")).not_to_contain_text("Python")
    received = [change for response in answers if response.status == 200
                for change in response.json().get("changes", []) if change.get("community_id") == "c-python"]
    assert [(c["topic"], c["kind"]) for c in received] == [("story:s-1", "chapter")] * 2, received
    assert alan.errors == [] and grace.errors == []


@pytest.mark.parametrize("width", LAYOUT_WIDTHS, ids=list(LAYOUT_WIDTHS))
def test_demo_layout_has_room_for_everything(browser, start_server, width):
    server = start_server(env=QUICK_PRESENCE)
    w, h = LAYOUT_WIDTHS[width]
    context = browser.new_context(viewport={"width": w, "height": h})
    try:
        page = context.new_page()
        errors = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        demo_scene(server, page)
        # The online count says what it counts, not only in a tooltip.
        expect(page.locator('#my-communities li[data-community-id="c-rust"] .online')).to_have_text("1 online")
        assert page.evaluate(LAYOUT_PROBLEMS) == []
        assert errors == []
    finally:
        context.close()


def _one_of(*values):
    return re.compile("^(" + "|".join(map(re.escape, values)) + ")$")


PARENT_PAGE = """<!doctype html>
<meta charset="utf-8">
<title>embedding app</title>
<ul id="relayed"></ul>
<p id="status"></p>
<ul id="seen"></ul>
<iframe id="sync" src="{child}"></iframe>
<iframe id="intruder" src="{intruder}"></iframe>
<iframe id="sibling" src="{sibling}"></iframe>
<script type="module">
  import {{ listenForRelay }} from "{client}/community-sync-relay.js";
  // Every message that reaches this window, allowed or not, so the test can tell
  // that the intruder's messages did arrive and were ignored.
  addEventListener("message", (event) => {{
    const item = document.createElement("li");
    item.textContent = event.origin;
    document.querySelector("#seen").append(item);
  }});
  listenForRelay({{
    allowedOrigins: ["{frame_origin}"],
    source: document.querySelector("#sync"),
    onUpdate: (update) => {{
      document.querySelector("#relayed").replaceChildren(...update.communities.map((c) => {{
        const item = document.createElement("li");
        item.dataset.communityId = c.id;
        item.textContent = c.name;
        return item;
      }}));
    }},
    onStatus: (status) => {{ document.querySelector("#status").textContent = status; }},
  }});
</script>
"""

CHILD_PAGE = """<!doctype html>
<meta charset="utf-8">
<script type="module">
  import {{ createCommunitySync }} from "{client}/community-sync.js";
  const token = new URLSearchParams(location.hash.slice(1)).get("token");
  createCommunitySync({{
    baseUrl: "{api}",
    getToken: async () => token,
    relayTo: {{ target: window.parent, targetOrigin: "{parent_origin}" }},
  }});
</script>
"""

INTRUDER_PAGE = """<!doctype html>
<meta charset="utf-8">
<script>
  const forged = {
    type: "community-sync:update",
    update: { communities: [{ id: "c-forged", name: "Forged" }], added: [], removed: [], changes: [] },
  };
  setInterval(() => parent.postMessage(forged, "*"), 100);
</script>
"""


# Today's URL, and the package's versioned one (its modules import each other by
# relative URL, so everything the client loads comes from that version).
CLIENT_PATHS = ["/static", f"/static/v/{json.loads((ROOT / 'app/static/package.json').read_text())['version']}"]


@pytest.mark.parametrize("client_path", CLIENT_PATHS)
def test_iframe_relays_updates_to_its_parent_only_from_allowed_origins(browser, start_server, tmp_path, client_path):
    site_dir = tmp_path / "site"
    intruder_dir = tmp_path / "intruder"
    site_dir.mkdir()
    intruder_dir.mkdir()
    with StaticSite(site_dir) as site, StaticSite(intruder_dir) as intruder:
        # One static server, two origins: the embedding page on localhost and the
        # iframe on 127.0.0.1; the API is a third origin.
        parent_origin = f"http://localhost:{site.port}"
        frame_origin = f"http://127.0.0.1:{site.port}"
        server = start_server(cors_origins=(parent_origin, frame_origin))
        token = server.token("u-ada")
        (site_dir / "parent.html").write_text(
            PARENT_PAGE.format(
                client=server.url + client_path,
                child=f"{frame_origin}/child.html#token={token}",
                intruder=f"http://127.0.0.1:{intruder.port}/intruder.html",
                # Same origin as the relaying frame, another window: only `source` tells.
                sibling=f"{frame_origin}/intruder.html",
                frame_origin=frame_origin,
            )
        )
        (site_dir / "child.html").write_text(CHILD_PAGE.format(
            api=server.url, client=server.url + client_path, parent_origin=parent_origin))
        (intruder_dir / "intruder.html").write_text(INTRUDER_PAGE)
        (site_dir / "intruder.html").write_text(INTRUDER_PAGE)

        context = browser.new_context()
        try:
            page = context.new_page()
            errors = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(f"{parent_origin}/parent.html")
            relayed = page.locator("#relayed")
            expect(relayed.locator('[data-community-id="c-rust"]')).to_be_visible(timeout=WAIT)
            expect(page.locator("#status")).to_have_text("live", timeout=WAIT)

            server.put_member("c-go", "u-ada")
            expect(relayed.locator('[data-community-id="c-go"]')).to_be_visible(timeout=WAIT)

            intruder_origin = f"http://127.0.0.1:{intruder.port}"
            expect(page.locator("#seen li", has_text=intruder_origin).first).to_be_attached(timeout=WAIT)
            expect(relayed.locator('[data-community-id="c-forged"]')).to_have_count(0)
            # A message posted by the parent page itself is not from the frame either.
            page.evaluate(
                """() => postMessage({type: "community-sync:update",
                    update: {communities: [{id: "c-self", name: "Self"}]}}, "*")"""
            )
            expect(page.locator("#seen li", has_text=parent_origin).first).to_be_attached(timeout=WAIT)
            expect(relayed.locator("li")).to_have_count(3)
            assert errors == []
        finally:
            context.close()


def test_demo_page_screenshot(context, server, tmp_path):
    tab = Tab(context, server)
    tab.expect_live()
    page = tab.page

    # Through the page's own admin panel this time.
    page.select_option("#admin-user", "u-ada")
    page.select_option("#admin-community", "c-design")
    page.select_option("#admin-role", "admin")
    page.click("#admin-add")
    expect(page.locator("#admin-result")).to_contain_text("Added u-ada to c-design", timeout=WAIT)
    expect(tab.community("c-design").locator(".badge")).to_have_text("admin", timeout=WAIT)

    page.locator('#public-communities button[data-join="c-go"]').click()
    expect(tab.community("c-go")).to_be_visible(timeout=WAIT)
    expect(page.locator("#log li")).to_have_count(3, timeout=WAIT)
    expect(page.locator("#log li").first).to_contain_text("joined Go by u-ada")

    # docs/demo.png is refreshed by `python -m tests.browser_support`, never by a test.
    screenshot = tmp_path / "demo.png"
    page.screenshot(path=str(screenshot), full_page=True)
    assert screenshot.stat().st_size > 10_000
    assert tab.errors == []


def test_without_demo_mode_the_page_never_asks_for_tokens(context, start_server):
    server = start_server(demo_mode=False)
    token = subprocess.run(
        [BIN / "flask", "--app", "wsgi", "token", "u-grace", "--name", "Grace Hopper"],
        cwd=ROOT,
        env=server.env,
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.strip()
    requested = []
    page = context.new_page()
    page.on("request", lambda request: requested.append(request.url))
    page.goto(server.url)
    expect(page.locator("#token-note")).to_contain_text("never asks the server for tokens")
    expect(page.locator("#user-select")).to_have_count(0)

    page.fill("#token-input", token)
    page.click("#token-form button")
    expect(page.locator('#my-communities li[data-community-id="c-design"]')).to_be_visible(timeout=WAIT)
    expect(page.locator("#status")).to_have_attribute("data-status", "live", timeout=WAIT)
    assert not [url for url in requested if "/demo/" in url]



HEARTBEAT_PAGE = """<!doctype html>
<meta charset="utf-8">
<p id="role"></p>
<ul id="communities"></ul>
<script type="module">
  import {{ createCommunitySync }} from "{api}/static/community-sync.js";
  const sync = createCommunitySync({{
    baseUrl: "{api}",
    getToken: async () => "{token}",
    election: "heartbeat",
  }});
  sync.onStatus(() => {{ document.querySelector("#role").textContent = sync.isLeader ? "leader" : "follower"; }});
  sync.subscribe((update) => {{
    document.querySelector("#communities").replaceChildren(...update.communities.map((c) => {{
      const item = document.createElement("li");
      item.dataset.communityId = c.id;
      item.textContent = c.name;
      return item;
    }}));
  }});
</script>
"""


def test_heartbeat_election_without_web_locks(context, start_server, tmp_path):
    with StaticSite(tmp_path) as site:
        origin = f"http://127.0.0.1:{site.port}"
        server = start_server(cors_origins=(origin,))
        (tmp_path / "app.html").write_text(HEARTBEAT_PAGE.format(api=server.url, token=server.token("u-ada")))

        tabs = []
        for _ in range(2):
            page = context.new_page()
            polls = []
            page.on("request", lambda request, polls=polls: "/community-changes/poll" in request.url and polls.append(1))
            page.goto(f"{origin}/app.html")
            expect(page.locator('[data-community-id="c-rust"]')).to_be_visible(timeout=WAIT)
            tabs.append((page, polls))
        (first, first_polls), (second, second_polls) = tabs
        expect(first.locator("#role")).to_have_text("leader", timeout=WAIT)

        server.put_member("c-go", "u-ada")
        for page, _ in tabs:
            expect(page.locator('[data-community-id="c-go"]')).to_be_visible(timeout=WAIT)
        assert first_polls and not second_polls

        # pagehide clears the heartbeat entry, so the next tab claims it at its next beat.
        first.close()
        expect(second.locator("#role")).to_have_text("leader", timeout=WAIT)
        server.put_member("c-ops", "u-ada")
        expect(second.locator('[data-community-id="c-ops"]')).to_be_visible(timeout=WAIT)
        assert second_polls


def _set_visibility(page, state):
    # Headless pages are always visible; override the property and fire the event the
    # way the browser does when a tab goes to the background.
    page.evaluate(
        """(state) => {
            Object.defineProperty(document, "visibilityState", {value: state, configurable: true});
            document.dispatchEvent(new Event("visibilitychange"));
        }""",
        state,
    )


def test_pauses_while_hidden_and_offline_then_catches_up(context, server):
    tab = Tab(context, server)
    tab.expect_live()
    status = tab.page.locator("#status")

    _set_visibility(tab.page, "hidden")
    expect(status).to_have_attribute("data-status", "paused", timeout=WAIT)
    polls_while_hidden = len(tab.polls)
    server.put_member("c-go", "u-ada")
    tab.page.wait_for_timeout(1500)
    assert len(tab.polls) == polls_while_hidden, "polled while no tab was visible"
    expect(tab.community("c-go")).to_have_count(0)

    _set_visibility(tab.page, "visible")
    expect(tab.community("c-go")).to_be_visible(timeout=WAIT)
    tab.expect_live()

    context.set_offline(True)
    expect(status).to_have_attribute("data-status", "offline", timeout=WAIT)
    server.delete_member("c-rust", "u-ada")
    context.set_offline(False)
    # The online event cuts any backoff short.
    expect(tab.community("c-rust")).to_have_count(0, timeout=WAIT)
    tab.expect_live()
    assert tab.errors == []


TABS_PAGE = """<!doctype html>
<meta charset="utf-8">
<p id="status"></p>
<p id="role"></p>
<ul id="communities"></ul>
<script type="module">
  import {{ createCommunitySync }} from "{api}/static/community-sync.js";
  // The test plays the app: it swaps window.token, and #fail-first makes the first
  // getToken call fail, as an app whose session is not ready yet.
  const params = new URLSearchParams(location.hash.slice(1));
  window.token = params.get("token");
  window.seen = new Set();
  let calls = 0;
  const sync = createCommunitySync({{
    baseUrl: "{api}",
    getToken: async () => {{
      calls += 1;
      if (params.has("fail-first") && calls === 1) throw new Error("session not ready");
      return window.token;
    }},
    backoff: {{ maxDelay: 2000 }},
  }});
  window.sync = sync;
  const show = () => {{
    document.querySelector("#status").textContent = sync.status;
    document.querySelector("#role").textContent = sync.isLeader ? "leader" : "follower";
  }};
  sync.onStatus(show);
  setInterval(show, 100); // leadership can change without a status change
  sync.subscribe((update) => {{
    for (const c of update.communities) window.seen.add(c.id);
    document.querySelector("#communities").replaceChildren(...update.communities.map((c) => {{
      const item = document.createElement("li");
      item.dataset.communityId = c.id;
      item.textContent = c.name;
      return item;
    }}));
  }});
</script>
"""


class SyncTab:
    """A page of an embedding app running the client with a token the test controls."""

    def __init__(self, context, url, token, *, fail_first=False):
        self.page = context.new_page()
        self.polls = []
        self.errors = []
        self.page.on("request", lambda r: "/community-changes/poll" in r.url and self.polls.append(r.url))
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.goto(f"{url}#token={token}" + ("&fail-first" if fail_first else ""))

    def community(self, community_id):
        return self.page.locator(f'#communities [data-community-id="{community_id}"]')

    def expect(self, status=None, role=None):
        if status:
            expect(self.page.locator("#status")).to_have_text(status, timeout=WAIT)
        if role:
            expect(self.page.locator("#role")).to_have_text(role, timeout=WAIT)

    def set_stale_token(self):
        """The app's token expired: same user, a signature the server refuses."""
        self.page.evaluate("() => { window.token = window.token.replace(/.$/, (c) => (c === 'A' ? 'B' : 'A')); }")

    def set_token(self, token):
        self.page.evaluate("(token) => { window.token = token; }", token)

    def call(self, method):
        self.page.evaluate(f"() => window.sync.{method}()")

    def seen(self):
        return set(self.page.evaluate("() => [...window.seen]"))


@pytest.fixture
def tabs_site(browser, start_server, tmp_path):
    """An app origin serving TABS_PAGE against its own server: (server, page url, context)."""
    with StaticSite(tmp_path) as site:
        origin = f"http://127.0.0.1:{site.port}"
        server = start_server(cors_origins=(origin,))
        (tmp_path / "tabs.html").write_text(TABS_PAGE.format(api=server.url))
        context = browser.new_context()
        try:
            yield server, f"{origin}/tabs.html", context
        finally:
            context.close()


def test_a_leader_with_a_stale_token_hands_over_to_a_tab_with_a_valid_one(tabs_site):
    server, url, context = tabs_site
    first = SyncTab(context, url, server.token("u-ada"))
    first.expect("live", "leader")
    second = SyncTab(context, url, server.token("u-ada"))
    expect(second.community("c-rust")).to_be_visible(timeout=WAIT)
    second.expect("live", "follower")

    # The first tab's app lost its session; the second one's is fine.
    first.set_stale_token()
    first.call("refresh")
    second.expect("live", "leader")
    first.expect("live", "follower")

    server.put_member("c-go", "u-ada")
    for tab in (first, second):
        expect(tab.community("c-go")).to_be_visible(timeout=WAIT)
    assert first.errors == [] and second.errors == []


def test_reconnect_works_from_a_follower_tab(tabs_site):
    server, url, context = tabs_site
    token = server.token("u-ada")
    first = SyncTab(context, url, token)
    first.expect("live", "leader")
    second = SyncTab(context, url, token)
    second.expect("live", "follower")

    # Forwarded to the leader: it drops its held poll and asks again.
    polls = len(first.polls)
    second.call("reconnect")
    deadline = time.monotonic() + WAIT / 1000
    while len(first.polls) <= polls and time.monotonic() < deadline:
        first.page.wait_for_timeout(100)
    assert len(first.polls) > polls, "the leader did not hear the follower's reconnect()"
    assert second.polls == []

    # Every tab's app lost its session: each leader steps down in turn and queues again
    # after a growing wait, so the lock passes round paced, not in a loop.
    for tab in (first, second):
        tab.set_stale_token()
    first.call("refresh")
    for tab in (first, second):
        tab.expect("unauthorized")
    asked = len(first.polls) + len(second.polls)
    first.page.wait_for_timeout(1500)
    # Two requests a leadership (the stale token, then a fresh one), each after a wait
    # of 250 ms or more that doubles with each refusal: a handful, where a loop makes
    # hundreds.
    assert len(first.polls) + len(second.polls) - asked <= 16

    # The apps have new tokens; reconnect() in either tab brings both back.
    for tab in (first, second):
        tab.set_token(token)
    second.call("reconnect")
    second.expect("live", "leader")
    first.expect("live", "follower")
    server.put_member("c-go", "u-ada")
    for tab in (first, second):
        expect(tab.community("c-go")).to_be_visible(timeout=WAIT)


def test_two_users_in_one_browser_profile_never_share_state(tabs_site):
    server, url, context = tabs_site
    ada = SyncTab(context, url, server.token("u-ada"))
    ada.expect("live", "leader")
    ada_too = SyncTab(context, url, server.token("u-ada"))
    ada_too.expect("live", "follower")
    grace = SyncTab(context, url, server.token("u-grace"))
    grace.expect("live", "leader")
    # No identity at start (getToken failed): it polls alone, on no shared channel.
    unknown = SyncTab(context, url, server.token("u-grace"), fail_first=True)
    unknown.expect("live", "leader")
    for tab in (grace, unknown):
        expect(tab.community("c-design")).to_be_visible(timeout=WAIT)
    expect(ada_too.community("c-rust")).to_be_visible(timeout=WAIT)

    server.put_member("c-go", "u-grace")
    for tab in (grace, unknown):
        expect(tab.community("c-go")).to_be_visible(timeout=WAIT)

    # Ada's leader tab now gets Grace's token (a logout and login elsewhere): it leaves
    # Ada's channel before asking anything with it, and Ada's other tab takes over.
    ada.set_token(server.token("u-grace"))
    ada.call("refresh")
    expect(ada.community("c-design")).to_be_visible(timeout=WAIT)
    ada_too.expect("live", "leader")
    server.put_member("c-ops", "u-ada")
    expect(ada_too.community("c-ops")).to_be_visible(timeout=WAIT)

    assert ada_too.seen() <= {"c-rust", "c-python", "c-ops"}, ada_too.seen()
    assert {"c-rust", "c-ops"}.isdisjoint(grace.seen() | unknown.seen())
