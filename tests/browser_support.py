"""Real servers and a real Chromium for the browser tests.

Each test runs the application the way it runs in production, under gunicorn in its
own process and on its own SQLite file, so that stopping the server is a real outage.
"""

import functools
import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
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


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch_chromium(playwright):
    """Debian's Chromium; missing is a skip on a laptop and a failure in CI."""
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is missing (apt-get install chromium)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)


class Server:
    """gunicorn serving wsgi:app on 127.0.0.1:port, with the demo data seeded."""

    def __init__(self, tmp_path, *, port=None, cors_origins=(), demo_mode=True):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.db_path = tmp_path / "db.sqlite3"
        self.log_path = tmp_path / "gunicorn.log"
        self.env = {
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
        self.process = None

    def seed(self):
        subprocess.run(
            [BIN / "flask", "--app", "wsgi", "seed-demo"],
            cwd=ROOT,
            env=self.env,
            check=True,
            capture_output=True,
            timeout=60,
        )

    def start(self):
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [BIN / "gunicorn", "wsgi:app", "--bind", f"127.0.0.1:{self.port}", "--workers", "1"],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.process.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=1) as response:
                    if response.status == 200:
                        return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"gunicorn did not answer /healthz within 30 s:\n{self.log()}")

    def stop(self):
        """Stop gunicorn like a deploy does (SIGTERM), killing it if it lingers."""
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)
        self.process = None

    def log(self):
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

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

