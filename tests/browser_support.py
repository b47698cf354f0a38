"""Real servers and a real Chromium for the browser tests.

Each test runs the application the way it runs in production, under gunicorn in its
own process and on its own SQLite file, so that stopping the server is a real outage.

Run as a program, it refreshes the README's screenshot of the demo page (the test
suite never writes it: a test run leaves tracked files as they were)::

    .venv/bin/python -m tests.browser_support            # docs/demo.png, 1280 px wide
    .venv/bin/python -m tests.browser_support /tmp/phone.png --width 390
"""

import argparse
import functools
import http.server
import json
import os
import re
import sys
import tempfile
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from harness import servers

ROOT = servers.ROOT
BIN = Path(sys.executable).parent
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def launch_chromium(playwright):
    """Debian's Chromium; missing is a skip on a laptop and a failure in CI."""
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is missing (apt-get install chromium)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)


class Server(servers.Server):
    """gunicorn serving wsgi:app with one worker on a SQLite file of its own."""

    def __init__(self, tmp_path, *, port=None, cors_origins=(), demo_mode=True):
        self.db_path = tmp_path / "db.sqlite3"
        env = {
            **os.environ,
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "DATABASE_URL": f"sqlite:///{self.db_path}",
            "SECRET_KEY": "browser-tests-secret-key-0123456789abcdef",
            "DEMO_MODE": "1" if demo_mode else "0",
            "CORS_ORIGINS": ",".join(cors_origins),
            # Idle keep-alive connections from the browser keep a stopping gevent
            # worker alive until the graceful timeout; a test needs no 65 s drain.
            "GRACEFUL_TIMEOUT": "3",
        }
        super().__init__(env, port=port, log_path=tmp_path / "gunicorn.log")

    def seed(self):
        """The demo communities and users (``flask seed-demo``)."""
        servers.flask(self.env, "seed-demo", timeout=60)

    # --- the API, as another service would call it ------------------------------

    def request(self, method, path, *, token=None, body=None):
        headers = {"Accept": "application/json"}
        data = None
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if body is not None:
            headers["Content-Type"] = "application/json"
            data = json.dumps(body).encode()
        request = urllib.request.Request(f"{self.url}{path}", data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                raw = response.read()
                return response.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as error:
            with error:
                raw = error.read()
            return error.code, json.loads(raw) if raw else None

    @functools.cache
    def token(self, user_id):
        if user_id == "u-admin":
            # Demo mode gives the admin's token only inside the page, on this machine.
            with urllib.request.urlopen(self.url, timeout=10) as response:
                page = response.read().decode()
            return re.search(r'data-admin-token="([^"]+)"', page).group(1)
        status, body = self.request("POST", "/demo/tokens", body={"user_id": user_id})
        assert status == 201, body
        return body["token"]

    def put_member(self, community_id, user_id, role="member", *, as_user="u-admin"):
        status, body = self.request(
            "PUT",
            f"/communities/{community_id}/members/{user_id}",
            token=self.token(as_user),
            body={"role": role},
        )
        assert status in (200, 201), (status, body)

    def delete_member(self, community_id, user_id, *, as_user="u-admin"):
        status, body = self.request(
            "DELETE", f"/communities/{community_id}/members/{user_id}", token=self.token(as_user)
        )
        assert status == 204, (status, body)


class StaticSite:
    """A plain HTTP server for pages the tests write themselves (an embedding app)."""

    def __init__(self, directory):
        handler = functools.partial(_QuietHandler, directory=str(directory))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        pass



# --- the demo page as people see it ----------------------------------------------------

# Every part of the page that can crowd the next one: unread badges beside the
# community names, online counts, a notification, an opened community, a log.
LAYOUT_WIDTHS = {"desktop": (1280, 820), "phone": (390, 844)}
# Online counts at most half a second old in answers that come every 3 s, so that a
# page shows who is online within seconds of opening (the defaults take up to 25 s).
QUICK_PRESENCE = {"PRESENCE_INTERVAL": "0.5", "POLL_DEFAULT_TIMEOUT": "3", "POLL_MAX_TIMEOUT": "3"}


def demo_scene(server, page, *, user="u-ada", timeout=15_000):
    """Load the demo page as ``user`` with something in every part of it.

    Posts in Rust and Python and a notification for the user come first, over the
    API; the page then opens Python, which reads it, so Rust keeps its badge, and
    one more post in Python shows in the opened card.
    """
    from playwright.sync_api import expect

    admin = server.token("u-admin")
    for community_id, refs in [("c-rust", ["p-1", "p-2", "p-3"]), ("c-python", ["p-4"])]:
        for ref in refs:
            status, body = server.request("POST", f"/communities/{community_id}/activity", token=admin,
                                          body={"kind": "post_created", "ref": ref, "actor": "u-grace"})
            assert status == 201, body
    status, body = server.request("POST", f"/users/{user}/notifications", token=admin,
                                  body={"kind": "mention", "ref": "n-1", "actor": "u-grace"})
    assert status == 201, body

    page.goto(f"{server.url}/?user={user}")
    expect(page.locator("#status")).to_have_attribute("data-status", "live", timeout=timeout)
    rows = page.locator("#my-communities li")
    expect(rows.locator(".unread:visible")).to_have_count(2, timeout=timeout)
    expect(rows.locator(".online:visible")).to_have_count(2, timeout=timeout)
    expect(page.locator("#notifications li")).to_have_count(1, timeout=timeout)
    page.locator('#my-communities [data-open="c-python"]').click()
    expect(page.locator("#opened-presence li")).not_to_have_count(0, timeout=timeout)
    expect(rows.locator(".unread:visible")).to_have_count(1, timeout=timeout)
    # A post while it is open: the opened card lists it as it comes.
    status, body = server.request("POST", "/communities/c-python/activity", token=admin,
                                  body={"kind": "post_created", "ref": "p-5", "actor": "u-grace"})
    assert status == 201, body
    expect(page.locator("#opened-activity li")).to_have_count(1, timeout=timeout)


# Measures what a person would see go wrong: the page scrolling sideways, pieces of a
# sidebar row drawn over each other, header and heading texts broken over lines.
LAYOUT_PROBLEMS = """() => {
  const problems = [];
  const scroller = document.scrollingElement;
  if (scroller.scrollWidth > scroller.clientWidth) {
    problems.push(`scrolls sideways: ${scroller.scrollWidth} > ${scroller.clientWidth}`);
  }
  const visible = (el) => el && el.getClientRects().length > 0 && getComputedStyle(el).visibility !== "hidden";
  // The boxes of an element's own text, leaving out the text of `except` inside it.
  const textBoxes = (el, except = null) => {
    const boxes = [];
    const walker = document.createTreeWalker(el, NodeFilter.SHOW_TEXT);
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
      if (!node.textContent.trim() || (except && node.parentElement.closest(except))) continue;
      const range = document.createRange();
      range.selectNodeContents(node);
      boxes.push(...[...range.getClientRects()].filter((box) => box.width > 0));
    }
    return boxes;
  };
  const lines = (el) => {
    const boxes = textBoxes(el);
    if (boxes.length === 0) return 0;
    const tallest = Math.max(...boxes.map((box) => box.height));
    const span = Math.max(...boxes.map((box) => box.bottom)) - Math.min(...boxes.map((box) => box.top));
    return Math.round(span / tallest);
  };
  const overlap = (a, b) => a.left < b.right - 0.5 && b.left < a.right - 0.5 && a.top < b.bottom - 0.5 && b.top < a.bottom - 0.5;
  const name = (el) => el.id ? `#${el.id}` : `.${[...el.classList].join(".")}`;

  for (const row of document.querySelectorAll("#my-communities li")) {
    const id = row.dataset.communityId;
    const open = row.querySelector("[data-open]");
    const parts = [
      ["name", textBoxes(open, ".unread, .badge")],
      ...[...row.querySelectorAll(".unread, .badge, button[data-leave]")]
        .filter(visible)
        .map((el) => [name(el), [el.getBoundingClientRect()]]),
    ];
    for (let i = 0; i < parts.length; i += 1) {
      for (let j = i + 1; j < parts.length; j += 1) {
        const [a, aBoxes] = parts[i];
        const [b, bBoxes] = parts[j];
        if (aBoxes.some((box) => bBoxes.some((other) => overlap(box, other)))) problems.push(`${id}: ${a} over ${b}`);
      }
    }
  }

  const oneLine = [".topbar h1", ".topbar .tagline", "#tab-role", "#status", "#notifications-title", "#notifications-read"];
  for (const selector of oneLine) {
    const el = document.querySelector(selector);
    if (visible(el) && lines(el) > 1) problems.push(`${selector} on ${lines(el)} lines`);
  }
  // How many rows the elements sit on (their middles more than 12 px apart).
  const rows = (...selectors) => {
    const middles = selectors
      .map((selector) => document.querySelector(selector).getBoundingClientRect())
      .map((box) => box.top + box.height / 2);
    return middles.filter((middle, i) => middles.findIndex((other) => Math.abs(other - middle) < 12) === i).length;
  };
  // The header on at most two rows (the name, then the connection, on a phone).
  if (rows(".brand", "#tab-role", "#status") > 2) problems.push(`header on ${rows(".brand", "#tab-role", "#status")} rows`);
  if (rows("#notifications-title", "#notifications-read") > 1) problems.push("notifications header on two rows");
  return problems;
}"""


def screenshot(path, width=1280):
    """Write the demo page, as :func:`demo_scene` leaves it, to ``path`` (a PNG)."""
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        server = Server(Path(tmp))
        server.env.update(QUICK_PRESENCE)
        server.seed()
        server.start()
        try:
            with sync_playwright() as playwright:
                browser = launch_chromium(playwright)
                try:
                    page = browser.new_page(viewport={"width": width, "height": 820})
                    demo_scene(server, page)
                    # Rows that came with the first answer flash green for two seconds.
                    page.wait_for_function("() => document.getAnimations().every((a) => a.playState !== 'running'"
                                           " || a.effect.getTiming().iterations === Infinity)")
                    page.screenshot(path=str(path), full_page=True)
                finally:
                    browser.close()
        finally:
            server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m tests.browser_support",
                                     description="Take a screenshot of the demo page (docs/demo.png by default).")
    parser.add_argument("path", nargs="?", type=Path, default=ROOT / "docs" / "demo.png")
    parser.add_argument("--width", type=int, default=LAYOUT_WIDTHS["desktop"][0], help="viewport width in px")
    arguments = parser.parse_args()
    screenshot(arguments.path, arguments.width)
    print(arguments.path)
