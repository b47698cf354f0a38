"""Profiles behind the analysis in docs/benchmarks.md.

``python -m bench.profile cpu304``: py-spy samples the worker while it answers
conditional snapshots (304) on keep-alive connections, and prints the functions
with the largest inclusive share. ``python -m bench.profile memory``: tracemalloc
snapshots of the worker before and after ``--waiters`` polls are held, compared
by traceback and by file. ``python -m bench.profile burst [--quick]``: scenario
9 (bench/v2.py; ``--tenfold``: 16) with py-spy sampling the worker while the activity is
published. ``python -m bench.profile reread``: the hub's batched re-read
(``feed.read_news``, then ``feed.read_states`` of the members it woke) after
activity in a community whose members all wait, timed in this process and
explained by PostgreSQL (EXPLAIN ANALYZE).
``python -m bench.profile fanout [--waiters N]``: py-spy samples the worker
while one rename wakes ``--waiters`` held polls. ``python -m bench.profile
arrival [--waiters N]``: py-spy samples the worker while ``--waiters`` clients
holding a snapshot's cursor send their long polls within one second (the
arrival storm of bench/storm.py). ``python -m bench.profile deploy [--waiters N]``: py-spy
samples the new worker of a reload (SIGHUP) while ``--waiters`` polls that waited on
the old one come back to it (scenario 15). ``python -m bench.profile burst-greenlets [--moments S ...]``:
scenario 9 with every greenlet of the worker listed at those seconds into
the burst: how many stand where, and the hub's own greenlets' stacks.
``python -m bench.profile burst-memory``: scenario 9 with the worker's memory looked at
before the burst and after its drain: the objects that grew, the functions made
meanwhile by name, and what a full collection and then the allocator give back. ``memory`` and ``fanout`` take
``--greenlets`` to profile the polls held in greenlets (``PARKED_POLLS=0``)
rather than parked. All use a database of their own, like the suite.
"""
import argparse
import collections
import os
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from harness.polls import POLL_PATH
from harness.servers import wait_for

from . import stack, storm, v2
from .longpoll import POLL_TIMEOUT, quiesce, warm_up
from .stack import SECRET, ClientProcess, Server, raise_fd_limit

def on_sigusr2(handler, body):
    """A gunicorn config template: the project's config, plus ``body`` (code indented for
    ``post_worker_init``, defining ``handler``) in the worker and ``handler`` on SIGUSR2.
    Fill it with ``looking``."""
    return ("import signal\nexec(open({conf!r}).read())\n_project_post_worker_init = post_worker_init\n\n"
            "def post_worker_init(worker):\n    _project_post_worker_init(worker)\n"
            + body + f"\n    signal.signal(signal.SIGUSR2, {handler})\n")


def looking(template, directory, name):
    """The config ``template`` (``on_sigusr2``) written into ``directory`` for output ``name``
    there: (its path, the output's path)."""
    out, conf = directory / name, directory / f"gunicorn_{name.split('.')[0]}.py"
    conf.write_text(template.format(conf=str(stack.ROOT / "gunicorn.conf.py"), out=str(out)))
    return conf, out


# SIGUSR2 takes a tracemalloc baseline snapshot the first time and writes the comparison after.
TRACEMALLOC_CONF = on_sigusr2("snapshot", """\
    import tracemalloc
    tracemalloc.start(12)
    taken = []

    def snapshot(_sig, _frame):
        current = tracemalloc.take_snapshot()
        if not taken:
            taken.append(current)
            open({out!r} + ".base", "w").close()
            return
        with open({out!r}, "w") as out:
            stats = current.compare_to(taken[0], "traceback")
            out.write(f"total {{sum(s.size_diff for s in stats)}} bytes\\n\\n")
            for stat in stats[:20]:
                out.write(f"{{stat.size_diff}} bytes in {{stat.count_diff}} blocks\\n")
                for line in stat.traceback.format()[-6:]:
                    out.write("    " + line + "\\n")
            out.write("\\nby file\\n")
            for stat in current.compare_to(taken[0], "filename")[:25]:
                out.write(f"{{stat.size_diff:>10}} {{stat.count_diff:>7}} {{stat.traceback[0].filename}}\\n")
""")


