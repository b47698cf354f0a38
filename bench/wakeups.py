"""Scenario 19: the wake sources side by side: wake-ups at scale, idle cost by workers, a watcher's failover.

Each part runs the wake sources (``WAKE_SOURCE``: ``head``, ``notify`` and
``watcher``) taking turns, the order reversed every other round, on one
database seeded for the scenario (``stack.Database.seed``):

- ``wake``: scenario 3 once per source: ``wakeups_waiters`` long polls held
  on one gevent worker, then, nothing written, what they cost PostgreSQL per
  second (``longpoll.idle_phase``), then ``changes`` single-user joins
  committed in SQL at random moments, from the commit to the poll's answer.
- ``idle``: one gunicorn of 2 workers, then of 8, each with
  ``wakeups_idle_polls`` polls held and nothing written: PostgreSQL's
  transactions a second for the run's database, the head checks the workers
  counted (the watcher's alone with ``watcher``) and what is left per worker.
- ``failover``: two gunicorns of two workers each with ``WAKE_SOURCE=watcher``,
  the watcher elected on the first and the polls held on the second. The
  watcher's worker is killed with SIGKILL (``wakeups_failovers`` times, two
  at most: PostgreSQL grants the lock in the order the candidates asked, and
  the first host's restarted workers ask after the second host's) and, at once, one transaction adds
  ``wakeups_failover_changes`` of the waiting users to a community of the
  part's own: the time
  until another session holds the watcher's lock, and from the commit to
  each poll's answer.

Statements are counted as PostgreSQL's transactions (every wake source's
statement runs in autocommit): the scenario's database is its own, so they
are the deployment's.
"""
import os
import random
import signal
import time

from harness.polls import POLL_PATH
from harness.servers import wait_for

from . import longpoll, multi, stack
from .stack import SECRET, ClientProcess, Server, log, percentile

SOURCES = ("head", "notify", "watcher")
WATCHER = "community-sync-head-watch"  # the head watch's application_name (app/live/listener.py)
# The acceptance's figures (issue: wake-ups in milliseconds).
TARGETS = {"wake_p50": 0.010, "wake_p99": 0.030, "per_worker": 1.0, "failover": 1.5}


def run(options):
    users = max(options["wakeups_waiters"], options["wakeups_idle_polls"], options["wakeups_failover_polls"])
    database = stack.Database()
    result = {"sources": SOURCES, "waiters": options["wakeups_waiters"], "targets": TARGETS,
              "rounds": options["wakeups_rounds"], "failed": []}
    try:
        database.migrate()
        database.seed(users, 0)
        log(f"wakeups: database {database.name}, {users:,} users seeded")
        parts = options["wakeups_parts"]
        result["wake"] = wake(database, options) if "wake" in parts else {}
        result["idle"] = idle(database, options) if "idle" in parts else {}
        result["failover"] = failover(database, options) if "failover" in parts else []
    finally:
        database.drop()
    result["failed"] = failures(result)
    for failure in result["failed"]:
        log(f"wakeups: FAILED: {failure}")
    return result


def turns(number):
    return SOURCES if number % 2 == 0 else SOURCES[::-1]


def wake(database, options):
    """Scenario 3's held polls and SQL joins, once per source a round."""
    sessions = {source: [] for source in SOURCES}
    used = set()
    phase_options = dict(options, idle_seconds={source: options["wakeups_idle_seconds"] for source in SOURCES})
    for number in range(options["wakeups_rounds"]):
        for source in turns(number):
            session = longpoll.run_session(database, source, options["wakeups_waiters"], ["idle", "wake"],
                                           phase_options, used)
            session["round"] = number
            sessions[source].append(session)
    return sessions


def idle(database, options):
    """Polls held on 2 and on 8 workers and nothing written: what each source costs PostgreSQL."""
    cells = {f"{source}/{workers}": [] for source in SOURCES for workers in options["wakeups_workers"]}
    users = [f"u{i}" for i in range(options["wakeups_idle_polls"])]
    for number in range(options["wakeups_rounds"]):
        for workers in options["wakeups_workers"]:
            for source in turns(number):
                server = Server(database, workers=workers, WAKE_SOURCE=source).start()
                client = ClientProcess()
                try:
                    client.call("hold", "held", users=users, ports=[server.port], path=POLL_PATH,
                                timeout=longpoll.POLL_TIMEOUT, secret=SECRET, ramp=200)
                    wait_for(lambda: server.waiting() >= len(users), 30)
                    cost = multi.measure_idle(database, [server], options["wakeups_idle_seconds"])
                finally:
                    client.close()
                    server.stop()
                # What is not a head check, shared by the workers: keep-alives, the
                # safety net, presence, the election.
                cost["other_per_worker"] = (cost["transactions_per_second"]
                                            - cost["head_checks_per_second"]) / workers
                cost["round"] = number
                cells[f"{source}/{workers}"].append(cost)
                log(f"wakeups idle, {source} on {workers} workers: {cost['transactions_per_second']:.1f} "
                    f"transactions/s, {cost['head_checks_per_second']:.1f} head checks/s, "
                    f"{cost['other_per_worker']:.2f} others/s a worker")
    return cells


