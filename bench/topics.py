"""Scenario 17: topics, payloads and latest values (v3), on a database of its own.

Activity may name a ``topic`` inside its community; only the polls that watch
it (``watch=<community_id>/<topic>``) are woken by it. It may carry ``data``
(a JSON object) and be ``collapse``d: an answer then carries only the newest
value of each (community, topic, kind, ref). Three measurements, each against
a baseline measured in the same run, the two taking turns round after round
(the order reversed every other round), so that a ratio compares figures of
one round:

- wake: ``members`` users of one community hold long polls on one worker,
  ``watchers`` of them watching ``thread:t-1``. One reply in the thread (an
  ``INSERT INTO activity`` with the topic) against the same row without a
  topic (community-level activity, which wakes every member): the polls
  woken (answers at the load generator, and the server's wake-ups), the
  watchers' wake latency (``COMMIT`` to the answer at the client), and what
  the wake-up cost: the server's statements and re-reads, its worker's CPU,
  and PostgreSQL's transactions and rows read. The members do not poll again
  after their answer until the measurement is over, so the statements counted
  are the wake-up's.
- votes: ``voters`` users watch a post while its vote count is published,
  ``vote_rate`` rows a second for ``vote_seconds`` s, ``data = {"votes": n}``
  with n counting up; collapsed against the same rows not collapsed. Answers
  per watcher per second, rows delivered per watcher, each watcher's last
  value, and every value each watcher received checked in the load generator:
  none may be smaller than one received before it (nor equal: exactly once).
- reads: one user's ``timeout=0`` polls watching 20 topics against the same
  user's watching none, one request at a time: the snapshot (a poll without a
  cursor, answered ``reset``) and a poll from that snapshot's cursor
  (``unchanged``): latency, and statements per request; then one pass of each
  with PostgreSQL's statistics settled around it for its transactions per
  request.

The load generator is bench/client.py's, its tabs polling with ``watch=``
parameters and checking the values they receive: ``python -m bench.topics``,
started by :class:`TopicsClient`. A run that finds a watcher with a smaller
value after a larger one, one without the last value, a poll woken that does
not watch the topic or a watcher not woken lists it under ``failed`` (and
``python -m bench`` then exits 1).
"""
if __name__ == "__main__":
    # The load generator's process: gevent's patches before anything else is imported.
    from gevent import monkey

    monkey.patch_all()

import json  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import urllib.request  # noqa: E402
from collections import Counter  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from urllib.parse import urlencode  # noqa: E402

from harness.polls import POLL_PATH, bearer_token  # noqa: E402
from harness.servers import ROOT, python_environ  # noqa: E402

from . import stack  # noqa: E402
from .longpoll import POLL_TIMEOUT, quiesce  # noqa: E402
from .stack import SECRET, ClientProcess, Server, log, median, percentile  # noqa: E402

