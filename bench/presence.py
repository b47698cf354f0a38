"""Scenario 11: what presence costs the database, and what its counts cost a reader.

On a database of its own (stack.Database.seed: everyone in ``c-all``, each
user in one of 100 groups), plus a reader in 200 communities of 50 members
each, against one gunicorn with two gevent workers:

- cost: ``presence_small`` users online (a long poll each), then
  ``presence_online``; over an idle window of ``presence_seconds`` each, the
  transactions (PostgreSQL's count) and statements (the workers' counter) per
  second. The smaller phase is the baseline: the design's cost should not
  grow with the users. Then the ``presence`` rows per worker, and ``c-all``'s
  count as its members read it (``GET /communities/c-all/presence``) through
  whichever worker takes each connection: every user of both workers.
- two hosts: a second gunicorn (two workers more) on the same database, with
  ``presence_other_host`` users polling there; ``c-all`` read through each
  host counts the users of all four workers.
- counts: the reader's snapshot (its 200 counts reused within
  ``PRESENCE_INTERVAL``, as they are between refreshes) against the snapshot
  of a user in two communities, and the count statement of those 200
  communities (what a reader pays once per interval) timed on its own, with
  the live workers of the run; and the count of ``c-all``, where every online
  user is a member.
"""
import json
import time
import urllib.request
from collections import Counter

from sqlalchemy import create_engine

from app.store import queries
from app.store.db import normalize_url
from harness.polls import bearer_token
from harness.servers import wait_for

from . import stack
from .presence_queries import timed
from .stack import SECRET, ClientProcess, Server, log
from .v2 import hold

READER = "reader"
READER_COMMUNITIES = 200
COMMUNITY_MEMBERS = 50
WORKERS = 2


def run(options):
    users = options["presence_online"]
    database = stack.Database()
    try:
        database.migrate()
        other = options["presence_other_host"]
        database.seed(users + other, 0)
        seed_reader(database, users)
        server = Server(database, workers=WORKERS).start()
        client = ClientProcess()
        second = None
        try:
            result = {"workers": WORKERS, "online": users, "small": options["presence_small"],
                      "seconds": options["presence_seconds"]}
            phases = {}
            for label, count in (("small", options["presence_small"]), ("online", users)):
                before = int(server.waiting())
                held = hold(client, server, [f"u{i}" for i in range(before, count)], options)
                phases[label] = idle_cost(database, server, held, options["presence_seconds"])
            result["phases"] = phases
            held = phases["online"]["held"]
            result["across_workers"] = dict(counted(server, held, reads=10),
                                            rows_per_worker=rows_per_worker(database))
            result["counts"] = count_costs(database, server, client, options)
            second = Server(database, workers=WORKERS).start()
            elsewhere = hold(client, second, [f"u{i}" for i in range(users, users + other)], options)
            result["across_hosts"] = dict(
                {f"host {n}": counted(host, held + elsewhere) for n, host in enumerate((server, second), 1)},
                held=held + elsewhere, held_on_second=elsewhere, rows_per_worker=rows_per_worker(database))
        finally:
            client.close()
            for host in (server, second):
                if host:
                    host.stop()
    finally:
        database.drop()
    small, online = result["phases"]["small"], result["phases"]["online"]
    log(f"presence: {small['held']:,} online {small['transactions_per_second']:.2f} transactions/s, "
        f"{small['statements_per_second']:.2f} statements/s; {online['held']:,} online "
        f"{online['transactions_per_second']:.2f}, {online['statements_per_second']:.2f}; c-all counted "
        f"{sorted(set(result['across_workers']['counted']))}, across hosts "
        f"{[result['across_hosts'][h]['counted'] for h in ('host 1', 'host 2')]}; 200 counts "
        f"{result['counts']['statements']['reader']['median']:.1f} ms")
    return result


def seed_reader(database, users):
    """``reader`` in communities ``c-p*``, each with COMMUNITY_MEMBERS of the users u0.. besides."""
    connection = database.connect()
    with connection, connection.cursor() as cursor:
        cursor.execute("INSERT INTO users (id, name) VALUES (%s, 'Reader')", (READER,))
        cursor.execute(
            "INSERT INTO communities (id, slug, name, is_public) "
            "SELECT 'c-p' || i, 'p' || i, 'Place ' || i, true FROM generate_series(0, %(n)s - 1) AS i",
            {"n": READER_COMMUNITIES})
        cursor.execute(
            "INSERT INTO memberships (user_id, community_id, role) "
            "SELECT %(reader)s, 'c-p' || i, 'member' FROM generate_series(0, %(n)s - 1) AS i "
            "UNION ALL SELECT 'u' || ((i * %(members)s + k) %% %(users)s), 'c-p' || i, 'member' "
            "FROM generate_series(0, %(n)s - 1) AS i, generate_series(0, %(members)s - 1) AS k",
            {"reader": READER, "n": READER_COMMUNITIES, "members": COMMUNITY_MEMBERS, "users": users})
    connection.close()
    database.backdate()
    database.vacuum()