# A look at the worker's memory on SIGUSR2: the first time its resident memory, the
# blocks Python has allocated, its objects by type and its functions; the second time the
# same again and, written to <out>, what grew and the functions made since by name (a
# per-request closure that refers to itself is garbage only a full collection finds),
# then the resident memory after a full collection and after glibc's malloc_trim(0) hands
# back what its heap freed. Quicker than a tracemalloc snapshot, which stalls a busy
# worker past its time-out.
MEMORY_CONF = on_sigusr2("look", """\
    import collections, ctypes, gc, sys
    taken = []

    def resident():
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS:"))

    def functions():
        return {{id(value): value for value in gc.get_objects() if type(value).__name__ == "function"}}

    def look(_sig, _frame):
        taken.append((resident(), sys.getallocatedblocks(),
                      collections.Counter(type(value).__name__ for value in gc.get_objects()), functions()))
        if len(taken) == 1:
            open({out!r} + ".base", "w").close()
            return
        (rss_before, blocks_before, before, known), (rss_after, blocks_after, after, now) = taken
        made = collections.Counter(f"{{value.__module__}}.{{value.__qualname__}}"
                                   for key, value in now.items() if key not in known)
        # The functions kept for the comparison must not outlive it: the collection below
        # is to find what nothing refers to any more.
        taken.clear()
        del known, now
        unreachable = gc.collect()
        rss_collected = resident()
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        with open({out!r}, "w") as out:
            out.write(f"RSS {{rss_before / 2**20:.0f}} -> {{rss_after / 2**20:.0f}} MiB; "
                      f"after a full gc.collect() ({{unreachable:,}} unreachable) {{rss_collected / 2**20:.0f}} MiB; "
                      f"after malloc_trim(0) {{resident() / 2**20:.0f}} MiB\\n")
            out.write(f"Python's allocated blocks {{blocks_before:,}} -> {{blocks_after:,}}\\n")
            for name, count in (after - before).most_common(15):
                out.write(f"{{count:+,}} {{name}}\\n")
            out.write("functions made since the first look, by name:\\n")
            for name, count in made.most_common(5):
                out.write(f"{{count:+,}} {{name}}\\n")
""")


# SIGUSR2 writes gevent's listing of every greenlet and where it stands
# (gevent.util.format_run_info) to <out>.<n>.
GREENLETS_CONF = on_sigusr2("dump", """\
    import gc, gevent.util
    taken = []

    def dump(_sig, _frame):
        # gevent finds greenlets through gc.get_objects(), which leaves out what
        # post_worker_init froze: the hub's own greenlets among it.
        taken.append(None)
        gc.unfreeze()
        try:
            listing = gevent.util.format_run_info()
        finally:
            gc.freeze()
        with open(f"{out}.{{len(taken)}}", "w") as out_file:
            out_file.write("\\n".join(listing))
""")


def py_spy(pid, output, rate, seconds=None, subprocesses=False):
    """``py-spy record`` of process ``pid`` into ``output`` (raw), for ``seconds`` or until interrupted;
    with ``subprocesses``, its children too, each stack under a frame naming its process."""
    command = [str(Path(sys.executable).parent / "py-spy"), "record", "-p", str(pid), "-r", str(rate),
               "-f", "raw", "-o", str(output)]
    if subprocesses:
        command.append("--subprocesses")
    if seconds is not None:
        command += ["-d", str(int(seconds))]
    return subprocess.Popen(command)


@contextmanager
def sampling(server, output, rate=200):
    """py-spy samples the worker of ``server`` into ``output`` through the block (from a second before it)."""
    spy = py_spy(server.worker_pids()[0], output, rate)
    time.sleep(1)
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)
        spy.wait()


def cpu304(database, seconds):
    server = Server(database, target="wsgi:app").start()
    client = ClientProcess()
    users = [f"u{i}" for i in range(64)]
    output = Path(tempfile.mkdtemp()) / "py-spy.txt"
    try:
        load = dict(port=server.port, path="/me/communities", users=users, secret=SECRET,
                    connections=32, conditional=True)
        client.call("load", "load", duration=2, **load)
        spy = py_spy(server.worker_pids()[0], output, 200, seconds + 2)
        time.sleep(1)
        result = client.call("load", "load", duration=seconds, **load)
        spy.wait()
    finally:
        client.close()
        server.stop()
    print(f"{result['requests'] / result['elapsed']:.0f} requests/s during the profile")
    print_inclusive(output)


def fanout(database, waiters, environ):
    """Hold ``waiters`` polls, then sample the worker while a rename of everyone's community wakes them."""
    server = Server(database, target="wsgi:app", **environ).start()
    client = ClientProcess()
    output = Path(tempfile.mkdtemp()) / "py-spy.txt"
    try:
        v2.hold(client, server, [f"u{i}" for i in range(waiters)], {})
        client.call("repoll", "ok", value=False)
        client.call("report", "report")
        with sampling(server, output):
            began = time.monotonic()
            connection = database.connect()
            with connection, connection.cursor() as cursor:
                cursor.execute("UPDATE communities SET name = 'Renamed' WHERE id = 'c-all'")
            connection.close()
            answered = 0
            while answered < waiters and time.monotonic() - began < 60:
                time.sleep(0.2)
                answered += sum(1 for a in client.call("report", "report")["answers"] if a[2] == "changed")
            elapsed = time.monotonic() - began
    finally:
        client.close()
        server.stop()
    print(f"{answered} of {waiters} answered in {elapsed:.2f} s")
    print_inclusive(output, top=60)


