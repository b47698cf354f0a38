"""The React adapter in a real Chromium: React's UMD build and the page served by the
test, the adapter and the client from the server's /static/, no bundler (an import
map points the adapter's `import ... from "react"` at a module over the UMD global).

React comes from npm, installed by the `react` fixture at the version
tests/adapters/package.json pins (npm's cache serves it after the first run).
"""
import json
import shutil
import subprocess

import pytest
from playwright.sync_api import expect

from browser_support import ROOT, Server, StaticSite
from conftest import require_command

pytestmark = pytest.mark.browser

WAIT = 15_000  # ms

PAGE = """<!doctype html>
<meta charset="utf-8">
<script src="/react.development.js"></script>
<script src="/react-dom.development.js"></script>
<script type="importmap">{{"imports": {{"react": "/react.js"}}}}</script>
<div id="root"></div>
<script type="module">
  import {{ createElement as h }} from "react";
  import {{ CommunitySyncProvider, useCommunitySync, useCommunitySyncClient }} from "{api}/static/community-sync-react.js";
  const token = new URLSearchParams(location.hash.slice(1)).get("token");
  window.renders = 0;
  function Sidebar() {{
    const {{ communities, status }} = useCommunitySync();
    const sync = useCommunitySyncClient();
    window.renders += 1;
    return h("section", {{ "data-status": status }},
      h("ul", null, communities.map((c) => h("li", {{ key: c.id, "data-community-id": c.id }}, c.name))),
      h("button", {{ id: "join", onClick: () => sync?.join("c-go", {{ name: "Go" }}) }}, "Join Go"));
  }}
  const options = {{ baseUrl: "{api}", getToken: async () => token }};
  ReactDOM.createRoot(document.querySelector("#root")).render(
    h(CommunitySyncProvider, {{ user: "u-ada", options }}, h(Sidebar)));
</script>
"""

# The adapter's `import ... from "react"`, answered by the UMD build's global.
SHIM = """const React = window.React;
export default React;
export const { createContext, createElement, useCallback, useContext, useEffect, useRef, useState, useSyncExternalStore } = React;
"""


@pytest.fixture(scope="module")
def react(tmp_path_factory):
    """React's and ReactDOM's UMD builds, installed from npm at the pinned version."""
    npm = require_command("npm", "apt-get install npm")
    pinned = json.loads((ROOT / "tests" / "adapters" / "package.json").read_text())["dependencies"]
    directory = tmp_path_factory.mktemp("react")
    (directory / "package.json").write_text('{"private": true}\n')
    result = subprocess.run(
        [npm, "install", "--no-audit", "--no-fund", "--ignore-scripts", f"react@{pinned['react']}", f"react-dom@{pinned['react-dom']}"],
        cwd=directory, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    modules = directory / "node_modules"
    return [modules / "react" / "umd" / "react.development.js", modules / "react-dom" / "umd" / "react-dom.development.js"]


@pytest.fixture
def site(react, tmp_path):
    """The server, and the app's page on an origin of its own: (server, page url)."""
    pages = tmp_path / "site"
    pages.mkdir()
    with StaticSite(pages) as static:
        origin = f"http://127.0.0.1:{static.port}"
        server = Server(tmp_path, cors_origins=(origin,))
        server.seed()
        server.start()
        try:
            for build in react:
                shutil.copyfile(build, pages / build.name)
            (pages / "react.js").write_text(SHIM)
            (pages / "sidebar.html").write_text(PAGE.format(api=server.url))
            yield server, f"{origin}/sidebar.html"
        finally:
            server.stop()
            print(f"--- gunicorn log ---\n{server.log()[-4000:]}")


def test_a_join_in_one_tab_renders_again_in_the_other(browser, site):
    server, url = site
    context = browser.new_context()
    try:
        tabs = []
        for _ in range(2):
            page = context.new_page()
            errors = []
            page.on("pageerror", lambda error, errors=errors: errors.append(str(error)))
            page.goto(f"{url}#token={server.token('u-ada')}")
            expect(page.locator('li[data-community-id="c-rust"]')).to_be_visible(timeout=WAIT)
            expect(page.locator("section")).to_have_attribute("data-status", "live", timeout=WAIT)
            tabs.append((page, errors))
        (first, _), (second, _) = tabs
        renders = second.evaluate("window.renders")

        first.locator("#join").click()
        for page, _ in tabs:
            expect(page.locator('li[data-community-id="c-go"]')).to_have_text("Go", timeout=WAIT)
        # The other tab rendered again for the join, and not on every poll since.
        assert second.evaluate("window.renders") > renders
        assert [errors for _, errors in tabs] == [[], []]
    finally:
        context.close()
