"""``python -m bench SCENARIO [--quick] [--runs N]``: run benchmarks, record, render.

Scenarios: held, idle, wake, fanout (these four share held polls), conditional,
freshness, multi; rename, burst, unread (the change log v2, on databases of
their own; ``v2`` runs the three); presence; writes and sources (the wake
sources: what they cost the writers and the wake-ups); or all. Not in all:
storm, deploy and burst10 (arrival storms, a reload under one, the burst at
ten times the rate), topics (topics, payloads and latest values: a
thread's reply among waiting members, collapsed votes, a poll's watches) and
typing (who is typing in a busy thread: keypress to render, what it costs,
the joins beside it, across two hosts) and wakeups (the wake sources side by
side: wake-ups at 10,000 waiters, idle cost on 2 and 8 workers, a watcher's
failover) and decoding (logical decoding against the head watcher, on a
cluster of its own).
``report [RESULTS.json]`` renders docs/benchmarks.md and the plots from
recorded results. A full run (not --quick) of ``all``, ``v2``, ``presence``,
``writes``, ``sources``, ``storm``, ``deploy``, ``burst``, ``burst10``, ``topics`` or ``typing`` keeps
its results in the repository, as bench/results/<scenario>.json, which the page
names, and renders its own sections (a run of scenarios 8-18 only replaces
theirs); ``report`` alone renders the page again from every kept file,
oldest run first.
"""
import argparse
import json
import random
import sys
import time
import traceback
from pathlib import Path

from harness import pgbouncer

from . import (conditional, decoding, freshness, longpoll, multi, presence, report, scaleout, stack, storm, topics,
               typists, v2, wakeups)
from .stack import log, raise_fd_limit

RESULTS = Path(__file__).resolve().parent / "results"
# Full runs of these keep their results as bench/results/<name>.json, tracked by git.
KEPT = ("all", "v2", "presence", "writes", "sources", "storm", "deploy", "burst", "burst10", "topics", "typing",
        "wakeups", "decoding")
SESSION_PHASES = ("held", "idle", "wake", "fanout")
V2_SCENARIOS = ("rename", "burst", "unread")
# Each on databases of its own, seeded for it alone.
OWN_DATABASES = {"rename": v2.rename, "burst": v2.burst, "unread": v2.unread, "presence": presence.run,
                 "writes": scaleout.writes, "sources": scaleout.sources,
                 "storm": storm.storm, "deploy": storm.deploy, "burst10": v2.burst10, "topics": topics.run,
                 "typing": typists.run, "wakeups": wakeups.run, "decoding": decoding.run}
SCENARIOS = SESSION_PHASES + ("conditional", "freshness", "multi") + tuple(OWN_DATABASES)
# Scenarios 14-18, each a long run of its own: named alone, never part of all.
ALONE = ("storm", "deploy", "burst10", "topics", "typing", "wakeups", "decoding")

