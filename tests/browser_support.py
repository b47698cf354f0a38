"""Real servers and a real Chromium for the browser tests.

Each test runs the application the way it runs in production, under gunicorn in its
own process and on its own SQLite file, so that stopping the server is a real outage.
"""

import functools
import http.server
import json
import os
import re
import sys
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