COMMUNITY = "c-all"  # every seeded user's community (stack.Database.seed)
THREAD = "thread:t-1"
KIND = "reply_created"
AUTHOR = "u-author"  # no user: nobody's own activity
VOTE_KIND = "vote"
VOTER = "u-voter"
# More than the server's activity coalescing window (ACTIVITY_COALESCE, 1 s): a
# member woken less than a window ago has its next activity held for the rest of it.
COALESCE_GAP = 1.5
COALESCE_WINDOW = "community_sync_activity_coalesce_seconds"
QUERIES = "community_sync_db_queries_total"
REREADS = "community_sync_reread_rows_count"
WAKEUPS = "community_sync_wakeups_total"
HEAD_CHECKS = "community_sync_head_check_seconds_count"
CHANGED = 'community_sync_poll_answers_total{result="changed"}'
SIDES = {"wake": ("topic", "community"), "votes": ("collapse", "plain"), "reads": ("watching", "none")}
# What each measurement compares, round by round: (name, side, baseline, figure).
COMPARED = {
    "wake": (
        ("polls woken", "community", "topic", "woken"),
        ("statements", "community", "topic", "statements"),
        ("worker CPU", "community", "topic", "worker_cpu_seconds"),
        ("PostgreSQL rows read beyond idle", "community", "topic", "rows_beyond_idle"),
        ("wake p50 of the watchers", "topic", "community", "watchers_p50"),
        ("wake p99 of the watchers", "topic", "community", "watchers_p99"),
    ),
    "votes": (
        ("answers per watcher per second", "collapse", "plain", "answers_per_watcher_second"),
        ("rows delivered per watcher", "collapse", "plain", "rows_per_watcher"),
        ("bytes per watcher", "collapse", "plain", "bytes_per_watcher"),
        ("statements per second", "collapse", "plain", "statements_per_second"),
        ("worker CPU", "collapse", "plain", "worker_cpu_percent"),
        ("until every watcher has the last value", "collapse", "plain", "drain_seconds"),
    ),
    "reads": (
        ("snapshot p50", "watching", "none", "snapshot_p50"),
        ("snapshot p99", "watching", "none", "snapshot_p99"),
        ("snapshot statements per request", "watching", "none", "snapshot_statements"),
        ("poll p50", "watching", "none", "poll_p50"),
        ("poll p99", "watching", "none", "poll_p99"),
        ("poll statements per request", "watching", "none", "poll_statements"),
    ),
}
READS = ("snapshot", "poll")
READER = "u0"  # in c-all, c-g0 and c-small (stack.Database.seed)
# The reader's 20 watches (the contract's most): the thread and the posts of this run,
# which have rows in the log by then, and topics of its other communities, which have none.
READER_WATCHES = ([f"{COMMUNITY}/{THREAD}"] + [f"{COMMUNITY}/post:p-{n}" for n in range(1, 5)]
                  + [f"{COMMUNITY}/thread:t-{n}" for n in range(2, 9)]
                  + [f"c-small/board:b-{n}" for n in range(1, 5)] + [f"c-g0/story:s-{n}" for n in range(1, 5)])


def run(options):
    """The three measurements, each on a server of its own, on one database seeded for them."""
    members = options["topics_members"]
    voters = options["topics_voters"]
    database = stack.Database()
    result = {"community": COMMUNITY, "failed": []}
    try:
        database.migrate()
        # The reader (u0) in c-small too: it watches topics of its own communities only.
        database.seed(max(members, voters), 1)
        log(f"topics: database {database.name}, {max(members, voters):,} users seeded, all in {COMMUNITY}")
        with serving(database) as (server, client):
            result["wake"] = wake(database, server, client, options)
        with serving(database) as (server, client):
            result["votes"] = votes(database, server, client, options)
        with serving(database) as (server, client):
            result["reads"] = reads(database, server, client, options)
    finally:
        database.drop()
    result["failed"] = failures(result)
    for failure in result["failed"]:
        log(f"topics: FAILED: {failure}")
    return result


@contextmanager
def serving(database):
    """A fresh server on ``database`` and a load generator of this scenario's, both stopped on leaving."""
    server = Server(database).start()
    try:
        client = TopicsClient()
        try:
            yield server, client
        finally:
            client.close()
    finally:
        server.stop()


class TopicsClient(ClientProcess):
    """``python -m bench.topics``: bench/client.py's load generator, its tabs watching topics."""

    def __init__(self):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.topics"], cwd=ROOT, env=python_environ(),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
        )
        self.expect("ready")


def hold(client, server, users, watches, options, waiting=0):
    """One long poll per user, each watching ``watches``; wait until the server has stopped reading.

    ``waiting``: polls the server holds already.
    """
    held = client.call("hold", "held", users=users, ports=[server.port], path=POLL_PATH, timeout=POLL_TIMEOUT,
                       secret=SECRET, ramp=options.get("ramp", 200), deadline=180, watches=watches)
    quiesce(server, waiting + len(users), timeout=120)
    waiting_now = int(server.waiting())
    if waiting_now < waiting + len(users):
        log(f"topics: only {waiting_now:,} of {waiting + len(users):,} polls are waiting; going on with those")
    return {"sent": held["sent"], "failures": held["failures"], "retries": held["retries"],
            "waiting": waiting_now - waiting}


