"""Scenarios 1-4 on one set of held polls: held, idle cost, wake latency, fan-out.

One *session* starts a fresh server, ramps up ``waiters`` polls (one per user,
each a reset poll and then a long poll that follows its cursor) and runs the
chosen phases on them in turn:

- held: every poll waiting, none failed; the worker's RSS per waiting poll.
  With ``http10`` the polls are sent as nginx's default upstream sends them
  (HTTP/1.0, ``Connection: close``), each on a connection of its own.
- idle: transactions PostgreSQL counted for the database over a quiet window.
- wake: single-user changes committed at random; commit-to-answer latency.
- fanout: one community renamed; time until every member has the answer, and
  the statements the server sent meanwhile, for two community sizes.

The same session runs against the real poll and against the naive baseline.
"""
import random
import time
import urllib.request

from . import stack
from harness.servers import wait_for

from .stack import SECRET, ClientProcess, Server, log, percentile

TARGETS = {
    "longpoll": ("wsgi:app", "/community-changes/poll"),
    "naive": ("bench.baselines:naive_app()", "/bench/naive-poll"),
    "bare_wait": ("bench.baselines:bare_wait_app()", "/bench/wait"),
    # The real poll with parking off: each waiting poll held in a greenlet (PARKED_POLLS=0).
    "greenlets": ("wsgi:app", "/community-changes/poll"),
    # The real poll with each wake source (scenario 19, bench/wakeups.py).
    "head": ("wsgi:app", "/community-changes/poll"),
    "notify": ("wsgi:app", "/community-changes/poll"),
    "watcher": ("wsgi:app", "/community-changes/poll"),
}
# What a kind sets in the server's environment beside the run's database.
KIND_ENVIRON = {"greenlets": {"PARKED_POLLS": "0"},
                "head": {"WAKE_SOURCE": "head"}, "notify": {"WAKE_SOURCE": "notify"},
                "watcher": {"WAKE_SOURCE": "watcher"}}
POLL_TIMEOUT = 290  # longer than a session, so no poll times out in the middle of one


def run_session(database, kind, waiters, phases, options, used_users):
    target, path = TARGETS[kind]
    result = {"kind": kind, "waiters": waiters}
    server = Server(database, target=target, **KIND_ENVIRON.get(kind, {})).start()
    client = ClientProcess()
    try:
        warm_up(server, client, path)
        result["rss_before"] = server.rss()
        begin = time.monotonic()
        users = [f"u{i}" for i in range(waiters)]
        held = client.call(
            "hold", "held", users=users, ports=[server.port], path=path, timeout=POLL_TIMEOUT,
            secret=SECRET, ramp=options.get("ramp", 200), deadline=options.get("ramp_deadline", 180),
            http10=options.get("http10", False),
        )
        waiting = wait_for(lambda: server.waiting() >= waiters, 60)
        # Subscribed is not yet read: the last polls' first reads may still be running.
        if options.get("quiesce", True):
            quiesce(server, waiters)
        result["ramp_seconds"] = round(time.monotonic() - begin, 2)
        time.sleep(1.0)
        result["rss_after"] = server.rss()
        result["waiting"] = int(server.waiting())
        result["parked"] = int(server.parked())
        report = client.call("report", "report")
        result["failures"] = len(report["failures"])
        result["retried_reset_polls"] = held["retries"]
        result["failure_samples"] = report["failures"][:3]
        result["early_answers"] = len(report["answers"])
        result["rss_per_poll"] = (result["rss_after"] - result["rss_before"]) / waiters
        log(f"{kind}: {result['waiting']}/{waiters} waiting ({result['parked']} parked) "
            f"after {result['ramp_seconds']} s, "
            f"{result['rss_per_poll'] / 1024:.1f} KiB per poll, {result['failures']} failures")
        if not waiting:
            log(f"{kind}: not every poll is waiting; continuing with what is held")

        if "idle" in phases:
            result["idle"] = idle_phase(database, server, options["idle_seconds"][kind])
            answers = client.call("report", "report")["answers"]
            result["idle"]["answers_during"] = len(answers)
            log(f"{kind}: idle {result['idle']['transactions_per_second']:.2f} transactions/s, "
                f"{result['idle']['statements_per_second']:.2f} statements/s")
        if "wake" in phases:
            result["wake"] = wake_phase(database, client, waiters, options["changes"], used_users,
                                        options.get("wake_wait", 15))
            log(f"{kind}: wake p50 {fmt_ms(result['wake']['p50'])}, p99 {fmt_ms(result['wake']['p99'])}, "
                f"{result['wake']['missing']} missing")
        if "fanout" in phases:
            result["fanout"] = fanout_phase(database, server, client, result["waiting"], options, kind)
        result["rss_end"] = server.rss()
    finally:
        client.close()
        server.stop()
    return result


def quiesce(server, waiters, timeout=60):
    """Wait until the polls are back and the server has stopped reading for them.

    A poll counts as waiting once subscribed, which is *before* its first read:
    only a statement counter that stands still says the re-polls are done.
    """
    deadline = time.monotonic() + timeout
    wait_for(lambda: server.waiting() >= waiters, timeout)
    last = server.queries()
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = server.queries()
        if now - last <= 2:  # the safety-net re-read may fall in between
            return
        last = now


