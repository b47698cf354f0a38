"""The demo page's optimistic joins, typing, readers and conflict-safe edits, in Chromium.

Like tests/test_browser.py: a real gunicorn on a fresh SQLite file per test, the page
as a user sees it, generous waits (these tests prove that things show, not how fast).
"""

import re
import sqlite3
import time
from contextlib import closing
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.sync_api import expect

from browser_support import Server

pytestmark = pytest.mark.browser

WAIT = 10_000  # ms; a change normally shows in well under a second
READERS = 20_000  # ms; the page asks who reads every 5 s, and a reader lingers a few seconds after leaving
PENDING = re.compile(r"\bpending\b")
THREAD = "c-python/thread:t-1"


@pytest.fixture
def server(tmp_path):
    server = Server(tmp_path)
    server.seed()
    server.start()
    yield server
    server.stop()
    print(f"--- gunicorn log ---\n{server.log()[-4000:]}")


@pytest.fixture
def new_context(browser, server):
    """Browser contexts (each its own profile: its own tabs' leader), closed before the server stops."""
    contexts = []

    def new():
        contexts.append(browser.new_context(viewport={"width": 1280, "height": 820}))
        return contexts[-1]

    yield new
    for context in contexts:
        context.close()


class Tab:
    """One page of the demo as ``user``, with the polls it sent and any script errors."""

    def __init__(self, context, server, user="u-ada"):
        self.page = context.new_page()
        self.polls = []
        self.errors = []
        self.page.on("request", lambda r: "/community-changes/poll" in r.url and self.polls.append(r.url))
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.goto(f"{server.url}/?user={user}")

    def expect_live(self):
        expect(self.page.locator("#status")).to_have_attribute("data-status", "live", timeout=WAIT)

    def community(self, community_id):
        return self.page.locator(f'#my-communities li[data-community-id="{community_id}"]')

    def hold_joins(self, community_id):
        """Hold this tab's requests to join ``community_id``: the server is not asked until released."""
        held = []
        pattern = re.compile(rf"/communities/{community_id}/members/me$")
        self.page.route(pattern, lambda route: held.append(route) if route.request.method == "PUT" else route.continue_())
        return held

    def open_thread(self, community_id, thread="t-1"):
        page = self.page
        expect(page.locator(f'#thread-community option[value="{community_id}"]')).to_be_attached(timeout=WAIT)
        page.select_option("#thread-community", community_id)
        page.fill("#thread-id", thread)
        page.click("#thread-open")
        expect(page.locator("#thread-title")).to_contain_text(f"thread:{thread}")

    def load_for_edit(self, community_id):
        page = self.page
        expect(page.locator(f'#edit-community option[value="{community_id}"]')).to_be_attached(timeout=WAIT)
        page.select_option("#edit-community", community_id)
        page.click("#edit-load")
        expect(page.locator("#edit-form")).to_be_visible(timeout=WAIT)


def wait_until(page, condition, what):
    """Wait (polling, never as an assertion of its own) until ``condition()`` holds."""
    deadline = time.monotonic() + WAIT / 1000
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        page.wait_for_timeout(100)


def wait_polled(tab, watch):
    """Until a poll of ``tab`` carries ``watch``: from then on the topic reaches it."""
    wait_until(tab.page, lambda: any(watch in parse_qs(urlsplit(url).query).get("watch", []) for url in tab.polls),
               f"a poll carrying {watch}")


def role_of(server, user_id, community_id):
    """The user's role in the community as the database has it, or None."""
    with closing(sqlite3.connect(server.db_path)) as db:
        row = db.execute("SELECT role FROM memberships WHERE user_id = ? AND community_id = ?",
                         (user_id, community_id)).fetchone()
    return row and row[0]


def name_of(server, community_id):
    status, body = server.request("GET", f"/communities/{community_id}", token=server.token("u-admin"))
    assert status == 200, body
    return body["name"]


# --- joining and leaving -------------------------------------------------------------


