"""Scenario 18: typing in a busy thread, on a database of its own.

(Not ``bench/typing.py``: that name would shadow the standard library's module.)

``watchers`` members of one community hold long polls that watch its thread
(``watch=c-all/thread:t-1``) on one gunicorn of two gevent workers, each
polling again at once after every answer from the returned cursor and hash,
on keep-alive connections, as the browser client does. ``typists`` other
members type there: every second some of them start (``PUT /me/typing``) and
as many stop (``DELETE /me/typing``), so that who types changes every second;
the others repeat their ``PUT`` once a second, as a typing client does. Each
typist rests and types for three seconds at least, so that every worker's
once-a-second read sees each change. Meanwhile ``bystanders`` (members that
watch nothing) hold polls without watches, and a writer adds them to
communities one at a time, ``join_rate`` a second (``INSERT INTO
memberships``, a transaction each).

Measured over a window of ``seconds`` that starts once PostgreSQL's
statistics of the phase before have settled (``stack.SETTLE``): the
keypress-to-render latency, from the moment the ``PUT`` that made a typist
appear was sent to the moment a watcher's answer with that typist arrived at
the load generator, for every (watcher, appearance) pair; answers per
watcher per second; the server's statements (``community_sync_db_queries_total``)
and PostgreSQL's transactions (``pg_stat_database``) per second; each
worker's CPU (``/proc/<pid>/stat``); and the joins' wake latency (``COMMIT``
to the bystander's answer). The baseline is the same with nobody typing, the
two taking turns round after round, the order reversed every other round.

Then two "hosts" (two gunicorns of two workers each on the same database),
the watchers split between them and the typists' requests sent to the first:
the keypress-to-render latency at the watchers of each host.

The load generator is bench/client.py's, its watchers noting who each answer
shows typing and its typists sending the requests (``python -m bench.typists``,
started by :class:`TypingClient`). A run with an answer of a watching poll
without ``typing``, a typist shown while nobody typed, a typist's request
refused, a poll failed or a join unanswered lists it under ``failed`` (and
``python -m bench`` exits 1). A (watcher, appearance) pair never shown (the
watcher's answers came later than the typist's stint) is counted beside the
latencies.
"""
if __name__ == "__main__":
    # The load generator's process: gevent's patches before anything else is imported.
    from gevent import monkey

    monkey.patch_all()

import bisect  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections import Counter, defaultdict  # noqa: E402

from harness.polls import POLL_PATH  # noqa: E402
from harness.servers import ROOT, python_environ  # noqa: E402

from . import stack  # noqa: E402
from .longpoll import POLL_TIMEOUT  # noqa: E402
from .stack import SECRET, ClientProcess, Server, cpu_seconds, log, median, percentile  # noqa: E402

COMMUNITY = "c-all"  # every seeded user's community (stack.Database.seed)
THREAD = "thread:t-1"
WATCH = f"{COMMUNITY}/{THREAD}"
TYPING_PATH = "/me/typing"
WORKERS = 2  # each host's gevent workers
SIDES = ("typing", "quiet")
# Typists go on this long after the window, so that an appearance late in it is
# shown before its typist stops (each worker reads who types once a second).
TAIL = 2.5
# Seconds a typist types, and rests, at least (whole ticks of the schedule).
MIN_STINT = 3
MIN_REST = 3
# The acceptance: typing across two gunicorn processes, and two hosts, within this p95.
TARGET_P95 = 1.5
# What the typing phase is compared with, round by round: (name, side, baseline, figure).
COMPARED = (
    ("server statements per second", "typing", "quiet", "statements_per_second"),
    ("PostgreSQL transactions per second", "typing", "quiet", "transactions_per_second"),
    ("worker CPU", "typing", "quiet", "worker_cpu_percent"),
    ("join wake p50", "typing", "quiet", "join_p50"),
    ("join wake p99", "typing", "quiet", "join_p99"),
)
# What typing adds, round by round: typing's figure less the baseline's.
BEYOND_QUIET = ("statements_per_second", "transactions_per_second", "worker_cpu_percent")


