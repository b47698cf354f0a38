"""The client's modules at /static/v/<version>/ (app/http/client.py), beside /static/."""
import json
import re
from pathlib import Path

PACKAGE = json.loads((Path(__file__).resolve().parent.parent / "app" / "static" / "package.json").read_text())
VERSIONED = f"/static/v/{PACKAGE['version']}"
IMMUTABLE = "public, max-age=31536000, immutable"
RELATIVE_IMPORT = re.compile(r'^(?:import|export)\b[^;]*?\bfrom "\./([^"]+)"', re.MULTILINE)


def test_the_versioned_client_is_the_same_file_cached_for_a_year(client):
    with client.get("/static/community-sync.js") as today, client.get(f"{VERSIONED}/community-sync.js") as versioned:
        assert versioned.status_code == 200 and versioned.mimetype == "text/javascript"
        assert versioned.data == today.data
        assert versioned.headers["Cache-Control"] == IMMUTABLE
        # Today's path keeps its caching: revalidated each time, so a deployment shows at once.
        assert today.headers["Cache-Control"] == "no-cache"
        etag = versioned.headers["ETag"]
    with client.get(f"{VERSIONED}/community-sync.js", headers={"If-None-Match": etag}) as again:
        assert again.status_code == 304


def test_what_the_client_imports_is_there_at_the_same_version(client):
    seen, queue = set(), ["community-sync.js", "community-sync-relay.js"]
    while queue:
        name = queue.pop()
        if name in seen:
            continue
        seen.add(name)
        with client.get(f"{VERSIONED}/{name}") as response:
            assert response.status_code == 200, name
            assert response.headers["Cache-Control"] == IMMUTABLE, name
            queue += RELATIVE_IMPORT.findall(response.get_data(as_text=True))
    assert seen == {
        "community-sync.js", "community-sync-decisions.js", "community-sync-election.js",
        "community-sync-requests.js", "community-sync-calls.js", "community-sync-relay.js",
        "community-sync-store.js", "community-sync-tabs.js", "community-sync-loop.js",
        "community-sync-watches.js", "community-sync-optimistic.js",
    }


def test_other_versions_and_files_are_not_found(client):
    for path in (
        "/static/v/0.0.0-other/community-sync.js",
        f"{VERSIONED}/demo.js",
        f"{VERSIONED}/package.json",
        f"{VERSIONED}/community-sync.d.ts",
        f"{VERSIONED}/nothing.js",
        f"{VERSIONED}/..",
    ):
        with client.get(path) as response:
            assert response.status_code == 404 and response.mimetype == "application/problem+json", path
            assert "immutable" not in response.headers.get("Cache-Control", ""), path
