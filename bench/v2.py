"""Scenarios 8-10: the change log v2, where a community-wide change is written once.

Before migration 0002 a rename wrote one change row per member, inside the
writer's transaction; since then a rename, a deletion and activity are one
community-scoped row (``user_id`` NULL), resolved to the members when read.
Each scenario runs on databases of its own, created, seeded in bulk with SQL
and dropped here:

- rename: the writer's cost of renaming a community of 100,000 members
  (``UPDATE communities`` in SQL, and ``PATCH /communities/{id}``), on a
  database at revision 0001 (before) and one at head (after), taking turns;
  then, at head, the rename with 10,000 of the members waiting: time until
  the last has it, and the statements the server ran for them.
- burst: 5,000 members of one community waiting while activity is published
  there at 200 rows a second for 10 s: answers per member, statements per
  second, the wake latency of unrelated users' joins meanwhile, and whether
  every member's client ends with the state the database gives it.
- unread: the snapshot and a ``timeout=0`` poll of a user in 200 communities
  with 1,000,000 activity rows in the log, against a user in 200 quiet ones,
  taking turns; statements per request, latency, and PostgreSQL's own plan
  of the snapshot statement (EXPLAIN ANALYZE).
"""
import json
import threading
import time
import urllib.request
from collections import Counter
from contextlib import nullcontext
from urllib.parse import urlencode

from sqlalchemy.dialects import postgresql

from app.store import queries
from harness.polls import POLL_PATH, bearer_token
from harness.servers import CONFIG

from . import stack
from .longpoll import POLL_TIMEOUT, quiesce
from .stack import SECRET, ClientProcess, Server, log, median, percentile

RENAMED = "c-all"  # everyone's community in stack.Database.seed
BURST = "c-small"  # the first ``small`` users in stack.Database.seed
# Before: 0001, the last revision whose triggers fan a rename out per member.
REVISIONS = {"before": "0001", "after": "head"}
COALESCE_WINDOW = "community_sync_activity_coalesce_seconds"
JOIN_EVERY = 0.1  # seconds between the unrelated users' joins during a burst
ADMIN = "bench-admin"


def rename(options):
    """The writer's cost of a rename, before and after; then the rename with members waiting."""
    members = options["rename_members"]
    databases = {"before": stack.Database(), "after": stack.Database()}
    servers = {}
    result = {"members": members, "community": RENAMED, "revisions": REVISIONS}
    try:
        for label, database in databases.items():
            begin = time.monotonic()
            database.migrate(REVISIONS[label])
            database.seed(members, 0)
            log(f"rename: {label} database {database.name} at {REVISIONS[label]}, "
                f"{members:,} members seeded in {time.monotonic() - begin:.0f} s")
        for label, database in databases.items():
            servers[label] = Server(database).start()
        runs = {label: {"sql": [], "api": []} for label in databases}
        # Taking turns, the other one first every other run, so that whatever else the
        # machine does, and its drift, falls on both alike.
        for number in range(options["rename_runs"]):
            order = list(databases.items())
            for label, database in (order if number % 2 == 0 else order[::-1]):
                runs[label]["sql"].append(sql_rename(database, f"Renamed by SQL {number}"))
                runs[label]["api"].append(api_rename(database, servers[label], f"Renamed by API {number}"))
        for label in databases:
            result[label] = {path: summarize_renames(entries) for path, entries in runs[label].items()}
            log(f"rename {label}: SQL {result[label]['sql']['p50'] * 1000:.1f} ms, "
                f"API {result[label]['api']['p50'] * 1000:.1f} ms, "
                f"{result[label]['sql']['rows']:,} change rows per rename")
        servers.pop("before").stop()
        result["waiting"] = rename_with_waiters(databases["after"], servers["after"], options)
    finally:
        for server in servers.values():
            server.stop()
        for database in databases.values():
            database.drop()
    return result


def newest_change(cursor):
    cursor.execute("SELECT coalesce(max(id), 0) FROM changes")
    return cursor.fetchone()[0]


def rows_since(cursor, newest):
    """The change rows written after id ``newest``, by type."""
    cursor.execute("SELECT type, count(*) FROM changes WHERE id > %s GROUP BY type", (newest,))
    return dict(cursor.fetchall())