def run(options):
    """The rounds on one host, then the two hosts, on one database seeded for them."""
    watchers = options["typing_watchers"]
    typists = options["typing_typists"] + options["typing_resting"]
    bystanders = options["typing_bystanders"]
    users = [f"u{i}" for i in range(watchers + typists + bystanders)]
    roles = {"watchers": users[:watchers], "typists": users[watchers:watchers + typists],
             "bystanders": users[watchers + typists:]}
    joins = 2 * options["typing_rounds"] * options["typing_seconds"] * options["typing_join_rate"]
    # Each bystander joins each of the ten communities left to join (c-x*) once at most.
    assert joins <= 10 * bystanders, "more joins than bystanders can make"
    database = stack.Database()
    result = {"community": COMMUNITY, "thread": THREAD, "watchers": watchers,
              "typing_at_once": options["typing_typists"], "typists": typists,
              "changes_per_second": options["typing_changes"], "bystanders": bystanders,
              "join_rate": options["typing_join_rate"], "seconds": options["typing_seconds"],
              "warm_seconds": {side: warm_seconds(side) for side in SIDES}, "workers": WORKERS,
              "target_p95": TARGET_P95, "cores": os.cpu_count(), "failed": []}
    try:
        database.migrate()
        database.seed(len(users), 0)
        log(f"typing: database {database.name}, {len(users):,} users seeded, all in {COMMUNITY}")
        result.update(one_host(database, roles, options))
        result["hosts"] = two_hosts(database, roles, options)
    finally:
        database.drop()
    result["failed"] = failures(result)
    for failure in result["failed"]:
        log(f"typing: FAILED: {failure}")
    return result


class TypingClient(ClientProcess):
    """``python -m bench.typists``: bench/client.py's load generator, with watchers and typists."""

    def __init__(self):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.typists"], cwd=ROOT, env=python_environ(),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
        )
        self.expect("ready")


def one_host(database, roles, options):
    """Rounds of the typing phase and the quiet one on one gunicorn of two workers."""
    server = Server(database, workers=WORKERS).start()
    try:
        client = TypingClient()
        try:
            watching = hold(client, [server], roles["watchers"], [WATCH], options)
            others = hold(client, [server], roles["bystanders"], [], options, waiting=watching["waiting"])
            log(f"typing: {watching['waiting']:,} watchers and {others['waiting']:,} bystanders waiting on "
                f"{WORKERS} workers")
            joiner = Joiner(database, roles["bystanders"], len(roles["watchers"]), options["typing_join_rate"])
            rounds = []
            try:
                for number in range(options["typing_rounds"]):
                    order = SIDES if number % 2 == 0 else SIDES[::-1]
                    entry = {"round": number, "order": list(order)}
                    for side in order:
                        entry[side] = phase(database, [server], client, roles, side, options, joiner)
                    entry["ratios"] = round_ratios(entry)
                    entry["beyond_quiet"] = {key: entry["typing"][key] - entry["quiet"][key] for key in BEYOND_QUIET}
                    rounds.append(entry)
                    typing, quiet = entry["typing"], entry["quiet"]
                    log(f"typing, round {number + 1} ({' then '.join(order)}): keypress to render p50 "
                        f"{fmt_ms(typing['render_p50'])} p95 {fmt_ms(typing['render_p95'])} "
                        f"({typing['rendered']:,} of {typing['pairs']:,} pairs), "
                        f"{typing['answers_per_watcher_second']:.2f} answers per watcher per second; statements/s "
                        f"{typing['statements_per_second']:.1f} against {quiet['statements_per_second']:.1f}, "
                        f"transactions/s {typing['transactions_per_second']:.1f} against "
                        f"{quiet['transactions_per_second']:.1f}; worker CPU {typing['worker_cpu_percent']:.0f}% "
                        f"against {quiet['worker_cpu_percent']:.0f}%; join wake p99 {fmt_ms(typing['join_p99'])} "
                        f"against {fmt_ms(quiet['join_p99'])}")
            finally:
                joiner.close()
        finally:
            client.close()
    finally:
        server.stop()
    return {"held": watching["waiting"], "held_bystanders": others["waiting"],
            "hold_failures": watching["failures"] + others["failures"], "rounds": rounds, **summarize(rounds)}


