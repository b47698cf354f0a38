"""Follow one user's state from a terminal: a snapshot, then the long poll, a line per answer.

``flask --app wsgi watch USER_ID`` mints the token with the configured
``SECRET_KEY`` and follows a local server; ``python -m app.watch URL --token
TOKEN`` (or ``COMMUNITY_SYNC_TOKEN`` in the environment) follows any server.
Both take the URL from ``COMMUNITY_SYNC_URL`` when none is given, and
``--topic c-1/thread:t-9`` (repeatable; ``c-1/*`` for every topic of ``c-1``)
to follow topics' activity too: each poll sends them as ``watch=``.
Both run :class:`Watch`. Only the standard library: the standalone form must
run wherever the package is, without the server's dependencies.

Each line: local time, status, the changes in words, the round trip, and the
state's age: how long the state had gone without a change when the answer
came, by the server's clock (``server_time``), counted from the snapshot or the
last ``changed`` or ``reset`` answer. On a ``changed`` line it is how long the
replaced state lasted. ``--json`` prints each answer's body as one JSON line
instead (the snapshot first), for ``jq``; errors then go to stderr. A watch
the server refuses (malformed: ``400``; a community unknown or private to the
user: ``404``) ends the follower: asking again would be refused again.

Retries follow the browser client's pacing rule (docs/client.md#pacing,
``retryDelay`` in app/static/community-sync-decisions.js), written once here.

Longer than most modules because it is a whole client in one file (pacing,
HTTP, the changes in words, the loop and its command line): the standalone
form runs from this module alone.
"""
import argparse
import http.client
import json
import os
import random
import re
import sys
import time
import urllib.error
import urllib.request
from datetime import datetime
from email.utils import parsedate_to_datetime
from urllib.parse import urlencode

DEFAULT_URL = "http://127.0.0.1:8000"
TOKEN_ENV = "COMMUNITY_SYNC_TOKEN"
URL_ENV = "COMMUNITY_SYNC_URL"
POLL_TIMEOUT = 25
# Seconds past the poll's own timeout before a held poll with no answer counts as
# lost, and the whole wait for a snapshot: the browser client's pollTimeoutGrace
# and requestTimeout.
POLL_GRACE = 10
REQUEST_TIMEOUT = 15

# The browser client's DEFAULT_BACKOFF and minLongPollGap, in seconds.
INITIAL_DELAY = 0.5
MAX_DELAY = 30.0
MULTIPLIER = 2
# A Retry-After longer than this (a date far ahead, a typo) is not honoured in full.
MAX_RETRY_AFTER = 300.0
MIN_LONG_POLL_GAP = 1.0

EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports Ctrl-C

# The server's rule for a watch (app/watches.py, with app.auth's id rule), copied:
# the standalone form cannot import the server's code. A mistyped --topic is told
# at once rather than after the snapshot; the server still judges (its 400).
WATCH = re.compile(r"(?!\.\.?/)[A-Za-z0-9._~:@|+=-]{1,64}/(?:\*|[a-z][a-z0-9_.:-]{0,63})")
MAX_WATCHES = 20


# -- pacing (docs/client.md#pacing) ------------------------------------------------


def backoff_delay(failures, random=random.random):
    """Seconds after ``failures`` failures in a row (0 for the first): exponential,
    capped at MAX_DELAY, with "equal jitter" between half the ceiling and the ceiling,
    so followers that lost the same server do not come back in step."""
    ceiling = min(MAX_DELAY, INITIAL_DELAY * MULTIPLIER ** max(0, failures))
    return ceiling / 2 + random() * ceiling / 2


def retry_delay(failures, retry_after=None, random=random.random):
    """The one pacing rule of every retry: at least the backoff for ``failures``, and at
    least the server's Retry-After (seconds, capped at MAX_RETRY_AFTER) spread over a
    quarter more. A Retry-After of 0 or in the past never shortens the backoff."""
    backoff = backoff_delay(failures, random)
    if retry_after is None or not retry_after > 0:
        return backoff
    told = min(retry_after, MAX_RETRY_AFTER)
    return max(backoff, told + random() * told / 4)


def early_unchanged_delay(streak, random=random.random):
    """The gap before re-polling after the ``streak``-th long poll in a row answered
    ``unchanged`` at once (a worker shutting down): from MIN_LONG_POLL_GAP up, doubling,
    capped at MAX_DELAY; never a fast loop against a server that does not hold."""
    base = min(MAX_DELAY, MIN_LONG_POLL_GAP * 2 ** max(0, streak - 1))
    return min(MAX_DELAY, base * (1 + random()))