def sql_rename(database, name):
    """``UPDATE communities SET name`` in a transaction of its own, as an operator's console would.

    Timed from the transaction's first statement to COMMIT returning; the
    change rows it wrote are counted afterwards.
    """
    connection = database.connect()
    try:
        with connection.cursor() as cursor:
            newest = newest_change(cursor)
            connection.commit()
            begin = time.monotonic()
            cursor.execute("UPDATE communities SET name = %s WHERE id = %s", (name, RENAMED))
            connection.commit()
            committed = time.monotonic()
            rows = rows_since(cursor, newest)
            connection.commit()
    finally:
        connection.close()
    return {"seconds": committed - begin, "committed": committed, "rows": sum(rows.values()),
            "types": rows}


def api_rename(database, server, name):
    """``PATCH /communities/{id}`` as a platform admin, timed from request to response."""
    connection = database.connect()
    try:
        with connection.cursor() as cursor:
            newest = newest_change(cursor)
            connection.commit()
            request = urllib.request.Request(
                f"{server.url}/communities/{RENAMED}", method="PATCH", data=json.dumps({"name": name}).encode(),
                headers={"Authorization": f"Bearer {bearer_token(SECRET, ADMIN, admin=True)}",
                         "Content-Type": "application/json"})
            begin = time.monotonic()
            with urllib.request.urlopen(request, timeout=120) as response:
                response.read()
                status = response.status
            elapsed = time.monotonic() - begin
            rows = rows_since(cursor, newest)
            connection.commit()
    finally:
        connection.close()
    return {"seconds": elapsed, "status": status, "rows": sum(rows.values()), "types": rows}


def summarize_renames(entries):
    seconds = [entry["seconds"] for entry in entries]
    return {
        "runs": len(entries),
        "p50": median(seconds),
        "max": max(seconds),
        "seconds": [round(s, 6) for s in seconds],
        "rows": median([entry["rows"] for entry in entries]),
        "types": entries[-1]["types"],
        "statuses": sorted({entry.get("status") for entry in entries if entry.get("status")}),
    }


def rename_with_waiters(database, server, options):
    """Rename with ``rename_waiters`` members waiting: when the last has it, and at what cost.

    The members do not poll again after their answer, so the statements
    counted are the wake-up's alone.
    """
    waiters = options["rename_waiters"]
    client = ClientProcess()
    try:
        held = hold(client, server, [f"u{i}" for i in range(waiters)], options)
        client.call("repoll", "ok", value=False)
        time.sleep(1.0)
        client.call("report", "report")
        statements = server.queries()
        cpu = server.cpu()
        writer = sql_rename(database, "Renamed with members waiting")
        committed = writer["committed"]
        arrivals = []
        deadline = committed + options.get("fanout_wait", 60)
        while len(arrivals) < held and time.monotonic() < deadline:
            time.sleep(0.25)
            arrivals += [a[1] for a in client.call("report", "report")["answers"] if a[2] == "changed"]
        sent = server.queries() - statements
        busy = server.cpu() - cpu
        followers = client.call("followers", "followers")["followers"]
    finally:
        client.close()
    arrivals.sort()
    with_rename = sum(1 for f in followers if f["types"].get("community_updated", 0) >= 1)
    result = {
        "waiters": waiters,
        "held": held,
        "answered": len(arrivals),
        "with_rename": with_rename,
        "writer_seconds": writer["seconds"],
        "rows": writer["rows"],
        "statements": sent,
        "first": arrivals[0] - committed if arrivals else None,
        "p50": percentile([a - committed for a in arrivals], 0.5),
        "last": arrivals[-1] - committed if arrivals else None,
        "worker_cpu_seconds": busy,
    }
    log(f"rename with {held:,} waiting: {len(arrivals):,} answered ({with_rename:,} with the rename), "
        f"last after {fmt_ms(result['last'])}, {sent:.0f} statements")
    return result


def hold(client, server, users, options, waiting=0):
    """Ramp up one long poll per user and wait until the server has stopped reading for them.

    ``waiting``: polls the server holds already (another load generator's).
    """
    client.call("hold", "held", users=users, ports=[server.port], path=POLL_PATH, timeout=POLL_TIMEOUT,
                secret=SECRET, ramp=options.get("ramp", 200), deadline=180)
    quiesce(server, waiting + len(users))
    held = int(server.waiting()) - waiting
    if held < len(users):
        log(f"only {held:,} of {len(users):,} polls are waiting; going on with those")
    return held


