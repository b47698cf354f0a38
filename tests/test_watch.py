"""The terminal follower (app/watch.py): its pacing, its lines, and both ways to start it."""
import http.server
import json
import queue
import signal
import subprocess
import sys
import threading
from email.utils import formatdate

import pytest
import requests

from app import watch
from conftest import BIN, bearer
from harness.servers import ROOT, flask, free_port, python_environ, sigint_as_in_a_terminal

ANSWER_WAIT = 30  # seconds a line may take to come under a loaded CI machine


# -- pacing, the browser client's rule (docs/client.md#pacing) ---------------------


@pytest.mark.parametrize("draw", [0.0, 0.5, 0.999])
def test_backoff_doubles_up_to_its_cap_with_equal_jitter(draw):
    ceilings = [min(30.0, 0.5 * 2**failures) for failures in range(10)]
    delays = [watch.backoff_delay(failures, random=lambda: draw) for failures in range(10)]
    for delay, ceiling in zip(delays, ceilings):
        assert ceiling / 2 <= delay <= ceiling
        assert delay == pytest.approx(ceiling / 2 + draw * ceiling / 2)
    assert delays == sorted(delays) and delays[-1] <= 30.0


def test_retry_after_is_honoured_spread_over_a_quarter_more_and_capped():
    low, high = (lambda: 0.0), (lambda: 0.999)
    assert watch.retry_delay(0, 8.0, random=low) == 8.0
    assert 8.0 < watch.retry_delay(0, 8.0, random=high) <= 10.0
    # Never shorter than the backoff, whatever the server says.
    assert watch.retry_delay(6, 1.0, random=low) == watch.backoff_delay(6, random=low)
    assert watch.retry_delay(3, 0.0, random=low) == watch.backoff_delay(3, random=low)
    # An hour is not honoured in full.
    assert watch.retry_delay(0, 3600.0, random=low) == watch.MAX_RETRY_AFTER


def test_retry_after_is_read_as_seconds_or_an_http_date_on_the_given_clock():
    now = 1_800_000_000.0
    assert watch.parse_retry_after("7", now) == 7.0
    assert watch.parse_retry_after(formatdate(now + 90, usegmt=True), now) == pytest.approx(90.0)
    assert watch.parse_retry_after(formatdate(now - 90, usegmt=True), now) == 0.0
    # "²" is a digit to str.isdigit, and float() refuses it.
    for unreadable in (None, "", "soon", "-3", "1.5", "\u00b2", "\u0663"):
        assert watch.parse_retry_after(unreadable, now) is None


def test_early_unchanged_answers_space_the_next_poll_growing_to_the_cap():
    delays = [watch.early_unchanged_delay(streak, random=lambda: 0.0) for streak in range(1, 10)]
    assert delays[:3] == [1.0, 2.0, 4.0] and delays[-1] == watch.MAX_DELAY


# -- the loop, with a fake clock ----------------------------------------------------


class FakeTime:
    """``sleep`` that records and returns at once; the follower's clock moves with it."""

    def __init__(self, sleeps):
        self.now = 1_800_000_000.0
        self.delays = []
        self.sleeps = sleeps

    def sleep(self, seconds):
        self.delays.append(seconds)
        self.now += seconds
        if len(self.delays) >= self.sleeps:
            raise KeyboardInterrupt  # Ctrl-C during a wait

    def time(self):
        return self.now


def fake_follower(url, clock, out, draws=(0.3, 0.9, 0.1, 0.7)):
    """A Watch on ``url`` on the fake clock, drawing ``draws`` in turn as its randomness."""
    draws = iter(list(draws) * 10)
    return watch.Watch(url, lambda _refresh: "a-token", out=out, err=out, sleep=clock.sleep, now=clock.time,
                       random=lambda: next(draws))


def test_a_refused_connection_is_retried_with_growing_jittered_delays(capsys):
    clock = FakeTime(sleeps=5)
    draws = (0.3, 0.9, 0.1, 0.7, 0.5)
    url = f"http://127.0.0.1:{free_port()}"
    assert fake_follower(url, clock, sys.stdout, draws).run() == watch.EXIT_INTERRUPTED
    ceilings = [0.5, 1.0, 2.0, 4.0, 8.0]
    assert clock.delays == pytest.approx([c / 2 + d * c / 2 for c, d in zip(ceilings, draws)])
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 5 and all(" error " in line and "retrying in" in line for line in lines), lines
    # Which server it could not reach: a mistyped --url or COMMUNITY_SYNC_URL shows at once.
    assert all(f"{url}/me/communities" in line for line in lines), lines