FULL = {
    "waiters": 10000, "small": 1000, "changes": 200, "naive_changes": 50, "fanout_runs": 2,
    "idle_seconds": {"longpoll": 60, "naive": 20}, "ramp": 200, "runs": 3, "sessions": 2,
    "connections": 32, "load_seconds": 5.0,
    "freshness_users": 500, "freshness_seconds": 60, "freshness_changes": 25,
    "multi_waiters": 1000, "multi_changes": 100, "settle": stack.SETTLE,
    "naive_small_waiters": 1000,
    "rename_members": 100000, "rename_waiters": 10000, "rename_runs": 5,
    "burst_members": 5000, "burst_bystanders": 150, "burst_quiet_joins": 30, "burst_rate": 200,
    "burst_seconds": 10, "drain_wait": 120,
    "unread_communities": 200, "unread_rows": 1000000, "unread_seconds": 5.0,
    "presence_online": 10000, "presence_small": 1000, "presence_seconds": 60, "presence_runs": 200,
    "presence_other_host": 100,
    "writes_clients": [1, 8, 32, 64], "writes_seconds": 10, "writes_runs": 2, "writes_users": 100000,
    "sources_runs": 2, "sources_idle": 10,
    "clients": 10000, "storm_rounds": 2, "burst10_rate": 2000, "burst10_seconds": 10,
    # One connection commits a few hundred rows a second here: burst10's rate needs several.
    "burst10_writers": 8,
    "topics_members": 10000, "topics_watchers": 100, "topics_wake_rounds": 3,
    "topics_voters": 5000, "topics_vote_rate": 200, "topics_vote_seconds": 10, "topics_vote_rounds": 2,
    "topics_read_seconds": 3.0, "topics_read_rounds": 3,
    "typing_watchers": 1000, "typing_typists": 20, "typing_resting": 10, "typing_changes": 3,
    "typing_bystanders": 200, "typing_join_rate": 5, "typing_seconds": 20, "typing_rounds": 4,
    "wakeups_waiters": 10000, "wakeups_rounds": 2, "wakeups_idle_seconds": 10, "wakeups_workers": [2, 8],
    "wakeups_idle_polls": 400, "wakeups_failover_polls": 1000, "wakeups_failovers": 2,
    "wakeups_failover_changes": 200, "wakeups_parts": ["wake", "idle", "failover"],
    "decoding_users": 10000, "decoding_changes": 200, "decoding_idle_seconds": 10, "decoding_clients": [8, 32, 64],
    "decoding_seconds": 10, "decoding_runs": 2,
}
QUICK = {
    "waiters": 200, "small": 50, "changes": 20, "naive_changes": 10, "fanout_runs": 1,
    "idle_seconds": {"longpoll": 3, "naive": 3}, "ramp": 100, "runs": 1, "sessions": 1,
    "connections": 8, "load_seconds": 1.0,
    "freshness_users": 20, "freshness_seconds": 12, "freshness_changes": 4,
    "multi_waiters": 40, "multi_changes": 10, "settle": 1.0,
    "naive_small_waiters": 0,
    "rename_members": 2000, "rename_waiters": 200, "rename_runs": 2,
    "burst_members": 200, "burst_bystanders": 40, "burst_quiet_joins": 5, "burst_rate": 50,
    "burst_seconds": 3, "drain_wait": 30,
    "unread_communities": 20, "unread_rows": 20000, "unread_seconds": 1.0,
    "presence_online": 200, "presence_small": 50, "presence_seconds": 5, "presence_runs": 20,
    "presence_other_host": 10,
    "writes_clients": [1, 4], "writes_seconds": 1, "writes_runs": 1, "writes_users": 1000,
    "sources_runs": 1, "sources_idle": 2,
    "clients": 200, "storm_rounds": 1, "burst10_rate": 500, "burst10_seconds": 3, "burst10_writers": 2,
    "topics_members": 200, "topics_watchers": 20, "topics_wake_rounds": 1,
    "topics_voters": 100, "topics_vote_rate": 100, "topics_vote_seconds": 2, "topics_vote_rounds": 1,
    "topics_read_seconds": 0.5, "topics_read_rounds": 1,
    "typing_watchers": 20, "typing_typists": 3, "typing_resting": 3, "typing_changes": 1,
    "typing_bystanders": 20, "typing_join_rate": 5, "typing_seconds": 2, "typing_rounds": 1,
    "wakeups_waiters": 100, "wakeups_rounds": 1, "wakeups_idle_seconds": 1, "wakeups_workers": [2],
    "wakeups_idle_polls": 20, "wakeups_failover_polls": 40, "wakeups_failovers": 1,
    "wakeups_failover_changes": 10, "wakeups_parts": ["wake", "idle", "failover"],
    "decoding_users": 100, "decoding_changes": 10, "decoding_idle_seconds": 1, "decoding_clients": [4],
    "decoding_seconds": 1, "decoding_runs": 1,
}