def watch_names(values):
    """``values`` (``--topic`` as given) without repeats, in order; ValueError naming the
    first that is not ``<community_id>/<topic>`` or ``<community_id>/*``, or when more
    than MAX_WATCHES remain."""
    names = tuple(dict.fromkeys(values))
    for name in names:
        if WATCH.fullmatch(name) is None:
            raise ValueError(f"{name!r} is not <community_id>/<topic> or <community_id>/*, the topic 1 to 64 "
                             f"of a-z 0-9 _ . : -, starting with a letter")
    if len(names) > MAX_WATCHES:
        raise ValueError(f"at most {MAX_WATCHES} topics, not {len(names)}")
    return names


def parse_retry_after(value, now):
    """``Retry-After`` in seconds from ``now`` (a Unix time): delay-seconds or an HTTP
    date. None when absent or unreadable; a date in the past gives 0."""
    text = (value or "").strip()
    # ASCII digits only: str.isdigit also takes "²" (which float() refuses) and "٣".
    if text.isascii() and text.isdigit():
        return float(text)
    if not text[:3].isalpha():
        return None
    try:
        at = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    return max(0.0, at.timestamp() - now)


# -- requests ----------------------------------------------------------------------


class Failure(Exception):
    """A request that brought no answer: ``status`` (None when no HTTP answer came), the
    server's ``retry_after`` in seconds, and its problem ``type`` ("" when none)."""

    def __init__(self, message, status=None, retry_after=None, problem=""):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after
        self.problem = problem


def _problem(body):
    """The ``detail`` (else ``title``) and ``type`` of a problem body; "" for what is missing."""
    try:
        problem = json.loads(body)
    except ValueError:
        return "", ""
    if not isinstance(problem, dict):
        return "", ""
    kind = problem.get("type")
    return problem.get("detail") or problem.get("title") or "", kind if isinstance(kind, str) else ""


def fetch(url, token, timeout, now=time.time):
    """GET ``url`` with the bearer ``token``; the JSON body of a 200, else :class:`Failure`."""
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}",
                                                   "Accept": "application/json"})
    tried = url.partition("?")[0]  # which server, without the cursor and hash
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read()
    except urllib.error.HTTPError as error:
        with error:
            detail, problem = _problem(error.read())
        retry_after = parse_retry_after(error.headers.get("Retry-After"), now())
        raise Failure(f"HTTP {error.code}" + (f": {detail}" if detail else ""), error.code, retry_after,
                      problem) from None
    except urllib.error.URLError as error:
        raise Failure(f"{tried} unreachable: {error.reason}") from None
    except (OSError, http.client.HTTPException) as error:
        # Timed out, reset, or the connection closed mid-answer (a worker restarting).
        raise Failure(f"{tried} connection lost: {error or type(error).__name__}") from None
    try:
        answer = json.loads(body)
    except ValueError:
        raise Failure("HTTP 200 with an unreadable body") from None
    if not isinstance(answer, dict):
        raise Failure("HTTP 200 with an unreadable body")
    return answer


# -- describing answers --------------------------------------------------------------


def describe_change(change, communities, previous):
    """One change in words. ``communities`` and ``previous`` map ids to the entries
    after and before the answer (what a rename is told from)."""
    kind = change.get("type")
    community_id = change.get("community_id")
    entry = communities.get(community_id) or {}
    if kind == "joined":
        role = change.get("role") or entry.get("role")
        return f"joined {community_id} as {role}" if role else f"joined {community_id}"
    if kind == "left":
        return f"left {community_id}"
    if kind == "role_changed":
        return f"role in {community_id} now {change.get('role') or entry.get('role')}"
    if kind == "community_updated":
        before = previous.get(community_id) or {}
        if entry.get("name") and before.get("name") and entry["name"] != before["name"]:
            return f"{community_id} renamed to '{entry['name']}'"
        return f"{community_id} updated"
    if kind == "community_deleted":
        return f"{community_id} deleted"
    if kind == "activity":
        if change.get("topic"):
            words = f"{change.get('kind')} {change.get('ref')} in {community_id}/{change['topic']}"
            words += f" by {change['by']}" if change.get("by") else ""
        else:
            words = f"activity {change.get('kind')} {change.get('ref')} in {community_id}"
        return words + (f" {compact(change['data'])}" if change.get("data") is not None else "")
    if kind == "notification":
        return f"notification {change.get('kind')} {change.get('ref')}"
    if kind == "read":
        return f"read {community_id}" if community_id else "read notifications"
    return str(kind)  # a type a newer server sends


