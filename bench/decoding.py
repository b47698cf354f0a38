"""Scenario 20: logical decoding against the head watcher, as the deployment's signal that the log grew.

The two ways the wake-ups issue weighed for telling every worker of a commit
without a writer ever notifying, measured where they differ, on a PostgreSQL
cluster of the scenario's own (``harness.postgres.ThrowawayPostgres``, with
``wal_level=logical`` and ``fsync`` on, the machine's own cluster being no
benchmark's to restart), taking turns:

- ``watcher``: a worker's own wake source with ``WAKE_SOURCE=watcher``
  (``Watcher``, app/live/listener.py), elected: a head check every
  ``WATCHER_INTERVAL`` and one ``NOTIFY`` per move, and the ``LISTEN`` that
  receives it. The log's trigger does not notify.
- ``decoding``: a replication connection streaming a temporary logical slot
  through ``pgoutput``, for a publication of the change log alone: a
  transaction that wrote to the log arrives as its commit message, with no
  statement and no trigger-side work; PostgreSQL decodes all of the
  platform's WAL to find those.

Each runs in a receiver process of its own (``python -m bench.decoding
watcher|decoding DSN``) that prints the monotonic time of every signal. The
scenario commits single-row joins at random moments and measures, from each
``COMMIT``'s return to the receiver's first signal after it was sent, the
latency; then, nothing written, PostgreSQL's transactions a second; then
pgbench's writers (one-row activity, moved into the log by its trigger) at
``decoding_clients`` with each receiver running and with none (``head``'s
case: nobody signals), the walsender's CPU alongside.
"""
import os
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from harness.postgres import ThrowawayPostgres
from harness.servers import ROOT, python_environ, wait_for

from . import scaleout, stack
from .stack import log, median, percentile

MECHANISMS = ("watcher", "decoding")
PUBLICATION = "community_sync_log"
SLOT = "community_sync_wake"
SETTINGS = {"wal_level": "logical", "max_replication_slots": 4, "max_wal_senders": 4, "fsync": "on"}


def run(options):
    with ThrowawayPostgres(settings=SETTINGS) as cluster:
        database = stack.Database(base_url=cluster.url)
        database.migrate()
        database.seed(options["decoding_users"], 0)
        connection = database.connect()
        with connection, connection.cursor() as cursor:
            cursor.execute(f"CREATE PUBLICATION {PUBLICATION} FOR TABLE changes")
            # No writer notifies with either mechanism.
            cursor.execute("UPDATE feed_meta SET notify = false")
        connection.close()
        result = {"mechanisms": MECHANISMS, "settings": SETTINGS, "signals": {m: [] for m in MECHANISMS},
                  "idle": {m: [] for m in MECHANISMS}, "writes": {}, "clients": options["decoding_clients"],
                  "seconds": options["decoding_seconds"], "runs": options["decoding_runs"]}
        used = set()
        for number in range(options["decoding_runs"]):
            for mechanism in MECHANISMS if number % 2 == 0 else MECHANISMS[::-1]:
                with Receiver(mechanism, database.url) as receiver:
                    result["signals"][mechanism].append(signals(database, receiver, options["decoding_changes"],
                                                                used))
                    result["idle"][mechanism].append(idle(database, options["decoding_idle_seconds"]))
                sample = result["signals"][mechanism][-1]
                log(f"decoding: {mechanism}, commit to signal p50 {ms(sample['p50'])}, p99 {ms(sample['p99'])}; "
                    f"idle {result['idle'][mechanism][-1]:.1f} transactions/s")
        result["writes"] = writes(database, options)
        database.drop()
    return result


def ms(seconds):
    return "n/a" if seconds is None else f"{seconds * 1000:.1f} ms"


class Receiver:
    """A receiver process for ``mechanism``; ``times`` fills with its signals' monotonic times."""

    def __init__(self, mechanism, url):
        self.mechanism = mechanism
        self.url = url
        self.times = []
        self.process = None
        self.pid = None

    def __enter__(self):
        self.process = subprocess.Popen([sys.executable, "-m", "bench.decoding", self.mechanism, self.url],
                                        cwd=ROOT, env=python_environ(), stdout=subprocess.PIPE, text=True,
                                        bufsize=1)
        try:
            # A listener hints once as it connects: what comes before "ready" is not a signal.
            for line in self.process.stdout:
                if line.startswith("ready"):
                    self.backend = int(line.split()[1])
                    break
            else:
                raise RuntimeError(f"the {self.mechanism} receiver exited with {self.process.wait()}")
        except BaseException:
            self.__exit__()
            raise
        threading.Thread(target=self._read, daemon=True).start()
        time.sleep(0.5)
        return self

    def _read(self):
        for line in self.process.stdout:
            self.times.append(float(line))

    def __exit__(self, *_):
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