def idle_cost(database, server, held, seconds):
    """Transactions and statements per second with ``held`` users online and nothing changing.

    Starts after the arrivals are written and the statistics have settled, and
    lasts several ``PRESENCE_INTERVAL``s (10 s): each worker's refreshes fall in it.
    """
    time.sleep(stack.SETTLE)
    counted = database.transactions()
    statements = server.queries()
    begin = time.monotonic()
    time.sleep(seconds)
    elapsed = time.monotonic() - begin
    sent = server.queries() - statements
    time.sleep(stack.SETTLE)
    transactions = database.transactions()["transactions"] - counted["transactions"]
    return {"held": held, "seconds": elapsed, "transactions": transactions,
            "transactions_per_second": transactions / elapsed, "statements": sent,
            "statements_per_second": sent / elapsed, "rows_per_worker": rows_per_worker(database)}


def rows_per_worker(database):
    """The ``presence`` rows each worker has written, largest first."""
    connection = database.connect()
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM presence GROUP BY worker_id ORDER BY 1 DESC")
            return [row[0] for row in cursor.fetchall()]
    finally:
        connection.close()


def counted(server, held, reads=3):
    """``c-all``'s ``online`` as one of its online members reads it, each read on a new connection.

    Neither worker holds every poll, so a count of them all is one worker
    counting another's users. Each worker reads which workers are live once per
    ``PRESENCE_INTERVAL`` (10 s), on its own clock: the first reads may come
    before one has taken in workers that started after it, whichever worker
    the kernel hands a new connection. So wait until ``reads`` reads in a row
    count them all (a few such intervals: on a machine busy with other work a
    worker's first ones run late), and report those reads, or the last ones.
    """
    def online():
        return presence_of(server, "u0", "c-all")["online"]

    last = []

    def all_counted():
        last[:] = [online() for _ in range(reads)]
        return min(last) >= held

    began = time.monotonic()
    wait_for(all_counted, 60, interval=0.5)
    return {"held": held, "seconds": time.monotonic() - began, "counted": list(last)}


def presence_of(server, user, community):
    request = urllib.request.Request(f"{server.url}/communities/{community}/presence",
                                     headers={"Authorization": f"Bearer {bearer_token(SECRET, user)}",
                                              "Connection": "close"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def count_costs(database, server, client, options):
    """The reader's snapshot against a two-community user's, and the count statements alone."""
    snapshots = {}
    # Taking turns, so that whatever else the machine does falls on both alike.
    for _round in range(options["runs"]):
        for user in (READER, "u0"):
            statements = server.queries()
            outcome = client.call("load", "load", port=server.port, path="/me/communities", users=[user],
                                  secret=SECRET, connections=1, duration=options["unread_seconds"])
            requests = outcome["requests"] + 1
            snapshots.setdefault(user, []).append({
                "p50": outcome["p50"], "p99": outcome["p99"], "counts": outcome["counts"],
                "statements_per_request": (server.queries() - statements) / requests})
    engine = create_engine(normalize_url(database.url))
    try:
        with engine.connect() as connection:
            live = connection.scalars(queries.live_workers(70.0, "postgresql")).all()
            reader = [f"c-p{i}" for i in range(READER_COMMUNITIES)]
            statements = {
                "reader": queries.online_counts(reader, live, "postgresql"),
                "everyone": queries.online_counts(["c-all", "c-g0"], live, "postgresql"),
            }
            counted = dict(connection.execute(statements["reader"]).all())
            figures = {}
            for name, statement in statements.items():
                median, p95 = timed(connection, statement, options["presence_runs"])
                figures[name] = {"median": median, "p95": p95}
            connection.rollback()
    finally:
        engine.dispose()
    return {
        "communities": READER_COMMUNITIES,
        "members": COMMUNITY_MEMBERS,
        "live_workers": len(live),
        "reader_online": sum(counted.values()),
        "reader_counted": len(counted),
        "snapshots": {user: summarize(entries) for user, entries in snapshots.items()},
        "statements": figures,
    }


def summarize(entries):
    return {
        "p50": stack.median([e["p50"] for e in entries]),
        "p99": stack.median([e["p99"] for e in entries]),
        "statements_per_request": stack.median([e["statements_per_request"] for e in entries]),
        "statuses": dict(sum((Counter(e["counts"]) for e in entries), Counter())),
    }