def compact(value):
    """``value`` as one line of JSON, non-ASCII text as it is."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    # json.dumps escapes only the C0 controls: a C1 one (ESC's 8-bit twin) or a line
    # separator from a payload would reach the terminal raw.
    return "".join(char if char.isprintable() else ascii(char)[1:-1] for char in text)


def describe_state(answer):
    """The communities of a snapshot or ``reset`` answer, with their roles and unread counts."""
    entries = []
    for entry in answer.get("communities", []):
        unread = f", {entry['unread']} unread" if entry.get("unread") else ""
        entries.append(f"{entry['id']} ({entry.get('role')}{unread})")
    text = f"{len(entries)} communit{'y' if len(entries) == 1 else 'ies'}"
    text += ": " + ", ".join(entries) if entries else ""
    if answer.get("notifications_unread"):
        text += f"; unread notifications: {answer['notifications_unread']}"
    return text


def format_duration(seconds):
    """``12 ms``, ``6.5 s``, ``3m05s``, ``2h01m``."""
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, seconds = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    return f"{minutes // 60}h{minutes % 60:02d}m"


def _server_time(answer):
    try:
        return datetime.fromisoformat(answer["server_time"].replace("Z", "+00:00")).timestamp()
    except (KeyError, AttributeError, ValueError):
        return None


def base_url(text):
    """The server's URL without a trailing slash; ValueError unless it is http(s)."""
    if not text.startswith(("http://", "https://")):
        raise ValueError(f"{text!r} is not an http:// or https:// URL")
    return text.rstrip("/")


# -- the loop ------------------------------------------------------------------------


class Watch:
    """One user's snapshot, then long polls until interrupted, printing each answer.

    ``get_token(refresh)`` gives the bearer token; after a 401 it is asked once with
    ``refresh=True`` (a minted token may have expired; a fixed one cannot be helped,
    and the watch ends). ``watches`` (``c-1/thread:t-9``, ``c-1/*``) go with every poll.
    ``sleep``, ``now`` and ``random`` are injected so the pacing is tested without
    waiting.
    """

    def __init__(self, url, get_token, *, watches=(), json_lines=False, timeout=POLL_TIMEOUT, out=None,
                 err=None, sleep=time.sleep, now=time.time, random=random.random):
        self.url = base_url(url)
        self.get_token = get_token
        self.watches = tuple(watches)
        self.json_lines = json_lines
        self.timeout = timeout
        # Looked up now, not at import: a caller (click's test runner) may have replaced them.
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.sleep = sleep
        self.now = now
        self.random = random
        self.token = None
        self.communities = None  # id -> entry; None until the first snapshot
        self.cursor = None
        self.hash = None
        self.state_since = None  # server time of the last answer that changed the state
        self.failures = 0
        self.early_streak = 0

    def run(self):
        """Follow until Ctrl-C (exit status 130), or a token or watch the server refuses (1)."""
        try:
            while True:
                delay = self.step()
                if delay is None:
                    return 1
                if delay > 0:
                    self.sleep(delay)
        except KeyboardInterrupt:
            return EXIT_INTERRUPTED

    def step(self):
        """One request and its line; the seconds to wait before the next (None: give up)."""
        polling = self.cursor is not None
        if polling:
            query = urlencode([("cursor", self.cursor), ("hash", self.hash), ("timeout", self.timeout)]
                              + [("watch", name) for name in self.watches])
            url, timeout = f"{self.url}/community-changes/poll?{query}", self.timeout + POLL_GRACE
        else:
            url, timeout = f"{self.url}/me/communities", REQUEST_TIMEOUT
        started = time.monotonic()
        try:
            answer = self.request(url, timeout)
            if not isinstance(answer.get("cursor"), str):
                # Not this service's answer (a proxy's page?): asking again at once would loop.
                raise Failure("HTTP 200 without a cursor")
        except Failure as failure:
            return self.failed(failure, polling)
        round_trip = time.monotonic() - started
        sent_cursor = self.cursor
        self.show(answer, round_trip)
        # Only an answer that moves the cursor followed is progress (docs/client.md).
        if sent_cursor is not None and answer["cursor"] != sent_cursor:
            self.failures = 0
        early = polling and answer.get("status") == "unchanged" and round_trip < MIN_LONG_POLL_GAP
        self.early_streak = self.early_streak + 1 if early else 0
        return early_unchanged_delay(self.early_streak, self.random) if early else 0

    def request(self, url, timeout):
        """:func:`fetch` with the current token, refreshing it once after a 401."""
        if self.token is None:
            self.token = self.get_token(False)
        try:
            return fetch(url, self.token, timeout, self.now)
        except Failure as failure:
            if failure.status != 401:
                raise
            refused, self.token = self.token, self.get_token(True)
            if self.token == refused:
                raise
        return fetch(url, self.token, timeout, self.now)

    def failed(self, failure, polling):
        if failure.status == 401:
            self.note(f"{failure} (giving up: the token is refused)")
            return None
        if polling and failure.status == 400 and failure.problem.endswith("invalid-watch"):
            self.note(f"{failure} (giving up: the server refuses --topic {' '.join(self.watches)})")
            return None
        if polling and failure.status == 404 and self.watches:
            # The poll's only 404: a watched community is unknown, or private to this user.
            self.note(f"{failure} (giving up: a --topic names a community this user cannot follow)")
            return None
        if failure.status == 400 and polling:
            # The cursor cannot be read (a rebuilt database): start over from a snapshot.
            self.cursor = None
        delay = retry_delay(self.failures, failure.retry_after, self.random)
        self.failures += 1
        self.note(f"{failure}; retrying in {format_duration(delay)}")
        return delay

    def show(self, answer, round_trip):
        """Adopt the answer's state and print its line."""
        previous = self.communities or {}
        status = answer.get("status", "snapshot")  # a snapshot body has none
        if "communities" in answer:
            self.communities = {entry["id"]: entry for entry in answer["communities"]}
        self.cursor = answer["cursor"]
        self.hash = answer.get("hash", self.hash)
        server_time = _server_time(answer)
        age = None
        if self.state_since is not None and server_time is not None:
            age = max(0.0, server_time - self.state_since)
        if status != "unchanged":
            self.state_since = server_time
        if self.json_lines:
            print(json.dumps(answer, separators=(",", ":")), file=self.out, flush=True)
            return
        if status in ("snapshot", "reset"):
            words = describe_state(answer)
        elif status == "changed":
            words = "; ".join(describe_change(change, self.communities, previous)
                              for change in answer.get("changes", []))
            if answer.get("truncated"):
                words += " (truncated: the oldest changes were left out)"
        else:
            words = "no change"
        timing = f"rtt {format_duration(round_trip)}"
        if age is not None:
            timing += f", state age {format_duration(age)}"
        print(f"{self.clock()}  {status:<9} {words}  ({timing})", file=self.out, flush=True)

    def note(self, text):
        """An error line: on stderr with --json (stdout stays JSON), else among the answers."""
        print(f"{self.clock()}  {'error':<9} {text}", file=self.err if self.json_lines else self.out, flush=True)

    def clock(self):
        return datetime.fromtimestamp(self.now()).strftime("%H:%M:%S")