def parse(argv):
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenario", choices=SCENARIOS + ("v2", "all", "report"))
    parser.add_argument("results", nargs="?", help="for report: a results file (default: every kept "
                        "bench/results/<scenario>.json, oldest run first)")
    parser.add_argument("--quick", action="store_true", help="a small, fast version (smoke test)")
    parser.add_argument("--runs", type=int, help="repetitions of each measurement (default 3, quick 1)")
    parser.add_argument("--sessions", type=int, help="rounds of sessions for scenarios 1-4, one of each kind "
                        "a round (default 2)")
    parser.add_argument("--waiters", type=int, help="held polls for scenarios 1-4 (default 10000)")
    parser.add_argument("--clients", type=int, help="storm and deploy: clients arriving within one second "
                        "(default 10000)")
    parser.add_argument("--rounds", type=int, help="storm, typing and wakeups: rounds of each side "
                        "taking turns (default 2; typing 4)")
    parser.add_argument("--burst-rate", type=int, help="burst and burst10: activity rows a second "
                        "(default 200; burst10 2000)")
    parser.add_argument("--burst-seconds", type=float, help="burst and burst10: seconds of activity (default 10)")
    parser.add_argument("--no-baselines", action="store_true", help="skip the naive long poll sessions")
    parser.add_argument("--parts", help="wakeups: the parts to run, comma-separated (default wake,idle,failover)")
    parser.add_argument("--pgbouncer", action="store_true",
                        help="the servers' pools through a PgBouncer of the run's own in transaction mode, their "
                        "wake sources direct (not kept: the scenario's page is of runs without it)")
    parser.add_argument("--http10", action="store_true",
                        help="scenarios 1-4: send the polls as nginx's default upstream does "
                        "(HTTP/1.0, Connection: close)")
    parser.add_argument("--database-url", help="use this (empty, migrated) database instead of creating one "
                        "(not for rename, burst, unread); PostgreSQL's per-database counters then include "
                        "other traffic")
    parser.add_argument("--output", type=Path, help="where to write the results JSON")
    parser.add_argument("--docs", type=Path, help="also render the report into this directory (for report: "
                        "instead of docs/)")
    parser.add_argument("--seed", type=int, default=None, help="random seed")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse(sys.argv[1:] if argv is None else argv)
    if args.scenario == "report":
        paths = [Path(args.results)] if args.results else kept_results()
        runs = []
        for path in paths:
            results = json.loads(path.read_text())
            # A run's page names the file it was rendered from.
            results.setdefault("results_file", str(path))
            runs.append(results)
        for results in sorted(runs, key=lambda results: results["machine"]["date"]):
            report.render(results, args.docs or report.DOCS)
        return 0
    options = dict(QUICK if args.quick else FULL)
    for name in ("runs", "sessions", "waiters", "clients"):
        if getattr(args, name) is not None:
            options[name] = getattr(args, name)
    if args.rounds is not None:
        options["storm_rounds"] = options["typing_rounds"] = options["wakeups_rounds"] = args.rounds
    # Either burst at the rate and length asked for.
    for name in ("rate", "seconds"):
        if getattr(args, f"burst_{name}") is not None:
            options[f"burst_{name}"] = options[f"burst10_{name}"] = getattr(args, f"burst_{name}")
    if args.parts:
        options["wakeups_parts"] = args.parts.split(",")
    options["http10"] = args.http10
    random.seed(args.seed)
    # Quick runs check that the harness works; their database counters need not settle.
    stack.SETTLE = options["settle"]
    raise_fd_limit()
    if args.pgbouncer:
        stack.PGBOUNCER = pgbouncer.PgBouncer(pool_mode="transaction").start()
    try:
        results = run(args, options)
        if stack.PGBOUNCER is not None:
            # What went through it: the pools' transactions, by database.
            results["pgbouncer"] = {row["database"]: int(row["total_xact_count"])
                                    for row in stack.PGBOUNCER.show("STATS")}
    finally:
        if stack.PGBOUNCER is not None:
            stack.PGBOUNCER.stop()
    RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    # A run of some parts only is not the scenario's run: kept by hand, if at all.
    keep = args.scenario in KEPT and not args.quick and not args.parts and not args.pgbouncer
    if keep:
        # The page names this file, and `python -m bench report` renders it again from it.
        results["results_file"] = f"bench/results/{args.scenario}.json"
    output = args.output or RESULTS / f"{stamp}-{args.scenario}{'-quick' if args.quick else ''}.json"
    output.write_text(json.dumps(results, indent=1))
    log(f"results in {output}")
    if keep:
        (RESULTS / f"{args.scenario}.json").write_text(json.dumps(results, indent=1))
        report.render(results)
    if args.docs:
        report.render(results, args.docs)
    return 1 if results.get("errors") else 0


def kept_results():
    """The results files kept in the repository, of the scenarios that keep them."""
    return [path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path
            for path in (RESULTS / f"{name}.json" for name in KEPT) if path.exists()]