def burst(options, profile=nullcontext, config=CONFIG):
    """Activity at ``burst_rate`` rows a second in a community whose members all wait.

    ``profile(server)``, a context manager, is entered for the time activity is
    published (``python -m bench.profile burst`` samples the worker then);
    ``config`` replaces the project's gunicorn.conf.py (the profiles add hooks to it).
    """
    members = options["burst_members"]
    bystanders = options["burst_bystanders"]
    database = stack.Database()
    try:
        database.migrate()
        # The first ``members`` users are the community's; the rest only look on.
        database.seed(members + bystanders, members)
        server = Server(database, config=config).start()
        # The members' answers keep one load generator busy; the joins are
        # timed in another, as each browser reads its own answers.
        client, onlooking = ClientProcess(), ClientProcess()
        try:
            result = burst_phase(database, server, client, onlooking, members, bystanders, options, profile)
        finally:
            onlooking.close()
            client.close()
            server.stop()
    finally:
        database.drop()
    return result


def burst10(options, profile=nullcontext):
    """Scenario 9 at ten times its rate (``burst10_rate``, ``burst10_seconds``), the rest as it is."""
    return burst(dict(options, burst_rate=options["burst10_rate"], burst_seconds=options["burst10_seconds"],
                      burst_writers=options["burst10_writers"]), profile=profile)


def burst_phase(database, server, client, onlooking, members, bystanders, options, profile):
    """Hold the polls, time the baseline joins, publish the burst, drain it, compare with snapshots.

    ``client`` holds the members' polls, ``onlooking`` the other users' (user
    ``members + i`` is its poller ``i``).
    """
    users = [f"u{i}" for i in range(members + bystanders)]
    held = hold(client, server, users[:members], options)
    held += hold(onlooking, server, users[members:], options, waiting=held)
    onlookers = list(range(members, members + bystanders))
    quiet_count = options["burst_quiet_joins"]
    result = {"members": members, "bystanders": bystanders, "held": held, "rate": options["burst_rate"]}

    def onlookers_report():
        report = onlooking.call("report", "report")
        return [[members + index, *rest] for index, *rest in report["answers"]], report["failures"]

    # The baseline: the same joins on the same server, with no activity.
    onlookers_report()
    statements = server.queries()
    begin = time.monotonic()
    joins = join_alone(database, onlookers[:quiet_count])
    result["quiet"] = dict(wake(onlookers_report()[0], joins),
                           statements_per_second=(server.queries() - statements) / (time.monotonic() - begin))

    quiesce(server, held)
    time.sleep(stack.SETTLE)
    counted = database.transactions()
    statements = server.queries()
    cpu, client_cpu = server.cpu(), client.cpu()
    # Where the worker's memory started: every poll waiting, before the burst.
    result["worker_rss_before"] = server.rss()

    def window():
        """How wide coalescing has made the window a member's activity answers wait for each other."""
        return server.metrics().get(COALESCE_WINDOW, 0.0)

    with stack.sampled(window) as windows:
        with profile(server):
            published = publish(database, options["burst_rate"], options["burst_seconds"],
                                onlookers[quiet_count:], options.get("burst_writers", 1))
        seconds = published["seconds"]
        during = server.queries() - statements
        busy, client_busy = server.cpu() - cpu, client.cpu() - client_cpu
        drain = drain_burst(client, members, published["last_ref"], options.get("drain_wait", 120))
    # However long the drain took, the counters wait for the server to go quiet.
    quiesce(server, held, timeout=options.get("drain_wait", 120))
    if options.get("after_drain"):
        options["after_drain"](server)  # a profile's look at the worker, where its memory is measured
    total = server.queries() - statements
    report = client.call("report", "report")
    joined, onlookers_failed = onlookers_report()
    time.sleep(stack.SETTLE)
    transactions = database.transactions()["transactions"] - counted["transactions"] - published["transactions"]
    answers = report["answers"]
    failures = report["failures"] + onlookers_failed
    per_member = Counter(index for index, _arrived, status, _size in answers
                         if index < members and status == "changed")
    counts = [per_member.get(index, 0) for index in range(members)]
    result.update(
        published=published["rows"],
        writers=published["writers"],
        publish_seconds=seconds,
        published_rate=published["rows"] / seconds,
        answers=sum(counts),
        answers_total=len(answers) + len(joined),
        answers_per_member={"min": min(counts), "p50": median(counts), "max": max(counts),
                            "mean": sum(counts) / len(counts)},
        answers_per_member_second=sum(counts) / len(counts) / seconds,
        refused=dict(Counter(str(status) for _index, status, *_ in failures)),
        refused_samples=failures[:3],
        statements_during=during,
        statements_per_second=during / seconds,
        statements_total=total,
        transactions=transactions,
        transactions_per_second=transactions / seconds,
        worker_cpu_percent=100 * busy / seconds,
        client_cpu_percent=100 * client_busy / seconds,
        coalesce_window_max=max(windows, default=0.0),
        coalesce_windows=windows,
        worker_rss=server.rss(),
        **drain,
        **wake(joined, published["joins"]),
    )
    result.update(compare_with_snapshots(client, members))
    log(f"burst: {result['published']} rows at {result['published_rate']:.0f}/s; "
        f"{result['answers_per_member']['p50']} answers per member, {result['statements_per_second']:.0f} "
        f"statements/s; joins woken p50 {fmt_ms(result['wake_p50'])}, p99 {fmt_ms(result['wake_p99'])} "
        f"(without the burst {fmt_ms(result['quiet']['wake_p50'])}, {fmt_ms(result['quiet']['wake_p99'])}); "
        f"{result['caught_up']} caught up after {result['drain_seconds']:.1f} s; "
        f"{result['mismatches']} of {result['compared']} clients differ from their snapshot")
    return result