def counters(server):
    values = server.metrics()
    return {"statements": values.get(QUERIES, 0), "rereads": values.get(REREADS, 0),
            "wakeups": values.get(WAKEUPS, 0), "changed": values.get(CHANGED, 0),
            "head_checks": values.get(HEAD_CHECKS, 0), "cpu": server.cpu(), "at": time.monotonic()}


def pg_counters(database):
    """PostgreSQL's committed and rolled-back transactions, and rows read (returned + fetched), so far."""
    with database.admin() as connection, connection.cursor() as cursor:
        cursor.execute("SELECT xact_commit + xact_rollback, tup_returned + tup_fetched FROM pg_stat_database "
                       "WHERE datname = %s", (database.name,))
        transactions, rows = cursor.fetchone()
    return {"transactions": int(transactions), "rows": int(rows), "at": time.monotonic()}


def delta(after, before):
    return {key: after[key] - before[key] for key in before}


def settled(database):
    """PostgreSQL's counters once every backend has flushed its statistics (``stack.SETTLE``)."""
    time.sleep(stack.SETTLE)
    return pg_counters(database)


def insert(connection, kind, ref, topic=None, data=None, collapse=False):
    """One activity row in its own transaction; ``time.monotonic()`` once COMMIT returned."""
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO activity (community_id, topic, kind, ref, actor, data, collapse) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s)",
            (COMMUNITY, topic, kind, ref, AUTHOR if kind == KIND else VOTER,
             None if data is None else json.dumps(data), collapse))
    connection.commit()
    return time.monotonic()


# -- 1. a reply in a watched thread, against community-level activity ---------------------


def wake(database, server, client, options):
    members, watchers = options["topics_members"], options["topics_watchers"]
    users = [f"u{i}" for i in range(members)]
    # Pollers 0..watchers-1 watch the thread; the others watch nothing.
    held = hold(client, server, users[:watchers], [f"{COMMUNITY}/{THREAD}"], options)
    others = hold(client, server, users[watchers:], [], options, waiting=held["waiting"])
    result = {"members": members, "watchers": watchers, "topic": THREAD,
              "held": held["waiting"] + others["waiting"],
              "hold_failures": held["failures"] + others["failures"]}
    log(f"topics wake: {result['held']:,} of {members:,} members waiting, {watchers} watching {THREAD}")
    client.call("report", "report")
    # Nothing written: what PostgreSQL counts over a window as long as a measurement's settle.
    before = settled(database)
    idle_server = counters(server)
    after = settled(database)
    window = after["at"] - before["at"]
    idle = delta(after, before)
    result["idle"] = {"seconds": window, "transactions_per_second": idle["transactions"] / window,
                      "rows_per_second": idle["rows"] / window,
                      "head_checks_per_second": delta(counters(server), idle_server)["head_checks"] / window}
    connection = database.connect()
    rounds = []
    try:
        last = after
        for number in range(options["topics_wake_rounds"]):
            order = SIDES["wake"] if number % 2 == 0 else SIDES["wake"][::-1]
            entry = {"round": number, "order": list(order)}
            for side in order:
                entry[side], last = wake_once(database, server, client, connection, side, f"r-{number}-{side}",
                                              members, watchers, last, options)
                figures, quiet = entry[side], result["idle"]
                # What the window would have counted with nothing written, taken off.
                window = figures["pg_window_seconds"]
                figures["transactions_beyond_idle"] = (figures["transactions"]
                                                       - quiet["transactions_per_second"] * window)
                figures["rows_beyond_idle"] = figures["rows_read"] - quiet["rows_per_second"] * window
            entry["ratios"] = round_ratios("wake", entry)
            rounds.append(entry)
            log(f"topics wake, round {number + 1}: " + "; ".join(
                f"{side}: {entry[side]['woken']:,} woken ({entry[side]['server_wakeups']:,.0f} by the server), "
                f"watchers p50 {fmt_ms(entry[side]['watchers_p50'])} p99 {fmt_ms(entry[side]['watchers_p99'])}, "
                f"{entry[side]['statements']:.0f} statements in {entry[side]['rereads']:.0f} re-reads"
                for side in SIDES["wake"]))
    finally:
        connection.close()
    result["rounds"] = rounds
    result.update(summarize("wake", rounds))
    # Every tab's tally over the whole measurement: rows of a topic it does not watch.
    tallies = client.call("followers", "followers")["followers"]
    leaked = [t for t in tallies if t["unwatched"]]
    result["unwatched_rows"] = sum(t["unwatched"] for t in leaked)
    result["members_with_unwatched_rows"] = len(leaked)
    result["unwatched_samples"] = [dict(t["unwatched_sample"], index=t["index"]) for t in leaked[:3]]
    return result