def signals(database, receiver, changes, used):
    """Joins committed at random moments: from each COMMIT's return to the first signal sent after it.

    Each by a user not in ``used`` (then added): a join that changed nothing would write no row.
    """
    connection = database.connect()
    commits = []
    chosen = random.sample(sorted(set(range(database_users(database))) - used), changes)
    used.update(chosen)
    with connection.cursor() as cursor:
        for index in chosen:
            time.sleep(random.uniform(0.02, 0.08))
            cursor.execute("INSERT INTO memberships (user_id, community_id, role) VALUES (%s, %s, 'member')",
                           (f"u{index}", f"c-x{random.randrange(10)}"))
            sent = time.monotonic()
            connection.commit()
            commits.append((sent, time.monotonic()))
    connection.close()
    # The last commits' signals, however busy the machine.
    wait_for(lambda: receiver.times and max(receiver.times) >= commits[-1][0], 10)
    times = sorted(receiver.times)
    latencies = []
    for sent, done in commits:
        later = [t for t in times if t >= sent]
        if later:
            latencies.append(later[0] - done)
    return {"changes": len(commits), "signalled": len(latencies), "p50": percentile(latencies, 0.5),
            "p99": percentile(latencies, 0.99), "max": max(latencies) if latencies else None,
            "signals": len(times)}


def database_users(database):
    connection = database.connect()
    with connection, connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM users")
        count = cursor.fetchone()[0]
    connection.close()
    return count


def idle(database, seconds):
    """Transactions a second at PostgreSQL with nothing written, once its statistics settled."""
    time.sleep(stack.SETTLE)
    before = database.transactions()["transactions"]
    time.sleep(seconds)
    return (database.transactions()["transactions"] - before) / seconds


def writes(database, options):
    """pgbench's one-row activity at each concurrency with each receiver running, and with none."""
    cells = {}
    sides = ("none",) + MECHANISMS
    with tempfile.TemporaryDirectory(prefix="bench-decoding-") as folder:
        script = Path(folder) / "activity.sql"
        script.write_text(scaleout.SCRIPTS["activity"])
        for clients in options["decoding_clients"]:
            samples = {side: [] for side in sides}
            for number in range(options["decoding_runs"]):
                for side in sides if number % 2 == 0 else sides[::-1]:
                    scaleout.switch(database, notify=False)
                    if side == "none":
                        samples[side].append(scaleout.pgbench(database, script, clients, options["decoding_seconds"]))
                        continue
                    with Receiver(side, database.url) as receiver:
                        cpu = backend_cpu(receiver.backend)
                        sample = scaleout.pgbench(database, script, clients, options["decoding_seconds"])
                        sample["receiver_backend_cpu_percent"] = 100 * (backend_cpu(receiver.backend) - cpu) / \
                            options["decoding_seconds"]
                        samples[side].append(sample)
            cells[str(clients)] = {side: scaleout.summary(runs) for side, runs in samples.items()}
            log(f"decoding writes x{clients}: " + ", ".join(f"{side} {cells[str(clients)][side]['tps']:.0f}/s"
                                                             for side in sides))
    return cells


def backend_cpu(pid):
    """CPU seconds of a PostgreSQL backend (the walsender, or the watcher's session) so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- the receivers' processes ------------------------------------------------------------


def watch(url):
    """The service's head watcher and a worker's LISTEN: a line for every NOTIFY."""
    from gevent import monkey

    monkey.patch_all()
    import psycogreen.gevent

    psycogreen.gevent.patch_psycopg()
    import gevent

    from app.live.listener import Watcher

    dsn = re.sub(r"^postgresql\+psycopg2:", "postgresql:", url)
    # A worker's wake source with WAKE_SOURCE=watcher: its LISTEN, and its candidacy, here elected.
    listener = Watcher(dsn, lambda: print(time.monotonic(), flush=True), interval=0.005)
    listener.start()
    while not (listener.candidate.leading and listener.connected):
        gevent.sleep(0.01)
    print("ready", listener.candidate._connection.get_backend_pid(), flush=True)
    while True:
        gevent.sleep(60)


def decode(url):
    """A temporary logical slot streamed through pgoutput: a line for every commit of the log's rows."""
    import psycopg2
    import psycopg2.extras

    from .stack import dsn

    connection = psycopg2.connect(**dsn(url), connection_factory=psycopg2.extras.LogicalReplicationConnection)
    cursor = connection.cursor()
    cursor.execute(f"CREATE_REPLICATION_SLOT {SLOT} TEMPORARY LOGICAL pgoutput")
    cursor.start_replication(slot_name=SLOT, decode=False,
                             options={"proto_version": "1", "publication_names": PUBLICATION})
    print("ready", connection.get_backend_pid(), flush=True)

    def consume(message):
        if message.payload[:1] == b"C":  # a commit of a transaction that wrote to the log
            print(time.monotonic(), flush=True)
        message.cursor.send_feedback(flush_lsn=message.data_start)

    cursor.consume_stream(consume)


if __name__ == "__main__":
    {"watcher": watch, "decoding": decode}[sys.argv[1]](sys.argv[2])
