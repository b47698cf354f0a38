"""/docs: the OpenAPI document rendered by Swagger UI, served by the app itself."""
import pytest
from playwright.sync_api import expect, sync_playwright

from browser_support import Server, launch_chromium

WAIT = 20_000  # ms; Swagger UI parses and renders the whole document


def test_the_page_needs_no_token_and_loads_only_the_apps_own_files(client):
    with client.get("/docs") as response:
        assert response.status_code == 200 and response.mimetype == "text/html"
        page = response.get_data(as_text=True)
        # The app's own policy, not a weaker one: no CDN, no inline script or style.
        policy = response.headers["Content-Security-Policy"]
    assert 'data-url="/openapi.json"' in page
    for path in ("/docs/swagger-ui.css", "/docs/swagger-ui-bundle.js", "/static/api-docs.js"):
        assert f'"{path}"' in page
        with client.get(path) as response:
            assert response.status_code == 200, path
    assert "script-src 'self';" in policy and "style-src 'self';" in policy
    assert "unsafe" not in policy


def test_the_renderer_serves_its_files_and_nothing_else(client):
    with client.get("/docs/swagger-ui-bundle.js") as response:
        assert response.mimetype == "text/javascript"
    for path in ("/docs/nothing.js", "/docs/..", "/docs/%2e%2e%2fflask_swagger_ui.py"):
        with client.get(path) as response:
            assert response.status_code == 404 and response.mimetype == "application/problem+json", path


@pytest.mark.browser
def test_chromium_renders_every_path_of_the_document(tmp_path):
    server = Server(tmp_path).start()
    try:
        with sync_playwright() as playwright:
            browser = launch_chromium(playwright)
            page = browser.new_page()
            problems = []
            page.on("pageerror", lambda error: problems.append(str(error)))
            # A blocked inline style or script is reported on the console.
            page.on("console", lambda message: message.type == "error" and problems.append(message.text))
            outside = []
            page.on("request", lambda request: request.url.startswith(server.url) or outside.append(request.url))
            page.goto(f"{server.url}/docs")
            rendered = page.locator(".opblock-summary-path")
            expect(rendered.first).to_be_visible(timeout=WAIT)
            paths = {text.replace("\u200b", "") for text in rendered.all_inner_texts()}
            document = page.evaluate("fetch('/openapi.json').then((response) => response.json())")
            browser.close()
    finally:
        server.stop()
    assert set(document["paths"]) <= paths, set(document["paths"]) - paths
    assert not problems and not outside, (problems, outside)
