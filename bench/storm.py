"""Scenarios 14-15: an arrival storm of long polls, and a deploy (SIGHUP) under one.

Each on a database of its own, ``clients`` users seeded as in scenarios 1-4
(everyone a member of ``c-all``), one gunicorn gevent worker:

- storm: every client first takes its user's snapshot (``GET
  /me/communities``: its cursor and hash), then all of them send their long
  polls from there within one second, each on a new keep-alive HTTP/1.1
  connection, as browsers' fetch does when a page loads. Polls refused, the
  time until all are waiting and until the server stops reading for them
  (its waiting gauge and statement counter), how many are parked, the
  worker's memory per waiting poll, the statements and transactions of the
  arrival; then one activity in ``c-all``, the time until the last client has
  it, and that each got it once. The same arrival and fan-out against the
  bare Flask view waiting on an event (``bare_wait``, the floor of scenario
  3), taking turns round after round.
- deploy: the same storm waiting, then SIGHUP to the gunicorn master (a
  graceful reload: a new worker, the old one drained). How each client's
  waiting poll ended (answered, its connection closed, reset, refused), the
  time until all are waiting on the new worker, and one activity written
  during the reload that every client must get exactly once.
"""
import time
import urllib.request
from collections import Counter

from harness.polls import POLL_PATH
from harness.servers import wait_for

from . import stack
from .longpoll import POLL_TIMEOUT, quiesce, warm_up
from .stack import SECRET, ClientProcess, Server, cpu_seconds, log, percentile

EVERYONE = "c-all"  # every seeded user's community (stack.Database.seed)
SPREAD = 1.0  # seconds over which the clients' polls arrive
KINDS = ("longpoll", "bare_wait")
TARGETS = {
    "longpoll": ("wsgi:app", POLL_PATH, "/me/communities"),
    # The floor has no snapshot: its timeout=0 answer stands in for one (a cursor and a hash).
    "bare_wait": ("bench.baselines:bare_wait_app()", "/bench/wait", "/bench/wait?timeout=0"),
}
def storm(options):
    """Rounds of one storm of each kind, the order reversed every other round (A B B A ...)."""
    clients = options["clients"]
    database = stack.Database()
    rounds = {kind: [] for kind in KINDS}
    try:
        database.migrate()
        database.seed(clients, 0)
        log(f"storm: database {database.name}, {clients:,} users seeded")
        for number in range(options["storm_rounds"]):
            for kind in (KINDS if number % 2 == 0 else KINDS[::-1]):
                entry = storm_session(database, kind, clients, options, number)
                entry["round"] = number
                rounds[kind].append(entry)
    finally:
        database.drop()
    return {"clients": clients, "spread": SPREAD, "rounds": rounds}


def storm_session(database, kind, clients, options, number):
    target, path, snapshot_path = TARGETS[kind]
    server = Server(database, target=target).start()
    client = ClientProcess()
    try:
        warm_up(server, client, path)
        result = arrive(database, server, client, kind, clients, path, snapshot_path, options)
        ref = f"storm-{number}-{int(time.time())}"
        result["fanout"] = fanout(database, server, client, kind, result["waiting"], ref, options)
    finally:
        client.close()
        if kind == "bare_wait":
            # Its views wait out their timeout on a stop (it has no drain): wake them first.
            wake(server)
        server.stop()
    return result


