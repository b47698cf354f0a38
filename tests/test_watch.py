"""The terminal follower (app/watch.py): its pacing, its lines, and both ways to start it."""
import http.server
import json
import queue
import signal
import subprocess
import sys
import threading
from email.utils import formatdate
from urllib.parse import parse_qs, urlsplit

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


# -- topics ---------------------------------------------------------------------------


def test_topic_activity_in_words_with_its_payload_on_the_line():
    words = [
        ({"type": "activity", "community_id": "c-1", "topic": "thread:t-9", "kind": "reply", "ref": "r-7",
          "by": "u-7", "at": "2027-01-15T08:00:00.000Z"}, "reply r-7 in c-1/thread:t-9 by u-7"),
        ({"type": "activity", "community_id": "c-1", "topic": "post:p-1", "kind": "votes", "ref": "p-1",
          "by": None, "data": {"count": 12, "title": "Café, \"deux\""}},
         'votes p-1 in c-1/post:p-1 {"count":12,"title":"Café, \\"deux\\""}'),
        # A payload on community-level activity is shown too; its words stay as before.
        ({"type": "activity", "community_id": "c-go", "kind": "post_created", "ref": "p-42", "by": "u-7",
          "data": {"n": [1, 2]}}, 'activity post_created p-42 in c-go {"n":[1,2]}'),
    ]
    assert [watch.describe_change(change, {}, {}) for change, _ in words] == [text for _, text in words]


def test_a_payload_cannot_steer_the_terminal():
    change = {"type": "activity", "community_id": "c-1", "topic": "thread:t-9", "kind": "reply", "ref": "r-7",
              "data": {"title": "a\x1b[2Jb\x9b31mc\u2028d\ne"}}
    line = watch.describe_change(change, {}, {})
    assert line == 'reply r-7 in c-1/thread:t-9 {"title":"a\\u001b[2Jb\\x9b31mc\\u2028d\\ne"}'
    assert line.isprintable()


WATCH_SAMPLES = [
    "c-1/thread:t-9", "c-1/*", "c@x:y.z/story:s-4", "c-1/" + "t" * 64, "c" * 64 + "/b", "...:/x", "./x",
    "c-1", "c-1/", "/thread:t-1", "c-1/Thread", "c-1/1thread", "c-1/thread t", "c-1/" + "t" * 65,
    "c" * 65 + "/b", "c-1/thread/t-1", "../thread:t-1", "c 1/thread:t-1", "c-1/**",
    "c-1/thread:t-1\n", "c-1/ä", "c/1/x",
]


@pytest.mark.parametrize("name", WATCH_SAMPLES)
def test_the_followers_watch_rule_is_the_servers(name):
    """The rule is copied (the standalone form cannot import the server's): it must not drift."""
    from app.watches import InvalidWatch, Watches

    try:
        Watches.parse([name])
        server_takes = True
    except InvalidWatch:
        server_takes = False
    try:
        watch.watch_names([name])
        follower_takes = True
    except ValueError:
        follower_takes = False
    assert follower_takes == server_takes


def test_topics_are_counted_without_repeats_up_to_the_servers_limit():
    from app.watches import MAX_WATCHES

    assert watch.MAX_WATCHES == MAX_WATCHES
    names = [f"c-1/thread:t-{n}" for n in range(MAX_WATCHES)]
    assert watch.watch_names(names + names[:3]) == tuple(names)
    with pytest.raises(ValueError, match="at most 20 topics, not 21"):
        watch.watch_names(names + ["c-2/*"])


def topic_answer(cursor, hash_, *changes):
    return {"status": "changed", "cursor": cursor, "hash": hash_, "server_time": "2027-01-15T08:01:00.000Z",
            "changes": list(changes), "online": {}}


