"""Scenarios 12 and 13: what each wake source costs the writers, and what it costs in wake latency.

12, ``writes``: pgbench, on a database of its own seeded with
``stack.Database.seed``, with concurrent writers at ``writes_clients``
(1, 8, 32, 64) for ``writes_seconds`` each: one-row transactions publishing
activity (``INSERT INTO activity``, moved into the log by its trigger) and
adding a membership (a join), each as ``BEGIN; INSERT; COMMIT``, with the
log's trigger notifying (``feed_meta.notify`` true, what ``WAKE_SOURCE=notify``
sets) and not (what ``head`` and ``watcher`` set). Nobody listens, as in the
issue's measurement: the lock at commit is taken whether or not anyone does.
With ``watcher``, a gunicorn of one worker with ``WAKE_SOURCE=watcher`` runs
beside the writers, its worker the deployment's watcher: a head check every
5 ms and a NOTIFY of its own per move. The three modes take turns at each concurrency, ``writes_runs`` times, on tables
emptied between cells; the median of the runs is reported. Transactions per
second and pgbench's latencies (the whole transaction, and its COMMIT alone).

13, ``sources``: scenario 7 (two hosts of two gevent workers each, a write
through one host reaching a poll on either) once per wake source, taking
turns ``sources_runs`` times, each on users of its own; and, with the polls
held and nothing written, what the wake source costs PostgreSQL per second
while they wait (transactions, and the head checks the workers counted).
"""
import os
import re
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path

from harness.servers import wait_for

from . import multi, stack
from .stack import Server, log, median

SOURCES = ("notify", "head", "watcher")
SCRIPTS = {
    "activity": "\\set c random(0, 99)\n"
                "BEGIN;\n"
                "INSERT INTO activity (community_id, kind, ref) VALUES ('c-g' || :c, 'post', 'p');\n"
                "COMMIT;\n",
    "membership": "\\set u random(0, {users_last})\n"
                  "\\set c random(0, 9)\n"
                  "BEGIN;\n"
                  "INSERT INTO memberships (user_id, community_id, role) "
                  "VALUES ('u' || :u, 'c-x' || :c, 'member') ON CONFLICT DO NOTHING;\n"
                  "COMMIT;\n",
}
TPS = re.compile(r"^tps = ([\d.]+) \(without initial connection time\)", re.M)
LATENCY = re.compile(r"^latency average = ([\d.]+) ms", re.M)
COMMIT = re.compile(r"^\s+([\d.]+)\s+\d+\s+COMMIT;", re.M)


def writes(options):
    database = stack.Database()
    try:
        database.migrate()
        database.seed(options["writes_users"], 0)
        result = {"clients": options["writes_clients"], "seconds": options["writes_seconds"],
                  "runs": options["writes_runs"], "cells": {}}
        with tempfile.TemporaryDirectory(prefix="bench-writes-") as folder:
            scripts = {}
            for name, text in SCRIPTS.items():
                scripts[name] = Path(folder) / f"{name}.sql"
                scripts[name].write_text(text.format(users_last=options["writes_users"] - 1))
            for name, script in scripts.items():
                for clients in options["writes_clients"]:
                    samples = {source: [] for source in SOURCES}
                    for number in range(options["writes_runs"]):
                        # Taking turns, the other one first every other run.
                        for source in SOURCES if number % 2 == 0 else SOURCES[::-1]:
                            switch(database, notify=source == "notify")
                            with watching(database, source == "watcher"):
                                samples[source].append(pgbench(database, script, clients,
                                                               options["writes_seconds"]))
                    cell = {source: summary(runs) for source, runs in samples.items()}
                    result["cells"][f"{name}/{clients}"] = cell
                    log(f"writes {name} x{clients}: " + ", ".join(f"{source} {cell[source]['tps']:.0f}/s"
                                                                  for source in SOURCES))
        return result
    finally:
        database.drop()


def switch(database, notify):
    """Empty the written tables and set the log's notify switch, as a wake source does."""
    connection = database.connect()
    with connection, connection.cursor() as cursor:
        cursor.execute("TRUNCATE changes, activity")
        cursor.execute("DELETE FROM memberships WHERE community_id LIKE 'c-x%%'")
        cursor.execute("UPDATE feed_meta SET notify = %s", (notify,))
    connection.close()
    vacuum = database.connect()
    vacuum.autocommit = True
    with vacuum.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE changes, memberships")
    vacuum.close()


@contextmanager
def watching(database, watcher):
    """With ``watcher``: the deployment's head watcher running (a gunicorn of one worker) meanwhile."""
    if not watcher:
        yield
        return
    server = Server(database, workers=1, WAKE_SOURCE="watcher").start()
    try:
        wait_for(lambda: server.metrics()["community_sync_head_watcher"] >= 1, 15,
                 message="the worker did not become the watcher")
        yield
    finally:
        server.stop()


def pgbench(database, script, clients, seconds):
    """One pgbench run: transactions/s, average latency and the COMMIT's, in ms."""
    parts = stack.dsn(database.url)
    command = ["pgbench", "-n", "-r", "-c", str(clients), "-j", str(min(clients, os.cpu_count() or 1)),
               "-T", str(seconds), "-f", str(script), "-h", str(parts["host"]), "-p", str(parts["port"]),
               "-U", parts["user"], parts["dbname"]]
    env = dict(os.environ, PGPASSWORD=parts.get("password", ""), PGAPPNAME="bench-writes")
    output = subprocess.run(command, check=True, capture_output=True, text=True, env=env).stdout
    return {"tps": float(TPS.search(output)[1]), "latency_ms": float(LATENCY.search(output)[1]),
            "commit_ms": float(COMMIT.search(output)[1])}


def summary(runs):
    return {key: median([run[key] for run in runs]) for key in runs[0]} | {"runs": runs}


def sources(options):
    users_each = options["multi_waiters"]
    database = stack.Database()
    try:
        database.migrate()
        database.seed(users_each * len(SOURCES) * options["sources_runs"], 0)
        result = {source: [] for source in SOURCES}
        offset = 0
        for number in range(options["sources_runs"]):
            for source in SOURCES if number % 2 == 0 else SOURCES[::-1]:
                users = [f"u{i}" for i in range(offset, offset + users_each)]
                offset += users_each
                log(f"sources: {source}, run {number + 1}")
                result[source].append(multi.run(database, options, users, idle=options["sources_idle"],
                                                WAKE_SOURCE=source))
        return result
    finally:
        database.drop()