def arrive(database, server, client, kind, clients, path, snapshot_path, options):
    """Prime every client with its snapshot, then the storm: until all wait and the server is quiet."""
    primed = client.call("prime", "primed", users=[f"u{i}" for i in range(clients)], ports=[server.port],
                         path=path, snapshot_path=snapshot_path, timeout=POLL_TIMEOUT, secret=SECRET)
    # The snapshots' own transactions are flushed and left out of the arrival's.
    time.sleep(stack.SETTLE)
    transactions = database.transactions()["transactions"]
    statements = server.queries()
    rss_before = server.rss()
    cpu = server.cpu()
    begin = client.call("storm", "stormed", spread=SPREAD)["begin"]
    all_waiting = wait_for(lambda: server.waiting() >= clients, options.get("arrival_wait", 120), interval=0.05)
    waiting_at = time.monotonic()
    quiesce(server, clients, timeout=options.get("arrival_wait", 120))
    quiet_at = time.monotonic()
    sent = server.queries() - statements
    busy = server.cpu() - cpu
    time.sleep(1.0)
    rss_after = server.rss()
    waiting, parked = int(server.waiting()), int(server.parked())
    report = client.call("report", "report")
    time.sleep(stack.SETTLE)
    counted = database.transactions()["transactions"] - transactions
    result = {
        "kind": kind,
        "clients": clients,
        "primed": primed["statuses"],
        "waiting": waiting,
        "parked": parked,
        "all_waiting": bool(all_waiting),
        "waiting_seconds": waiting_at - begin if all_waiting else None,
        "quiet_seconds": quiet_at - begin,
        "refused": dict(Counter(str(status) for _index, status, *_ in report["failures"] if status)),
        "connection_errors": dict(Counter(message.split(":")[0] for _index, status, message, *_
                                          in report["failures"] if not status)),
        "failure_samples": report["failures"][:3],
        "early_answers": len(report["answers"]),
        "rss_before": rss_before,
        "rss_after": rss_after,
        "rss_per_poll": (rss_after - rss_before) / clients,
        "statements": sent,
        "statements_per_client": sent / clients,
        # Over the arrival and the settle after it: the head checks' included (20 a second while polls wait).
        "transactions": counted,
        "transactions_per_client": counted / clients,
        "worker_cpu_seconds": busy,
    }
    log(f"storm {kind}: {waiting:,}/{clients:,} waiting ({parked:,} parked) after "
        f"{fmt_s(result['waiting_seconds'])}, quiet after {result['quiet_seconds']:.2f} s; "
        f"refused {result['refused'] or 'none'}, errors {result['connection_errors'] or 'none'}; "
        f"{result['rss_per_poll'] / 1024:.1f} KiB per poll; {sent:.0f} statements, {counted} transactions")
    return result


def wake(server):
    """``POST /bench/wake``: every view the floor holds answers."""
    urllib.request.urlopen(urllib.request.Request(f"{server.url}/bench/wake", method="POST"), timeout=10).close()


def write_activity(database, ref):
    """One activity in the community everyone is in; the time its COMMIT returned."""
    connection = database.connect()
    try:
        with connection.cursor() as cursor:
            cursor.execute("INSERT INTO activity (community_id, kind, ref, actor) "
                           "VALUES (%s, 'post_created', %s, 'u-author')", (EVERYONE, ref))
            connection.commit()
            return time.monotonic()
    finally:
        connection.close()


def fanout(database, server, client, kind, waiting, ref, options):
    """One change reaching every waiting client: when the last has it, and that each has it once.

    The clients do not poll again until all have answered, so the statements
    counted are the fan-out's alone; then they do, and once they are all
    waiting again their tallies show whether any got the change twice.
    """
    client.call("repoll", "ok", value=False)
    time.sleep(1.0)
    client.call("report", "report")
    statements = server.queries()
    cpu = server.cpu()
    if kind == "bare_wait":
        wake(server)
        committed = time.monotonic()
    else:
        committed = write_activity(database, ref)
    arrivals = {}
    deadline = committed + options.get("fanout_wait", 60)
    while len(arrivals) < waiting and time.monotonic() < deadline:
        time.sleep(0.25)
        for index, arrived, status, _size in client.call("report", "report")["answers"]:
            if status == "changed":
                arrivals.setdefault(index, []).append(arrived)
    sent = server.queries() - statements
    busy = server.cpu() - cpu
    client.call("repoll", "ok", value=True)
    wait_for(lambda: server.waiting() >= waiting, options.get("arrival_wait", 120))
    if kind != "bare_wait":
        quiesce(server, waiting)
    time.sleep(1.0)
    # A change delivered again comes at once, in the answer to the poll that follows.
    later = Counter(index for index, _arrived, status, _size in client.call("report", "report")["answers"]
                    if status == "changed")
    times = sorted(min(at) - committed for at in arrivals.values())
    result = {
        "answered": len(arrivals),
        "first": times[0] if times else None,
        "p50": percentile(times, 0.5),
        "last": times[-1] if times else None,
        "statements": sent,
        "worker_cpu_seconds": busy,
        "answered_again": sum(later.values()),
    }
    if kind != "bare_wait":
        result.update(received(client, ref))
    else:
        result.update(once=sum(1 for at in arrivals.values() if len(at) == 1) - len(later),
                      twice_or_more=sum(1 for at in arrivals.values() if len(at) > 1) + len(later),
                      missing=waiting - len(arrivals))
    log(f"storm {kind} fan-out: {len(arrivals):,}/{waiting:,} answered, last after {fmt_s(result['last'])}, "
        f"{sent:.0f} statements; once {result['once']:,}, more {result['twice_or_more']}, "
        f"missing {result['missing']}")
    return result


def received(client, ref):
    """How many clients hold activity ``ref`` once, more than once, or not at all (their tallies)."""
    followers = client.call("followers", "followers")["followers"]
    counts = [f["types"].get("activity", 0) if f["last_ref"] == ref else 0 for f in followers]
    return {"once": counts.count(1), "twice_or_more": sum(1 for c in counts if c > 1),
            "missing": counts.count(0)}