def test_every_poll_sends_the_topics_and_their_activity_is_told_in_words(stub, capsys):
    reply = {"type": "activity", "community_id": "c-1", "topic": "thread:t-9", "kind": "reply", "ref": "r-7",
             "by": "u-7", "at": "2027-01-15T08:01:00.000Z", "data": {"title": "Re: hi"}}
    stub.handler.polls = [(503, {}, {}), (200, {}, topic_answer("k1", "h0", reply))]
    clock = FakeTime(sleeps=2)
    draws = iter([0.0] * 10)
    follower_ = watch.Watch(stub.url, lambda _refresh: "a-token", watches=("c-1/thread:t-9", "c-2/*"),
                            out=sys.stdout, sleep=clock.sleep, now=clock.time, random=lambda: next(draws))
    assert follower_.run() == watch.EXIT_INTERRUPTED
    polls = [parse_qs(urlsplit(path).query) for path, _ in stub.seen[1:]]
    assert len(polls) == 3  # the 503, the answer, and the one that found no answer left (another 503)
    assert all(query["watch"] == ["c-1/thread:t-9", "c-2/*"] for query in polls), polls
    assert [query["cursor"] for query in polls] == [["k0"], ["k0"], ["k1"]]
    # Topic activity is not in the hash: the next poll sends it as it was.
    assert polls[-1]["hash"] == ["h0"]
    changed = [line for line in capsys.readouterr().out.splitlines() if " changed " in line]
    assert len(changed) == 1 and 'changed   reply r-7 in c-1/thread:t-9 by u-7 {"title":"Re: hi"}  (' in changed[0]


def test_without_topics_the_poll_sends_no_watch(stub):
    stub.handler.polls = [(200, {}, topic_answer("k1", "h1"))]
    clock = FakeTime(sleeps=1)
    assert fake_follower(stub.url, clock, sys.stdout, draws=(0.0,)).run() == watch.EXIT_INTERRUPTED
    assert all("watch" not in parse_qs(urlsplit(path).query) for path, _ in stub.seen), stub.seen


REFUSED_WATCH = (400, {}, {"type": "urn:community-sync:problem:invalid-watch", "title": "Bad Request",
                           "status": 400, "detail": "At most 20 watches, not 21."})
UNKNOWN_COMMUNITY = (404, {}, {"type": "urn:community-sync:problem:unknown-community", "title": "Not Found",
                               "status": 404, "detail": "There is no community 'c-2'."})


@pytest.mark.parametrize("refusal, said", [
    (REFUSED_WATCH, "HTTP 400: At most 20 watches, not 21. (giving up: the server refuses --topic c-1/* c-2/*)"),
    (UNKNOWN_COMMUNITY, "HTTP 404: There is no community 'c-2'. (giving up: a --topic names a community"),
])
def test_a_refused_watch_ends_the_follower_without_retrying(stub, capsys, refusal, said):
    stub.handler.polls = [refusal] * 3
    clock = FakeTime(sleeps=10)
    follower_ = watch.Watch(stub.url, lambda _refresh: "a-token", watches=("c-1/*", "c-2/*"), out=sys.stdout,
                            sleep=clock.sleep, now=clock.time)
    assert follower_.run() == 1
    assert clock.delays == [] and len(stub.seen) == 2, stub.seen
    lines = capsys.readouterr().out.splitlines()
    assert " snapshot " in lines[0] and len(lines) == 2 and " error " in lines[1] and said in lines[1], lines


def test_a_400_that_is_not_about_watches_still_starts_over_from_a_snapshot(stub, capsys):
    unreadable = (400, {}, {"type": "urn:community-sync:problem:invalid-cursor", "status": 400,
                            "detail": "The cursor cannot be read."})
    stub.handler.polls = [unreadable]
    clock = FakeTime(sleeps=1)
    follower_ = watch.Watch(stub.url, lambda _refresh: "a-token", watches=("c-1/*",), out=sys.stdout,
                            sleep=clock.sleep, now=clock.time, random=lambda: 0.0)
    assert follower_.run() == watch.EXIT_INTERRUPTED
    assert follower_.cursor is None and clock.delays == [0.25]
    assert "giving up" not in capsys.readouterr().out