def two_hosts(database, roles, options):
    """The watchers split between two gunicorns, the typists' requests sent to the first."""
    hosts = []
    try:
        for _ in range(2):
            hosts.append(Server(database, workers=WORKERS).start())
        client = TypingClient()
        try:
            watching = hold(client, hosts, roles["watchers"], [WATCH], options)
            log(f"typing, two hosts: {watching['waiting']:,} watchers waiting, "
                f"{WORKERS} workers a host")
            figures = phase(database, hosts, client, roles, "typing", options)
        finally:
            client.close()
    finally:
        for host in hosts:
            host.stop()
    log(f"typing, two hosts: keypress to render p50 / p95 at the typists' host "
        f"{fmt_ms(figures['hosts'][0]['p50'])} / {fmt_ms(figures['hosts'][0]['p95'])}, at the other "
        f"{fmt_ms(figures['hosts'][1]['p50'])} / {fmt_ms(figures['hosts'][1]['p95'])}")
    return {"hosts": len(hosts), "held": watching["waiting"], "hold_failures": watching["failures"], **figures}


def hold(client, hosts, users, watches, options, waiting=0):
    """One long poll per user, each watching ``watches``, spread over ``hosts`` (user i on host i mod n);
    wait until they all wait and the servers have stopped reading for them.

    ``waiting``: polls the servers hold already.
    """
    held = client.call("hold", "held", users=users, ports=[host.port for host in hosts], path=POLL_PATH,
                       timeout=POLL_TIMEOUT, secret=SECRET, ramp=options.get("ramp", 200), deadline=180,
                       watches=watches)
    expected = waiting + len(users)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and sum(host.waiting() for host in hosts) < expected:
        time.sleep(0.2)
    last = statements(hosts)
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = statements(hosts)
        # Each worker reads who types once a second while its polls watch a topic.
        if now - last <= 2 + len(hosts) * WORKERS:
            break
        last = now
    waiting_now = int(sum(host.waiting() for host in hosts))
    if waiting_now < expected:
        log(f"typing: only {waiting_now:,} of {expected:,} polls are waiting; going on with those")
    return {"sent": held["sent"], "failures": held["failures"], "waiting": waiting_now - waiting}


def statements(hosts):
    return sum(host.queries() for host in hosts)


class Joiner:
    """Adds bystanders to communities one at a time, ``rate`` a second, each join a transaction.

    Bystander ``i`` is the load generator's poller ``offset + i``; it joins
    ``c-x0``, ``c-x1``... in turn, the bystanders taking turns.
    """

    def __init__(self, database, users, offset, rate):
        self.connection = database.connect()
        self.users = users
        self.offset = offset
        self.rate = rate
        self.made = 0

    def run(self, until):
        """Joins until ``until`` (``time.monotonic()``): (poller index, time COMMIT returned) each."""
        joins = []
        at = time.monotonic()
        with self.connection.cursor() as cursor:
            while True:
                at += 1 / self.rate
                if at >= until:
                    return joins
                time.sleep(max(0.0, at - time.monotonic()))
                number = self.made % len(self.users)
                cursor.execute("INSERT INTO memberships (user_id, community_id, role) VALUES (%s, %s, 'member')",
                               (self.users[number], f"c-x{self.made // len(self.users)}"))
                self.connection.commit()
                joins.append((self.offset + number, time.monotonic()))
                self.made += 1

    def close(self):
        self.connection.close()


def warm_seconds(side):
    """Until a window starts: PostgreSQL's settle, and for typing the first typists' shortest stint."""
    return max(stack.SETTLE, MIN_STINT) if side == "typing" else stack.SETTLE


def sleep_until(moment):
    time.sleep(max(0.0, moment - time.monotonic()))


def readings(database, hosts, client):
    """The counters a window is measured by, now."""
    return {"at": time.monotonic(), "statements": statements(hosts),
            "workers": {pid: cpu_seconds([pid]) for host in hosts for pid in host.worker_pids()},
            "waited": {pid: run_queue_seconds(pid) for host in hosts for pid in host.worker_pids()},
            "client_cpu": client.cpu(), "machine_cpu": machine_cpu(),
            "transactions": database.transactions()["transactions"]}