def deploy(options):
    """The storm waiting, then SIGHUP to the master; every poll's outcome and the change written meanwhile."""
    clients = options["clients"]
    database = stack.Database()
    try:
        database.migrate()
        database.seed(clients, 0)
        server = Server(database).start()
        client = ClientProcess()
        try:
            warm_up(server, client, POLL_PATH)
            result = {"clients": clients, "spread": SPREAD,
                      "storm": arrive(database, server, client, "longpoll", clients, POLL_PATH, "/me/communities",
                                      options)}
            result.update(reload(database, server, client, result["storm"]["waiting"], options))
        finally:
            client.close()
            server.stop()
    finally:
        database.drop()
    return result


# How a client's poll ended, from the load generator's report: an answer, or its failure's text.
OUTCOMES = ("answered", "closed", "reset", "refused", "other")


def outcome(status, message=""):
    if status == 200:
        return "answered"
    if status:
        return "refused"
    if message.startswith("HTTPError: connection closed"):
        return "closed"  # the server ended the connection cleanly (FIN) before an answer
    if message.startswith(("ConnectionResetError", "BrokenPipeError")):
        return "reset"
    return "other"


def reload(database, server, client, waiting, options):
    """SIGHUP with ``waiting`` polls waiting; an activity written ``write_after`` s later."""
    client.call("report", "report")
    old = set(server.worker_pids())
    ref = f"deploy-{int(time.time())}"
    reloaded = time.monotonic()
    server.reload()
    time.sleep(options.get("write_after", 0.5))
    committed = write_activity(database, ref)
    # The old worker's leaving and the clients' return, each timed from the signal. The
    # waiting gauge sums both workers: the clients are back once it has dropped (the drain
    # answered the old worker's polls) and risen to all of them again.
    replaced_at = back_at = None
    new_cpu = None
    dropped = False
    deadline = reloaded + options.get("arrival_wait", 120)
    while (replaced_at is None or back_at is None) and time.monotonic() < deadline:
        now = time.monotonic()
        workers = set(server.worker_pids())
        if replaced_at is None and workers and not old & workers:
            replaced_at = now
        count = server.waiting()
        dropped = dropped or count < waiting
        if back_at is None and dropped and count >= waiting:
            back_at = now
            # CPU-bound or waiting on something: what the new workers spent to get there.
            new_cpu = cpu_seconds(workers - old)
        time.sleep(0.05)
    replaced, back = replaced_at is not None, back_at is not None
    quiesce(server, waiting)
    deadline = time.monotonic() + options.get("fanout_wait", 60)
    tally = received(client, ref)
    while tally["once"] + tally["twice_or_more"] < waiting and time.monotonic() < deadline:
        time.sleep(0.5)
        tally = received(client, ref)
    report = client.call("report", "report")
    events = sorted([(arrived, index, outcome(200)) for index, arrived, _status, _size in report["answers"]]
                    + [(at, index, outcome(status, message)) for index, status, message, at in report["failures"]])
    first = {}
    for _at, index, kind in events:
        first.setdefault(index, kind)
    first_outcomes = Counter(first.values())
    result = {
        "old_workers": sorted(old),
        "new_workers": server.worker_pids(),
        "replaced": bool(replaced),
        "replaced_seconds": replaced_at - reloaded if replaced else None,
        "write_seconds": committed - reloaded,
        # How the poll each client had waiting at the SIGHUP ended.
        "first_outcome": {kind: first_outcomes.get(kind, 0) for kind in OUTCOMES},
        "untouched": waiting - len(first),
        # Every poll over the reload, the clients' quick returns included.
        "outcomes": dict(Counter(kind for _at, _index, kind in events)),
        "refused": dict(Counter(str(status) for _index, status, *_ in report["failures"] if status)),
        "failure_samples": [f for f in report["failures"] if outcome(f[1], f[2]) != "closed"][:5],
        "all_waiting": bool(back),
        "waiting_again": int(server.waiting()),
        "waiting_again_seconds": back_at - reloaded if back else None,
        "new_worker_cpu_seconds": new_cpu,
        "change": tally,
        "rss_new_worker": server.rss(),
    }
    log(f"deploy: first outcomes {result['first_outcome']} ({result['untouched']} untouched); "
        f"all polls {result['outcomes']}; {result['waiting_again']:,} waiting again after "
        f"{fmt_s(result['waiting_again_seconds'])}; change once {tally['once']:,}, more {tally['twice_or_more']}, "
        f"missing {tally['missing']}")
    return result


def fmt_s(seconds):
    return "n/a" if seconds is None else f"{seconds:.2f} s"