def test_with_json_a_refused_watch_is_told_on_stderr_and_stdout_stays_json(stub, capsys):
    stub.handler.polls = [UNKNOWN_COMMUNITY]
    clock = FakeTime(sleeps=10)
    follower_ = watch.Watch(stub.url, lambda _refresh: "a-token", watches=("c-2/story:s-4",), json_lines=True,
                            sleep=clock.sleep, now=clock.time)
    assert follower_.run() == 1
    captured = capsys.readouterr()
    assert [json.loads(line)["cursor"] for line in captured.out.splitlines()] == ["k0"]
    assert "There is no community 'c-2'. (giving up" in captured.err


@pytest.mark.parametrize("topics, said", [
    (["c-1/Thread"], "'c-1/Thread' is not <community_id>/<topic>"),
    ([f"c-1/t-{n}" for n in range(21)], "at most 20 topics, not 21"),
])
def test_a_malformed_topic_is_refused_before_any_request(app, capsys, topics, said):
    flags = [arg for topic in topics for arg in ("--topic", topic)]
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(SystemExit) as exit_:
        watch.main([url, "--token", "t", *flags])
    assert exit_.value.code == 2 and said in capsys.readouterr().err
    result = app.test_cli_runner().invoke(args=["watch", "u-alan", "--url", url, *flags])
    assert result.exit_code == 2 and "Invalid value for '--topic'" in result.output and said in result.output


def test_flask_watch_sends_its_topics(stub, app, monkeypatch):
    stub.handler.polls = [(200, {}, topic_answer("k1", "h0"))]
    monkeypatch.setattr(watch.Watch, "run", lambda self: 0 if self.step() == self.step() == 0 else 1)
    result = app.test_cli_runner().invoke(args=["watch", "u-alan", "--url", stub.url, "--topic", "c-go/thread:t-1",
                                                "--topic", "c-rust/*", "--topic", "c-go/thread:t-1"])
    assert result.exit_code == 0, result.output
    assert parse_qs(urlsplit(stub.seen[1][0]).query)["watch"] == ["c-go/thread:t-1", "c-rust/*"]


def publish(server, community_id, **body):
    response = requests.post(f"{server.url}/communities/{community_id}/activity", json=body,
                             headers=bearer("u-admin", admin=True), timeout=10)
    assert response.status_code == 201, response.text


def test_flask_watch_follows_a_topic_of_a_public_community_it_is_not_in(live):
    server, env = live
    follower = Lines([str(BIN / "flask"), "--app", "wsgi", "watch", "u-alan", "--url", server.url, "--timeout", "20",
                      "--topic", "c-rust/thread:t-1"], env)
    try:
        assert " snapshot " in follower.next()
        publish(server, "c-rust", kind="reply", ref="r-2", topic="thread:t-2", actor="u-ada")
        publish(server, "c-rust", kind="reply", ref="r-1", topic="thread:t-1", actor="u-ada",
                data={"title": "Re: ownership"})
        # The next line, not the first "changed" one: unwatched r-2 must wake no answer, and a
        # follower that sent no watch would print "unchanged" lines for ever.
        changed = follower.next()
    finally:
        status, err = follower.interrupt()
    assert 'reply r-1 in c-rust/thread:t-1 by u-ada {"title":"Re: ownership"}' in changed, follower.seen
    assert "r-2" not in "".join(follower.seen)
    assert status == watch.EXIT_INTERRUPTED and "Traceback" not in err, err


def test_python_m_app_watch_ends_on_a_topic_of_a_private_community(live):
    server, env = live
    env[watch.TOKEN_ENV] = bearer("u-alan")["Authorization"].removeprefix("Bearer ")
    finished = subprocess.run([sys.executable, "-m", "app.watch", server.url, "--topic", "c-design/*"], cwd=ROOT,
                              env=env, capture_output=True, text=True, timeout=60)
    lines = finished.stdout.splitlines()
    assert finished.returncode == 1 and "Traceback" not in finished.stderr, finished
    assert " snapshot " in lines[0] and "HTTP 404" in lines[-1] and "giving up" in lines[-1], lines