def wake_once(database, server, client, connection, side, ref, members, watchers, last, options):
    """One row (``side``: in the thread, or community-level), and everything it woke.

    ``last``: PostgreSQL's counters as they settled after the previous
    measurement, which this one's start from. Returns the figures and the
    counters after this one settled.
    """
    quiesce(server, members)
    time.sleep(COALESCE_GAP)
    client.call("repoll", "ok", value=False)
    client.call("report", "report")
    before = counters(server)
    committed = insert(connection, KIND, ref, topic=THREAD if side == "topic" else None,
                       data={"thread": "t-1"} if side == "topic" else None)
    expected = watchers if side == "topic" else members
    answers, failures = [], []
    deadline = committed + options.get("topics_wake_wait", 60)
    while time.monotonic() < deadline:
        time.sleep(0.1)
        report = client.call("report", "report")
        answers += report["answers"]
        failures += report["failures"]
        if len({a[0] for a in answers if a[2] == "changed"}) >= expected:
            break
    # Polls woken that should not have been would answer meanwhile.
    time.sleep(options.get("topics_linger", 1.0))
    wait_still(server)
    report = client.call("report", "report")
    answers += report["answers"]
    failures += report["failures"]
    cost = delta(counters(server), before)
    tallies = client.call("followers", "followers", indices=list(range(watchers)))["followers"]
    client.call("repoll", "ok", value=True)
    quiesce(server, members, timeout=120)
    after = settled(database)
    pg = delta(after, last)
    first = {}
    for index, arrived, status, _size in answers:
        if status == "changed" and arrived >= committed:
            first.setdefault(index, arrived - committed)
    woken_watchers = [first[i] for i in range(watchers) if i in first]
    everyone = sorted(first.values())
    with_row = sum(1 for t in tallies if t["rows"].get(f"{COMMUNITY}/{THREAD if side == 'topic' else ''}/{KIND}/{ref}"))
    figures = {
        "ref": ref,
        "expected": expected,
        "woken": len(first),
        "woken_watchers": len(woken_watchers),
        "woken_others": len(first) - len(woken_watchers),
        "watchers_with_row": with_row,
        "answers": len(answers),
        "unchanged_answers": sum(1 for a in answers if a[2] != "changed"),
        "failures": len(failures),
        "failure_samples": failures[:3],
        "server_wakeups": cost["wakeups"],
        "server_changed_answers": cost["changed"],
        "statements": cost["statements"],
        "rereads": cost["rereads"],
        "worker_cpu_seconds": cost["cpu"],
        "seconds": cost["at"],
        "p50": percentile(everyone, 0.5),
        "p99": percentile(everyone, 0.99),
        "last": everyone[-1] if everyone else None,
        "watchers_p50": percentile(woken_watchers, 0.5),
        "watchers_p99": percentile(woken_watchers, 0.99),
        "watchers_latencies": [round(x, 6) for x in sorted(woken_watchers)],
        # From the row's COMMIT until the polls were back and PostgreSQL's statistics settled.
        "transactions": pg["transactions"],
        "head_checks": delta(counters(server), before)["head_checks"],
        "rows_read": pg["rows"],
        "pg_window_seconds": pg["at"],
    }
    return figures, after


