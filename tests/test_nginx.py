"""deploy/nginx.conf in front of real gunicorn servers: long polls, gzip with 304s, and a drain.

The real nginx runs as this test's child process, with a prefix of its own in
the test's temporary directory and deploy/nginx.conf included as an operator
would, its upstream and `listen` pointed at free loopback ports.
"""
import os
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests

from app.settings import SETTINGS
from conftest import bearer
from harness.servers import ROOT, flask, free_port, wait_for

CONFIG = ROOT / "deploy" / "nginx.conf"
UPSTREAM = "    server 127.0.0.1:8000;\n"
LISTEN = "    listen 80;\n"
# The lines that keep upstream connections alive; without them nginx proxies as it does by
# default: HTTP/1.0 and Connection: close, a connection per request.
UPSTREAM_KEEPALIVE = ("    proxy_http_version 1.1;\n", '    proxy_set_header Connection "";\n')
POLL = "/community-changes/poll"


def nginx_binary():
    """Debian's nginx; missing is a skip on a laptop and a failure in CI."""
    binary = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    if binary is None:
        message = "nginx is not installed (apt-get install nginx)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return binary


class Nginx:
    """deploy/nginx.conf served by an nginx of our own, in front of ``upstreams``; with
    ``nginx_defaults``, without its upstream keep-alive lines (``UPSTREAM_KEEPALIVE``)."""

    def __init__(self, prefix, upstreams, nginx_defaults=False):
        self.prefix = Path(prefix)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        site = CONFIG.read_text()
        # The shipped file's own addresses, replaced: each exactly once, or this test runs another config.
        assert site.count(UPSTREAM) == 1 and site.count(LISTEN) == 1
        site = site.replace(UPSTREAM, "".join(f"    server 127.0.0.1:{port};\n" for port in upstreams))
        site = site.replace(LISTEN, f"    listen 127.0.0.1:{self.port};\n")
        if nginx_defaults:
            for line in UPSTREAM_KEEPALIVE:
                assert site.count(line) == 1, line
                site = site.replace(line, "")
        (self.prefix / "community-sync.conf").write_text(site)
        temp = "\n".join(f"    {kind}_temp_path {self.prefix / kind};"
                         for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        # One process, in the foreground, as this user: never the system's service.
        (self.prefix / "nginx.conf").write_text(f"""
daemon off;
master_process off;
pid {self.prefix / 'nginx.pid'};
error_log {self.prefix / 'error.log'} info;
events {{ worker_connections 256; }}
http {{
    access_log {self.prefix / 'access.log'};
{temp}
    include {self.prefix / 'community-sync.conf'};
}}
""")
        self.process = None

    def start(self):
        self.process = subprocess.Popen(
            [nginx_binary(), "-p", str(self.prefix), "-c", str(self.prefix / "nginx.conf"),
             "-e", str(self.prefix / "error.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
        )
        wait_for(self._listening, 10, message=f"nginx on port {self.port}:\n{self.log()}")
        return self

    def _listening(self):
        assert self.process.poll() is None, f"nginx exited:\n{self.log()}"
        try:
            return requests.get(self.url + "/healthz", timeout=5).status_code == 200
        except requests.ConnectionError:
            return False

    def stop(self):
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)

    def log(self):
        path = self.prefix / "error.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""


@pytest.fixture
def proxied(server_factory, tmp_path):
    """``proxied(database, servers=1, nginx_defaults=False)``: that many seeded gunicorns, behind
    nginx (``Nginx``); returns (nginx, servers)."""
    started = []

    def factory(database, servers=1, nginx_defaults=False):
        upstreams = [server_factory(database) for _ in range(servers)]
        flask(upstreams[0].env, "seed-demo")
        prefix = tmp_path / "nginx"
        prefix.mkdir()
        started.append(Nginx(prefix, [server.port for server in upstreams], nginx_defaults).start())
        return started[-1], upstreams

    yield factory
    for nginx in started:
        nginx.stop()


def test_the_poll_location_outwaits_the_longest_poll_unbuffered():
    poll = re.search(r"location = /community-changes/poll \{([^}]*)\}", CONFIG.read_text())[1]
    timeout = int(re.search(r"proxy_read_timeout (\d+)s;", poll)[1])
    assert timeout > SETTINGS["POLL_MAX_TIMEOUT"][1]
    assert "proxy_buffering off;" in poll


def poll_in_thread(url, headers, snapshot, timeout=20):
    """Start a poll from ``snapshot``'s cursor and hash; the dict gets its response."""
    result = {}

    def run():
        result["response"] = requests.get(
            url + POLL, headers={**headers, "Connection": "close"}, timeout=60,
            params={"cursor": snapshot["cursor"], "hash": snapshot["hash"], "timeout": timeout},
        )

    thread = threading.Thread(target=run)
    thread.start()
    return thread, result


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite"])
@pytest.mark.parametrize("nginx_defaults", [False, True], ids=["shipped", "nginx-defaults"])
def test_a_poll_through_nginx_waits_parked_until_a_change_answers_it(proxied, database, nginx_defaults):
    """Parked whether nginx keeps its upstream connections (the shipped file) or proxies as it
    does by default (HTTP/1.0, Connection: close); answered by a change, or by its timeout."""
    nginx, (server,) = proxied(database, nginx_defaults=nginx_defaults)
    ada = bearer("u-ada")
    snapshot = requests.get(nginx.url + "/me/communities", headers=ada).json()
    thread, result = poll_in_thread(nginx.url, ada, snapshot)
    wait_for(lambda: waiting(server) == 1, 10, message="the poll waiting")
    assert parked(server) == 1
    assert thread.is_alive(), "the poll answered before anything changed"

    joined = requests.put(nginx.url + "/communities/c-go/members/me", headers=ada)
    assert joined.status_code == 201
    thread.join(timeout=15)
    response = result["response"]
    assert response.status_code == 200
    assert response.json()["status"] == "changed"
    assert "c-go" in [community["id"] for community in response.json()["communities"]]
    wait_for(lambda: parked(server) == 0, 10, message="the parked poll let go")

    thread, result = poll_in_thread(nginx.url, ada, response.json(), timeout=3)
    wait_for(lambda: parked(server) == 1, 10, message="the next poll parked")
    thread.join(timeout=15)
    assert result["response"].status_code == 200
    assert result["response"].json()["status"] == "unchanged"
    assert parked(server) == waiting(server) == 0


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_gzipped_snapshot_weak_etag_revalidates_to_304(proxied, database):
    nginx, (server,) = proxied(database)
    ada = bearer("u-ada")
    direct = requests.get(server.url + "/me/communities", headers=ada)
    assert not direct.headers["ETag"].startswith("W/")

    snapshot = requests.get(nginx.url + "/me/communities", headers={**ada, "Accept-Encoding": "gzip"})
    assert snapshot.status_code == 200
    assert snapshot.headers["Content-Encoding"] == "gzip"
    etag = snapshot.headers["ETag"]
    assert etag == "W/" + direct.headers["ETag"]

    again = requests.get(nginx.url + "/me/communities",
                         headers={**ada, "Accept-Encoding": "gzip", "If-None-Match": etag})
    assert again.status_code == 304
    assert again.content == b""


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_draining_upstream_answers_its_polls_and_nginx_sends_no_5xx(proxied, database):
    nginx, (leaving, staying) = proxied(database, servers=2)
    users = ["u-ada", "u-grace", "u-alan", "u-ada", "u-grace", "u-alan"]
    # Snapshots first: nginx takes turns per request, so the polls alternate between the servers.
    snapshots = [requests.get(nginx.url + "/me/communities", headers=bearer(user)).json() for user in users]
    polls = [poll_in_thread(nginx.url, bearer(user), snapshot, timeout=30)
             for user, snapshot in zip(users, snapshots)]
    # Round robin: each server holds some of them (counted by the server, not guessed).
    wait_for(lambda: all(waiting(server) > 0 for server in (leaving, staying)), 10,
             message="polls waiting on both servers")

    started = time.monotonic()
    leaving.process.terminate()
    drained = wait_for(lambda: [result for thread, result in polls if not thread.is_alive()], 10,
                       message="the draining server's polls answered")
    assert time.monotonic() - started < 10
    assert {result["response"].status_code for result in drained} == {200}
    assert {result["response"].json()["status"] for result in drained} == {"unchanged"}
    leaving.process.wait(timeout=30)

    # The rest still wait on the server that stays, and a change answers them there.
    for user, community in [("u-grace", "c-rust"), ("u-ada", "c-go"), ("u-alan", "c-rust")]:
        joined = requests.put(f"{nginx.url}/communities/{community}/members/me", headers=bearer(user))
        assert joined.status_code == 201
    for thread, _ in polls:
        thread.join(timeout=30)
    statuses = [result["response"].status_code for _, result in polls]
    assert statuses == [200] * len(users)

    # With one server gone, nginx sends everything to the other: still no 5xx.
    for user in users:
        assert requests.get(nginx.url + "/me/communities", headers=bearer(user)).status_code == 200


def waiting(server):
    """Polls waiting on ``server`` now, from its /metrics."""
    return sum(value for sample, value in server.metrics().items()
               if sample.startswith("community_sync_waiting_polls"))


def parked(server):
    """Of those, the polls parked as a socket (app/live/parking.py)."""
    return sum(value for sample, value in server.metrics().items()
               if sample.startswith("community_sync_parked_polls"))