def main(argv=None):
    """``python -m app.watch [URL] [--token TOKEN] [--topic C/TOPIC ...] [--json] [--timeout SECONDS]``."""
    parser = argparse.ArgumentParser(prog="python -m app.watch", description=__doc__.split("\n\n")[0])
    parser.add_argument("url", metavar="URL", nargs="?", default=os.environ.get(URL_ENV),
                        help=f"the server, e.g. {DEFAULT_URL} (default: ${URL_ENV})")
    parser.add_argument("--token", default=os.environ.get(TOKEN_ENV),
                        help=f"bearer token (default: ${TOKEN_ENV})")
    parser.add_argument("--topic", action="append", default=[], metavar="COMMUNITY/TOPIC",
                        help="follow a topic's activity too: c-1/thread:t-9, or c-1/* for every topic of "
                             f"c-1 (repeatable, at most {MAX_WATCHES})")
    parser.add_argument("--json", action="store_true", help="print each answer as one JSON line")
    parser.add_argument("--timeout", type=int, default=POLL_TIMEOUT, metavar="SECONDS",
                        help=f"how long each poll may wait (default {POLL_TIMEOUT}; the server caps it)")
    args = parser.parse_args(argv)
    if not args.url:
        parser.error(f"the server's URL is needed: URL or ${URL_ENV}")
    try:
        base_url(args.url)
    except ValueError as error:
        parser.error(str(error))
    if args.timeout < 1:
        parser.error("--timeout must be at least 1")
    try:
        watches = watch_names(args.topic)
    except ValueError as error:
        parser.error(f"--topic: {error}")
    if not args.token:
        parser.error(f"a token is needed: --token TOKEN or ${TOKEN_ENV}")
    return Watch(args.url, lambda refresh: args.token, watches=watches, json_lines=args.json,
                 timeout=args.timeout).run()


if __name__ == "__main__":
    sys.exit(main())