def failover(database, options):
    """Kill the watcher's worker, commit at once: the gap, and every waiting poll's wake-up."""
    polls = options["wakeups_failover_polls"]
    users = [f"u{i}" for i in range(polls)]
    # Communities of their own: the wake-ups above added users to every c-x*.
    connection = database.connect()
    with connection, connection.cursor() as cursor:
        cursor.executemany("INSERT INTO communities (id, slug, name, is_public) VALUES (%s, %s, %s, true)",
                           [(f"c-f{n}", f"f{n}", f"Failover {n}") for n in range(options["wakeups_failovers"])])
    connection.close()
    first = Server(database, workers=2, WAKE_SOURCE="watcher").start()
    runs = []

    def on_the_first_host():
        # Not merely any watcher: a stopped server's session may linger a moment.
        elected = watcher(database)
        return elected is not None and first.worker_connected(elected[1]) is not None

    try:
        wait_for(on_the_first_host, 15, message="no watcher elected on the first host")
        second = Server(database, workers=2, WAKE_SOURCE="watcher").start()
        client = ClientProcess()
        try:
            client.call("hold", "held", users=users, ports=[second.port], path=POLL_PATH,
                        timeout=longpoll.POLL_TIMEOUT, secret=SECRET, ramp=200)
            wait_for(lambda: second.waiting() >= polls, 30)
            chosen = list(range(polls))
            random.shuffle(chosen)
            for number in range(options["wakeups_failovers"]):
                wait_for(on_the_first_host, 15, message="no watcher on the first host")
                time.sleep(2.0)  # polls back from the last run's answers
                changed = chosen[number * options["wakeups_failover_changes"]:
                                 (number + 1) * options["wakeups_failover_changes"]]
                runs.append(kill_and_commit(database, [first, second], client, users, changed, f"c-f{number}"))
        finally:
            client.close()
            second.stop()
    finally:
        first.stop()
    return runs


def kill_and_commit(database, hosts, client, users, changed, community):
    backend, port = watcher(database)
    pid = hosts[0].worker_connected(port)
    # Killing a worker of the second host would take its polls with it. The
    # candidates queue in the order they asked: the first host's two workers
    # watch before the second's, so two kills at most land on the first.
    assert pid is not None, "the watcher is no longer on the first host"
    client.call("report", "report")  # forget what came before
    connection = database.connect()
    killed = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    with connection, connection.cursor() as cursor:
        cursor.executemany("INSERT INTO memberships (user_id, community_id, role) VALUES (%s, %s, 'member')",
                           [(users[index], community) for index in changed])
    committed = time.monotonic()
    connection.close()
    taken = None
    while time.monotonic() - killed < 15:
        elected = watcher(database)
        if elected is not None and elected[0] != backend:
            taken = time.monotonic()
            break
        time.sleep(0.002)
    arrivals = {}
    wanted = set(changed)
    wait_for(lambda: collect(client, wanted, arrivals) >= len(wanted), 15, interval=0.2)
    latencies = [arrivals[index] - committed for index in arrivals]
    run = {"worker": pid, "changes": len(changed), "answered": len(arrivals),
           "commit_after_kill": committed - killed, "gap": None if taken is None else taken - killed,
           "p50": percentile(latencies, 0.5), "p99": percentile(latencies, 0.99),
           "max": max(latencies) if latencies else None}
    log(f"wakeups failover: watcher's worker {pid} killed; another watcher after "
        f"{longpoll.fmt_ms(run['gap'])}; {run['answered']}/{run['changes']} answered, "
        f"p50 {longpoll.fmt_ms(run['p50'])}, max {longpoll.fmt_ms(run['max'])}")
    return run


def watcher(database):
    """(backend pid, client port) of the session holding the watcher's lock, or None."""
    connection = database.connect()
    try:
        with connection, connection.cursor() as cursor:
            cursor.execute(
                "SELECT a.pid, a.client_port FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                "WHERE l.locktype = 'advisory' AND l.granted AND a.datname = current_database() "
                "AND a.application_name = %s", (WATCHER,))
            return cursor.fetchone()
    finally:
        connection.close()


def collect(client, wanted, arrivals):
    for index, arrived, status, _size in client.call("report", "report")["answers"]:
        if index in wanted and status == "changed":
            arrivals.setdefault(index, arrived)
    return len(arrivals)


def failures(result):
    failed = []
    for source, sessions in result["wake"].items():
        for session in sessions:
            if session["wake"]["missing"] or session["failures"]:
                failed.append(f"{source}: {session['wake']['missing']} wake-ups missing, "
                              f"{session['failures']} polls failed")
    for run in result["failover"]:
        if run["answered"] < run["changes"]:
            failed.append(f"failover: {run['changes'] - run['answered']} of {run['changes']} changes never "
                          f"reached their polls")
        if run["gap"] is None:
            failed.append("failover: no other watcher within 15 s")
    return failed