def print_inclusive(output, top=45, process=None):
    """The functions of py-spy's raw ``output`` with the largest inclusive share of the samples
    (with ``process``, a pid: of its samples only, in a ``--subprocesses`` record)."""
    total, inclusive = 0, collections.Counter()
    for line in output.read_text().splitlines():
        stack_text, _, count = line.rpartition(" ")
        if process is not None and f"process {process}:" not in stack_text:
            continue
        total += int(count)
        names = {frame.split(" (")[0] + " " + frame.rsplit("/", 1)[-1].split(":")[0]
                 for frame in stack_text.split(";") if not frame.startswith("process ")}
        for name in names:
            inclusive[name] += int(count)
    print(f"{total} samples; inclusive share:")
    for name, count in inclusive.most_common(top):
        print(f"{100 * count / total:5.1f}%  {name}")


def burst(quick, tenfold=False):
    """Scenario 9 (or, ``tenfold``, 16) with the worker sampled (``py-spy record``) while the activity is published."""
    from .__main__ import FULL, QUICK

    options = dict(QUICK if quick else FULL)
    stack.SETTLE = options["settle"]
    output = Path(tempfile.mkdtemp()) / "py-spy.txt"

    @contextmanager
    def sampled(server):
        spy = py_spy(server.worker_pids()[0], output, 100, options["burst_seconds"] + 1)
        try:
            yield
        finally:
            spy.wait()

    if tenfold:
        options["burst_seconds"] = options["burst10_seconds"]
    result = (v2.burst10 if tenfold else v2.burst)(options, profile=sampled)
    print_burst(result)
    print_inclusive(output, top=60)


def print_burst(result):
    print(f"{result['published']} rows published in {result['publish_seconds']:.1f} s, "
          f"{result['answers_per_member']['p50']} answers per member, "
          f"{result['statements_per_second']:.0f} statements/s, worker CPU {result['worker_cpu_percent']:.0f}%, "
          f"join wake p99 {result['wake_p99']}")


def burst_memory(quick):
    """Scenario 9 with a look at the worker's memory (``MEMORY_CONF``) before the burst and after
    its drain: the objects that grew, and what malloc_trim(0) gives back (the allocator's share)."""
    from .__main__ import FULL, QUICK

    options = dict(QUICK if quick else FULL)
    stack.SETTLE = options["settle"]
    directory = Path(tempfile.mkdtemp())
    conf, out = looking(MEMORY_CONF, directory, "memory.txt")

    @contextmanager
    def from_here(server):
        os.kill(server.worker_pids()[0], signal.SIGUSR2)
        wait_for(lambda: Path(str(out) + ".base").exists(), 60)
        yield

    def after_drain(server):
        os.kill(server.worker_pids()[0], signal.SIGUSR2)
        wait_for(out.exists, 120)
        time.sleep(1)

    result = v2.burst(dict(options, after_drain=after_drain), profile=from_here, config=conf)
    print_burst(result)
    print(out.read_text())


def burst_greenlets(quick, moments):
    """Scenario 9 with every greenlet of the worker listed ``moments`` seconds after the burst began.

    Prints, per listing, how many greenlets stand at each of the project's
    frames (the innermost one under app/), and the whole stacks of the hub's
    own greenlets (the re-read, the answerer, admission's batches).
    """
    from .__main__ import FULL, QUICK

    options = dict(QUICK if quick else FULL)
    stack.SETTLE = options["settle"]
    directory = Path(tempfile.mkdtemp())
    conf, out = looking(GREENLETS_CONF, directory, "greenlets")

    @contextmanager
    def listed(server):
        pid, began = server.worker_pids()[0], time.monotonic()

        def signal_at_moments():
            for moment in moments:
                time.sleep(max(0.0, began + moment - time.monotonic()))
                os.kill(pid, signal.SIGUSR2)

        threading.Thread(target=signal_at_moments, daemon=True).start()
        yield

    result = v2.burst(options, profile=listed, config=conf)
    print_burst(result)
    for number, moment in enumerate(moments, 1):
        listing = Path(f"{out}.{number}")
        if not listing.exists():
            print(f"\n{moment} s: no listing (the worker had stopped?)")
            continue
        print(f"\n{moment} s after the burst began:")
        print_greenlets(listing.read_text())