def wait_still(server, timeout=30):
    """Until the server's statement counter stands still for half a second."""
    deadline = time.monotonic() + timeout
    last = server.queries()
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = server.queries()
        if now == last:
            return
        last = now


# -- 2. collapsed votes, against the same votes not collapsed -------------------------------


def votes(database, server, client, options):
    voters = options["topics_voters"]
    rounds_count = options["topics_vote_rounds"]
    posts = [f"post:p-{n}" for n in range(1, 2 * rounds_count + 1)]
    held = hold(client, server, [f"u{i}" for i in range(voters)], [f"{COMMUNITY}/{post}" for post in posts],
                options)
    rate, seconds = options["topics_vote_rate"], options["topics_vote_seconds"]
    result = {"watchers": voters, "held": held["waiting"], "hold_failures": held["failures"], "rate": rate,
              "seconds": seconds, "rows": int(rate * seconds)}
    log(f"topics votes: {held['waiting']:,} of {voters:,} watchers waiting; {result['rows']} votes a run "
        f"at {rate}/s")
    client.call("report", "report")
    rounds = []
    connection = database.connect()
    try:
        for number in range(rounds_count):
            order = SIDES["votes"] if number % 2 == 0 else SIDES["votes"][::-1]
            entry = {"round": number, "order": list(order)}
            for side in order:
                post = posts[2 * number + order.index(side)]
                entry[side] = vote_run(server, client, connection, side, post, voters, options)
                log(f"topics votes, round {number + 1}, {side}: {entry[side]['published']} rows in "
                    f"{entry[side]['publish_seconds']:.1f} s; {entry[side]['answers_per_watcher_second']:.2f} "
                    f"answers per watcher per second, {entry[side]['rows_per_watcher']:.0f} rows per watcher; "
                    f"{entry[side]['with_last']:,} of {voters:,} have {entry[side]['published']}; "
                    f"{entry[side]['violations']} smaller after larger, {entry[side]['repeats']} repeated")
            entry["ratios"] = round_ratios("votes", entry)
            rounds.append(entry)
    finally:
        connection.close()
    result["rounds"] = rounds
    result.update(summarize("votes", rounds))
    return result


def vote_run(server, client, connection, side, post, voters, options):
    """``rows`` votes on ``post``, n = 1.. in ``data``, collapsed or not; what every watcher received."""
    quiesce(server, voters, timeout=120)
    time.sleep(COALESCE_GAP)
    client.call("report", "report")
    rate, seconds = options["topics_vote_rate"], options["topics_vote_seconds"]
    rows = int(rate * seconds)
    ref = post.split(":", 1)[1]
    key = f"{COMMUNITY}/{post}/{VOTE_KIND}/{ref}"
    # A tab's count of truncated answers runs over the whole measurement: this run's is the difference.
    truncated = sum(t["truncated"] for t in client.call("followers", "followers")["followers"])
    before = counters(server)
    client_cpu = client.cpu()

    def window():
        return server.metrics().get(COALESCE_WINDOW, 0.0)

    with stack.sampled(window) as windows:
        begin = time.monotonic()
        for n in range(1, rows + 1):
            pause = begin + (n - 1) / rate - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            insert(connection, VOTE_KIND, ref, topic=post, data={"votes": n}, collapse=side == "collapse")
        published = time.monotonic() - begin
        during = delta(counters(server), before)
        client_busy = client.cpu() - client_cpu
        drain = drain_votes(client, voters, key, rows, options.get("drain_wait", 120))
    report = client.call("report", "report")
    tallies = client.call("followers", "followers", indices=list(range(voters)))["followers"]
    values = [t["values"].get(key, EMPTY_VALUE) for t in tallies]
    answers = Counter(index for index, _arrived, status, _size in report["answers"] if status == "changed")
    sizes = Counter()
    for index, _arrived, status, size in report["answers"]:
        sizes[index] += size
    per_watcher = [values[i]["answers"] for i in range(voters)]
    delivered = [values[i]["rows"] for i in range(voters)]
    violations = [dict(values[i]["violation"], index=i) for i in range(voters) if values[i]["violation"]]
    return {
        "post": post,
        "collapse": side == "collapse",
        "published": rows,
        "publish_seconds": published,
        "published_rate": rows / published,
        "answers_per_watcher": distribution(per_watcher),
        "answers_per_watcher_second": sum(per_watcher) / voters / published,
        "changed_answers_per_watcher": distribution([answers.get(i, 0) for i in range(voters)]),
        "rows_per_watcher": sum(delivered) / voters,
        "rows_delivered": distribution(delivered),
        "bytes_per_watcher": sum(sizes.values()) / voters,
        "truncated_answers": sum(t["truncated"] for t in tallies) - truncated,
        "with_last": sum(1 for v in values if v["last"] == rows),
        "last_values": dict(Counter(str(v["last"]) for v in values).most_common(5)),
        "violations": sum(v["violations"] for v in values),
        "watchers_with_violations": sum(1 for v in values if v["violations"]),
        "violation_samples": violations[:5],
        "repeats": sum(v["repeats"] for v in values),
        "refused": dict(Counter(str(f[1]) for f in report["failures"])),
        "refused_samples": report["failures"][:3],
        "statements_during": during["statements"],
        "statements_per_second": during["statements"] / published,
        "server_wakeups": during["wakeups"],
        "worker_cpu_percent": 100 * during["cpu"] / published,
        "client_cpu_percent": 100 * client_busy / published,
        "coalesce_window_max": max(windows, default=0.0),
        **drain,
    }