def drain_burst(client, members, last_ref, timeout):
    """Wait until every member's client has the last activity published (or ``timeout``)."""
    begin = time.monotonic()
    while True:
        followers = client.call("followers", "followers", indices=list(range(members)))["followers"]
        caught_up = sum(1 for f in followers if f["last_ref"] == last_ref)
        if caught_up == members or time.monotonic() - begin > timeout:
            break
        time.sleep(1.0)
    return {"caught_up": caught_up, "drain_seconds": time.monotonic() - begin}


def compare_with_snapshots(client, members):
    """Each member's client state against the snapshot the server gives that member now.

    Equal means the same hash (the whole state) and the same ``unread`` and
    ``last_activity_at`` for the burst's community.
    """
    followers = client.call("followers", "followers", indices=list(range(members)))["followers"]
    snapshots = client.call("snapshots", "snapshots", indices=list(range(members)))["snapshots"]
    answered = [(f, s) for f, s in zip(followers, snapshots) if s["status"] == 200]
    mismatches = [
        {"index": f["index"], "client": f["unread"].get(BURST), "snapshot": s["unread"].get(BURST)}
        for f, s in answered if f["hash"] != s["hash"] or f["unread"].get(BURST) != s["unread"].get(BURST)
    ]
    return {
        "compared": len(answered),
        "snapshot_failures": dict(Counter(str(s["status"]) for s in snapshots if s["status"] != 200)),
        "mismatches": len(mismatches),
        "mismatch_samples": mismatches[:5],
        "truncated_answers": sum(f["truncated"] for f in followers),
        "activity_received": median([f["types"].get("activity", 0) for f in followers]),
        "final_unread": Counter(str(f["unread"].get(BURST, [None])[0]) for f in followers).most_common(3),
    }


def wake(answers, joins):
    """Wake latencies of ``joins`` ((user index, commit time)): commit to its poll's next ``changed`` answer."""
    committed = dict(joins)
    woken = {}
    for index, arrived, status, _size in answers:
        if index in committed and status == "changed" and arrived >= committed[index]:
            woken.setdefault(index, arrived)
    latencies = [woken[index] - committed[index] for index in woken]
    return {
        "joins": len(committed),
        "joins_answered": len(latencies),
        "wake_p50": percentile(latencies, 0.5),
        "wake_p99": percentile(latencies, 0.99),
        "wake_max": max(latencies) if latencies else None,
        "wake_latencies": [round(x, 6) for x in latencies],
    }


def join(cursor, index):
    """User ``index`` joins one of the communities left to join (stack.Database.seed)."""
    cursor.execute("INSERT INTO memberships (user_id, community_id, role) VALUES (%s, %s, 'member')",
                   (f"u{index}", f"c-x{index % 10}"))