def print_greenlets(text):
    """How many greenlets stand at each (first, last) app/ frame; the hub's own greenlets' stacks.

    A greenlet's first frame under app/ says what it is (a request's view,
    the re-read's loop, the answerer, an admission batch), its last one
    where it stands.
    """
    at = collections.Counter()
    for node in text.split("+--- <")[1:]:
        running = node.split("Running:", 1)[-1].split("Spawned at:", 1)[0]
        frames = [line.split("File ", 1)[1].replace(str(stack.ROOT) + "/", "")
                  for line in running.splitlines() if "File " in line and "/app/" in line]
        if not frames:
            continue
        at[(frames[0], frames[-1])] += 1
        if "app/live/" in frames[0]:
            print("  " + "\n  ".join(frames) + "\n  --")
    for (first, last), count in at.most_common(20):
        print(f"{count:6}  {first}\n        ... {last}")


def arrival(database, clients):
    """Sample the worker while ``clients`` tabs with a snapshot's cursor send their long polls within 1 s."""
    server = Server(database, target="wsgi:app").start()
    client = ClientProcess()
    output = Path(tempfile.mkdtemp()) / "py-spy.txt"
    try:
        warm_up(server, client, POLL_PATH)
        client.call("prime", "primed", users=[f"u{i}" for i in range(clients)], ports=[server.port],
                    path=POLL_PATH, snapshot_path="/me/communities", timeout=POLL_TIMEOUT, secret=SECRET)
        with sampling(server, output):
            cpu = server.cpu()
            begin = client.call("storm", "stormed", spread=storm.SPREAD)["begin"]
            wait_for(lambda: server.waiting() >= clients, 120, interval=0.05)
            waiting = time.monotonic() - begin
            quiesce(server, clients)
            busy = server.cpu() - cpu
    finally:
        client.close()
        server.stop()
    print(f"{clients} polls all waiting {waiting:.2f} s after the first was sent; "
          f"worker CPU {busy:.2f} s ({1000 * busy / clients:.2f} ms a poll)")
    print_inclusive(output, top=60)


def deploy(database, clients):
    """Sample the new worker of a reload (SIGHUP) while ``clients`` polls that waited come back to it."""
    server = Server(database).start()
    client = ClientProcess()
    output = Path(tempfile.mkdtemp()) / "py-spy.txt"
    options = {"arrival_wait": 120, "fanout_wait": 60}
    try:
        warm_up(server, client, POLL_PATH)
        waiting = storm.arrive(database, server, client, "longpoll", clients, POLL_PATH, "/me/communities",
                               options)["waiting"]
        # The master and its children: the new worker is sampled from its fork on.
        spy = py_spy(server.process.pid, output, 200, subprocesses=True)
        time.sleep(1)
        try:
            old = set(server.worker_pids())
            result = storm.reload(database, server, client, waiting, options)
        finally:
            spy.send_signal(signal.SIGINT)
            spy.wait()
    finally:
        client.close()
        server.stop()
    new = [pid for pid in result["new_workers"] if pid not in old]
    print(f"{clients} polls waiting; SIGHUP; old worker gone after {result['replaced_seconds']:.2f} s; "
          f"all waiting again after {result['waiting_again_seconds']:.2f} s; the new worker's CPU until then "
          f"{result['new_worker_cpu_seconds']:.2f} s; its polls {result['outcomes']}")
    print_inclusive(output, top=60, process=new[0])


def memory(database, waiters, environ):
    directory = Path(tempfile.mkdtemp())
    conf, out = looking(TRACEMALLOC_CONF, directory, "tracemalloc.txt")
    server = Server(database, target="wsgi:app", config=conf, **environ).start()
    client = None
    try:
        time.sleep(2)
        client = ClientProcess()
        client.call("load", "load", port=server.port, path="/community-changes/poll?timeout=0",
                    users=["warm"], secret=SECRET, connections=4, duration=1.0)
        pid = server.worker_pids()[0]
        os.kill(pid, signal.SIGUSR2)
        wait_for(lambda: Path(str(out) + ".base").exists(), 30)
        client.call("hold", "held", users=[f"u{i}" for i in range(waiters)], ports=[server.port],
                    path="/community-changes/poll", timeout=290, secret=SECRET, ramp=100)
        wait_for(lambda: server.waiting() >= waiters, 60)
        time.sleep(1)
        os.kill(pid, signal.SIGUSR2)
        wait_for(out.exists, 60)
        time.sleep(1)
    finally:
        if client is not None:
            client.close()
        server.stop()
    print(f"{waiters} polls held; Python heap growth, largest first:\n")
    print(out.read_text())