def run_queue_seconds(pid):
    """Seconds the process has waited, runnable, for a core so far (``/proc/<pid>/schedstat``):
    a worker that waits long for one is short of CPU, whatever its own use."""
    with open(f"/proc/{pid}/schedstat") as schedstat:
        return int(schedstat.read().split()[1]) / 1e9


def machine_cpu():
    """CPU seconds the whole machine spent busy so far, all cores (``/proc/stat``): what else ran
    beside the servers and the load generator (PostgreSQL, and anything sharing the machine)."""
    with open("/proc/stat") as stat:
        fields = [int(value) for value in stat.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle and iowait
    return (sum(fields[:8]) - idle) / stack.TICK


def phase(database, hosts, client, roles, side, options, joiner=None):
    """One window of ``side`` (typing, or nobody typing) after a warm-up: its figures.

    The warm-up is as long as PostgreSQL takes to flush what an idle backend
    counted in the phase before (``stack.SETTLE``); from then on every
    backend is busy and flushes within a second, at both ends of the window
    alike. The typists who start first type MIN_STINT seconds at least, so
    the window does not start before the set of typists begins to change.
    """
    watchers = len(roles["watchers"])
    begin = time.monotonic() + 0.2
    start = begin + warm_seconds(side)
    end = start + options["typing_seconds"]
    if side == "typing":
        client.send(cmd="typists", users=roles["typists"], typing=options["typing_typists"],
                    changes=options["typing_changes"], port=hosts[0].port, secret=SECRET, path=TYPING_PATH,
                    place={"community_id": COMMUNITY, "topic": THREAD}, begin=begin, end=end + TAIL)
    sleep_until(start)
    before = readings(database, hosts, client)
    joins = joiner.run(end) if joiner else []
    sleep_until(end)
    after = readings(database, hosts, client)
    if side == "typing":
        typed = client.expect("typed")["log"]
    else:
        typed = []
        # The last join's answer has its moment to arrive (the typists' tail gives it that).
        time.sleep(1.0)
    report = client.call("report", "report")
    records = client.call("typing", "typing")["records"]
    seconds = after["at"] - before["at"]
    in_window = [r for r in records if start <= r[1] < end]
    answers = len(in_window)
    workers = [100 * (after["workers"][pid] - before["workers"].get(pid, 0.0)) / seconds
               for pid in sorted(after["workers"])]
    # The typists' requests sent within the window (all of them are checked for refusals).
    during = [entry for entry in typed if start <= entry[2] < end]
    requests = Counter(action for _user, action, *_ in during)
    refused = [entry for entry in typed if entry[4] != 204]
    request_times = [done - sent for _user, action, sent, done, status, _error in during
                     if action != "stop" and status == 204]
    figures = {
        "seconds": seconds,
        "answers": answers,
        "answers_per_watcher_second": answers / watchers / seconds,
        # Answers that showed someone come or go: the rest were woken for nothing they show.
        "answers_changing": sum(1 for r in in_window if r[2] or r[3]),
        "answers_without_typing": sum(1 for r in records if not r[4]),
        "typists_shown": sum(len(r[2]) for r in in_window),
        "statements_per_second": (after["statements"] - before["statements"]) / seconds,
        "transactions_per_second": (after["transactions"] - before["transactions"]) / seconds,
        "worker_cpu_percent": sum(workers),
        "worker_cpu_percents": workers,
        # Of the window, the share each worker spent runnable but waiting for a core.
        "worker_waiting_percents": [100 * (after["waited"][pid] - before["waited"].get(pid, 0.0)) / seconds
                                    for pid in sorted(after["waited"])],
        "client_cpu_percent": 100 * (after["client_cpu"] - before["client_cpu"]) / seconds,
        "machine_cpu_percent": 100 * (after["machine_cpu"] - before["machine_cpu"]) / seconds,
        "starts": requests["start"], "repeats": requests["repeat"], "stops": requests["stop"],
        "requests_refused": len(refused), "refused_samples": refused[:3],
        "put_p50": percentile(request_times, 0.5), "put_p99": percentile(request_times, 0.99),
        "poll_failures": len(report["failures"]), "poll_failure_samples": report["failures"][:3],
        **renders(typed, records, start, end, watchers, len(hosts)),
        **wake(report["answers"], joins),
    }
    figures["answers_changing_share"] = figures["answers_changing"] / answers if answers else None
    # Everything else the machine ran meanwhile: PostgreSQL, and whatever shared it with this run.
    figures["other_cpu_percent"] = (figures["machine_cpu_percent"] - figures["worker_cpu_percent"]
                                    - figures["client_cpu_percent"])
    figures["worker_cpu_ms_per_answer"] = (10 * figures["worker_cpu_percent"] * seconds / answers
                                           if answers else None)
    return figures


def renders(typed, records, start, end, watchers, hosts):
    """Keypress to render for every (watcher, appearance) pair of the window, and stop to gone.

    An appearance is a ``PUT`` that started a typist, sent within the window;
    it is rendered at a watcher by the first answer after it was sent that
    shows the typist where the answer before did not, before the typist's next
    start. A typist rests three seconds at least, so each worker's read has
    seen it go in between. A stop (``DELETE``) is gone at a watcher at the
    first answer after it that no longer shows the typist.
    """
    sent = defaultdict(lambda: defaultdict(list))
    for user, action, at, _done, status, _error in typed:
        if status == 204:
            sent[action][user].append(at)
    seen = {"start": defaultdict(list), "stop": defaultdict(list)}
    for index, arrived, added, removed, _has_typing in records:
        for user in added:
            seen["start"][index, user].append(arrived)
        for user in removed:
            seen["stop"][index, user].append(arrived)
    figures = {}
    for action, label in (("start", "render"), ("stop", "gone")):
        latencies = [[] for _ in range(hosts)]
        pairs = missed = 0
        for user, times in sent[action].items():
            times.sort()
            for number, at in enumerate(times):
                if not start <= at < end:
                    continue
                until = times[number + 1] if number + 1 < len(times) else float("inf")
                for index in range(watchers):
                    arrivals = seen[action].get((index, user), ())
                    found = bisect.bisect_left(arrivals, at)
                    pairs += 1
                    if found < len(arrivals) and arrivals[found] < until:
                        latencies[index % hosts].append(arrivals[found] - at)
                    else:
                        missed += 1
        everyone = [x for host in latencies for x in host]
        figures.update({
            f"{label}_pairs": pairs, f"{label}_missed": missed,
            f"{label}_p50": percentile(everyone, 0.5), f"{label}_p95": percentile(everyone, 0.95),
            f"{label}_p99": percentile(everyone, 0.99), f"{label}_max": max(everyone, default=None),
        })
        if action == "start":
            figures.update({
                "appearances": sum(1 for times in sent["start"].values() for at in times if start <= at < end),
                "pairs": pairs, "rendered": len(everyone),
                # Per 5% of the pairs, for the page's distribution; the pairs themselves are many.
                "render_percentiles": [percentile(everyone, p / 20) for p in range(21)],
                "hosts": [{"pairs": len(host), "p50": percentile(host, 0.5), "p95": percentile(host, 0.95),
                           "p99": percentile(host, 0.99), "max": max(host, default=None)} for host in latencies],
            })
    return figures


def wake(answers, joins):
    """Wake latencies of ``joins`` ((poller index, commit time)): COMMIT to the poll's next ``changed`` answer."""
    committed = dict(joins)
    woken = {}
    for index, arrived, status, _size in answers:
        if index in committed and status == "changed" and arrived >= committed[index]:
            woken.setdefault(index, arrived)
    latencies = [woken[index] - committed[index] for index in woken]
    return {"joins": len(committed), "joins_answered": len(latencies),
            "join_p50": percentile(latencies, 0.5), "join_p99": percentile(latencies, 0.99),
            "join_max": max(latencies, default=None)}


# -- ratios, summaries, checks ----------------------------------------------------------------


def round_ratios(entry):
    """This round's ``typing / quiet`` of each figure COMPARED names (None without both)."""
    ratios = {}
    for name, side, baseline, figure in COMPARED:
        a, b = entry[side].get(figure), entry[baseline].get(figure)
        ratios[name] = a / b if a and b else None
    return ratios


def summarize(rounds):
    """Each side's figures as the median over rounds; each ratio's and difference's median and spread."""
    figures = {side: {} for side in SIDES}
    for side in SIDES:
        for key, value in rounds[0][side].items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                figures[side][key] = median([entry[side].get(key) for entry in rounds])
    ratios = {}
    for name, *_ in COMPARED:
        values = [entry["ratios"][name] for entry in rounds if entry["ratios"][name] is not None]
        ratios[name] = {"median": statistics.median(values) if values else None,
                        "min": min(values, default=None), "max": max(values, default=None), "rounds": values}
    beyond = {}
    for key in BEYOND_QUIET:
        values = [entry["beyond_quiet"][key] for entry in rounds]
        beyond[key] = {"median": statistics.median(values), "min": min(values), "max": max(values),
                       "rounds": values}
    return {"figures": figures, "ratios": ratios, "beyond_quiet": beyond}


def failures(result):
    """What the server did that the contract says it must not: each as a sentence."""
    found = []
    phases = [(f"round {entry['round'] + 1}, {side}", entry[side], side)
              for entry in result.get("rounds", ()) for side in SIDES]
    if "hosts" in result:
        phases.append(("two hosts", result["hosts"], "typing"))
    for name, figures, side in phases:
        # A watcher answered later than a typist's stint never shows it: a latency, reported
        # with the pairs, not a broken contract.
        if side == "typing" and not figures["pairs"]:
            found.append(f"{name}: no typist appeared in the window")
        if side == "quiet" and figures["typists_shown"]:
            found.append(f"{name}: {figures['typists_shown']} typists shown while nobody typed")
        if figures["answers_without_typing"]:
            found.append(f"{name}: {figures['answers_without_typing']} answers to watching polls without `typing`")
        if figures["requests_refused"]:
            found.append(f"{name}: {figures['requests_refused']} typists' requests not answered 204, e.g. "
                         f"{figures['refused_samples'][:2]}")
        if figures["poll_failures"]:
            found.append(f"{name}: {figures['poll_failures']} polls failed, e.g. {figures['poll_failure_samples'][:2]}")
        if figures["joins_answered"] < figures["joins"]:
            found.append(f"{name}: {figures['joins_answered']} of {figures['joins']} joins answered")
    held = result.get("held")
    if held is not None and held < result["watchers"]:
        found.append(f"{held:,} of {result['watchers']:,} watchers waiting on one host")
    if "hosts" in result and result["hosts"]["held"] < result["watchers"]:
        found.append(f"{result['hosts']['held']:,} of {result['watchers']:,} watchers waiting on two hosts")
    return found


def fmt_ms(seconds):
    return "n/a" if seconds is None else f"{seconds * 1000:.0f} ms"


# -- the load generator: python -m bench.typists ----------------------------------------------


def load_generator():
    """bench/client.py's load generator, its watchers noting who types and its typists typing.

    Each watcher notes, for every answer, who it shows typing in the thread
    that the answer before did not show, and who it no longer shows:
    ``[index, arrival, [came], [went], whether the answer had typing]``
    (``typing`` hands them over). ``typists`` runs the typists' schedule and
    emits every request they sent: ``[user, start|repeat|stop, sent,
    answered, status, error]``. Runs only in its own process, patched by
    gevent above.
    """
    import gevent
    from gevent.queue import Empty, Queue

    from harness.polls import Connection, Follower, HTTPError, authorization, bearer_token

    from . import client as base

    class WatchingPoller(base.Poller):
        def __init__(self, client, index, user_id, spec):
            super().__init__(client, index, user_id, spec)
            self.watches = list(spec.get("watches", ()))
            self.follower = Follower(self.port, self.token, path=spec.get("path", POLL_PATH), watches=self.watches)
            self.shown = set()

        def answered(self, response):
            if self.watches and response.status == 200:
                typing = response.answer.get("typing")
                now = {typist["id"] for typist in (typing or {}).get(WATCH, ())}
                self.client.records.append([self.index, round(response.arrived, 6), sorted(now - self.shown),
                                            sorted(self.shown - now), typing is not None])
                self.shown = now
            super().answered(response)

    class TypingClient(base.Client):
        poller = WatchingPoller

        def __init__(self):
            super().__init__()
            self.records = []

        def commands(self):
            return dict(super().commands(), typists=self.typists, typing=self.typing)

        def typing(self, _spec):
            records, self.records = self.records, []
            self.emit(event="typing", records=records)

        def typists(self, spec):
            """The typists' schedule from ``begin`` to ``end``; every request they sent, once all stopped.

            ``typing`` of ``users`` type at once. At the first tick they start;
            at each tick after, ``changes`` of those typing for MIN_STINT ticks
            stop and as many of those resting longest (MIN_REST ticks at
            least) start, each at a random moment within the second; a typist
            typing repeats its ``PUT`` a second after the last. At ``end``
            every typist typing stops.
            """
            begin, end = spec["begin"], spec["end"]
            body = json.dumps(spec["place"]).encode()
            sent = []
            queues = {user: Queue() for user in spec["users"]}

            def typist(user):
                connection = Connection(spec["port"])
                auth = authorization(bearer_token(spec["secret"], user))
                repeat_at = None

                def send(action):
                    at = time.monotonic()
                    try:
                        status, _head, _body = connection.request(
                            spec["path"], auth, 30, method=b"DELETE" if action == "stop" else b"PUT",
                            body=None if action == "stop" else body)
                        error = None
                    except (OSError, HTTPError) as failure:
                        connection.close()
                        status, error = 0, f"{failure.__class__.__name__}: {failure}"
                    sent.append([user, action, round(at, 6), round(time.monotonic(), 6), status, error])
                    return at

                while True:
                    try:
                        command = queues[user].get(
                            timeout=None if repeat_at is None else max(0.0, repeat_at - time.monotonic()))
                    except Empty:
                        repeat_at = send("repeat") + 1.0
                        continue
                    if command is None:
                        break
                    action, at = command
                    gevent.sleep(max(0.0, at - time.monotonic()))
                    moment = send(action)
                    repeat_at = moment + 1.0 if action == "start" else None
                connection.close()

            greenlets = [gevent.spawn(typist, user) for user in spec["users"]]
            # Each typist's state, since which tick (those resting at first may start at once).
            since = {user: ("resting", -MIN_REST) for user in spec["users"]}
            tick = 0
            while begin + tick < end:
                gevent.sleep(max(0.0, begin + tick - time.monotonic()))
                if tick == 0:
                    stops, starts = [], spec["users"][:spec["typing"]]
                    for user in starts:
                        since[user] = ("typing", 0)
                        queues[user].put(("start", begin + random.uniform(0, 1)))
                else:
                    typing = [u for u, (state, at) in since.items() if state == "typing" and tick - at >= MIN_STINT]
                    resting = sorted((at, u) for u, (state, at) in since.items()
                                     if state == "resting" and tick - at >= MIN_REST)
                    stops = random.sample(typing, min(spec["changes"], len(typing), len(resting)))
                    starts = [u for _at, u in resting[:len(stops)]]
                    for user in stops:
                        since[user] = ("resting", tick)
                        queues[user].put(("stop", begin + tick + random.uniform(0, 1)))
                    for user in starts:
                        since[user] = ("typing", tick)
                        queues[user].put(("start", begin + tick + random.uniform(0, 1)))
                tick += 1
            gevent.sleep(max(0.0, end - time.monotonic()))
            for user, (state, _at) in since.items():
                if state == "typing":
                    queues[user].put(("stop", end))
                queues[user].put(None)
            gevent.joinall(greenlets, timeout=60)
            self.emit(event="typed", log=sent)

    limit = stack.raise_fd_limit()
    client = TypingClient()
    client.emit(event="ready", fd_limit=limit)
    client.serve()


if __name__ == "__main__":
    load_generator()
