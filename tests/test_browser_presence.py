"""Presence on the demo page, in a real Chromium against a real gunicorn.

Counts next to each community, who is here in the opened one, the visibility switch,
and a closed tab going offline. Waits are generous: these tests prove that things show
without a reload, not how fast.
"""
import pytest
from playwright.sync_api import expect

from browser_support import QUICK_PRESENCE, Server

pytestmark = pytest.mark.browser

WAIT = 15_000  # ms: a presence refresh, then the page's next look


@pytest.fixture
def server(tmp_path):
    server = Server(tmp_path)
    # Polls answer every few seconds, each with counts at most half a second old; a
    # TTL no test outlives, so whoever goes offline here went because of the page.
    server.env.update(QUICK_PRESENCE, PRESENCE_TTL="600")
    server.seed()
    server.start()
    yield server
    server.stop()
    print(f"--- gunicorn log ---\n{server.log()[-4000:]}")


def open_demo(browser, server, user):
    """The demo page as ``user``, in a browser context of its own (its own tabs' leader)."""
    context = browser.new_context(viewport={"width": 1280, "height": 820})
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(f"{server.url}/?user={user}")
    expect(page.locator("#status")).to_have_attribute("data-status", "live", timeout=WAIT)
    return context, page, errors


def test_counts_who_is_here_visibility_and_a_closed_tab(browser, server):
    ada_context, ada, ada_errors = open_demo(browser, server, "u-ada")
    grace_context, grace, grace_errors = open_demo(browser, server, "u-grace")
    try:
        python = ada.locator('#my-communities li[data-community-id="c-python"] .online')
        expect(python).to_have_text("2 online", timeout=WAIT)
        here = ada.locator("#opened-presence")
        ada.locator('[data-open="c-python"]').click()
        expect(here.locator('li[data-user-id="u-grace"]')).to_have_text("Grace Hopper", timeout=WAIT)
        expect(here.locator('li[data-user-id="u-ada"]')).to_be_visible()
        expect(ada.locator("#opened-online")).to_have_text("2")

        toggle = grace.locator("#presence-visible")
        expect(toggle).to_be_enabled(timeout=WAIT)
        expect(toggle).to_be_checked()
        toggle.uncheck()
        expect(here.locator('li[data-user-id="u-grace"]')).to_have_count(0, timeout=WAIT)
        expect(python).to_have_text("1 online", timeout=WAIT)
        grace.reload()  # the choice is the server's, not the page's
        expect(grace.locator("#presence-visible")).not_to_be_checked(timeout=WAIT)
        grace.locator("#presence-visible").check()
        expect(here.locator('li[data-user-id="u-grace"]')).to_be_visible(timeout=WAIT)

        grace_context.close()  # her tab goes: its waiting poll's connection closes
        expect(here.locator('li[data-user-id="u-grace"]')).to_have_count(0, timeout=WAIT)
        expect(python).to_have_text("1 online", timeout=WAIT)
        assert ada_errors == [] and grace_errors == []
    finally:
        ada_context.close()
        grace_context.close()


def test_leaving_the_opened_community_stops_asking_who_is_there(browser, server):
    context, page, errors = open_demo(browser, server, "u-ada")
    try:
        asked = []
        page.on("request", lambda request: "/presence" in request.url and asked.append(request.url))
        page.locator('[data-open="c-rust"]').click()
        expect(page.locator('#opened-presence li[data-user-id="u-ada"]')).to_be_visible(timeout=WAIT)
        assert any("/communities/c-rust/presence" in url for url in asked)

        page.locator('#my-communities button[data-leave="c-rust"]').click()
        expect(page.locator('#my-communities li[data-community-id="c-rust"]')).to_have_count(0, timeout=WAIT)
        expect(page.locator("#opened")).to_be_hidden()
        asked.clear()
        # Longer than the page's presence refresh (5 s), with poll answers every 3 s.
        page.wait_for_timeout(7000)
        assert [url for url in asked if "/communities/c-rust/" in url] == []
        assert errors == []
    finally:
        context.close()