EMPTY_VALUE = {"last": None, "rows": 0, "answers": 0, "violations": 0, "repeats": 0, "violation": None}


def drain_votes(client, voters, key, last, timeout):
    """Until every watcher has the last value (or ``timeout``): how many did, and after how long."""
    begin = time.monotonic()
    while True:
        tallies = client.call("followers", "followers", indices=list(range(voters)))["followers"]
        caught_up = sum(1 for t in tallies if t["values"].get(key, EMPTY_VALUE)["last"] == last)
        if caught_up >= voters or time.monotonic() - begin > timeout:
            break
        time.sleep(0.5)
    return {"caught_up": caught_up, "drain_seconds": time.monotonic() - begin}


def distribution(values):
    return {"min": min(values, default=None), "p50": median(values), "max": max(values, default=None)}


# -- 3. a user's snapshot and poll watching 20 topics, against none --------------------------


def reads(database, server, client, options):
    paths = {"watching": read_paths(server, READER_WATCHES), "none": read_paths(server, [])}
    rounds = []
    for number in range(options["topics_read_rounds"]):
        order = SIDES["reads"] if number % 2 == 0 else SIDES["reads"][::-1]
        entry = {"round": number, "order": list(order)}
        for side in order:
            entry[side] = {}
            for read in READS:
                figures = load(server, client, paths[side][read], options["topics_read_seconds"])
                entry[side].update({f"{read}_{name}": value for name, value in figures.items()})
        entry["ratios"] = round_ratios("reads", entry)
        rounds.append(entry)
        log(f"topics reads, round {number + 1}: " + "; ".join(
            f"{side}: snapshot p50 {fmt_ms(entry[side]['snapshot_p50'])}, poll p50 "
            f"{fmt_ms(entry[side]['poll_p50'])}, {entry[side]['poll_statements']:.2f} statements per poll"
            for side in SIDES["reads"]))
    result = {"user": READER, "watches": READER_WATCHES, "rounds": rounds,
              "statuses": {side: {read: paths[side][f"{read}_status"] for read in READS} for side in paths}}
    result.update(summarize("reads", rounds))
    # PostgreSQL's transactions per request: a pass of each, its statistics settled around it.
    transactions = {side: {} for side in SIDES["reads"]}
    last = settled(database)
    for side in SIDES["reads"]:
        for read in READS:
            before = counters(server)
            figures = load(server, client, paths[side][read], options["topics_read_seconds"])
            after = settled(database)
            pg = delta(after, last)
            head_checks = delta(counters(server), before)["head_checks"]
            transactions[side][read] = {
                "requests": figures["requests"], "transactions": pg["transactions"], "head_checks": head_checks,
                "per_request": (pg["transactions"] - head_checks) / figures["requests"],
                "rows_per_request": pg["rows"] / figures["requests"],
            }
            last = after
    result["transactions"] = transactions
    log("topics reads: transactions per request: " + "; ".join(
        f"{side} {read} {transactions[side][read]['per_request']:.2f}" for side in transactions for read in READS))
    return result


