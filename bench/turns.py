"""``python -m bench.turns BEFORE_DIR``: this checkout against another, taking turns.

A change that should not change speed (a reorganisation) is checked by running
the same scenarios on the code before it and on the code now, alternately on
the same machine: round 1 runs before then now, round 2 now then before, and
so on, so that a machine growing busier or quieter weighs on both alike.
Each side runs its own ``python -m bench`` from its own checkout and ``.venv``
(``BEFORE_DIR`` is a checkout of the older commit with the project installed,
e.g. ``git worktree add /tmp/before COMMIT`` and its ``.venv``).

Per round, by ``--suite``: ``fanout`` (the default), the fan-out to every
waiting member (``fanout``, its floor the bare Flask view in the same session)
and the snapshot's ``304`` (``conditional``, against the bare hello-world
view); ``burst``, scenario 9's activity burst (``burst``): the unrelated
joins' wake latency, the time until every member caught up (and how many did),
the worker's CPU; ``burst10``, the same of scenario 16, the burst at ten times its rate;
``storm``, scenario 14's arrival of ``--waiters`` clients in one second, with its
floor (the bare Flask view) in the same run: until all wait, against the floor,
the worker's CPU for the arrival, memory per waiting poll; ``deploy``, scenario 15's
reload under that storm: until all wait again, the new worker's CPU until then;
``wake``, scenario 19's wake-ups at scale (``wakeups --parts wake``): each wake
source's p50 and p99 from a join's ``COMMIT`` to its poll's answer, 10,000 polls held.
Printed: each round's figures, the per-round ratio now/before, and the median
and spread of those ratios. Every run's full results are kept in the output file.

    python -m bench.turns /tmp/before --rounds 4 --output docs/turns.json
    python -m bench.turns /tmp/before --suite burst --rounds 3 --output bench/results/turns-burst.json
    python -m bench.turns /tmp/before --suite storm --rounds 2 --output bench/results/turns-storm.json
    python -m bench.turns /tmp/before --now /tmp/now --suite burst10 --rounds 2 --output bench/results/turns-burst10.json
    python -m bench.turns /tmp/before --suite wake --rounds 2 --output bench/results/turns-wake.json
"""
import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from .stack import log

HERE = Path(__file__).resolve().parent.parent


def figures(fanout, conditional):
    """The figures compared, from one side's results of one round."""
    session = fanout["sessions"]["longpoll"][0]
    floor = fanout["sessions"]["bare_wait"][0]
    everyone = [f for f in session["fanout"] if f["members"] == session["waiters"]]
    floor_fanout = [f for f in floor["fanout"] if f["members"] == floor["waiters"]]
    last = statistics.median(f["last"] for f in everyone)
    return {
        "fanout_last_seconds": last,
        "fanout_statements": statistics.median(f["statements"] for f in everyone),
        "fanout_to_floor": last / statistics.median(f["last"] for f in floor_fanout),
        "kib_per_poll": session["rss_per_poll"] / 1024,
        "rps_304": conditional["conditional"]["snapshot_304"]["rps"],
        "rps_304_to_hello": conditional["conditional"]["ratio"],
    }


def burst_figures(raw, scenario="burst"):
    """The figures compared, from one side's burst (or ``scenario``: burst10) of one round."""
    burst = raw[scenario][scenario]
    figures = {
        "join_wake_p50_seconds": burst["wake_p50"],
        "join_wake_p99_seconds": burst["wake_p99"],
        "caught_up_seconds": burst["drain_seconds"],
        "worker_cpu_percent": burst["worker_cpu_percent"],
    }
    if "worker_rss_before" in burst:  # measured since the memory target was reported
        figures["worker_rss_after_to_before"] = burst["worker_rss"] / burst["worker_rss_before"]
    return figures


def burst10_figures(raw):
    """``burst_figures`` of scenario 16, and how many members caught up: in a tenfold burst
    some used to be left behind (``caught_up_seconds`` is then the drain's whole wait)."""
    return dict(burst_figures(raw, "burst10"), members_caught_up=raw["burst10"]["burst10"]["caught_up"])


def storm_figures(raw):
    """The figures compared, from one side's arrival storm of one round."""
    rounds = raw["storm"]["storm"]["rounds"]
    session, floor = rounds["longpoll"][0], rounds["bare_wait"][0]
    return {
        "all_waiting_seconds": session["waiting_seconds"],
        "all_waiting_to_floor": session["waiting_seconds"] / floor["waiting_seconds"],
        "worker_cpu_seconds": session["worker_cpu_seconds"],
        "kib_per_poll": session["rss_per_poll"] / 1024,
    }