@pytest.fixture
def stub():
    """A server answering the snapshot, then each poll with the next of ``stub.polls``."""
    snapshot = {"user": {"id": "u-1", "name": None}, "communities": [], "hash": "h0", "cursor": "k0",
                "server_time": "2027-01-15T08:00:00.000Z", "notifications_unread": 0, "online": {}}
    seen = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            seen.append((self.path, self.headers["Authorization"]))
            if self.path == "/me/communities":
                status, headers, body = 200, {}, snapshot
            else:
                status, headers, body = Handler.polls.pop(0) if Handler.polls else (503, {}, {})
            data = json.dumps(body).encode()
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.seen = seen
    httpd.handler = Handler
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def test_a_503_waits_its_retry_after_and_progress_resets_the_backoff(stub, capsys):
    overloaded = (503, {"Retry-After": "4"}, {"type": "x", "title": "Service Unavailable", "status": 503,
                                               "detail": "at capacity"})
    moved = {"status": "unchanged", "cursor": "k1", "hash": "h0", "server_time": "2027-01-15T08:01:00.000Z",
             "online": {}}
    stub.handler.polls = [overloaded, overloaded, (200, {}, moved), (503, {}, {})]
    clock = FakeTime(sleeps=4)
    assert fake_follower(stub.url, clock, sys.stdout, draws=(0.0,)).run() == watch.EXIT_INTERRUPTED
    # Retry-After (4 s) beats the first two backoffs; the answer that moved the cursor
    # came at once (a 1 s gap before the next poll) and reset the count, so the next
    # failure waits the first backoff again.
    assert clock.delays == [4.0, 4.0, 1.0, 0.25]
    assert [path.split("?")[0] for path, _ in stub.seen] == ["/me/communities"] + ["/community-changes/poll"] * 4
    assert all(auth == "Bearer a-token" for _, auth in stub.seen)
    assert "cursor=k1" in stub.seen[-1][0] and "cursor=k0" in stub.seen[1][0]
    out = capsys.readouterr().out
    assert "HTTP 503: at capacity; retrying in 4.0 s" in out


def test_a_refused_token_ends_the_watch(stub, capsys):
    stub.handler.polls = [(401, {}, {"detail": "expired"})] * 2
    tokens = []
    clock = FakeTime(sleeps=10)
    follower_ = watch.Watch(stub.url, lambda refresh: tokens.append(refresh) or "same", out=sys.stdout,
                            sleep=clock.sleep, now=clock.time)
    assert follower_.run() == 1
    assert tokens == [False, True]  # asked once more, got the same token: no point repeating
    assert "giving up" in capsys.readouterr().out


# -- against a real server ------------------------------------------------------------


class Lines:
    """A subprocess's stdout, line by line, read in a thread so a test can wait with a deadline."""

    def __init__(self, command, env):
        self.process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True, preexec_fn=sigint_as_in_a_terminal)
        self.queue = queue.Queue()
        self.seen = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.process.stdout:
            self.queue.put(line.rstrip("\n"))

    def next(self):
        try:
            line = self.queue.get(timeout=ANSWER_WAIT)
        except queue.Empty:
            raise AssertionError(f"no line within {ANSWER_WAIT} s after {self.seen}") from None
        self.seen.append(line)
        return line

    def until(self, predicate):
        while not predicate(line := self.next()):
            pass
        return line

    def interrupt(self):
        """Ctrl-C; the exit status and stderr."""
        self.process.send_signal(signal.SIGINT)
        try:
            _out, err = self.process.communicate(timeout=30)
        finally:
            self.process.kill()
        return self.process.returncode, err


@pytest.fixture
def live(database, server_factory):
    """A server on the demo data, and the environment its commands run in."""
    server = server_factory(database)
    flask(database.environ(), "seed-demo")
    return server, python_environ(database.environ())


def join(server, user_id, community_id):
    response = requests.put(f"{server.url}/communities/{community_id}/members/me", headers=bearer(user_id),
                            timeout=10)
    assert response.status_code == 201, response.text


def test_flask_watch_mints_a_token_and_prints_the_snapshot_then_a_join_in_words(live):
    server, env = live
    follower = Lines([str(BIN / "flask"), "--app", "wsgi", "watch", "u-alan", "--url", server.url, "--timeout", "20"],
                     env)
    try:
        snapshot = follower.next()
        assert " snapshot " in snapshot and "1 community: c-go (member)" in snapshot, snapshot
        join(server, "u-alan", "c-rust")
        changed = follower.until(lambda line: " changed " in line)
        assert "joined c-rust as member" in changed and "rtt " in changed and "state age " in changed, changed
    finally:
        status, err = follower.interrupt()
    assert status == watch.EXIT_INTERRUPTED and "Traceback" not in err, err