def run(args, options):
    begin = time.monotonic()
    everything = tuple(name for name in SCENARIOS if name not in ALONE)
    scenarios = {"all": everything, "v2": V2_SCENARIOS}.get(args.scenario, (args.scenario,))
    results = {
        "command": "python -m bench " + " ".join(sys.argv[1:]) if sys.argv[0].endswith("__main__.py")
        else "python -m bench " + args.scenario,
        "quick": args.quick, "options": options, "machine": stack.machine(),
    }
    if any(s not in OWN_DATABASES for s in scenarios):
        run_shared(args, options, scenarios, results)
    # One that fails leaves the others' figures.
    for name, scenario in OWN_DATABASES.items():
        if name in scenarios:
            try:
                results[name] = scenario(options)
                # Figures kept, the run failed: what the server did that it must not.
                if isinstance(results[name], dict) and results[name].get("failed"):
                    results.setdefault("errors", {})[name] = "\n".join(results[name]["failed"])
            except Exception:
                results.setdefault("errors", {})[name] = traceback.format_exc()
                log(f"{name} failed:\n{results['errors'][name]}")
    results["elapsed_seconds"] = round(time.monotonic() - begin, 1)
    log(f"done in {results['elapsed_seconds']} s")
    return results


# Session kinds that are a baseline run of another target.
TARGET_OF = {"naive_small": "naive"}


def session_plan(args, options, phases):
    """The kinds of session a round runs: (kind, waiters, phases, options), the long poll first."""
    plan = [("longpoll", options["waiters"], phases, options)]
    if not args.no_baselines:
        plan.append(("naive", options["waiters"], phases,
                     dict(options, changes=options["naive_changes"], fanout_runs=1, fanout_wait=30, wake_wait=20,
                          ramp_deadline=90, quiesce=False, fanout_small=False)))
        small = [p for p in phases if p in ("held", "idle", "wake")]
        if options["naive_small_waiters"] and ("idle" in phases or "wake" in phases):
            # At 10,000 waiters the naive poll saturates its worker and polls fail; a
            # tenth of that shows its cost with every poll held.
            plan.append(("naive_small", options["naive_small_waiters"], small,
                         dict(options, changes=options["naive_changes"], wake_wait=20, quiesce=False)))
    if "held" in phases or "fanout" in phases:
        # The floor: what holding a request, and waking it, costs a bare Flask view on this stack.
        plan.append(("bare_wait", options["waiters"], [p for p in phases if p in ("held", "fanout")],
                     dict(options, fanout_small=False)))
        # The same poll with parking off (PARKED_POLLS=0): each waiting poll a greenlet.
        plan.append(("greenlets", options["waiters"], [p for p in phases if p in ("held", "wake", "fanout")],
                     options))
    return plan


def run_shared(args, options, scenarios, results):
    """Scenarios 1-7, on one database of users u0.. (stack.Database.seed)."""
    users_needed = max(options["waiters"], 4 * options["freshness_users"] + options["multi_waiters"])
    database = stack.Database(shared_url=args.database_url)
    try:
        database.migrate()
        database.seed(users_needed, options["small"])
        log(f"database {database.name}: {users_needed} users seeded")
        used = set()
        phases = [p for p in SESSION_PHASES if p in scenarios]
        if phases:
            plan = session_plan(args, options, phases)
            results["sessions"] = {kind: [] for kind, _, _, _ in plan}
            # Rounds of one session of each kind, the order reversed every other round
            # (A B B A ...), so that every ratio to a baseline pairs sessions of the same
            # round and drift over the run falls on both sides alike.
            for number in range(options["sessions"]):
                for kind, waiters, kind_phases, kind_options in (plan if number % 2 == 0 else plan[::-1]):
                    session = longpoll.run_session(database, TARGET_OF.get(kind, kind), waiters, kind_phases,
                                                   kind_options, used)
                    session["round"] = number
                    results["sessions"][kind].append(session)
        free = [f"u{i}" for i in range(users_needed) if i not in used]
        if "conditional" in scenarios:
            results["conditional"] = conditional.run(database, options)
        if "freshness" in scenarios:
            results["freshness"] = freshness.run(database, options, free[:4 * options["freshness_users"]])
        if "multi" in scenarios:
            results["multi"] = multi.run(database, options, free[-options["multi_waiters"]:])
    finally:
        database.drop()


if __name__ == "__main__":
    sys.exit(main())