def read_paths(server, watches):
    """The reader's two reads with ``watches``: a ``timeout=0`` poll without a cursor, and one from its cursor."""
    watch = [("watch", w) for w in watches]
    snapshot = f"{POLL_PATH}?{urlencode([('timeout', 0)] + watch)}"
    request = urllib.request.Request(f"{server.url}{snapshot}",
                                     headers={"Authorization": f"Bearer {bearer_token(SECRET, READER)}"})
    with urllib.request.urlopen(request, timeout=60) as response:
        answer = json.loads(response.read())
    poll = f"{POLL_PATH}?{urlencode([('timeout', 0), ('cursor', answer['cursor']), ('hash', answer['hash'])] + watch)}"
    with urllib.request.urlopen(urllib.request.Request(f"{server.url}{poll}", headers=request.headers),
                                timeout=60) as response:
        again = json.loads(response.read())
    return {"snapshot": snapshot, "poll": poll, "snapshot_status": answer["status"],
            "poll_status": again["status"]}


def load(server, client, path, seconds):
    """``path`` as the reader, one request at a time for ``seconds``: latency, statements per request."""
    statements = server.queries()
    outcome = client.call("load", "load", port=server.port, path=path, users=[READER], secret=SECRET,
                          connections=1, duration=seconds)
    # The load sends one request per connection before it starts the clock.
    requests = outcome["requests"] + 1
    return {"p50": outcome["p50"], "p99": outcome["p99"], "requests": requests,
            "rps": outcome["requests"] / outcome["elapsed"], "counts": outcome["counts"],
            "errors": outcome["errors"], "statements": (server.queries() - statements) / requests}


# -- ratios, summaries, checks ----------------------------------------------------------------


def round_ratios(measurement, entry):
    """This round's ``side / baseline`` of each figure COMPARED names (None without both)."""
    ratios = {}
    for name, side, baseline, figure in COMPARED[measurement]:
        a, b = entry[side].get(figure), entry[baseline].get(figure)
        ratios[name] = a / b if a and b else None
    return ratios


def summarize(measurement, rounds):
    """Each side's figures as the median over rounds, and each ratio's median and spread over rounds."""
    sides = SIDES[measurement]
    figures = {side: {} for side in sides}
    for side in sides:
        for key, value in rounds[0][side].items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                figures[side][key] = median([entry[side].get(key) for entry in rounds])
    ratios = {}
    for name, *_ in COMPARED[measurement]:
        values = [entry["ratios"][name] for entry in rounds if entry["ratios"][name] is not None]
        ratios[name] = {"median": statistics.median(values) if values else None,
                        "min": min(values, default=None), "max": max(values, default=None), "rounds": values}
    return {"figures": figures, "ratios": ratios}