def join_alone(database, indices):
    """The joins of ``indices``, JOIN_EVERY apart, with nothing else written: the baseline."""
    joins = []
    connection = database.connect()
    try:
        with connection.cursor() as cursor:
            for index in indices:
                time.sleep(JOIN_EVERY)
                join(cursor, index)
                connection.commit()
                joins.append((index, time.monotonic()))
        # The last join's answer has its moment to arrive.
        time.sleep(1.0)
    finally:
        connection.close()
    return joins


def publish(database, rate, seconds, bystanders, writers=1):
    """Activity in the burst community, each row its own transaction, ``rate`` a second.

    Every JOIN_EVERY seconds one of the ``bystanders`` (user indices, none a
    member) joins another community meanwhile: its commit time is the start
    of the wake latency measured for it. One connection commits a few hundred
    rows a second on a small machine; with ``writers`` connections, each in a
    thread of its own, the rows are dealt out among them, each still written
    at its own moment. The last row is written alone after all the others,
    so that it is the last in the log (the drain waits for it).
    """
    rows = int(rate * seconds)
    every = max(1, round(rate * JOIN_EVERY))
    joining = dict(zip((number for number in range(rows - 1) if number % every == every // 2), bystanders))
    joins = []
    transactions = []
    connections = [database.connect() for _ in range(writers)]

    def write(connection, numbers):
        written = 0
        with connection.cursor() as cursor:
            for number in numbers:
                delay = begin + number / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                cursor.execute("INSERT INTO activity (community_id, kind, ref, actor) "
                               "VALUES (%s, 'post_created', %s, 'u-author')", (BURST, f"p{number}"))
                connection.commit()
                written += 1
                if number in joining:
                    join(cursor, joining[number])
                    connection.commit()
                    joins.append((joining[number], time.monotonic()))
                    written += 1
        transactions.append(written)

    begin = time.monotonic()
    try:
        threads = [threading.Thread(target=write, args=(connection, range(number, rows - 1, writers)))
                   for number, connection in enumerate(connections)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        write(connections[0], [rows - 1])
    finally:
        for connection in connections:
            connection.close()
    return {"rows": rows, "seconds": time.monotonic() - begin, "last_ref": f"p{rows - 1}",
            "joins": sorted(joins, key=lambda entry: entry[1]), "transactions": sum(transactions),
            "writers": writers}


def unread(options):
    """Snapshot and ``timeout=0`` poll of a user with a busy log, against one with a quiet one."""
    communities = options["unread_communities"]
    rows = options["unread_rows"]
    database = stack.Database()
    try:
        database.migrate()
        begin = time.monotonic()
        seed_unread(database, communities, rows)
        seeded = time.monotonic() - begin
        log(f"unread: {rows:,} activity rows in {communities} communities seeded in {seeded:.0f} s")
        plans = {user: explain_snapshot(database, user) for user in ("busy", "quiet")}
        server = Server(database).start()
        client = ClientProcess()
        try:
            result = unread_rounds(server, client, options)
        finally:
            client.close()
            server.stop()
    finally:
        database.drop()
    result.update(communities=communities, rows=rows, seed_seconds=seeded, plans=plans)
    return result


def seed_unread(database, communities, rows):
    """``busy`` in communities ``cb*`` with ``rows`` activity rows among them; ``quiet`` in ``cq*``, none.

    The rows go straight into the change log, as the activity trigger writes
    them (one community-scoped row each, the writing transaction's id in
    ``xid``), dated over the last day, after both users joined: every busy
    community is at the unread cap, the worst case of the count.
    """
    connection = database.connect()
    with connection, connection.cursor() as cursor:
        cursor.execute("INSERT INTO users (id, name) VALUES ('busy', 'Busy'), ('quiet', 'Quiet')")
        cursor.execute(
            "INSERT INTO communities (id, slug, name, is_public) "
            "SELECT 'cb' || i, 'cb' || i, 'Busy ' || i, true FROM generate_series(0, %(n)s - 1) AS i "
            "UNION ALL SELECT 'cq' || i, 'cq' || i, 'Quiet ' || i, true FROM generate_series(0, %(n)s - 1) AS i",
            {"n": communities})
        cursor.execute(
            "INSERT INTO memberships (user_id, community_id, role) "
            "SELECT 'busy', 'cb' || i, 'member' FROM generate_series(0, %(n)s - 1) AS i "
            "UNION ALL SELECT 'quiet', 'cq' || i, 'member' FROM generate_series(0, %(n)s - 1) AS i",
            {"n": communities})
        cursor.execute("UPDATE changes SET at = at - interval '2 days'")
    connection.close()
    connection = database.connect()
    with connection, connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO changes (xid, user_id, community_id, type, kind, ref, actor, at) "
            "SELECT pg_current_xact_id()::text::bigint, NULL, 'cb' || (i %% %(n)s), 'activity', "
            "'post_created', 'p' || i, 'u-author', "
            "now() - interval '1 day' + i * (interval '20 hours' / %(rows)s) "
            "FROM generate_series(0, %(rows)s - 1) AS i",
            {"n": communities, "rows": rows})
    connection.close()
    database.vacuum()


def explain_snapshot(database, user_id):
    """PostgreSQL's plan and timing of the snapshot statement for ``user_id`` (EXPLAIN ANALYZE)."""
    compiled = queries.snapshot_of("postgresql").compile(dialect=postgresql.psycopg2.dialect())
    params = dict(compiled.params, user_id=user_id)
    connection = database.connect()
    try:
        with connection.cursor() as cursor:
            # The plan as text first, which also warms what the timed one reads, as the
            # requests that follow find it.
            cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + compiled.string, params)
            text = "\n".join(row[0] for row in cursor.fetchall())
            connection.rollback()
            cursor.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + compiled.string, params)
            plan = cursor.fetchone()[0][0]
            connection.rollback()
    finally:
        connection.close()
    top = plan["Plan"]
    return {
        "execution_ms": plan["Execution Time"],
        "planning_ms": plan["Planning Time"],
        "shared_hit": top.get("Shared Hit Blocks", 0),
        "shared_read": top.get("Shared Read Blocks", 0),
        "text": text,
    }


READS = ("snapshot", "poll")


def unread_rounds(server, client, options):
    """``runs`` rounds of each read for each user, taking turns, one request at a time.

    The users swap places every other round, so that drift falls on both alike;
    each round's busy / quiet ratio compares that round's figures.
    """
    paths = {user: read_paths(server, user) for user in ("busy", "quiet")}
    rounds = {user: {read: [] for read in READS} for user in paths}
    for number in range(options["runs"]):
        for read in READS:
            for user in (list(paths) if number % 2 == 0 else list(paths)[::-1]):
                statements = server.queries()
                outcome = client.call("load", "load", port=server.port, path=paths[user][read], users=[user],
                                      secret=SECRET, connections=1, duration=options["unread_seconds"])
                # The load sends one request per connection before it starts the clock.
                requests = outcome["requests"] + 1
                rounds[user][read].append({
                    "requests": outcome["requests"], "rps": outcome["requests"] / outcome["elapsed"],
                    "p50": outcome["p50"], "p99": outcome["p99"], "counts": outcome["counts"],
                    "errors": outcome["errors"],
                    "statements_per_request": (server.queries() - statements) / requests,
                })
    result = {}
    for user, reads in rounds.items():
        result[user] = {}
        for read, entries in reads.items():
            result[user][read] = {
                "p50": median([e["p50"] for e in entries]),
                "p99": median([e["p99"] for e in entries]),
                "rps": median([e["rps"] for e in entries]),
                "statements_per_request": median([e["statements_per_request"] for e in entries]),
                "rounds": entries,
            }
        result[user]["unread"] = paths[user]["unread"]
        log(f"unread, {user}: snapshot p50 {fmt_ms(result[user]['snapshot']['p50'])}, "
            f"poll p50 {fmt_ms(result[user]['poll']['p50'])}, "
            f"{result[user]['snapshot']['statements_per_request']:.2f} statements per snapshot")
    return result


def read_paths(server, user):
    """The two reads of ``user``: its snapshot, and a ``timeout=0`` poll from that snapshot's cursor."""
    request = urllib.request.Request(f"{server.url}/me/communities",
                                     headers={"Authorization": f"Bearer {bearer_token(SECRET, user)}"})
    with urllib.request.urlopen(request, timeout=60) as response:
        snapshot = json.loads(response.read())
    query = urlencode({"timeout": 0, "cursor": snapshot["cursor"], "hash": snapshot["hash"]})
    return {
        "snapshot": "/me/communities",
        "poll": f"{POLL_PATH}?{query}",
        "unread": sum(c["unread"] for c in snapshot["communities"]),
    }


def fmt_ms(seconds):
    return "n/a" if seconds is None else f"{seconds * 1000:.1f} ms"