def fmt_ms(seconds):
    return "n/a" if seconds is None else f"{seconds * 1000:.1f} ms"


def warm_up(server, client, path):
    """A few requests so the worker has imported, connected and cached what it will."""
    client.call("load", "load", port=server.port, path=f"{path}?timeout=0", users=["warm"],
                secret=SECRET, connections=4, duration=1.0)
    time.sleep(0.5)


def idle_phase(database, server, seconds):
    """Transactions and statements over ``seconds`` with nothing changing."""
    time.sleep(stack.SETTLE)
    before = database.transactions()
    statements = server.queries()
    cpu = server.cpu()
    begin = time.monotonic()
    time.sleep(seconds)
    elapsed = time.monotonic() - begin
    after = database.transactions()
    return {
        "seconds": round(elapsed, 1),
        "transactions": after["transactions"] - before["transactions"],
        "transactions_per_second": (after["transactions"] - before["transactions"]) / elapsed,
        "statements_per_second": (server.queries() - statements) / elapsed,
        "tuples_returned_per_second": (after["tuples_returned"] - before["tuples_returned"]) / elapsed,
        "worker_cpu_percent": 100 * (server.cpu() - cpu) / elapsed,
    }


def wake_phase(database, client, waiters, changes, used_users, wait):
    """Commit ``changes`` single-user changes at random moments; commit-to-answer times."""
    candidates = [i for i in range(waiters) if i not in used_users]
    chosen = random.sample(candidates, min(changes, len(candidates)))
    used_users.update(chosen)
    client.call("report", "report")  # forget what came before
    connection = database.connect()
    commits = {}
    with connection.cursor() as cursor:
        for index in chosen:
            time.sleep(random.uniform(0.01, 0.09))
            cursor.execute(
                "INSERT INTO memberships (user_id, community_id, role) VALUES (%s, %s, 'member')",
                (f"u{index}", f"c-x{random.randrange(10)}"))
            connection.commit()
            commits[index] = time.monotonic()
    connection.close()
    arrivals = {}
    deadline = time.monotonic() + wait
    while len(arrivals) < len(commits) and time.monotonic() < deadline:
        time.sleep(0.5)
        for index, arrived, status, _size in client.call("report", "report")["answers"]:
            if index in commits and status == "changed" and index not in arrivals:
                arrivals[index] = arrived
    latencies = [arrivals[i] - commits[i] for i in arrivals]
    return {
        "changes": len(commits),
        "answered": len(arrivals),
        "missing": len(commits) - len(arrivals),
        "p50": percentile(latencies, 0.5),
        "p90": percentile(latencies, 0.9),
        "p99": percentile(latencies, 0.99),
        "max": max(latencies) if latencies else None,
        "latencies": [round(x, 6) for x in latencies],
    }


def fanout_phase(database, server, client, waiters, options, kind):
    """Rename a small community, then the one everyone is in; count statements meanwhile.

    The bare view (``kind`` "bare_wait") has no communities: one event wakes all its waiters.
    """
    results = []
    plan = [("c-all", waiters)] * options["fanout_runs"]
    if options.get("fanout_small", True):
        plan.insert(0, ("c-small", min(options["small"], waiters)))
    for number, (community, members) in enumerate(plan):
        # ``waiters`` is how many were held at the start; a poll lost since is not waited for.
        if options.get("quiesce", True):
            quiesce(server, waiters)
        else:
            # The naive poll never stops reading: give its re-polls a moment instead.
            wait_for(lambda: server.waiting() >= waiters, 60)
            time.sleep(3.0)
        client.call("repoll", "ok", value=False)
        time.sleep(1.0)
        client.call("report", "report")
        statements = server.queries()
        cpu = server.cpu()
        if kind == "bare_wait":
            urllib.request.urlopen(urllib.request.Request(
                f"{server.url}/bench/wake", method="POST"), timeout=10).close()
            committed = time.monotonic()
        else:
            connection = database.connect()
            with connection.cursor() as cursor:
                cursor.execute("UPDATE communities SET name = %s WHERE id = %s",
                               (f"Renamed {number} {time.time():.0f}", community))
                connection.commit()
                committed = time.monotonic()
            connection.close()
        arrivals = []
        deadline = committed + options.get("fanout_wait", 30)
        while len(arrivals) < members and time.monotonic() < deadline:
            time.sleep(0.25)
            # Members are users u0.. up to the community's size (see stack.Database.seed).
            arrivals += [a[1] for a in client.call("report", "report")["answers"]
                         if a[2] == "changed" and a[0] < members]
        # The statements of the wake-up alone: nobody has polled again yet.
        sent = server.queries() - statements
        busy = server.cpu() - cpu
        arrivals.sort()
        entry = {
            "community": community,
            "members": members,
            "answered": len(arrivals),
            "statements": sent,
            "first": arrivals[0] - committed if arrivals else None,
            "p50": percentile([a - committed for a in arrivals], 0.5),
            "last": arrivals[-1] - committed if arrivals else None,
            # Worker CPU over the phase (including the report polling that ends it).
            "worker_cpu_seconds": busy,
        }
        log(f"fan-out {community}: {entry['answered']}/{members} answered, last after "
            f"{fmt_ms(entry['last'])}, {sent:.0f} statements")
        results.append(entry)
        client.call("repoll", "ok", value=True)
    return results