def test_python_m_app_watch_prints_json_lines_with_the_poll_answers(live):
    server, env = live
    env[watch.TOKEN_ENV] = bearer("u-alan")["Authorization"].removeprefix("Bearer ")
    follower = Lines([sys.executable, "-m", "app.watch", server.url, "--json", "--timeout", "20"], env)
    try:
        snapshot = json.loads(follower.next())
        assert {"user", "communities", "hash", "cursor", "server_time"} <= set(snapshot)
        join(server, "u-alan", "c-rust")
        answer = json.loads(follower.until(lambda line: json.loads(line)["status"] == "changed"))
    finally:
        status, err = follower.interrupt()
    assert {"status", "cursor", "hash", "server_time", "changes", "added", "communities"} <= set(answer)
    assert [(c["type"], c["community_id"]) for c in answer["changes"]] == [("joined", "c-rust")]
    assert answer["added"] == ["c-rust"]
    assert all(json.loads(line) for line in follower.seen)
    assert status == watch.EXIT_INTERRUPTED and "Traceback" not in err, err


def test_ctrl_c_stops_the_watch_however_the_shell_started_the_tests(stub):
    """A shell that starts pytest in the background (``&``, a script) has it ignore SIGINT, and its children
    inherit that: the follower must still be one Ctrl-C from stopping, as in a terminal."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        follower = Lines([sys.executable, "-m", "app.watch", stub.url, "--token", "t"], python_environ())
    finally:
        signal.signal(signal.SIGINT, previous)
    assert " snapshot " in follower.next()
    status, err = follower.interrupt()
    assert status == watch.EXIT_INTERRUPTED and "Traceback" not in err, err


def test_the_standalone_form_needs_a_token(tmp_path):
    env = {key: value for key, value in python_environ().items() if key != watch.TOKEN_ENV}
    finished = subprocess.run([sys.executable, "-m", "app.watch", "http://127.0.0.1:1"], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=60)
    assert finished.returncode == 2 and "COMMUNITY_SYNC_TOKEN" in finished.stderr


def test_changes_in_words():
    after = {"c-go": {"id": "c-go", "name": "Gophers", "role": "member"}}
    before = {"c-go": {"id": "c-go", "name": "Go", "role": "member"}}
    words = [
        ({"type": "joined", "community_id": "c-go", "role": "member"}, "joined c-go as member"),
        ({"type": "left", "community_id": "c-rust"}, "left c-rust"),
        ({"type": "role_changed", "community_id": "c-go", "role": "moderator"}, "role in c-go now moderator"),
        ({"type": "community_updated", "community_id": "c-go"}, "c-go renamed to 'Gophers'"),
        ({"type": "community_deleted", "community_id": "c-go"}, "c-go deleted"),
        ({"type": "activity", "community_id": "c-go", "kind": "post_created", "ref": "p-42"},
         "activity post_created p-42 in c-go"),
        ({"type": "notification", "kind": "mention", "ref": "p-42"}, "notification mention p-42"),
        ({"type": "read", "community_id": "c-go"}, "read c-go"),
        ({"type": "read"}, "read notifications"),
    ]
    assert [watch.describe_change(change, after, before) for change, _ in words] == [text for _, text in words]
    assert watch.describe_change({"type": "community_updated", "community_id": "c-go"}, after, after) == \
        "c-go updated"


@pytest.mark.parametrize("bad", ["ftp://host", "127.0.0.1:8000"])
def test_a_url_that_is_not_http_is_refused(app, bad):
    result = app.test_cli_runner().invoke(args=["watch", "u-alan", "--url", bad])
    assert result.exit_code == 2 and "not an http:// or https:// URL" in result.output


def test_the_url_may_come_from_the_environment(stub, app, monkeypatch):
    """COMMUNITY_SYNC_URL, when no --url is given; the follower's first request reaches it."""
    stub.handler.polls = []
    monkeypatch.setenv(watch.URL_ENV, stub.url)
    monkeypatch.setattr(watch.Watch, "run", lambda self: 0 if self.step() == 0 else 1)
    result = app.test_cli_runner().invoke(args=["watch", "u-alan"])
    assert result.exit_code == 0, result.output
    assert " snapshot " in result.output and stub.seen[0][0] == "/me/communities"


def test_an_answer_without_a_cursor_is_paced_like_a_failure(stub, capsys):
    stub.handler.polls = [(200, {}, {"hello": "proxy"})] * 3
    clock = FakeTime(sleeps=3)
    assert fake_follower(stub.url, clock, sys.stdout, draws=(0.0,)).run() == watch.EXIT_INTERRUPTED
    assert clock.delays == [0.25, 0.5, 1.0]
    assert capsys.readouterr().out.count("HTTP 200 without a cursor") == 3