def failures(result):
    """What the server did that the contract says it must not: each as a sentence."""
    found = []
    wake = result.get("wake")
    if wake:
        for entry in wake["rounds"]:
            topic, community = entry["topic"], entry["community"]
            if topic["woken_watchers"] != wake["watchers"] or topic["woken_others"]:
                found.append(f"wake round {entry['round'] + 1}: the reply woke {topic['woken_watchers']} of "
                             f"{wake['watchers']} watchers and {topic['woken_others']} members not watching")
            if topic["server_wakeups"] > wake["watchers"]:
                found.append(f"wake round {entry['round'] + 1}: the server counted {topic['server_wakeups']:.0f} "
                             f"wake-ups for the reply, {wake['watchers']} watch the thread")
            if community["woken"] < wake["held"]:
                found.append(f"wake round {entry['round'] + 1}: the community-level row woke {community['woken']} "
                             f"of {wake['held']} waiting members")
        if wake.get("unwatched_rows"):
            sample = wake["unwatched_samples"][0]
            found.append(f"wake: {wake['members_with_unwatched_rows']} members not watching {THREAD} received "
                         f"{wake['unwatched_rows']} of its rows, e.g. member {sample['index']} (watching "
                         f"{sample['watches'] or 'nothing'}) got {sample['change']}")
    votes_result = result.get("votes")
    if votes_result:
        for entry in votes_result["rounds"]:
            for side in SIDES["votes"]:
                run = entry[side]
                if run["violations"] or run["repeats"]:
                    found.append(f"votes round {entry['round'] + 1}, {side}: {run['violations']} values smaller "
                                 f"than one received before ({run['watchers_with_violations']} watchers), "
                                 f"{run['repeats']} received again; first: {run['violation_samples'][:2]}")
                if run["with_last"] < votes_result["watchers"]:
                    found.append(f"votes round {entry['round'] + 1}, {side}: {run['with_last']} of "
                                 f"{votes_result['watchers']} watchers have the last value {run['published']}; "
                                 f"their last values: {run['last_values']}")
    return found


def fmt_ms(seconds):
    return "n/a" if seconds is None else f"{seconds * 1000:.1f} ms"


# -- the load generator: python -m bench.topics -----------------------------------------------


def load_generator():
    """bench/client.py's load generator, its tabs watching topics (``watches``) and checking values.

    Each tab keeps, per topic key (``community/topic/kind/ref``), the rows and
    answers that brought it, the last ``data.votes`` received, and how many
    values came smaller than one received before (or equal: twice), with the
    first such. Runs only in its own process, patched by gevent above.
    """
    import gevent
    from gevent.lock import Semaphore

    from harness.polls import Follower

    from . import client as base

    class WatchingPoller(base.Poller):
        def __init__(self, client, index, user_id, spec):
            super().__init__(client, index, user_id, spec)
            self.watches = set(spec.get("watches", ()))
            self.follower = Follower(self.port, self.token, path=spec.get("path", POLL_PATH),
                                     watches=sorted(self.watches))
            self.values = {}
            # Rows of topics this tab does not watch: the contract says it never gets any.
            self.unwatched = 0
            self.unwatched_sample = None

        def tally(self, answer):
            if answer is not None:
                seen = set()
                for change in answer.get("changes", ()):
                    topic = change.get("topic")
                    if topic is not None and not ({f"{change['community_id']}/{topic}",
                                                   f"{change['community_id']}/*"} & self.watches):
                        self.unwatched += 1
                        if self.unwatched_sample is None:
                            self.unwatched_sample = {"change": change, "watches": sorted(self.watches)}
                    if change["type"] == "activity":
                        key = f"{change['community_id']}/{change.get('topic') or ''}/{change['kind']}/{change['ref']}"
                        entry = self.values.setdefault(key, dict(EMPTY_VALUE))
                        entry["rows"] += 1
                        if key not in seen:
                            seen.add(key)
                            entry["answers"] += 1
                        value = (change.get("data") or {}).get("votes")
                        if value is not None:
                            last = entry["last"]
                            if last is not None and value <= last:
                                entry["violations" if value < last else "repeats"] += 1
                                if entry["violation"] is None:
                                    entry["violation"] = {"after": last, "got": value,
                                                          "answer_cursor": answer["cursor"]}
                            entry["last"] = value if last is None else max(last, value)
            super().tally(answer)

        def summary(self):
            summary = super().summary()
            summary["values"] = self.values
            summary["rows"] = {key: entry["rows"] for key, entry in self.values.items()}
            summary["unwatched"] = self.unwatched
            summary["unwatched_sample"] = self.unwatched_sample
            return summary

    class WatchingClient(base.Client):
        poller = WatchingPoller

    limit = stack.raise_fd_limit()
    client = WatchingClient()
    client.emit(event="ready", fd_limit=limit)
    client.serve()


if __name__ == "__main__":
    load_generator()