def reread(members, fetched, explained):
    """The re-read's statements after activity in ``c-small``, whose ``members`` all wait.

    ``fetched`` activity rows are read through ``feed.read_news`` here, and the
    woken members' states through ``feed.read_states`` (both timed in this
    process); ``explained`` rows are only run inside PostgreSQL (EXPLAIN ANALYZE
    of the rows' and the recipients' statements, rows discarded there).
    """
    from sqlalchemy.dialects import postgresql

    from app.store import feed, queries
    from app.store.db import make_engine, read_transaction

    database = stack.Database()
    try:
        database.migrate()
        database.seed(members, members)
        engine = make_engine(database.url)
        with read_transaction(engine) as connection:
            start = feed.read_position(connection)
        users = [f"u{i}" for i in range(members)]
        writer = database.connect()

        def publish(count):
            with writer, writer.cursor() as cursor:
                cursor.execute("INSERT INTO activity (community_id, kind, ref) "
                               "SELECT 'c-small', 'post_created', 'p' || i FROM generate_series(1, %s) AS i",
                               (count,))

        def explain(statement):
            compiled = statement.compile(dialect=postgresql.psycopg2.dialect())
            with writer, writer.cursor() as cursor:
                cursor.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + compiled.string, compiled.params)
                plan = cursor.fetchone()[0][0]
            return f"{plan['Plan']['Actual Rows']:,} rows, {plan['Execution Time']:.0f} ms in PostgreSQL"

        publish(fetched)
        with read_transaction(engine) as connection:
            begin = time.monotonic()
            batch = feed.read_news(connection, start, lambda: users)
            read = time.monotonic() - begin
            woken = sorted(batch.by_user(set(users)))
            begin = time.monotonic()
            states = feed.read_states(connection, woken)
            stated = time.monotonic() - begin
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"read_news: {len(batch.rows):,} activity rows once, {sum(map(len, batch.recipients.values())):,} "
              f"recipients of {members:,} waiting, in {read:.2f} s; read_states of the {len(states):,} woken: "
              f"{stated:.2f} s; peak RSS {peak:.0f} MiB")
        del batch, states
        publish(explained - fetched)
        recipients = queries.recipients(start, queries.among(users, "postgresql"),
                                        queries.among(["c-small"], "postgresql"))
        print(f"EXPLAIN ANALYZE, {explained} activity rows: the rows, {explain(queries.changes_after(start))}; "
              f"their recipients among {members:,}, {explain(recipients)}")
        writer.close()
        engine.dispose()
    finally:
        database.drop()


def main():
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("what", choices=("cpu304", "memory", "burst", "burst-greenlets", "burst-memory", "reread",
                                         "fanout", "arrival", "deploy"))
    parser.add_argument("--moments", type=float, nargs="+", default=[3, 8, 15, 22],
                        help="burst-greenlets: seconds after the burst began to list the greenlets at")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--waiters", type=int, default=2000,
                        help="memory, fanout: polls held; reread: members waiting; arrival, deploy: clients")
    parser.add_argument("--quick", action="store_true", help="burst: the small version")
    parser.add_argument("--tenfold", action="store_true", help="burst: at ten times the rate (scenario 16)")
    parser.add_argument("--greenlets", action="store_true",
                        help="memory, fanout: parking off, each waiting poll held in a greenlet (PARKED_POLLS=0)")
    parser.add_argument("--rows", type=int, default=100, help="reread: activity rows read through read_news")
    parser.add_argument("--explained", type=int, default=2000, help="reread: activity rows explained")
    args = parser.parse_args()
    raise_fd_limit()
    if args.what == "burst":
        burst(args.quick, args.tenfold)
        return
    if args.what == "burst-memory":
        burst_memory(args.quick)
        return
    if args.what == "burst-greenlets":
        burst_greenlets(args.quick, args.moments)
        return
    if args.what == "reread":
        reread(args.waiters, args.rows, args.explained)
        return
    environ = {"PARKED_POLLS": "0"} if args.greenlets else {}
    database = stack.Database()
    try:
        database.migrate()
        database.seed(max(args.waiters, 64), 50)
        if args.what == "cpu304":
            cpu304(database, args.seconds)
        elif args.what == "fanout":
            fanout(database, args.waiters, environ)
        elif args.what == "arrival":
            arrival(database, args.waiters)
        elif args.what == "deploy":
            deploy(database, args.waiters)
        else:
            memory(database, args.waiters, environ)
    finally:
        database.drop()


if __name__ == "__main__":
    main()