def test_an_accepted_join_shows_in_the_other_tab_before_the_server_answers(new_context, server):
    context = new_context()
    other = Tab(context, server)
    other.expect_live()
    joiner = Tab(context, server)
    expect(joiner.community("c-rust")).to_be_visible(timeout=WAIT)
    held = joiner.hold_joins("c-go")

    join = joiner.page.locator('#public-communities button[data-join="c-go"]')
    expect(join).to_be_visible(timeout=WAIT)
    join.click()
    wait_until(joiner.page, lambda: held, "the join's request, held")
    for tab in (other, joiner):
        row = tab.community("c-go")
        expect(row).to_have_class(PENDING, timeout=WAIT)
        expect(row.locator(".badge")).to_have_text("joining…")
        expect(row).to_contain_text("Go")  # the directory's name, not the id
    expect(joiner.page.locator('#public-communities li[data-community-id="c-go"]')).to_contain_text("joining…")
    # Still held: the server has not seen the join, and the tabs show it all the same.
    assert role_of(server, "u-ada", "c-go") is None

    held[0].continue_()
    for tab in (other, joiner):
        row = tab.community("c-go")
        expect(row).not_to_have_class(PENDING, timeout=WAIT)
        expect(row.locator(".badge")).to_have_text("member")
    assert role_of(server, "u-ada", "c-go") == "member"
    # Confirmed, it stays: a later answer of the polls lists it as the server's.
    server.put_member("c-ops", "u-ada")
    for tab in (other, joiner):
        expect(tab.community("c-ops")).to_be_visible(timeout=WAIT)
        expect(tab.community("c-go")).to_be_visible()
        expect(tab.page.locator("#membership-result")).to_be_empty()
    assert other.errors == [] and joiner.errors == []


def test_a_refused_join_is_taken_back_in_every_tab_with_the_reason(new_context, server):
    # Design Guild is private and Ada is not in it (the demo data): the server refuses.
    context = new_context()
    other = Tab(context, server)
    other.expect_live()
    joiner = Tab(context, server)
    expect(joiner.community("c-rust")).to_be_visible(timeout=WAIT)
    expect(joiner.page.locator('#public-communities li[data-community-id="c-design"]')).to_have_count(0)
    held = joiner.hold_joins("c-design")

    joiner.page.fill("#join-id", "c-design")
    joiner.page.click("#join-by-id")
    wait_until(joiner.page, lambda: held, "the join's request, held")
    for tab in (other, joiner):
        expect(tab.community("c-design")).to_have_class(PENDING, timeout=WAIT)

    held[0].continue_()
    for tab in (other, joiner):
        expect(tab.community("c-design")).to_have_count(0, timeout=WAIT)
        expect(tab.page.locator("#membership-result")).to_contain_text("could not join community c-design", timeout=WAIT)
        expect(tab.page.locator("#membership-result")).to_have_class(re.compile(r"\berror\b"))
        # What was there before is as it was.
        expect(tab.community("c-rust")).to_be_visible()
        expect(tab.community("c-python")).not_to_have_class(PENDING)
    assert role_of(server, "u-ada", "c-design") is None
    assert other.errors == [] and joiner.errors == []


# --- typing and who is reading ---------------------------------------------------------


def test_grace_sees_ada_typing_until_she_posts(new_context, server):
    ada = Tab(new_context(), server)
    grace = Tab(new_context(), server, user="u-grace")
    for tab in (ada, grace):
        tab.expect_live()
        tab.open_thread("c-python")
        wait_polled(tab, THREAD)
    typing = grace.page.locator("#thread-typing")
    expect(typing).to_be_empty()

    # Ada types as a person does, a key at a time, until Grace's page says so.
    composer = ada.page.locator("#thread-reply")
    for key in "Agreed, let us ship it today":
        composer.press_sequentially(key)
        if typing.text_content() == "Ada Lovelace is typing…":
            break
        ada.page.wait_for_timeout(300)
    expect(typing).to_have_text("Ada Lovelace is typing…")
    expect(ada.page.locator("#thread-typing")).to_be_empty()  # never herself

    # Posting stops the typing at once: her last key came just now, so the client's own
    # stop after 3 s without a key cannot be the DELETE seen within 2 s of the click.
    with ada.page.expect_request(lambda r: r.method == "DELETE" and r.url.endswith("/me/typing"), timeout=2000):
        ada.page.click("#thread-post")
    expect(ada.page.locator("#thread-published")).to_contain_text("Posted reply", timeout=WAIT)
    expect(typing).to_be_empty(timeout=WAIT)
    expect(grace.page.locator("#thread-new")).to_have_text("1 new reply", timeout=WAIT)

    labels = grace.page.evaluate("""async () => {
      const { typingLabel } = await import("/static/demo-typing.js");
      const ada = { id: "u-ada", name: "Ada" }, grace = { id: "u-grace", name: "Grace" };
      return [[], [ada], [ada, grace], [ada, grace, { id: "u-alan", name: null }]].map(typingLabel);
    }""")
    assert labels == ["", "Ada is typing…", "Ada and Grace are typing…", "3 people are typing…"]
    assert ada.errors == [] and grace.errors == []