def deploy_figures(raw):
    """The figures compared, from one side's reload of one round."""
    deploy = raw["deploy"]["deploy"]
    return {
        "waiting_again_seconds": deploy["waiting_again_seconds"],
        "new_worker_cpu_seconds": deploy["new_worker_cpu_seconds"],
    }


def wake_figures(raw):
    """Each wake source's wake-up p50 and p99, from one side's scenario 19 (its wake part) of one round."""
    wake = raw["wakeups"]["wakeups"]["wake"]
    return {f"{source}_{quantile}_seconds": statistics.median(run["wake"][quantile] for run in runs)
            for source, runs in wake.items() for quantile in ("p50", "p99")}


# What each suite runs (scenario, its arguments given --waiters and --quick) and compares.
SUITES = {
    "fanout": (lambda waiters, quick: (("fanout", ["--waiters", str(waiters), *quick]), ("conditional", quick)),
               lambda raw: figures(raw["fanout"], raw["conditional"])),
    "burst": (lambda waiters, quick: (("burst", quick),), burst_figures),
    "burst10": (lambda waiters, quick: (("burst10", quick),), burst10_figures),
    "storm": (lambda waiters, quick: (("storm", ["--clients", str(waiters), "--rounds", "1", *quick]),),
              storm_figures),
    "deploy": (lambda waiters, quick: (("deploy", ["--clients", str(waiters), *quick]),), deploy_figures),
    "wake": (lambda waiters, quick: (("wakeups", ["--parts", "wake", "--rounds", "1", *quick]),), wake_figures),
}


def run_side(directory, scenario, arguments, output):
    command = [str(directory / ".venv" / "bin" / "python"), "-m", "bench", scenario,
               "--sessions", "1", "--no-baselines", "--output", str(output), *arguments]
    log(f"{directory}: {' '.join(command[1:])}")
    subprocess.run(command, cwd=directory, check=True)
    return json.loads(output.read_text())


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.turns", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("before", type=Path, help="a checkout of the older code, with its .venv")
    parser.add_argument("--now", type=Path, default=HERE,
                        help="the checkout of the newer code (default: this one)")
    parser.add_argument("--suite", choices=sorted(SUITES), default="fanout")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--waiters", type=int, default=10000)
    parser.add_argument("--quick", action="store_true", help="small runs, to check the harness")
    parser.add_argument("--output", type=Path, default=HERE / "bench" / "results" / "turns.json")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    sides = {"before": args.before.resolve(), "now": args.now.resolve()}
    scratch = HERE / "bench" / "results"
    scratch.mkdir(exist_ok=True)
    quick = ["--quick"] if args.quick else []
    scenarios, compared = SUITES[args.suite]
    rounds = []
    for number in range(args.rounds):
        order = ("before", "now") if number % 2 == 0 else ("now", "before")
        entry = {"order": order, "raw": {}, "figures": {}}
        for side in order:
            raw = {
                scenario: run_side(sides[side], scenario, extra, scratch / f"turns-{side}-{scenario}.json")
                for scenario, extra in scenarios(args.waiters, quick)
            }
            entry["raw"][side] = raw
            entry["figures"][side] = compared(raw)
        entry["ratios"] = {name: entry["figures"]["now"][name] / entry["figures"]["before"][name]
                           for name in entry["figures"]["now"]}
        rounds.append(entry)
        log(f"round {number + 1}: " + ", ".join(f"{k} {v:.3f}" for k, v in entry["ratios"].items()))
    summary = {
        name: {"median": statistics.median(r["ratios"][name] for r in rounds),
               "min": min(r["ratios"][name] for r in rounds),
               "max": max(r["ratios"][name] for r in rounds)}
        for name in rounds[0]["ratios"]
    }
    result = {"command": "python -m bench.turns " + " ".join(sys.argv[1:] if argv is None else argv),
              "suite": args.suite,
              "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "commits": {side: commit(path) for side, path in sides.items()},
              "rounds": rounds, "ratios_now_to_before": summary}
    args.output.write_text(json.dumps(result, indent=1))
    for name, spread in summary.items():
        log(f"{name}: now/before median {spread['median']:.3f} (runs {spread['min']:.3f}-{spread['max']:.3f})")
    log(f"results in {args.output}")
    return 0


def commit(path):
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=path, capture_output=True,
                          text=True, check=True).stdout.strip()


if __name__ == "__main__":
    sys.exit(main())