def test_grace_sees_ada_among_the_threads_readers(new_context, server):
    ada = Tab(new_context(), server)
    grace = Tab(new_context(), server, user="u-grace")
    for tab in (ada, grace):
        tab.expect_live()
        tab.open_thread("c-python")
        wait_polled(tab, THREAD)

    readers = grace.page.locator("#thread-readers")
    avatar = readers.locator('li[data-user-id="u-ada"]')
    expect(avatar).to_have_text("AL", timeout=READERS)
    expect(avatar).to_have_attribute("title", "Ada Lovelace")
    expect(grace.page.locator("#thread-readers-none")).to_be_hidden()
    # The user is never among the readers shown: Grace's page leaves her out, Ada's shows her.
    expect(readers.locator('li[data-user-id="u-grace"]')).to_have_count(0)
    expect(ada.page.locator('#thread-readers li[data-user-id="u-grace"]')).to_have_attribute(
        "title", "Grace Hopper", timeout=READERS)
    expect(ada.page.locator('#thread-readers li[data-user-id="u-ada"]')).to_have_count(0)

    # Ada closes the thread: she is no longer among its readers.
    ada.page.click("#thread-close")
    expect(avatar).to_have_count(0, timeout=READERS)
    expect(grace.page.locator("#thread-readers-none")).to_be_visible()
    assert ada.errors == [] and grace.errors == []


# --- editing a community ---------------------------------------------------------------


def test_the_second_of_two_edits_from_one_version_is_told_and_changes_nothing(new_context, server):
    # Grace owns Python (the demo data); she edits it in two tabs.
    context = new_context()
    first = Tab(context, server, user="u-grace")
    first.expect_live()
    second = Tab(context, server, user="u-grace")
    for tab in (first, second):
        tab.load_for_edit("c-python")
        expect(tab.page.locator("#edit-name")).to_have_value("Python")

    first.page.fill("#edit-name", "Python 3")
    first.page.click("#edit-save")
    expect(first.page.locator("#edit-result")).to_have_text("Saved: the community is now 'Python 3'.", timeout=WAIT)

    second.page.fill("#edit-name", "Snakes")
    second.page.click("#edit-save")
    conflict = second.page.locator("#edit-conflict")
    expect(conflict).to_be_visible(timeout=WAIT)
    expect(conflict).to_contain_text("Someone else changed this community: now 'Python 3'")
    assert name_of(server, "c-python") == "Python 3"
    for tab in (first, second):
        expect(tab.community("c-python")).to_contain_text("Python 3", timeout=WAIT)

    # Loading the current version lets her decide again, over that version.
    second.page.click("#edit-reload")
    expect(second.page.locator("#edit-name")).to_have_value("Python 3", timeout=WAIT)
    expect(conflict).to_be_hidden()
    second.page.fill("#edit-name", "Snakes")
    second.page.click("#edit-save")
    expect(second.page.locator("#edit-result")).to_have_text("Saved: the community is now 'Snakes'.", timeout=WAIT)
    assert name_of(server, "c-python") == "Snakes"
    assert first.errors == [] and second.errors == []


def test_a_moderator_is_told_that_only_admins_and_owners_edit(new_context, server):
    # Ada moderates Python (the demo data): she may read it, not edit it.
    ada = Tab(new_context(), server)
    ada.expect_live()
    ada.load_for_edit("c-python")
    ada.page.fill("#edit-name", "Ada's Python")
    ada.page.click("#edit-save")
    result = ada.page.locator("#edit-result")
    expect(result).to_contain_text("Only its admins and owners may edit it", timeout=WAIT)
    expect(result).to_have_class(re.compile(r"\berror\b"))
    expect(ada.page.locator("#edit-conflict")).to_be_hidden()
    assert name_of(server, "c-python") == "Python"
    assert ada.errors == []
