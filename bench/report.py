"""Render recorded results as docs/benchmarks.md and two plots in docs/.

The tables come from the results JSON; ``bench/notes.md`` (the profiles, what
bounds a missed target and what would move it) is appended as written.

Scenarios 8-18 (the change log v2, presence, the wake sources, storms, topics, typing) each render as a block of their
own, with the command and machine of the run they come from: results of those
scenarios alone replace their blocks in the existing page and leave the rest as
it is, and a full render keeps the blocks of the page for scenarios its results
lack.
"""
import re
from collections import Counter
from pathlib import Path

from .stack import median

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
NOTES = Path(__file__).resolve().parent / "notes.md"
SHARED_KEYS = ("sessions", "conditional", "freshness", "multi")
V2_HEADING = "## 8-10. Change log v2: community-wide changes written once"
PRESENCE_HEADING = "## 11. Presence"
SCALEOUT_HEADING = "## 12-13. Scale-out: the wake sources"
STORMS_HEADING = "## 14-16. Arrival storms, a reload under one, a tenfold burst"
TOPICS_HEADING = "## 17. Topics, payloads and latest values"
TYPING_HEADING = "## 18. Typing in a busy thread"
WAKEUPS_HEADING = "## 19. The wake sources side by side: wake-ups at scale, idle cost, a watcher's failover"
DECODING_HEADING = "## 20. Logical decoding against the head watcher"
BLOCK = re.compile(r"<!-- bench:(\w+) -->\n(.*?)<!-- /bench:\1 -->\n", re.DOTALL)


def ms(seconds):
    return "n/a" if seconds is None else f"{seconds * 1000:.1f} ms"


def num(value, digits=0):
    return "n/a" if value is None else f"{value:,.{digits}f}"


def ratio(a, b):
    return "n/a" if not a or not b else f"{a / b:,.1f}x"


def factor_text(value):
    return f"{value:,.0f}x" if value >= 10 else f"{value:.1f}x" if value >= 1 else f"{value:.2f}x"


def percent(value):
    return f"{value:.0%}"


def verdict(ok):
    return "met" if ok else "**missed**"


def sessions(results, kind):
    return results.get("sessions", {}).get(kind, [])


def per_run(pairs):
    """The ratio of each pair (the figure, its baseline) that has both, in run order."""
    return [a / b for a, b in pairs if a and b]


def paired(results, kind, baseline, value):
    """Per-round ratios ``value(session of kind) / value(baseline's session of the same round)``.

    Sessions of a round ran one after another (harness: ``bench.__main__``); sessions
    recorded without a round were not run in turns and pair with nothing.
    """
    of_baseline = {r["round"]: r for r in sessions(results, baseline) if "round" in r}
    return per_run((value(r), value(of_baseline[r["round"]])) for r in sessions(results, kind)
                   if r.get("round") in of_baseline)


def spread(ratios, show=factor_text):
    """The median of per-run ratios and their spread: ``1.1x (0.9-1.3x)``, or n/a without any."""
    if not ratios:
        return "n/a"
    if len(ratios) == 1:
        return f"{show(ratios[0])} (one run)"
    return f"{show(median(ratios))} ({show(min(ratios))[:-1]}-{show(max(ratios))})"


def rss(session):
    return session.get("rss_per_poll")


def wake_p50(session):
    return session.get("wake", {}).get("p50")


def idle_rate(session):
    return session.get("idle", {}).get("transactions_per_second")


def fanout(key):
    """A session's median ``key`` over its fan-outs to everyone (``c-all``)."""
    def value(session):
        return median([f[key] for f in session.get("fanout", []) if f["community"] == "c-all"])
    return value


def med(entries, *path):
    values = []
    for entry in entries:
        for key in path:
            entry = entry.get(key) if isinstance(entry, dict) else None
            if entry is None:
                break
        if isinstance(entry, (int, float)):
            values.append(entry)
    return median(values)


def render(results, docs=DOCS):
    """Write ``benchmarks.md`` (and the plots) into ``docs``: the whole page, or scenarios 8-13's blocks."""
    docs = Path(docs)
    docs.mkdir(exist_ok=True)
    page = docs / "benchmarks.md"
    existing = page.read_text() if page.exists() else ""
    if any(key in results for key in SHARED_KEYS):
        lines = shared_part(results, docs)
    else:
        lines = kept_shared_part(existing)
    kept = {match[1]: match[2] for match in BLOCK.finditer(existing)}
    for heading, intro, blocks in SECTIONS:
        section(results, kept, heading, intro, blocks, lines.append)
    if NOTES.exists():
        lines.append(NOTES.read_text().rstrip())
        lines.append("")
    page.write_text("\n".join(lines) + "\n")


def kept_shared_part(existing):
    """The page's part before scenarios 8-13 and the notes, as it is (a bare title on a new page)."""
    end = len(existing)
    for marker in (V2_HEADING, PRESENCE_HEADING, SCALEOUT_HEADING, STORMS_HEADING, TOPICS_HEADING,
                   TYPING_HEADING, WAKEUPS_HEADING, DECODING_HEADING, first_line(NOTES)):
        found = existing.find("\n" + marker + "\n") if marker else -1
        if found >= 0:
            end = min(end, found + 1)
    kept = existing[:end].rstrip("\n")
    return (kept or "# Benchmarks").split("\n") + [""]


def first_line(path):
    return path.read_text().split("\n", 1)[0] if path.exists() else None


def shared_part(results, docs):
    """Scenarios 1-7: how they were made, the summary, the plots and the details."""
    plots = draw(results, docs)
    lines = []
    add = lines.append
    machine = results["machine"]
    options = results["options"]
    long_runs = sessions(results, "longpoll")
    naive_runs = sessions(results, "naive")
    add("# Benchmarks")
    add("")
    add("How fast and how cheap the long poll is, measured against the designs it replaces: a naive")
    add("long poll that re-reads the database every second while it waits, fixed-interval polling of")
    add("the snapshot without ETags, and a hello-world Flask view on the same stack. Harness and")
    add("method: [bench/README.md](../bench/README.md).")
    add("")
    add("## How these figures were made")
    add("")
    add(f"- Command: `{results['command']}` (from the repository root, with the virtualenv's python),")
    add(f"  {results['elapsed_seconds'] / 60:.1f} minutes.")
    add(f"- Date: {machine['date']}; code at commit `{machine.get('commit') or 'unknown'}`.")
    add(f"- Machine: {machine['cpu']}, {machine['cores']} cores (shared, noisy), {machine['memory_gib']} GiB, "
        f"Linux {machine['kernel']}, Python {machine['python']}, "
        + ", ".join(f"{k} {v}" for k, v in machine["packages"].items()) + f", {machine['postgresql_client']}.")
    add("- Everything on one machine over loopback: PostgreSQL, the servers under test (one gunicorn")
    add("  gevent worker unless stated) and the load generator, a gevent process of its own.")
    add(f"- Repetitions: {len(long_runs)} rounds of sessions of {options['waiters']:,} held polls, each round one "
        f"session of the long poll and of each baseline ({len(naive_runs)} naive in all), taking turns; "
        f"{options['runs']} rounds of each throughput test.")
    add("  Figures are medians over runs unless marked. A ratio to a baseline is the median of per-run")
    add("  ratios, each comparing figures of one round, with their spread (min-max) in brackets.")
    add(f"- Results: {results_line(results)}")
    add("")
    add("## Summary")
    add("")
    add("| # | Scenario | Target | Measured | Baseline | Ratio | |")
    add("| --- | --- | --- | --- | --- | --- | --- |")
    summary_rows(results, add)
    add("")
    if plots:
        for title, name in plots:
            add(f"![{title}]({name})")
            add("")
    details(results, add)
    return lines


def results_line(results, what="this page"):
    """Where the figures can be re-derived from."""
    if not results.get("results_file"):
        return "not kept in the repository; these figures cannot be re-derived."
    return (f"`{results['results_file']}`; `python -m bench report {results['results_file']}` "
            f"renders {what} from it.")


def summary_rows(results, add):
    long_runs = sessions(results, "longpoll")
    naive_runs = sessions(results, "naive")
    n = results["options"]["waiters"]
    if long_runs:
        held = min(r["waiting"] for r in long_runs)
        failures = max(r["failures"] for r in long_runs)
        per_poll = med(long_runs, "rss_per_poll")
        naive_per_poll = med(naive_runs, "rss_per_poll")
        floor = med(sessions(results, "bare_wait"), "rss_per_poll")
        greenlets = med(sessions(results, "greenlets"), "rss_per_poll")
        add(f"| 1 | Held polls | {n:,} held, none failed, RSS ≤ 15 KB/poll | {held:,} held, {failures} failed, "
            f"{num(per_poll / 1000, 1)} KB/poll | naive: {num((naive_per_poll or 0) / 1000, 1)} KB/poll; bare Flask "
            f"view waiting on an event: {num((floor or 0) / 1000, 1)} KB; held in greenlets "
            f"(`PARKED_POLLS=0`): {num((greenlets or 0) / 1000, 1)} KB | "
            f"naive uses {spread(paired(results, 'naive', 'longpoll', rss))} as much; "
            f"{spread(paired(results, 'longpoll', 'bare_wait', rss))} the floor; "
            f"{spread(paired(results, 'longpoll', 'greenlets', rss))} the greenlets' | "
            f"{verdict(held >= n and failures == 0 and per_poll <= 15000)} |")
    if long_runs and "wake" in long_runs[0]:
        p50 = med(long_runs, "wake", "p50")
        p99 = med(long_runs, "wake", "p99")
        naive_p50 = med(naive_runs, "wake", "p50")
        small = sessions(results, "naive_small")
        small_p50 = med(small, "wake", "p50")
        naive_answered = sum(r["wake"]["answered"] for r in naive_runs)
        naive_changes = sum(r["wake"]["changes"] for r in naive_runs)
        add(f"| 2 | Wake latency, {n:,} idle waiters | p50 ≤ 5 ms, p99 ≤ 20 ms | p50 {ms(p50)}, p99 {ms(p99)} | "
            f"naive: {naive_answered}/{naive_changes} answered in time, p50 {ms(naive_p50)}; naive at "
            f"{results['options'].get('naive_small_waiters', 0):,} waiters: p50 {ms(small_p50)}, "
            f"p99 {ms(med(small, 'wake', 'p99'))} | p50 {spread(paired(results, 'naive', 'longpoll', wake_p50))} "
            f"lower than the naive poll's | {verdict(p50 <= 0.005 and p99 <= 0.020)} |")
    if long_runs and "fanout" in long_runs[0]:
        big = [f for r in long_runs for f in r["fanout"] if f["community"] == "c-all"]
        small = [f for r in long_runs for f in r["fanout"] if f["community"] == "c-small"]
        last = median([f["last"] for f in big])
        all_answered = all(f["answered"] >= f["members"] for f in big)
        statements = median([f["statements"] for f in big])
        small_statements = median([f["statements"] for f in small])
        naive_big = [f for r in naive_runs for f in r["fanout"] if f["community"] == "c-all"]
        naive_last = median([f["last"] for f in naive_big])
        naive_statements = median([f["statements"] for f in naive_big])
        floor_last = median([f["last"] for r in sessions(results, "bare_wait") for f in r.get("fanout", [])])
        greenlets_last = median([f["last"] for r in sessions(results, "greenlets") for f in r.get("fanout", [])
                                 if f["community"] == "c-all"])
        add(f"| 3 | Fan-out: rename, {n:,} members waiting | all within 1 s; queries independent of members | "
            f"last answer {ms(last)}; {num(statements)} statements ({num(small_statements)} for "
            f"{results['options']['small']:,} members) | naive: last {ms(naive_last)}, {num(naive_statements)} "
            f"statements; bare Flask views woken by one event: last {ms(floor_last)}; held in greenlets "
            f"(`PARKED_POLLS=0`): last {ms(greenlets_last)} | "
            f"{spread(paired(results, 'naive', 'longpoll', fanout('statements')))} fewer statements; last answer "
            f"{spread(paired(results, 'longpoll', 'bare_wait', fanout('last')))} the floor's, "
            f"{spread(paired(results, 'longpoll', 'greenlets', fanout('last')))} the greenlets' | "
            f"{verdict(all_answered and last <= 1.0 and statements == small_statements)} |")
    if long_runs and "idle" in long_runs[0]:
        rate = med(long_runs, "idle", "transactions_per_second")
        naive_rate = med(naive_runs, "idle", "transactions_per_second")
        add(f"| 4 | Idle database cost, {n:,} waiting | ≤ 1 query/s | {num(rate, 2)} transactions/s, "
            f"{num(med(long_runs, 'idle', 'statements_per_second'), 2)} statements/s | naive: "
            f"{num(naive_rate)} transactions/s, {num(med(naive_runs, 'idle', 'statements_per_second'))} "
            f"statements/s ({num(max((r['failures'] for r in naive_runs), default=0))} polls failed); at "
            f"{results['options'].get('naive_small_waiters', 0):,} waiters "
            f"{num(med(sessions(results, 'naive_small'), 'idle', 'transactions_per_second'))} transactions/s, "
            f"{num(med(sessions(results, 'naive_small'), 'idle', 'statements_per_second'))} statements/s | "
            f"{spread(paired(results, 'naive', 'longpoll', idle_rate)) if rate else 'n/a (zero)'} | "
            f"{verdict(rate <= 1.0)} |")
    cond = results.get("conditional")
    if cond:
        add(f"| 5 | Conditional snapshots (304) | ≥ 80% of hello-world; ≤ 1 query/request | "
            f"{num(cond['snapshot_304']['rps'])} req/s, {num(cond['statements_per_request'], 2)} statements/request | "
            f"bare hello {num(cond['hello_bare']['rps'])} req/s; in-app hello {num(cond['hello_in_app']['rps'])} req/s | "
            f"{spread(cond['ratios'], percent)} of bare, {spread(cond['ratios_in_app'], percent)} of in-app | "
            f"{verdict(cond['ratio'] >= 0.8 and cond['statements_per_request'] <= 1.0)} |")
    fresh = results.get("freshness")
    if fresh:
        s = fresh["strategies"]
        lp = s["long_poll"]
        add(f"| 6 | Freshness per request, idle users | (comparison) | long poll: {num(lp['requests_per_client_hour'])} "
            f"req/client-h, staleness {ms(lp['staleness_mean'])} | smart {num(s['smart_poll']['requests_per_client_hour'])}"
            f" req/h, {num(s['smart_poll']['staleness_mean'], 1)} s; 10 s: {num(s['fixed_10s']['requests_per_client_hour'])}"
            f" req/h, {num(s['fixed_10s']['staleness_mean'], 1)} s; 5 min: {num(s['fixed_5min']['requests_per_client_hour'])}"
            f" req/h, {num(s['fixed_5min']['staleness_mean'], 0)} s | staleness "
            f"{ratio(s['fixed_10s']['staleness_mean'], lp['staleness_mean'])} lower than 10 s polling | |")
    multi = results.get("multi")
    if multi:
        cross = multi["cross_host"]
        add(f"| 7 | Two hosts × two workers, one PostgreSQL | (report) | cross-host write→answer p50 "
            f"{ms(cross['p50'])}, p99 {ms(cross['p99'])}; {multi['answered']}/{multi['writes']} answered | | | "
            f"{verdict(multi['answered'] == multi['writes'])} |")


def details(results, add):
    long_runs = sessions(results, "longpoll")
    naive_runs = sessions(results, "naive")
    if long_runs:
        add("## 1-4. Held polls, idle cost, wake latency, fan-out")
        add("")
        add("Per session: a fresh server, then one poll per user ramped up (a reset poll, then a long poll")
        add("following its cursor, `timeout=290` so none times out mid-session).")
        add("")
        add("| Session | Held | Failed | Ramp | RSS before → after | Per poll | Idle transactions/s | Idle statements/s "
            "| Idle worker CPU | Wake p50 / p90 / p99 / max | Fan-out last answer | Fan-out statements (small / all) |")
        add("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for kind, runs in (("long poll", long_runs), ("naive", naive_runs),
                           (f"naive, {results['options'].get('naive_small_waiters', 0):,} waiters",
                            sessions(results, "naive_small")),
                           ("bare wait", sessions(results, "bare_wait")),
                           ("greenlets (`PARKED_POLLS=0`)", sessions(results, "greenlets"))):
            for number, r in enumerate(runs, 1):
                idle = r.get("idle", {})
                wake = r.get("wake", {})
                fan = r.get("fanout", [])
                small = [f["statements"] for f in fan if f["community"] == "c-small"]
                big = [f for f in fan if f["community"] == "c-all"]
                add(f"| {kind} {number} | {r['waiting']:,} | {r['failures']} | {r['ramp_seconds']} s | "
                    f"{r['rss_before'] / 2**20:.0f} → {r['rss_after'] / 2**20:.0f} MiB | "
                    f"{r['rss_per_poll'] / 1000:.1f} KB | {num(idle.get('transactions_per_second'), 2)} | "
                    f"{num(idle.get('statements_per_second'), 2)} | {num(idle.get('worker_cpu_percent'), 1)}% | "
                    f"{ms(wake.get('p50'))} / {ms(wake.get('p90'))} / {ms(wake.get('p99'))} / {ms(wake.get('max'))} "
                    f"({wake.get('answered', 0)}/{wake.get('changes', 0)}) | "
                    + ", ".join(f"{ms(f['last'])} ({f['answered']:,}/{f['members']:,}"
                                + (f", worker CPU {f['worker_cpu_seconds']:.1f} s" if "worker_cpu_seconds" in f else "")
                                + ")" for f in big)
                    + f" | {', '.join(num(x) for x in small)} / {', '.join(num(f['statements']) for f in big)} |")
        add("")
        ratio_table(results, add)
        add("Idle transactions are PostgreSQL's own count (`pg_stat_database.xact_commit + xact_rollback` of")
        add("the run's database, read after statistics settled); statements are the server's")
        add("`community_sync_db_queries_total`. The naive idle window is shorter (its rate is steady")
        add("within seconds).")
        add("")
    cond = results.get("conditional")
    if cond:
        add("## 5. Conditional snapshots")
        add("")
        add(f"{cond['connections']} keep-alive connections, {cond['load_seconds']} s per round, the three servers")
        add("taking turns; `GET /me/communities` with a matching `If-None-Match` (all 304). A ratio compares")
        add("figures of one round; the last row gives the median of the rounds' figures and of their ratios.")
        add("")
        add("| Round | 304 req/s | bare hello req/s | in-app hello req/s | 304 / bare | 304 / in-app | "
            "worker CPU per request (304 / bare / in-app) |")
        add("| --- | --- | --- | --- | --- | --- | --- |")
        rounds = cond["rounds"]
        for i, (s, h, a) in enumerate(zip(rounds["snapshot_304"], rounds["hello_bare"], rounds["hello_in_app"]), 1):
            add(f"| {i} | {s['rps']:,.0f} | {h['rps']:,.0f} | {a['rps']:,.0f} | {s['rps'] / h['rps']:.0%} | "
                f"{s['rps'] / a['rps']:.0%} | {s['worker_cpu_us_per_request']:.0f} / "
                f"{h['worker_cpu_us_per_request']:.0f} / {a['worker_cpu_us_per_request']:.0f} µs |")
        add(f"| median (min-max) | {num(cond['snapshot_304']['rps'])} | {num(cond['hello_bare']['rps'])} | "
            f"{num(cond['hello_in_app']['rps'])} | {spread(cond['ratios'], percent)} | "
            f"{spread(cond['ratios_in_app'], percent)} | |")
        add("")
        add(f"Statements per 304 (server counter): {cond['statements_per_request']:.2f}. PostgreSQL transactions "
            f"per snapshot request: {cond['transactions_per_request']:.2f}. Latency p50/p99: 304 "
            f"{ms(cond['snapshot_304']['p50'])}/{ms(cond['snapshot_304']['p99'])}, bare hello "
            f"{ms(cond['hello_bare']['p50'])}/{ms(cond['hello_bare']['p99'])}.")
        add("")
    fresh = results.get("freshness")
    if fresh:
        add("## 6. Freshness per request")
        add("")
        add(f"{fresh['users_per_group']} idle users per strategy, side by side on one worker for "
            f"{fresh['window_seconds']} s, with changes committed to random users of each group.")
        add("")
        add("| Strategy | Requests per client-hour | Mean staleness | Max staleness | Bytes per answer | "
            "Staleness from |")
        add("| --- | --- | --- | --- | --- | --- |")
        names = {"long_poll": "long poll (timeout 25 s)", "smart_poll": "smart polling (ETag, advised interval)",
                 "fixed_10s": "fixed 10 s, no ETag", "fixed_5min": "fixed 5 min, no ETag"}
        for name, f in fresh["strategies"].items():
            source = f["staleness_source"]
            if f.get("staleness_measured_mean") is not None and source != "measured":
                source += f"; measured {f['staleness_measured_mean']:.1f} s over {f['staleness_observed']} changes seen"
            elif source == "measured":
                source += f" ({f['staleness_observed']} changes)"
            add(f"| {names[name]} | {num(f['requests_per_client_hour'], 1)} | {fmt_s(f['staleness_mean'])} | "
                f"{fmt_s(f['staleness_max'])} | {num(f['bytes_per_request'])} | {source} |")
        add("")
    multi = results.get("multi")
    if multi:
        add("## 7. Two hosts, two workers each, one PostgreSQL")
        add("")
        add(f"{multi['waiters']} polls waiting across both hosts; {multi['writes']} writes through the HTTP API")
        add("(`PUT /communities/{id}/members/me`), alternating between the hosts. Latency runs from sending")
        add("the write request to the waiting poll's answer, so it includes the write request itself.")
        add("")
        add("| Writer → poller | Writes | p50 | p99 | max | write request p50 |")
        add("| --- | --- | --- | --- | --- | --- |")
        for label in ("cross_host", "same_host", "all"):
            m = multi[label]
            add(f"| {label.replace('_', ' ')} | {m['count']} | {ms(m['p50'])} | {ms(m['p99'])} | {ms(m['max'])} | "
                f"{ms(m['write_request_p50'])} |")
        add("")


# Scenarios 1-4's comparisons: (heading, the figure's kind, its baseline's, the value compared).
COMPARISONS = (
    ("Memory: naive / long poll", "naive", "longpoll", rss),
    ("Memory: long poll / floor", "longpoll", "bare_wait", rss),
    ("Memory: long poll / greenlets", "longpoll", "greenlets", rss),
    ("Wake p50: naive / long poll", "naive", "longpoll", wake_p50),
    ("Fan-out last answer: long poll / floor", "longpoll", "bare_wait", fanout("last")),
    ("Fan-out last answer: long poll / greenlets", "longpoll", "greenlets", fanout("last")),
    ("Fan-out statements: naive / long poll", "naive", "longpoll", fanout("statements")),
    ("Idle transactions: naive / long poll", "naive", "longpoll", idle_rate),
)


def ratio_table(results, add):
    """Each round's ratios of scenarios 1-4, and their median and spread (what the summary quotes)."""
    columns = [(label, paired(results, kind, baseline, value)) for label, kind, baseline, value in COMPARISONS]
    columns = [(label, ratios) for label, ratios in columns if ratios]
    if not columns:
        add("No session of this run was paired with a baseline's in the same round: no per-run ratios.")
        add("")
        return
    rounds = max(len(ratios) for _, ratios in columns)
    add("Ratios per round (each round ran one session of every kind, one after another, in reverse order")
    add("every other round); the summary quotes their median and, in brackets, their spread (min-max).")
    add("")
    add("| Round | " + " | ".join(label for label, _ in columns) + " |")
    add("| --- |" + " --- |" * len(columns))
    for number in range(rounds):
        add(f"| {number + 1} | " + " | ".join(factor_text(ratios[number]) if number < len(ratios) else ""
                                              for _, ratios in columns) + " |")
    add("| median (min-max) | " + " | ".join(spread(ratios) for _, ratios in columns) + " |")
    add("")


def fmt_s(seconds):
    if seconds is None:
        return "n/a"
    return ms(seconds) if seconds < 1 else f"{seconds:.1f} s"


def draw(results, docs):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    plots = []
    long_runs = sessions(results, "longpoll")
    naive_runs = sessions(results, "naive")
    if long_runs and "wake" in long_runs[0]:
        figure, axis = plt.subplots(figsize=(7, 4))
        for label, runs, colour in (("long poll", long_runs, "tab:blue"), ("naive re-query", naive_runs, "tab:red")):
            values = sorted(1000 * x for r in runs for x in r["wake"]["latencies"])
            if values:
                axis.plot(values, [(i + 1) / len(values) for i in range(len(values))], label=label, color=colour)
        axis.set_xscale("log")
        axis.set_xlabel("commit → answer at the client (ms, log scale)")
        axis.set_ylabel("fraction of changes")
        axis.set_title(f"Wake latency with {results['options']['waiters']:,} waiting polls, one worker")
        axis.axvline(5, color="grey", linestyle=":", linewidth=1)
        axis.axvline(20, color="grey", linestyle="--", linewidth=1)
        axis.grid(True, which="both", alpha=0.3)
        axis.legend()
        figure.tight_layout()
        figure.savefig(docs / "bench-wake-latency.png", dpi=110)
        plt.close(figure)
        plots.append(("Wake latency", "bench-wake-latency.png"))
    fresh = results.get("freshness")
    if fresh:
        figure, axis = plt.subplots(figsize=(7, 4))
        names = {"long_poll": "long poll", "smart_poll": "smart polling", "fixed_10s": "fixed 10 s",
                 "fixed_5min": "fixed 5 min"}
        for name, f in fresh["strategies"].items():
            if f["staleness_mean"]:
                axis.scatter(f["requests_per_client_hour"], f["staleness_mean"], s=60)
                axis.annotate(names[name], (f["requests_per_client_hour"], f["staleness_mean"]),
                              textcoords="offset points", xytext=(6, 4))
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlabel("requests per client-hour (log)")
        axis.set_ylabel("mean staleness, s (log)")
        axis.set_title("Freshness against requests, idle users")
        axis.grid(True, which="both", alpha=0.3)
        figure.tight_layout()
        figure.savefig(docs / "bench-freshness.png", dpi=110)
        plt.close(figure)
        plots.append(("Freshness against requests", "bench-freshness.png"))
    return plots


# -- scenarios 8-13: on databases of their own ---------------------------------------------


def section(results, kept, heading, intro, scenarios, add):
    """A section of blocks, one per scenario: rendered from ``results``, else ``kept`` from the page."""
    blocks = {}
    for name, render_block in scenarios.items():
        if name in results:
            lines = []
            render_block(results, lines.append)
            blocks[name] = "\n".join(lines) + "\n"
        elif name in kept:
            blocks[name] = kept[name]
    if not blocks:
        return
    add(heading)
    add("")
    for line in intro:
        add(line)
    add("")
    for name in scenarios:
        if name in blocks:
            add(f"<!-- bench:{name} -->")
            add(blocks[name].rstrip("\n"))
            add(f"<!-- /bench:{name} -->")
            add("")


V2_INTRO = (
    "Since migration 0002 a rename, a deletion and activity are one community-scoped row in the",
    "change log (`user_id` NULL), resolved to the community's members when read; before it",
    "(revision 0001) a rename wrote one row per member inside the writer's transaction. Each",
    "scenario runs on databases of its own, seeded in bulk with SQL, against real gunicorn",
    "servers (one gevent worker), and says which run its figures come from. What bounds the",
    "targets missed here, and the profiles behind it, are under",
    "[Profiles](#profiles-and-what-bounds-the-targets-that-were-missed) below.",
)
PRESENCE_INTRO = (
    "A held poll is the heartbeat: each worker knows its own online users and shares them through",
    "two UNLOGGED tables, one statement per worker per `PRESENCE_INTERVAL` (10 s) plus one per batch",
    "of arrivals or departures (design: [design.md](design.md), API: [api.md](api.md#presence)).",
)


def factor(a, b):
    """``a / b`` as a factor, with the digits its size needs; n/a without both."""
    if not a or not b:
        return "n/a"
    return factor_text(a / b)


def run_line(results, add):
    machine = results["machine"]
    minutes = results["elapsed_seconds"] / 60
    quick = " (--quick)" if results.get("quick") and "--quick" not in results["command"] else ""
    add(f"Run: `{results['command']}`{quick}, {minutes:.1f} minutes, {machine['date']}, commit `{machine.get('commit') or 'unknown'}`; "
        f"{machine['cpu']}, {machine['cores']} cores (shared), {machine['postgresql_client']}.")
    add(f"Results: {results_line(results, 'this section')}")
    add("")


def rename_block(results, add):
    r = results["rename"]
    before, after, waiting = r["before"], r["after"], r["waiting"]
    add(f"### 8. Rename a community of {r['members']:,} members")
    add("")
    run_line(results, add)
    add(f"Two databases seeded alike ({r['members']:,} users, all members of `{r['community']}`, each also in one")
    add(f"of 100 groups), one at revision {r['revisions']['before']} (before), one at head (after). "
        f"{before['sql']['runs']} renames on each, taking")
    add("turns, the other first every other run: `UPDATE communities SET name` from SQL (timed from the")
    add("transaction's first statement to `COMMIT` returning) and `PATCH /communities/{id}` as a platform")
    add("admin (timed from request to response; the server runs the same code on both schemas); rows")
    add("written counted in `changes`.")
    add("")
    add("| | Target | Before (0001) | After (head) | Before / after, per run: median (min-max) | |")
    add("| --- | --- | --- | --- | --- | --- |")
    for path, label in (("sql", "Writer, SQL `UPDATE`: p50 (max)"), ("api", "Writer, `PATCH` request: p50 (max)")):
        b, a = before[path], after[path]
        add(f"| {label} | < 20 ms | {ms(b['p50'])} ({ms(b['max'])}) | {ms(a['p50'])} ({ms(a['max'])}) | "
            f"{spread(per_run(zip(b['seconds'], a['seconds'])))} | {verdict(a['p50'] < 0.020)} |")
    add(f"| Change rows written per rename | O(1) | {num(before['sql']['rows'])} | {num(after['sql']['rows'])} | "
        f"{factor(before['sql']['rows'], after['sql']['rows'])} | "
        f"{verdict(after['sql']['rows'] == 1 and after['api']['rows'] == 1)} |")
    add("")
    add(f"Every run, in ms: before SQL {runs(before['sql'])}; after SQL {runs(after['sql'])}; before PATCH "
        f"{runs(before['api'])}; after PATCH {runs(after['api'])}.")
    add("")
    all_there = waiting["answered"] >= waiting["waiters"] and waiting["with_rename"] >= waiting["waiters"]
    add(f"**At head, with {waiting['waiters']:,} of the members waiting** (long polls held as in scenario 3, the")
    add("rename from SQL, the members not polling again after their answer):")
    add("")
    add("| Waiting | Answered | With the rename | Writer's transaction | Rows written | First answer | p50 | "
        "Last answer | Statements | Worker CPU | |")
    add("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    add(f"| {waiting['held']:,} | {waiting['answered']:,} | {waiting['with_rename']:,} | "
        f"{ms(waiting['writer_seconds'])} | {num(waiting['rows'])} | {ms(waiting['first'])} | {ms(waiting['p50'])} | {ms(waiting['last'])} | "
        f"{num(waiting['statements'])} | {waiting['worker_cpu_seconds']:.1f} s | {verdict(all_there)} |")
    add("")
    add("Answer times run from `COMMIT` returning in the writer to the answer's last byte at the client;")
    add("statements are the server's `community_sync_db_queries_total` over that time.")
    add("")


def runs(entry):
    return ", ".join(f"{s * 1000:.1f}" for s in entry["seconds"])


# Scenario 9's targets and its tenfold version's: unrelated joins' wake p99 below the
# first, every member caught up within the second (seconds after the burst's end).
BURST_TARGETS = {"burst": (0.100, 2.0), "burst10": (1.0, 5.0)}
# Scenario 9's worker memory after the drain, against before the burst.
BURST_MEMORY_WITHIN = 0.10


def ms_or_s(seconds):
    if seconds is None:
        return "n/a"
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else fmt_s(seconds)


def burst_block(results, add, key="burst", number=9):
    b = results[key]
    quiet = b.get("quiet", {})
    per = b["answers_per_member"]
    add(f"### {number}. Activity burst: {b['rate']} rows/s for {b['publish_seconds']:.0f} s to "
        f"{b['members']:,} waiting members")
    add("")
    run_line(results, add)
    if key != "burst":
        add("Scenario 9 at ten times its rate, everything else as it is (`python -m bench burst10`).")
        add("")
    add(f"{b['members']:,} members of one community and {b['bystanders']} other users hold long polls on one worker,")
    add("each following its cursor and polling again at once after every answer, as the browser client")
    writers = b.get("writers", 1)
    add(f"does. Activity is published in SQL (`INSERT INTO activity`), one row per transaction, "
        f"{b['rate']} a second{f' from {writers} connections' if writers > 1 else ''};")
    add("every 100 ms one of the other users joins another community (also SQL), and the time from its")
    add("`COMMIT` to its poll's answer at the client is its wake latency. The other users' polls run in a")
    add("load generator of their own (as each browser reads only its own answers; the members' answers")
    add("keep theirs busy). The same joins, with no burst, on the same server just before it are the")
    add("baseline. Afterwards every member's client state is compared with the snapshot")
    add("(`GET /me/communities`) the server gives that member.")
    add("")
    wake_within, caught_up_within = BURST_TARGETS[key]
    ok_wake = b["wake_p99"] is not None and b["wake_p99"] < wake_within and b["joins_answered"] == b["joins"]
    ok_kept = b["mismatches"] == 0 and b["caught_up"] == b["members"] and b["compared"] == b["members"]
    ok_caught_up = b["caught_up"] == b["members"] and b["drain_seconds"] <= caught_up_within
    add("| | Target | During the burst | Baseline: no burst | Ratio | |")
    add("| --- | --- | --- | --- | --- | --- |")
    add(f"| Published | {b['rate']} rows/s | {num(b['published'])} rows in {b['publish_seconds']:.1f} s "
        f"({b['published_rate']:.0f}/s) | | | |")
    add(f"| Unrelated join, wake latency p50 / p99 (max) | p99 < {ms_or_s(wake_within)} | {ms(b['wake_p50'])} / {ms(b['wake_p99'])} "
        f"({ms(b['wake_max'])}), {b['joins_answered']}/{b['joins']} answered | {ms(quiet.get('wake_p50'))} / "
        f"{ms(quiet.get('wake_p99'))}, {quiet.get('joins_answered', 0)}/{quiet.get('joins', 0)} answered | "
        f"p99 {factor(b['wake_p99'], quiet.get('wake_p99'))} | {verdict(ok_wake)} |")
    add(f"| Answers per member: p50 (min-max) | (report) | {num(per['p50'])} ({per['min']}-{per['max']}), "
        f"{b['answers_per_member_second']:.2f}/s | | | |")
    add(f"| Answers, all clients | (report) | {num(b['answers_total'])} | | | |")
    add(f"| Statements per second (server counter) | (report) | {num(b['statements_per_second'])} | "
        f"{num(quiet.get('statements_per_second'))} | {factor(b['statements_per_second'], quiet.get('statements_per_second'))} | |")
    add(f"| PostgreSQL transactions per second of burst, the writer's excluded | (report) | "
        f"{num(b['transactions_per_second'])} | | | |")
    add(f"| Worker CPU during the burst | (report) | {num(b['worker_cpu_percent'])}% | | | |")
    if "client_cpu_percent" in b:
        add(f"| Load generator CPU during the burst (one process: its timings lag once it nears 100%) | (report) | "
            f"{num(b['client_cpu_percent'])}% | | | |")
        add(f"| Widest coalescing window seen (sampled every 0.5 s) | (report) | "
            f"{b['coalesce_window_max']:.2f} s | | | |")
    refused = ", ".join(f"{count:,} answered {status}" for status, count in sorted(b.get("refused", {}).items()))
    add(f"| Polls refused meanwhile (until the drain ended) | none | {refused or 'none'} | | | "
        f"{verdict(not refused)} |")
    failed = ", ".join(f"{count:,} answered {status}" for status, count in sorted(b.get("snapshot_failures", {}).items()))
    add(f"| Nothing lost: client state = snapshot | all {b['members']:,} | {b['compared'] - b['mismatches']:,} of "
        f"{b['compared']:,} equal (hash and `unread`){'; snapshots: ' + failed if failed else ''}; "
        f"{b['caught_up']:,} had the last activity {b['drain_seconds']:.1f} s after the burst | | | {verdict(ok_kept)} |")
    add(f"| Every member caught up (had the last activity) | within {fmt_s(caught_up_within)} of the burst's end | "
        f"{b['caught_up']:,} of {b['members']:,} after {b['drain_seconds']:.1f} s | | | {verdict(ok_caught_up)} |")
    if "worker_rss_before" in b:
        grown = b["worker_rss"] / b["worker_rss_before"] - 1
        judged = key == "burst"
        add(f"| Worker memory: before the burst → after its drain | "
            f"{f'back within {BURST_MEMORY_WITHIN:.0%}' if judged else '(report)'} | "
            f"{b['worker_rss_before'] / 2**20:.0f} → {b['worker_rss'] / 2**20:.0f} MiB ({grown:+.0%}) | | | "
            f"{verdict(grown <= BURST_MEMORY_WITHIN) if judged else ''} |")
    add("")
    unread = ", ".join(f"{value} ({count:,} members)" for value, count in b["final_unread"])
    add(f"Each member's `unread` at the end: {unread} (counts stop at 100). Answers carry at most 100")
    add(f"activity changes each (oldest dropped, `truncated`); {num(b['truncated_answers'])} answers were "
        f"truncated, and a member")
    add(f"received {num(b['activity_received'])} activity changes (median) of the {num(b['published'])} published. "
        f"Statements over the")
    add(f"burst and its drain: {num(b['statements_total'])}.")
    add("")


def rounds_ratio(busy, quiet, key):
    """Busy / quiet per round: each round read both users in turn."""
    return per_run((b[key], q[key]) for b, q in zip(busy["rounds"], quiet["rounds"]))


def unread_block(results, add):
    u = results["unread"]
    busy, quiet = u["busy"], u["quiet"]
    add(f"### 10. Unread counts: a user in {u['communities']} communities with {u['rows']:,} activity rows")
    add("")
    run_line(results, add)
    add(f"One user is a member of {u['communities']} communities among which {u['rows']:,} activity rows were "
        f"written straight")
    add("into the change log, as the activity trigger writes them, after the user joined: every one of its")
    add(f"communities is at the unread cap (its unread counts add up to {num(busy['unread'])}), the worst case "
        f"of the count. Its")
    add(f"baseline is a user in {u['communities']} communities with no activity, in the same database. One "
        f"request at a time,")
    rounds = len(busy["snapshot"]["rounds"])
    add(f"{results['options']['unread_seconds']:.0f} s per round, {rounds} round{'s' if rounds > 1 else ''}, the "
        f"two users and the two reads taking turns (the users swap places every other round):")
    add("`GET /me/communities` (a full 200 answer) and `GET /community-changes/poll?timeout=0` with the")
    add("cursor and hash of the user's snapshot (nothing changed: `unchanged`).")
    add("")
    add("| | Busy user | Quiet user (baseline) | Busy / quiet, per round: median (min-max) |")
    add("| --- | --- | --- | --- |")
    for read, label in (("snapshot", "`GET /me/communities`"), ("poll", "poll, `timeout=0`")):
        b, q = busy[read], quiet[read]
        add(f"| {label}: p50 / p99 | {ms(b['p50'])} / {ms(b['p99'])} | {ms(q['p50'])} / {ms(q['p99'])} | "
            f"{spread(rounds_ratio(b, q, 'p50'))} / {spread(rounds_ratio(b, q, 'p99'))} |")
        add(f"| {label}: requests/s, one at a time | {num(b['rps'])} | {num(q['rps'])} | "
            f"{spread(rounds_ratio(b, q, 'rps'))} |")
        add(f"| {label}: statements per request | {num(b['statements_per_request'], 2)} | "
            f"{num(q['statements_per_request'], 2)} | |")
    plans = u["plans"]
    add(f"| Snapshot statement in PostgreSQL (EXPLAIN ANALYZE): execution | "
        f"{plans['busy']['execution_ms']:.1f} ms, {num(plans['busy']['shared_hit'])} buffers hit | "
        f"{plans['quiet']['execution_ms']:.1f} ms, {num(plans['quiet']['shared_hit'])} buffers hit | "
        f"{factor(plans['busy']['execution_ms'], plans['quiet']['execution_ms'])} |")
    add("")
    add(f"Seeding the {u['rows']:,} rows took {u['seed_seconds']:.0f} s.")
    add("")


def presence_block(results, add):
    r = results["presence"]
    small, online = r["phases"]["small"], r["phases"]["online"]
    workers = r["workers"]
    across = r["across_workers"]
    counts = r["counts"]
    add(f"### 11. Presence: {online['held']:,} users online across {workers} workers")
    add("")
    run_line(results, add)
    add(f"One gunicorn with {workers} gevent workers; each user online holds one long poll (the kernel hands")
    add(f"each connection to either worker). With {small['held']:,}, then {online['held']:,} online and nothing "
        f"changing, an idle")
    add(f"window of {r['seconds']} s each counts PostgreSQL's transactions (`pg_stat_database`, after "
        f"statistics settled)")
    add("and the workers' statements: presence's refreshes and the hub's own safety-net reads together.")
    add(f"The {small['held']:,}-user phase is the baseline: the design's cost should not grow with the users.")
    add("")
    grows = factor(online["statements_per_second"], small["statements_per_second"])
    per_worker = online["transactions_per_second"] / workers
    add(f"| | Target | {online['held']:,} online | Baseline: {small['held']:,} online | Ratio | |")
    add("| --- | --- | --- | --- | --- | --- |")
    add(f"| Transactions/s, both workers (per worker) | a few per second per worker | "
        f"{num(online['transactions_per_second'], 2)} ({num(per_worker, 2)}) | "
        f"{num(small['transactions_per_second'], 2)} ({num(small['transactions_per_second'] / workers, 2)}) | "
        f"{factor(online['transactions_per_second'], small['transactions_per_second'])} | "
        f"{verdict(per_worker <= 3)} |")
    add(f"| Statements/s, both workers | independent of the users | {num(online['statements_per_second'], 2)} | "
        f"{num(small['statements_per_second'], 2)} | {grows} | "
        f"{verdict(online['statements_per_second'] <= 1.5 * max(small['statements_per_second'], 0.1))} |")
    add(f"| `presence` rows per worker | | {', '.join(num(n) for n in online['rows_per_worker'])} | "
        f"{', '.join(num(n) for n in small['rows_per_worker'])} | | |")
    add(f"| `c-all`'s `online`, {len(across['counted'])} reads on new connections | every user of both workers "
        f"({across['held']:,}) | {', '.join(num(n) for n in sorted(set(across['counted'])))} | | | "
        f"{verdict(min(across['counted']) >= across['held'])} |")
    hosts = r["across_hosts"]
    for host in ("host 1", "host 2"):
        add(f"| Two hosts: `c-all`'s `online` read through {host} | every user of the four workers "
            f"({hosts['held']:,}) | {', '.join(num(n) for n in hosts[host]['counted'])} "
            f"({hosts[host]['seconds']:.1f} s after the polls were held) | | | "
            f"{verdict(min(hosts[host]['counted']) >= hosts['held'])} |")
    add("")
    add(f"Two hosts: a second gunicorn with {workers} workers on the same database, "
        f"{hosts['held_on_second']:,} more users polling there;")
    add(f"`presence` rows per worker then: {', '.join(num(n) for n in hosts['rows_per_worker'])}.")
    add("")
    reader, two = counts["snapshots"]["reader"], counts["snapshots"]["u0"]
    statements = counts["statements"]
    add(f"A reader in {counts['communities']} communities of {counts['members']} members each: its snapshot (`GET /me/communities`, one request at a time, its "
        f"counts reused")
    add("within the interval as they are between refreshes) against that of a user in two communities, and")
    add(f"the count statement of its communities alone ({counts['reader_online']:,} members online among them, "
        f"{counts['live_workers']} live")
    add("workers), which a worker pays once per interval for the communities it serves; beside it the")
    add(f"count of `c-all` and a group, the worst case: every one of the {online['held']:,} online users is a "
        f"member of `c-all`.")
    add("")
    add(f"| | Reader ({counts['communities']} communities) | User in 2 communities | Ratio |")
    add("| --- | --- | --- | --- |")
    add(f"| Snapshot p50 / p99 | {ms(reader['p50'])} / {ms(reader['p99'])} | {ms(two['p50'])} / {ms(two['p99'])} | "
        f"{factor(reader['p50'], two['p50'])} |")
    add(f"| Statements per snapshot | {num(reader['statements_per_request'], 2)} | "
        f"{num(two['statements_per_request'], 2)} | |")
    add(f"| Count statement, median / p95 | {statements['reader']['median']:.2f} ms / "
        f"{statements['reader']['p95']:.2f} ms | `c-all` + 1: {statements['everyone']['median']:.2f} ms / "
        f"{statements['everyone']['p95']:.2f} ms | |")
    add("")


SCALEOUT_INTRO = (
    "How a worker learns of new change-log rows (`WAKE_SOURCE`, [operations.md](operations.md#wake-sources)):",
    "`notify`, LISTEN for the log's trigger, whose every writing transaction then takes PostgreSQL's one",
    "database-wide lock at commit; or `head`, one check of the log's head per worker every",
    "`WAKE_POLL_INTERVAL` (50 ms) while polls wait, with the trigger's NOTIFY switched off; or `watcher`,",
    "LISTEN for the NOTIFYs of one elected session of the deployment that checks the head every 5 ms",
    "(scenario 19). These figures made `head` the default, then scenarios 12, 13, 19 and 20 `watcher`;",
    "scenarios 1-11 and 14-18 ran with `head`: their idle cost is the head checks (about 20 a second per",
    "worker, whatever the number of polls), and a write made by another worker or in SQL wakes a poll at",
    "the worker's next check, up to one interval later (scenario 13).",
)


def writes_block(results, add):
    r = results["writes"]
    add("### 12. Concurrent writers with and without NOTIFY")
    add("")
    run_line(results, add)
    add(f"pgbench on a database of its own, one-row transactions (`BEGIN; INSERT; COMMIT`) for {r['seconds']} s "
        f"at each")
    add("concurrency: activity published with `INSERT INTO activity` (moved into the log by its trigger) and")
    add("a membership added (a join). `notify`: the log's trigger notifies, as with `WAKE_SOURCE=notify`;")
    add("`head`: it does not, as with `WAKE_SOURCE=head` (the trigger still runs and reads the switch).")
    sources = [source for source in ("notify", "head", "watcher") if source in next(iter(r["cells"].values()))]
    if "watcher" in sources:
        add("`watcher`: the trigger does not notify either, and the deployment's watcher (a gunicorn of one worker")
        add("with `WAKE_SOURCE=watcher`) checks the log's head every 5 ms and notifies once per move meanwhile.")
    add(f"Nobody else listens. The modes take turns, {r['runs']} runs each, the order reversed every other run, on")
    add("emptied tables; medians, and the median of the runs' ratios with their spread.")
    add("")
    header = " | ".join(f"Transactions/s, {source}" for source in sources)
    ratios = [("head", "notify")] + ([("watcher", "head")] if "watcher" in sources else [])
    ratio_header = " | ".join(f"{a} / {b}, per run: median (min-max)" for a, b in ratios)
    latency_header = " | ".join(f"Latency, {source} (COMMIT)" for source in sources)
    add(f"| Writes | Clients | {header} | {ratio_header} | {latency_header} |")
    add("| --- | --- | " + " | ".join("---" for _ in range(len(sources) * 2 + len(ratios))) + " |")
    for key, cell in r["cells"].items():
        name, clients = key.split("/")
        figures = " | ".join(num(cell[source]["tps"]) for source in sources)
        shown = " | ".join(spread(per_run((x["tps"], y["tps"]) for x, y in zip(cell[a]["runs"], cell[b]["runs"])))
                           for a, b in ratios)
        latencies = " | ".join(f"{cell[source]['latency_ms']:.2f} ms ({cell[source]['commit_ms']:.2f} ms)"
                               for source in sources)
        add(f"| {name} | {clients} | {figures} | {shown} | {latencies} |")
    add("")


def sources_block(results, add):
    r = results["sources"]
    first = r["notify"][0]
    add("### 13. Two hosts x two workers, each wake source")
    add("")
    run_line(results, add)
    add(f"Scenario 7 once per wake source, taking turns, {len(r['notify'])} runs each on users of their own: two")
    add(f"gunicorn hosts of two gevent workers, {first['waiters']:,} polls held across them, {first['writes']} "
        f"joins written one at a")
    add("time through either host's API; from the write request's start to the poll's answer, on one clock.")
    add("Then, polls held and nothing written, what the four workers cost PostgreSQL per second (after its")
    add("statistics settled).")
    add("")
    add("| | Cross-host p50 / p99 | Same-host p50 / p99 | All p50 / p99 | Answered | "
        "Idle transactions/s | Head checks/s (mean time) |")
    add("| --- | --- | --- | --- | --- | --- | --- |")
    for source in (source for source in ("notify", "head", "watcher") if source in r):
        runs = r[source]

        def both(label, runs=runs):
            return (f"{ms(median([run[label]['p50'] for run in runs]))} / "
                    f"{ms(median([run[label]['p99'] for run in runs]))}")

        idle = [run["idle"] for run in runs if run.get("idle")]
        add(f"| `{source}` | {both('cross_host')} | {both('same_host')} | {both('all')} | "
            f"{sum(run['answered'] for run in runs)} / {sum(run['writes'] for run in runs)} | "
            f"{num(median([i['transactions_per_second'] for i in idle]), 1)} | "
            f"{num(median([i['head_checks_per_second'] for i in idle]), 1)}{check_time(idle)} |")
    add("")


def check_time(idle):
    means = [i["head_check_mean"] for i in idle if i.get("head_check_mean")]
    return f" ({median(means) * 1000:.2f} ms)" if means else ""


STORMS_INTRO = (
    "What the long poll does when every client comes at once: after an outage, a deploy or a",
    "push that sends everyone to the page. One gunicorn gevent worker, as in scenarios 1-4; each",
    "client holds its snapshot's cursor and hash (`GET /me/communities`, taken before) and polls",
    "from there on a new keep-alive HTTP/1.1 connection, as a browser's fetch does.",
)


# What scenario 14 compares with the floor, round by round.
STORM_COMPARED = {
    "Until all waiting": lambda entry: entry["waiting_seconds"],
    "Fan-out, last answer": lambda entry: entry["fanout"]["last"],
    "Memory per poll": lambda entry: entry["rss_per_poll"],
}


def storm_ratios(storm, value):
    """``value`` of each round's long-poll storm over the floor's of the same round (they took turns)."""
    floor = {entry["round"]: value(entry) for entry in storm["rounds"]["bare_wait"]}
    return per_run((value(entry), floor.get(entry["round"])) for entry in storm["rounds"]["longpoll"])


def storm_block(results, add):
    r = results["storm"]
    long_runs, floor_runs = r["rounds"]["longpoll"], r["rounds"]["bare_wait"]
    add(f"### 14. Arrival storm: {r['clients']:,} clients within {r['spread']:.0f} s")
    add("")
    run_line(results, add)
    add(f"{r['clients']:,} clients, all members of one community, send their long polls spread evenly over")
    add(f"{r['spread']:.0f} s. The floor is the bare Flask view waiting on an event (`bare_wait`, scenario 3's), "
        f"its clients")
    add("primed with its `timeout=0` answer. Waiting: the server's waiting gauge; quiet: its statement counter")
    add("standing still (the last polls' first reads done). Then one activity in the community (the floor:")
    add(f"`POST /bench/wake`): from `COMMIT` to the last client's answer. {len(long_runs)} round(s) of each, taking "
        f"turns; medians, and the median of per-round ratios with their spread.")
    add("")
    add("| | Long poll | Floor: bare Flask view | Long poll / floor, per round: median (min-max) |")
    add("| --- | --- | --- | --- |")

    def both(label, value, show, compared=False):
        add(f"| {label} | {show(median([value(e) for e in long_runs]))} | "
            f"{show(median([value(e) for e in floor_runs]))} | "
            f"{spread(storm_ratios(r, value)) if compared else ''} |")

    def counts(entries, key):
        total = Counter()
        for entry in entries:
            total.update(entry[key])
        return ", ".join(f"{count:,} {name}" for name, count in sorted(total.items())) or "none"

    add("| Waiting (parked), each round | "
        + ", ".join(f"{e['waiting']:,} ({e['parked']:,})" for e in long_runs) + " | "
        + ", ".join(f"{e['waiting']:,}" for e in floor_runs) + " | |")
    add(f"| Polls refused (not 200), all rounds | {counts(long_runs, 'refused')} | "
        f"{counts(floor_runs, 'refused')} | |")
    add(f"| Connections failed, all rounds | {counts(long_runs, 'connection_errors')} | "
        f"{counts(floor_runs, 'connection_errors')} | |")
    both("Until all are waiting, from the first poll sent", STORM_COMPARED["Until all waiting"], fmt_s, True)
    both("Until the server stops reading for them", lambda e: e["quiet_seconds"], fmt_s)
    both("Worker memory per waiting poll (RSS growth / clients)", STORM_COMPARED["Memory per poll"],
         lambda v: "n/a" if v is None else f"{v / 1024:.1f} KiB", True)
    both("Worker CPU for the arrival", lambda e: e["worker_cpu_seconds"], fmt_s)
    both("Statements the server ran for the arrival (per client)", lambda e: e["statements"],
         lambda v: "n/a" if v is None else f"{num(v)} ({v / r['clients']:.2f})")
    both("PostgreSQL transactions, the arrival and 11 s after it (per client)", lambda e: e["transactions"],
         lambda v: "n/a" if v is None else f"{num(v)} ({v / r['clients']:.2f})")
    both("Fan-out: first answer", lambda e: e["fanout"]["first"], fmt_s)
    both("Fan-out: last answer", STORM_COMPARED["Fan-out, last answer"], fmt_s, True)
    both("Fan-out: statements", lambda e: e["fanout"]["statements"], num)
    once = [f"{e['fanout']['once']:,} once, {e['fanout']['twice_or_more']} more, {e['fanout']['missing']} missing"
            for e in long_runs]
    add(f"| Fan-out: each client's change, each round | {'; '.join(once)} | "
        + "; ".join(f"{e['fanout']['answered']:,} answered" for e in floor_runs) + " | |")
    add("")
    add("| Long poll / floor, round | " + " | ".join(STORM_COMPARED) + " |")
    add("| --- |" + " --- |" * len(STORM_COMPARED))
    ratios = [storm_ratios(r, value) for value in STORM_COMPARED.values()]
    for number, values in enumerate(zip(*ratios)):
        add(f"| {number + 1} | " + " | ".join(factor_text(v) for v in values) + " |")
    add("")
    add("Transactions include the worker's head checks (20 a second while polls wait, scenario 2), which")
    add("the server's statement counter does not count. A change counts as delivered once when the client's")
    add("tally holds it once after the clients polled again from the answer's cursor.")
    add("")


# The deploy's target: every client of a reload answered and waiting again within this.
DEPLOY_BACK_WITHIN = 5.0


def deploy_block(results, add):
    r = results["deploy"]
    first, change = r["first_outcome"], r["change"]
    add(f"### 15. Deploy: SIGHUP with {r['clients']:,} polls waiting")
    add("")
    run_line(results, add)
    add(f"Scenario 14's storm ({r['storm']['waiting']:,} waiting, {r['storm']['parked']:,} parked, after "
        f"{fmt_s(r['storm']['waiting_seconds'])}), then `SIGHUP` to the gunicorn master: it")
    add("starts a new worker and stops the old one, which drains (answers every waiting poll `unchanged`,")
    add(f"`Connection: close`). An activity is written {fmt_s(r['write_seconds'])} after the signal. Each "
        f"client polls again at once")
    add(f"after an answer, and within {r['spread']:.0f} s of a failed connection, from its last cursor.")
    add("")
    ok_first = first["reset"] == 0 and first["refused"] == 0 and first["other"] == 0 and not r["untouched"]
    ok_change = change["once"] == r["storm"]["waiting"]
    all_polls = ", ".join(f"{count:,} {name}" for name, count in sorted(r["outcomes"].items()))
    add("| | Measured | Target | |")
    add("| --- | --- | --- | --- |")
    add(f"| The waiting poll of each client | {first['answered']:,} answered (200), {first['closed']:,} closed "
        f"cleanly, {first['reset']:,} reset, {first['refused']:,} refused, {first['other']:,} other, "
        f"{r['untouched']:,} untouched | answered or closed | {verdict(ok_first)} |")
    add(f"| Every poll over the reload | {all_polls or 'none'} | (report) | |")
    add(f"| Old worker gone | after {fmt_s(r['replaced_seconds'])} | | |")
    back_in_time = r["all_waiting"] and r["waiting_again_seconds"] <= DEPLOY_BACK_WITHIN
    add(f"| All waiting again | {r['waiting_again']:,} after {fmt_s(r['waiting_again_seconds'])} | all, within "
        f"{fmt_s(DEPLOY_BACK_WITHIN)} | {verdict(back_in_time)} |")
    if r.get("new_worker_cpu_seconds") is not None:
        add(f"| The new worker's CPU from its start until then | {fmt_s(r['new_worker_cpu_seconds'])} | (report) | |")
    add(f"| The change written meanwhile | {change['once']:,} once, {change['twice_or_more']} more than once, "
        f"{change['missing']} missing | each once | {verdict(ok_change)} |")
    add("")
    add("The clients come back with cursors from before the change, so each is given it on the new")
    add("worker (a read of its own: the new worker's hub has no position to vouch from) and then waits")
    add("again; \"all waiting again\" includes that answer and the poll after it.")
    add("")
    if r["failure_samples"]:
        add("Failures other than a clean close, first few: "
            + "; ".join(f"`{sample[2][:80]}`" for sample in r["failure_samples"]) + ".")
        add("")


def burst10_block(results, add):
    burst_block(results, add, key="burst10", number=16)


TOPICS_INTRO = (
    "Activity below the community (API v3): a `topic` (a board, a thread, a story, a post) reaches only",
    "the polls that watch it (`watch=<community_id>/<topic>`), never every member; `data` carries a",
    "small JSON object on the change; `collapse`d activity is answered with only the newest value of",
    "each (community, topic, kind, ref), and a client never receives an older value after a newer one.",
    "`python -m bench topics` (`bench/topics.py`) measures each against a baseline taking turns with it",
    "in the same run.",
)


def ratio_spread(ratios):
    """A ratio's median over rounds and its spread, from ``topics.summarize``'s entry."""
    return spread(ratios["rounds"]) if ratios else "n/a"


def round_table(entries, compared, add):
    """Each round's ratios of one measurement, and their median and spread."""
    names = [name for name, *_ in compared]
    add("| Round (order) | " + " | ".join(names) + " |")
    add("| --- |" + " --- |" * len(names))
    for entry in entries:
        add(f"| {entry['round'] + 1} ({' then '.join(entry['order'])}) | "
            + " | ".join("n/a" if entry["ratios"].get(name) is None else factor_text(entry["ratios"][name])
                         for name in names) + " |")
    add("| median (min-max) | " + " | ".join(
        spread([e["ratios"][name] for e in entries if e["ratios"].get(name) is not None]) for name in names) + " |")
    add("")


def topics_block(results, add):
    from .topics import COMPARED, THREAD

    t = results["topics"]
    wake, votes, reads = t["wake"], t["votes"], t["reads"]
    options = results["options"]
    add(f"### 17. Topics: a reply among {wake['members']:,} waiting members, collapsed votes to "
        f"{votes['watchers']:,} watchers, {len(reads['watches'])} watches")
    add("")
    run_line(results, add)
    add(f"One database seeded as for scenarios 1-4 ({max(wake['members'], votes['watchers']):,} users, all members "
        f"of `{t['community']}`); each measurement on a fresh")
    add("server (one gunicorn gevent worker) and a load generator of its own (`python -m bench.topics`:")
    add("bench/client.py's, its polls sending `watch=` and checking every value they receive). Activity is")
    add("written in SQL (`INSERT INTO activity (community_id, topic, kind, ref, actor, data, collapse)`), one")
    add("row per transaction. Each measurement takes turns with its baseline, round after round, the order")
    add("reversed every other round; figures are medians over the rounds, a ratio is the median of the")
    add("rounds' ratios with their spread (min-max), and every round's ratios are listed.")
    add("")
    wake_section(t, wake, add, COMPARED["wake"], THREAD)
    votes_section(votes, add, COMPARED["votes"])
    reads_section(reads, options, add, COMPARED["reads"])
    what_it_shows(t, add)
    if t.get("failed"):
        add("**This run failed its checks:**")
        add("")
        for failure in t["failed"]:
            add(f"- {failure}")
        add("")


def wake_section(t, wake, add, compared, thread):
    topic, community = wake["figures"]["topic"], wake["figures"]["community"]
    ratios = wake["ratios"]
    rounds = wake["rounds"]
    idle = wake["idle"]
    add(f"#### A reply in a watched thread, {wake['members']:,} members waiting")
    add("")
    add(f"{wake['held']:,} members of `{t['community']}` hold long polls (a reset poll, then long polls following "
        f"the cursor); {wake['watchers']} of")
    add(f"them watch `{t['community']}/{thread}`. One reply in the thread (the row with `topic = '{thread}'`)")
    add("against the same row without a topic, community-level activity, which every member is told of;")
    add(f"{len(rounds)} rounds of each. For each row the members stop polling again after their answer until "
        f"the figures are")
    add("taken (the statements counted are the wake-up's alone): polls woken are the answers the load")
    add("generator received, beside the server's `community_sync_wakeups_total`; wake latency runs from")
    add("`COMMIT` returning in the writer to the answer's last byte at the client; statements and re-reads")
    add("are the server's `community_sync_db_queries_total` and `community_sync_reread_rows_count` from the")
    add("insert until the last answer (and the counter standing still); worker CPU over the same time.")
    add("PostgreSQL's rows read (`tup_returned + tup_fetched` of the run's database) run from the insert")
    add("until the polls were back and its statistics had settled, less what as long a window counted with")
    add(f"nothing written ({num(idle['rows_per_second'])} rows/s over {idle['seconds']:.0f} s, the worker's "
        f"{num(idle['head_checks_per_second'])} head checks a second among them).")
    add("")
    exact = all(e["topic"]["woken_watchers"] == wake["watchers"] and e["topic"]["woken_others"] == 0
                and e["topic"]["server_wakeups"] == wake["watchers"] for e in rounds)
    everyone = all(e["community"]["woken"] >= wake["held"] for e in rounds)
    add("| | Reply in the thread | Baseline: community-level activity | Ratio, per round: median (min-max) | |")
    add("| --- | --- | --- | --- | --- |")
    add(f"| Polls woken, each round (answers at the load generator) | "
        + ", ".join(f"{e['topic']['woken_watchers']:,} watchers + {e['topic']['woken_others']:,} others"
                    for e in rounds)
        + f" (of {wake['watchers']} watching) | " + ", ".join(f"{e['community']['woken']:,}" for e in rounds)
        + f" (of {wake['held']:,}) | baseline / reply: {ratio_spread(ratios['polls woken'])} | "
        f"{verdict(exact and everyone)} |")
    add(f"| Server's wake-ups, each round | {', '.join(num(e['topic']['server_wakeups']) for e in rounds)} | "
        f"{', '.join(num(e['community']['server_wakeups']) for e in rounds)} | | |")
    add(f"| Watchers' wake latency p50 / p99 | {ms(topic['watchers_p50'])} / {ms(topic['watchers_p99'])} | "
        f"the same {wake['watchers']} watchers: {ms(community['watchers_p50'])} / {ms(community['watchers_p99'])}; "
        f"all members: {ms(community['p50'])} / {ms(community['p99'])}, last {ms(community['last'])} | "
        f"reply / baseline: p50 {ratio_spread(ratios['wake p50 of the watchers'])}, "
        f"p99 {ratio_spread(ratios['wake p99 of the watchers'])} | |")
    add(f"| Statements (server counter), in re-reads | {num(topic['statements'])} in {num(topic['rereads'])} | "
        f"{num(community['statements'])} in {num(community['rereads'])} | baseline / reply: "
        f"{ratio_spread(ratios['statements'])} | |")
    add(f"| Worker CPU for the wake-up | {fmt_s(topic['worker_cpu_seconds'])} | "
        f"{fmt_s(community['worker_cpu_seconds'])} | baseline / reply: {ratio_spread(ratios['worker CPU'])} | |")
    add(f"| PostgreSQL rows read, beyond idle | {num(topic['rows_beyond_idle'])} | "
        f"{num(community['rows_beyond_idle'])} | baseline / reply: "
        f"{ratio_spread(ratios['PostgreSQL rows read beyond idle'])} | |")
    unwatched = wake.get("unwatched_rows", 0)
    add(f"| Rows of `{thread}` received by members not watching it, whole measurement | {num(unwatched)} | | | "
        f"{verdict(not unwatched)} |")
    add("")
    round_table(rounds, compared, add)


def votes_section(votes, add, compared):
    collapse, plain = votes["figures"]["collapse"], votes["figures"]["plain"]
    ratios = votes["ratios"]
    rounds = votes["rounds"]
    runs = {side: [e[side] for e in rounds] for side in ("collapse", "plain")}
    add(f"#### Collapsed votes: {votes['rate']} a second for {votes['seconds']:.0f} s to {votes['watchers']:,} "
        f"watchers")
    add("")
    add(f"{votes['held']:,} members watch a post (`watch=c-all/post:p-N`) and poll again at once after every "
        f"answer, as the")
    add(f"browser client does. Its vote count is published {votes['rate']} times a second for "
        f"{votes['seconds']:.0f} s, `kind = 'vote'`, `data = {{\"votes\": n}}`")
    add(f"with n counting 1 to {votes['rows']:,}, `collapse = true`; the baseline publishes the same rows with "
        f"`collapse = false`.")
    add("Each run votes on a post of its own (all of them watched from the start), and waits until every")
    add("watcher has the last value (or 120 s). Answers per watcher count those that carried the post's")
    add("votes, over the burst and until then, per second of the burst. The load generator goes through")
    add("every change of every answer each watcher received: a value smaller than one it received before,")
    add("or the same one again, is counted, and the run fails if there is any.")
    add("")

    def both(label, value, show, ratio=None, check=None):
        add(f"| {label} | {show(collapse, runs['collapse'], value)} | {show(plain, runs['plain'], value)} | "
            f"{ratio_spread(ratios.get(ratio)) if ratio else ''} | {check if check is not None else ''} |")

    def median_of(figures, _runs, key):
        return num(figures[key], 2) if isinstance(figures[key], float) and figures[key] < 100 else num(figures[key])

    def each_run(_figures, entries, key):
        return ", ".join(num(e[key]) for e in entries)

    ok_values = all(e["violations"] == 0 and e["repeats"] == 0 for side in runs for e in runs[side])
    ok_last = all(e["with_last"] == votes["watchers"] for side in runs for e in runs[side])
    add("| | Collapsed | Baseline: not collapsed | Collapsed / not, per round: median (min-max) | |")
    add("| --- | --- | --- | --- | --- |")
    add(f"| Published, each run | "
        + ", ".join(f"{e['published']:,} rows in {e['publish_seconds']:.1f} s" for e in runs["collapse"]) + " | "
        + ", ".join(f"{e['published']:,} rows in {e['publish_seconds']:.1f} s" for e in runs["plain"]) + " | | |")
    both("Answers per watcher per second of publishing", "answers_per_watcher_second",
         lambda f, _e, k: num(f[k], 2), "answers per watcher per second")
    both("Answers per watcher: p50 (min-max), each run", "answers_per_watcher",
         lambda _f, entries, k: ", ".join(f"{num(e[k]['p50'])} ({e[k]['min']}-{e[k]['max']})" for e in entries))
    both("Rows delivered per watcher: mean; p50 (min-max), each run", "rows_delivered",
         lambda f, entries, k: f"{num(f['rows_per_watcher'])}; " + ", ".join(
             f"{num(e[k]['p50'])} ({e[k]['min']:,}-{e[k]['max']:,})" for e in entries),
         "rows delivered per watcher")
    both("Bytes of answers per watcher", "bytes_per_watcher", lambda f, _e, k: num(f[k]), "bytes per watcher")
    both("Answers truncated (over 100 activity rows), all watchers, each run", "truncated_answers", each_run)
    both("Watchers with the last value, each run", "with_last",
         lambda _f, entries, k: ", ".join(f"{e[k]:,} of {votes['watchers']:,}" for e in entries),
         check=verdict(ok_last))
    both("Until every watcher had the last value, from the burst's end", "drain_seconds",
         lambda f, _e, k: fmt_s(f[k]), "until every watcher has the last value")
    both("Values smaller than one received before / received again, each run", "violations",
         lambda _f, entries, k: ", ".join(f"{e['violations']} / {e['repeats']}" for e in entries),
         check=verdict(ok_values))
    both("Statements per second of publishing (server counter)", "statements_per_second",
         lambda f, _e, k: num(f[k]), "statements per second")
    both("Worker CPU while publishing", "worker_cpu_percent", lambda f, _e, k: f"{num(f[k])}%", "worker CPU")
    both("Load generator CPU while publishing", "client_cpu_percent", lambda f, _e, k: f"{num(f[k])}%")
    both("Widest coalescing window seen (sampled every 0.5 s)", "coalesce_window_max",
         lambda f, _e, k: f"{f[k]:.2f} s")
    both("Polls refused, each run", "refused",
         lambda _f, entries, k: ", ".join(", ".join(f"{n:,} answered {s}" for s, n in sorted(e[k].items()))
                                          or "none" for e in entries))
    add("")
    round_table(rounds, compared, add)


def reads_section(reads, options, add, compared):
    watching, none = reads["figures"]["watching"], reads["figures"]["none"]
    ratios = reads["ratios"]
    rounds = reads["rounds"]
    add(f"#### Watching {len(reads['watches'])} topics against none: the snapshot and a poll")
    add("")
    add(f"User `{reads['user']}` (a member of `c-all`, `c-small` and `c-g0`) with {len(reads['watches'])} watches, "
        f"the contract's most (`c-all`'s")
    add("thread and posts of the measurements above, which have rows in the log, and topics of its other")
    add("communities, which have none), against the same user watching nothing. One request at a time on a")
    add(f"keep-alive connection, {options['topics_read_seconds']:.0f} s per read, {len(rounds)} rounds, the two "
        f"taking turns: the snapshot a poll gives")
    add(f"(`timeout=0` without a cursor, answered `{reads['statuses']['watching']['snapshot']}`) and a poll from "
        f"that snapshot's cursor and")
    add(f"hash (`timeout=0`, answered `{reads['statuses']['watching']['poll']}`). Statements are the server's "
        f"counter per request; PostgreSQL's")
    add("transactions per request come from one pass of each read more, with its statistics settled before")
    add("and after (11 s), the worker's head checks taken off.")
    add("")
    add(f"| | {len(reads['watches'])} watches | Baseline: none | {len(reads['watches'])} watches / none, per round: "
        f"median (min-max) |")
    add("| --- | --- | --- | --- |")
    transactions = reads["transactions"]
    for read, label in (("snapshot", "Snapshot (no cursor)"), ("poll", "Poll from the cursor")):
        add(f"| {label}: p50 / p99 | {ms(watching[f'{read}_p50'])} / {ms(watching[f'{read}_p99'])} | "
            f"{ms(none[f'{read}_p50'])} / {ms(none[f'{read}_p99'])} | p50 {ratio_spread(ratios[f'{read} p50'])}, "
            f"p99 {ratio_spread(ratios[f'{read} p99'])} |")
        add(f"| {label}: requests/s, one at a time | {num(watching[f'{read}_rps'])} | {num(none[f'{read}_rps'])} | |")
        add(f"| {label}: statements per request | {num(watching[f'{read}_statements'], 2)} | "
            f"{num(none[f'{read}_statements'], 2)} | {ratio_spread(ratios[f'{read} statements per request'])} |")
        add(f"| {label}: PostgreSQL transactions per request | "
            f"{num(transactions['watching'][read]['per_request'], 2)} | "
            f"{num(transactions['none'][read]['per_request'], 2)} | |")
    add("")
    round_table(rounds, compared, add)


def what_it_shows(t, add):
    wake, votes, reads = t["wake"], t["votes"], t["reads"]
    topic, community = wake["figures"]["topic"], wake["figures"]["community"]
    collapse, plain = votes["figures"]["collapse"], votes["figures"]["plain"]
    watching, none = reads["figures"]["watching"], reads["figures"]["none"]
    ratios, vote_ratios, read_ratios = wake["ratios"], votes["ratios"], reads["ratios"]

    def median_of(ratio):
        value = ratio["median"]
        return "n/a" if value is None else factor_text(value)

    exact = topic["woken_others"] == 0 and topic["woken_watchers"] == wake["watchers"]
    extra = {read: watching[f"{read}_statements"] - none[f"{read}_statements"] for read in READS_SHOWN}
    add("**What it shows.** " + (
        f"A reply in a thread wakes the {wake['watchers']} polls that watch it and no other: the other "
        f"{wake['held'] - wake['watchers']:,} members' polls wait on untouched, "
        if exact else
        f"A reply in a thread woke {num(topic['woken_watchers'])} of its {wake['watchers']} watchers and "
        f"{num(topic['woken_others'])} other members (see the checks below), ")
        + f"where the same row without a topic wakes all {num(community['woken'])}. Each took one re-read, "
        f"and the server counted {num(topic['statements'])} and {num(community['statements'])} statements over "
        f"the wake-up: the statements do not follow the polls woken, the work does. The community-level "
        f"row cost the worker {median_of(ratios['worker CPU'])} the CPU and PostgreSQL "
        f"{median_of(ratios['PostgreSQL rows read beyond idle'])} the rows read, and the thread's watchers had "
        f"their answer in {ms(topic['watchers_p50'])} rather than {ms(community['watchers_p50'])} (p50). "
        f"Collapsing changes what an answer carries, not how often a watcher is answered: "
        f"{num(collapse['answers_per_watcher_second'], 2)} answers per watcher per second collapsed, "
        f"{num(plain['answers_per_watcher_second'], 2)} without, but {num(collapse['rows_per_watcher'])} rows "
        f"per watcher instead of {num(plain['rows_per_watcher'])} and "
        f"{median_of(vote_ratios['bytes per watcher'])} the bytes. Every watcher had the last count "
        f"{fmt_s(collapse['drain_seconds'])} after the burst's end collapsed, {fmt_s(plain['drain_seconds'])} "
        f"without ({drain_text(vote_ratios['until every watcher has the last value'])}), and "
        + ("none ever received a smaller count after a larger one. "
           if not t.get("failed") else "see the failed checks below. ")
        + f"Watching {len(reads['watches'])} topics of its own communities costs a `timeout=0` request "
        + (f"{num(extra['poll'], 2)} statements more from a cursor and {num(extra['snapshot'], 2)} for the "
           "snapshot (" if max(abs(extra["poll"]), abs(extra["snapshot"])) >= 0.05 else
           f"the statements of one watching none ({num(extra['poll'], 2)} a request more from a cursor, "
           f"{num(extra['snapshot'], 2)} for the snapshot; ")
        + f"PostgreSQL counted {num(reads['transactions']['watching']['poll']['per_request'], 1)} "
        f"transactions per poll against {num(reads['transactions']['none']['poll']['per_request'], 1)}), and "
        f"{median_of(read_ratios['poll p50'])} the unwatched poll's p50 ({median_of(read_ratios['snapshot p50'])} "
        "for the snapshot). Its watches are checked once, at its first request to a worker; a watch of a "
        "public community it is not in is checked on every request, one statement more.")
    add("")


READS_SHOWN = ("snapshot", "poll")


def drain_text(ratios):
    """Whether collapsing brought the last value sooner in every round, later in every one, or neither."""
    if not ratios or ratios.get("median") is None:
        return "not compared"
    if ratios["max"] < 1:
        return f"sooner in every round: {spread(ratios['rounds'])}"
    if ratios["min"] > 1:
        return f"later in every round: {spread(ratios['rounds'])}"
    return f"no difference the rounds agree on: {spread(ratios['rounds'])}"


TYPING_INTRO = (
    "Who is typing (`PUT /me/typing`, `DELETE /me/typing`) reaches the polls that watch the topic as a",
    "`typing` map on their answers: each worker reads the typists of the communities its polls watch once",
    "a second (one statement) and wakes the watching polls of the topics whose typists changed, whichever",
    "worker or host the typist's request reached ([api.md](api.md#typing-and-who-is-reading)).",
    "`python -m bench typing` (`bench/typists.py`) measures a busy thread against the same watchers with",
    "nobody typing, the two taking turns in the same run, and the same thread across two hosts.",
)


def typing_block(results, add):
    t = results["typing"]
    typing, quiet = t["figures"]["typing"], t["figures"]["quiet"]
    ratios, beyond, rounds, hosts = t["ratios"], t["beyond_quiet"], t["rounds"], t["hosts"]
    add(f"### 18. Typing: {t['watchers']:,} watchers of a thread, {t['typing_at_once']} typists changing every "
        f"second, {t['workers']} workers and two hosts")
    add("")
    run_line(results, add)
    typing_method(t, results["options"], add)
    typing_table(t, add)
    typing_cost(t, add)
    add("Each round's figures:")
    add("")
    add("| Round (order) | Phase | Keypress to render p50 / p95 (pairs rendered) | Answers per watcher per second "
        "| Statements/s | Transactions/s | Worker CPU (each worker) | Join wake p50 / p99 (joins answered) |")
    add("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for entry in rounds:
        for side in entry["order"]:
            f = entry[side]
            render = (f"{ms_or_s(f['render_p50'])} / {ms_or_s(f['render_p95'])} ({f['rendered']:,} of {f['pairs']:,})"
                      if side == "typing" else "(nobody types)")
            add(f"| {entry['round'] + 1} ({' then '.join(entry['order'])}) | {side} | {render} | "
                f"{num(f['answers_per_watcher_second'], 2)} | {num(f['statements_per_second'], 1)} | "
                f"{num(f['transactions_per_second'], 1)} | {cpu_text(f)} | {ms_or_s(f['join_p50'])} / {ms_or_s(f['join_p99'])} "
                f"({f['joins_answered']} of {f['joins']}) |")
    add("")
    add("Each round's ratios (typing / nobody typing) and what typing added (typing less nobody typing):")
    add("")
    names = [name for name in ratios]
    add("| Round (order) | " + " | ".join(names) + " | statements/s added | transactions/s added |")
    add("| --- |" + " --- |" * (len(names) + 2))
    for entry in rounds:
        add(f"| {entry['round'] + 1} ({' then '.join(entry['order'])}) | "
            + " | ".join("n/a" if entry["ratios"][name] is None else factor_text(entry["ratios"][name])
                         for name in names)
            + f" | {num(entry['beyond_quiet']['statements_per_second'], 1)} | "
            f"{num(entry['beyond_quiet']['transactions_per_second'], 1)} |")
    add("| median (min-max) | " + " | ".join(ratio_spread(ratios[name]) for name in names)
        + f" | {difference_spread(beyond['statements_per_second'])} | "
        f"{difference_spread(beyond['transactions_per_second'])} |")
    add("")
    typing_hosts(t, hosts, add)
    typing_shows(t, add)
    if t.get("failed"):
        add("**This run failed its checks:**")
        add("")
        for failure in t["failed"]:
            add(f"- {failure}")
        add("")


def typing_method(t, options, add):
    rounds = len(t["rounds"])
    users = t["watchers"] + t["typists"] + t["bystanders"]
    add(f"One database seeded as for scenarios 1-4 ({users:,} users, all members of `{t['community']}`). "
        f"{t['watchers']:,} members hold long polls")
    add(f"watching `{t['community']}/{t['thread']}` on one gunicorn of {t['workers']} gevent workers (the kernel "
        "spreads their connections), each polling")
    add("again at once after every answer from the returned cursor and hash, on keep-alive connections, as the")
    add(f"browser client does. {t['typists']} other members take turns typing there, {t['typing_at_once']} at any "
        f"moment: every second {t['changes_per_second']} of them")
    add("start (`PUT /me/typing`) and as many stop (`DELETE /me/typing`), each at a random moment of the second")
    add("and on a keep-alive connection of its own, so that who types changes every second; those typing repeat")
    add("their `PUT` once a second, as a typing client does, and a typist types and rests 3 s at least. Beside")
    add(f"them {t['bystanders']} members that watch nothing hold long polls, and a writer adds them to communities "
        f"one at a time, {t['join_rate']} a")
    add("second (`INSERT INTO memberships`, a transaction each). The baseline is the same with nobody typing:")
    add(f"{rounds} round{'s' if rounds > 1 else ''} of each, taking turns, the order reversed every other round. "
        f"Each window lasts "
        f"{t['seconds']:.0f} s and")
    add(f"starts {t['warm_seconds']['quiet']:.0f} s into its phase, once PostgreSQL has flushed what its backends "
        "counted in the phase before; from")
    add("then on every backend is busy and flushes its counts within a second, at both ends of the window alike.")
    add("")
    add("Keypress to render runs from the moment the `PUT` that made a typist appear was sent to the arrival, at")
    add("the load generator, of the first answer of a watcher that shows the typist where its answer before did")
    add("not, for every (watcher, appearance) pair of the window; stop to gone likewise from the `DELETE` to the")
    add("first answer without the typist. Statements are the server's (`community_sync_db_queries_total`, both")
    add("workers); transactions are PostgreSQL's for the run's database (`pg_stat_database`), which count the")
    add("workers' head checks too (`WAKE_POLL_INTERVAL`, 20 a second each); worker CPU is each worker's")
    add("`utime + stime` from `/proc` over the window; join wake runs from `COMMIT` returning in the writer to the")
    add("bystander's `changed` answer. Figures are medians over the rounds; a ratio is the median of the rounds'")
    add("ratios, with their spread (min-max).")
    add("")


def cpu_text(figures):
    each = ", ".join(f"{value:.0f}%" for value in figures["worker_cpu_percents"])
    return f"{figures['worker_cpu_percent']:.0f}% ({each})"


def waiting_text(figures):
    return ", ".join(f"{value:.0f}%" for value in figures.get("worker_waiting_percents", ())) or "n/a"


def difference_spread(entry):
    """A difference's median over rounds and its spread: ``12.3 (10.1 to 14.0)``."""
    if entry["median"] is None:
        return "n/a"
    if len(entry["rounds"]) == 1:
        return f"{num(entry['median'], 1)} (one run)"
    return f"{num(entry['median'], 1)} ({num(entry['min'], 1)} to {num(entry['max'], 1)})"


def typing_table(t, add):
    typing, quiet = t["figures"]["typing"], t["figures"]["quiet"]
    ratios, rounds = t["ratios"], t["rounds"]
    runs = {side: [entry[side] for entry in rounds] for side in ("typing", "quiet")}
    rendered = all(f["render_missed"] == 0 and f["pairs"] for f in runs["typing"])
    clean = all(f["typists_shown"] == 0 for f in runs["quiet"])
    add("| | Typing | Baseline: nobody typing | Typing / baseline, per round: median (min-max) | |")
    add("| --- | --- | --- | --- | --- |")
    add(f"| Keypress to render p50 / p95 (p99, max), {t['workers']} workers | {ms_or_s(typing['render_p50'])} / "
        f"{ms_or_s(typing['render_p95'])} ({ms_or_s(typing['render_p99'])}, {ms_or_s(typing['render_max'])}) | | | "
        f"p95 within {t['target_p95']:.1f} s: {verdict(typing['render_p95'] <= t['target_p95'])} |")
    add("| (watcher, appearance) pairs rendered, each round | "
        + ", ".join(f"{f['rendered']:,} of {f['pairs']:,} ({f['appearances']} appearances)" for f in runs["typing"])
        + f" | | | {verdict(rendered)} |")
    add(f"| Stop to gone p50 / p95 | {ms_or_s(typing['gone_p50'])} / {ms_or_s(typing['gone_p95'])} | | | |")
    add(f"| Answers per watcher per second | {num(typing['answers_per_watcher_second'], 2)} | "
        f"{num(quiet['answers_per_watcher_second'], 2)} | | |")
    add(f"| Of the watchers' answers, those that showed someone come or go | "
        f"{num(100 * typing['answers_changing_share'], 1)}% | | | |")
    add(f"| Typists shown while nobody typed, each round | | "
        + ", ".join(str(f["typists_shown"]) for f in runs["quiet"]) + f" | | {verdict(clean)} |")
    add(f"| Server statements per second | {num(typing['statements_per_second'], 1)} | "
        f"{num(quiet['statements_per_second'], 1)} | {ratio_spread(ratios['server statements per second'])} | |")
    add(f"| PostgreSQL transactions per second | {num(typing['transactions_per_second'], 1)} | "
        f"{num(quiet['transactions_per_second'], 1)} | "
        f"{ratio_spread(ratios['PostgreSQL transactions per second'])} | |")
    add(f"| Worker CPU, both workers (each worker), median round | {cpu_text(median_round(runs['typing']))} | "
        f"{cpu_text(median_round(runs['quiet']))} | {ratio_spread(ratios['worker CPU'])} | |")
    add(f"| Of the window, each worker runnable but waiting for a core (`/proc/<pid>/schedstat`), median round | "
        f"{waiting_text(median_round(runs['typing']))} | {waiting_text(median_round(runs['quiet']))} | | |")
    add(f"| Worker CPU per watcher's answer (and its next poll) | {num(typing['worker_cpu_ms_per_answer'], 2)} ms "
        f"| | | |")
    add(f"| Load generator CPU | {num(typing['client_cpu_percent'])}% | {num(quiet['client_cpu_percent'])}% | | |")
    add(f"| Machine busy, {t['cores']} cores: all; everything but the workers and the load generator "
        f"(PostgreSQL, and whatever else ran) | {num(typing['machine_cpu_percent'])}%; "
        f"{num(typing['other_cpu_percent'])}% | {num(quiet['machine_cpu_percent'])}%; "
        f"{num(quiet['other_cpu_percent'])}% | | |")
    add(f"| Typists' requests a second: starts, repeats, stops | "
        f"{num(typing['starts'] / typing['seconds'], 1)}, {num(typing['repeats'] / typing['seconds'], 1)}, "
        f"{num(typing['stops'] / typing['seconds'], 1)} (a `PUT` answered in {ms_or_s(typing['put_p50'])} p50, "
        f"{ms_or_s(typing['put_p99'])} p99) | | | |")
    add(f"| Join wake p50 | {ms_or_s(typing['join_p50'])} | {ms_or_s(quiet['join_p50'])} | "
        f"{ratio_spread(ratios['join wake p50'])} | |")
    add(f"| Join wake p99 (joins answered, each round) | {ms_or_s(typing['join_p99'])} ("
        + ", ".join(f"{f['joins_answered']} of {f['joins']}" for f in runs["typing"]) + f") | "
        f"{ms_or_s(quiet['join_p99'])} (" + ", ".join(f"{f['joins_answered']} of {f['joins']}" for f in runs["quiet"])
        + f") | {ratio_spread(ratios['join wake p99'])} | |")
    add("")


def median_round(figures):
    """The run whose total worker CPU is the median (the lower of the two middle ones)."""
    ordered = sorted(figures, key=lambda f: f["worker_cpu_percent"])
    return ordered[(len(ordered) - 1) // 2]


def typing_cost(t, add):
    typing, quiet, beyond, hosts = t["figures"]["typing"], t["figures"]["quiet"], t["beyond_quiet"], t["hosts"]
    added = beyond["statements_per_second"]["median"]
    add("**What a busy thread costs the database.** Typing's statements do not grow with the watchers: each "
        "worker reads who types once a second (one statement, while its polls watch a topic, whether anyone "
        "types or not), and a typist's request writes once at most (a start, a stop, a repeat every other "
        f"second). On two hosts, where nothing else was written, the {2 * t['workers']} workers sent "
        f"**{num(hosts['statements_per_second'], 1)} statements a second** in all for "
        f"{num(requests_per_second(hosts), 1)} typists' requests a second and "
        f"{num(hosts['answers_per_watcher_second'] * hosts['held'])} answers a second to the watchers, and "
        f"PostgreSQL counted {num(hosts['transactions_per_second'], 1)} transactions a second (the workers' head "
        f"checks, up to 20 a second each while polls wait, among them). On one host, with the joins beside it, "
        f"the server sent {num(typing['statements_per_second'], 1)} statements a second with typing against "
        f"{num(quiet['statements_per_second'], 1)} with nobody typing, "
        f"{difference_spread(beyond['statements_per_second'])} a second (the rounds' differences: median and "
        f"range), and PostgreSQL counted {num(typing['transactions_per_second'], 1)} transactions a second against "
        f"{num(quiet['transactions_per_second'], 1)} ({difference_spread(beyond['transactions_per_second'])})"
        + (": fewer with typing, because workers busy with the watchers' answers ran fewer head checks and "
           "re-read the joins in larger batches. " if added < 0 else ". ")
        + f"The watchers' answers ({num(typing['answers_per_watcher_second'] * t['held'])} a second) and their "
        f"next polls add none: the statements did not rise with them.")
    add("")


def requests_per_second(figures):
    return (figures["starts"] + figures["repeats"] + figures["stops"]) / figures["seconds"]


def typing_hosts(t, hosts, add):
    here, there = hosts["hosts"]
    add(f"#### Two hosts: {hosts['held']:,} watchers split between two gunicorns of {t['workers']} workers each")
    add("")
    add("Two gunicorn masters on the same database, as in scenario 7; watcher i polls host i mod 2, and every")
    add(f"typist's request goes to the first host. One window of {hosts['seconds']:.0f} s of typing as above "
        "(no joins), after the same warm-up.")
    add("")
    add("| | Watchers on the typists' host | On the other host | All | |")
    add("| --- | --- | --- | --- | --- |")
    add(f"| Keypress to render p50 / p95 (pairs) | {ms_or_s(here['p50'])} / {ms_or_s(here['p95'])} ({here['pairs']:,}) | "
        f"{ms_or_s(there['p50'])} / {ms_or_s(there['p95'])} ({there['pairs']:,}) | {ms_or_s(hosts['render_p50'])} / "
        f"{ms_or_s(hosts['render_p95'])} ({hosts['rendered']:,} of {hosts['pairs']:,}) | across hosts, p95 within "
        f"{t['target_p95']:.1f} s: {verdict(there['p95'] is not None and there['p95'] <= t['target_p95'])} |")
    add(f"| Keypress to render p99, max | {ms_or_s(here['p99'])}, {ms_or_s(here['max'])} | {ms_or_s(there['p99'])}, "
        f"{ms_or_s(there['max'])} | {ms_or_s(hosts['render_p99'])}, {ms_or_s(hosts['render_max'])} | |")
    add(f"| Stop to gone p50 / p95 | | | {ms_or_s(hosts['gone_p50'])} / {ms_or_s(hosts['gone_p95'])} | |")
    add(f"| Answers per watcher per second | | | {num(hosts['answers_per_watcher_second'], 2)} | |")
    add(f"| Server statements per second (both hosts) | | | {num(hosts['statements_per_second'], 1)} | |")
    add(f"| PostgreSQL transactions per second | | | {num(hosts['transactions_per_second'], 1)} | |")
    add(f"| Worker CPU, all four (each worker) | | | {cpu_text(hosts)} | |")
    add(f"| Of the window, each worker waiting for a core | | | {waiting_text(hosts)} | |")
    add(f"| Machine busy, {t['cores']} cores: all; everything but the workers and the load generator | | | "
        f"{num(hosts['machine_cpu_percent'])}%; {num(hosts['other_cpu_percent'])}% | |")
    add("")


def typing_shows(t, add):
    typing, quiet, ratios = t["figures"]["typing"], t["figures"]["quiet"], t["ratios"]
    there = t["hosts"]["hosts"][1]
    middle = median_round([entry["typing"] for entry in t["rounds"]])

    def median_of(name):
        value = ratios[name]["median"]
        return "n/a" if value is None else factor_text(value)

    met = typing["render_p95"] <= t["target_p95"] and there["p95"] is not None and there["p95"] <= t["target_p95"]
    add("**What it shows.** Each worker reads who types once a second, so a change waits half a second for the "
        "next read on average, whichever worker or host took the `PUT`; the rest is the answer's own time. "
        f"A watcher showed a typist {ms_or_s(typing['render_p50'])} after the keypress at the median and "
        f"{ms_or_s(typing['render_p95'])} at the 95th percentile on one host of {t['workers']} workers, and "
        f"{ms_or_s(there['p50'])} / {ms_or_s(there['p95'])} on the other host than the typist's"
        + (". " if met else
           f": the target is missed. The watchers were answered {num(typing['answers_per_watcher_second'], 2)} "
           f"times a second rather than about once, each answer and next poll taking "
           f"{num(typing['worker_cpu_ms_per_answer'], 1)} ms of a worker's CPU, and the workers were short of it: "
           f"each waited for a core {waiting_text(middle)} of the window (median round) while the machine's "
           f"{t['cores']} cores were {num(typing['machine_cpu_percent'])}% busy, "
           f"{num(typing['other_cpu_percent'])}% of it neither the workers nor the load generator. A typist whose "
           f"stint ended before a watcher's next answer was never shown to it "
           f"({num(100 * (1 - typing['rendered'] / typing['pairs']))}% of the pairs, from the rounds' medians). ")
        + f"Typing cost the workers {median_of('worker CPU')} their CPU with nobody typing, and the unrelated "
        f"joins were woken in {ms_or_s(typing['join_p99'])} at p99 against {ms_or_s(quiet['join_p99'])} with "
        f"nobody typing ({median_of('join wake p99')}; p50 {median_of('join wake p50')}): "
        + ("typing did not slow them. " if ratios["join wake p99"]["median"] and ratios["join wake p99"]["median"]
           < 1.5 else "they waited behind the watchers' answers in the same event loops. ")
        + "The database is not where a busy thread costs (above).")
    add("")


WAKEUPS_INTRO = (
    "`WAKE_SOURCE=watcher`: every worker `LISTEN`s, no writer notifies, and one session of the whole",
    "deployment, elected through a PostgreSQL advisory lock, checks the log's head every 5 ms and sends one",
    "`NOTIFY` per move ([operations.md](operations.md#wake-sources)). `python -m bench wakeups`",
    "(`bench/wakeups.py`) runs it beside `head` and `notify`, the three taking turns in one run; scenario 12",
    "gives what each costs the writers and scenario 13 the wake-ups across two hosts.",
)


def wakeups_block(results, add):
    r = results["wakeups"]
    sources, targets = r["sources"], r["targets"]
    add(f"### 19. Wake sources: {r['waiters']:,} idle waiters, idle cost on 2 and 8 workers, failover")
    add("")
    run_line(results, add)
    add(f"**Wake-ups at scale**: scenario 3 once per source, {r['rounds']} rounds taking turns (the order reversed "
        f"every other round): {r['waiters']:,} long polls held on one gevent worker, then, nothing written, "
        f"PostgreSQL's transactions a second for the run's database, then single-user joins committed in SQL at "
        f"random moments, from the `COMMIT` to the poll's answer. Medians over the rounds.")
    add("")
    add("| Source | Wake p50 | Wake p99 | Answered | Idle transactions/s, 1 worker | Target p50 <= 10 ms, "
        "p99 <= 30 ms |")
    add("| --- | --- | --- | --- | --- | --- |")
    for source in sources:
        runs = r["wake"][source]
        p50 = median([run["wake"]["p50"] for run in runs])
        p99 = median([run["wake"]["p99"] for run in runs])
        add(f"| `{source}` | {ms(p50)} | {ms(p99)} | "
            f"{sum(run['wake']['answered'] for run in runs)} / {sum(run['wake']['changes'] for run in runs)} | "
            f"{num(median([run['idle']['transactions_per_second'] for run in runs]), 1)} | "
            f"{verdict(p50 is not None and p99 is not None and p50 <= targets['wake_p50'] and p99 <= targets['wake_p99'])} |")
    add("")
    head = {run["round"]: run for run in r["wake"]["head"]}
    for source in sources:
        if source == "head":
            continue
        ratios = per_run((run["wake"]["p50"], head[run["round"]]["wake"]["p50"]) for run in r["wake"][source]
                         if run["round"] in head)
        add(f"Wake p50, `{source}` / `head`, per round: {spread(ratios)}.")
    add("")
    workers = sorted({int(key.split("/")[1]) for key in r["idle"]})
    add(f"**Idle cost by workers**: one gunicorn of {' and then '.join(str(w) for w in workers)} gevent workers, "
        f"polls held and nothing written, each source in turn; transactions a second at PostgreSQL for the run's "
        f"database (after its statistics settled), of which the head checks the workers counted (with `watcher`, "
        f"the deployment's one watcher), and what is left per worker (keep-alives, the safety net, presence).")
    add("")
    add("| Source | Workers | Transactions/s | Head checks/s | Others per worker per second | Target <= 1 a worker "
        "beyond the watcher's checks |")
    add("| --- | --- | --- | --- | --- | --- |")
    for source in sources:
        for count in workers:
            cells = r["idle"][f"{source}/{count}"]
            per_worker = median([c["other_per_worker"] for c in cells])
            add(f"| `{source}` | {count} | {num(median([c['transactions_per_second'] for c in cells]), 1)} | "
                f"{num(median([c['head_checks_per_second'] for c in cells]), 1)} | {num(per_worker, 2)} | "
                + (f"{verdict(per_worker <= targets['per_worker'])} |" if source == "watcher" else "|"))
    add("")
    runs = r["failover"]
    if runs:
        again = r.get("failover_run")
        if again:
            machine = again["machine"]
            add(f"The failover part ran on its own: `{again['command']}`, {machine['date']}, commit "
                f"`{machine['commit']}` (its first run above killed a watcher that had moved to the polls' host; "
                f"the scenario now kills the first host's two workers only).")
            add("")
        add(f"**Failover**: two gunicorns of two workers, `WAKE_SOURCE=watcher`, the watcher elected on the first "
            f"and {results['options']['wakeups_failover_polls']:,} polls held on the second; the watcher's worker "
            f"killed with SIGKILL and at once one transaction adding waiting users to a community. The gap is from "
            f"the kill until another session holds the watcher's lock; the wake-ups from the `COMMIT` to each "
            f"poll's answer.")
        add("")
        add("| Kill | Gap to the next watcher | Committed after the kill | Answered | Wake p50 / p99 / max | "
            "Every poll within 1.5 s |")
        add("| --- | --- | --- | --- | --- | --- |")
        for number, run in enumerate(runs, 1):
            add(f"| {number} | {ms(run['gap'])} | {ms(run['commit_after_kill'])} | {run['answered']} / "
                f"{run['changes']} | {ms(run['p50'])} / {ms(run['p99'])} / {ms(run['max'])} | "
                f"{verdict(run['answered'] == run['changes'] and run['max'] is not None and run['max'] <= targets['failover'])} |")
        add("")


DECODING_INTRO = (
    "The other way to learn of commits without a writer notifying: a replication connection streaming the",
    "change log's inserts out of the WAL (`pgoutput`, a temporary slot, a publication of `changes` alone).",
    "`python -m bench decoding` (`bench/decoding.py`) measures it against the head watcher where the two",
    "differ: from a commit to the signal, what each costs PostgreSQL idle, and the writers beside each.",
)


def decoding_block(results, add):
    r = results["decoding"]
    mechanisms = r["mechanisms"]
    add("### 20. Logical decoding and the head watcher: commit to signal, idle cost, writers")
    add("")
    run_line(results, add)
    settings = ", ".join(f"`{name}={value}`" for name, value in r["settings"].items())
    add(f"A PostgreSQL cluster of the scenario's own ({settings}), migrated and seeded as the others. Each mechanism "
        f"runs in a receiver process of its own that notes the moment of every signal: `watcher`, the service's "
        f"`HeadWatch` (a head check every 5 ms, a `NOTIFY` per move) and a worker's `LISTEN`; `decoding`, a "
        f"temporary logical slot streamed through `pgoutput` for a publication of `changes` (one message per "
        f"transaction that wrote to the log). {r['runs']} runs each, taking turns. Single-row joins committed in "
        f"SQL at random moments; the latency runs from the `COMMIT`'s return to the first signal sent after it was "
        f"sent. Then nothing written: PostgreSQL's transactions a second.")
    add("")
    add("| Mechanism | Commit to signal p50 | p99 | max | Signalled | Idle transactions/s |")
    add("| --- | --- | --- | --- | --- | --- |")
    for mechanism in mechanisms:
        runs = r["signals"][mechanism]
        add(f"| `{mechanism}` | {ms(median([x['p50'] for x in runs]))} | {ms(median([x['p99'] for x in runs]))} | "
            f"{ms(max(x['max'] for x in runs if x['max'] is not None))} | "
            f"{sum(x['signalled'] for x in runs)} / {sum(x['changes'] for x in runs)} | "
            f"{num(median(r['idle'][mechanism]), 1)} |")
    add("")
    add(f"Writers: pgbench, one-row activity (`INSERT INTO activity`, moved into the log by its trigger, which does "
        f"not notify) for {r['seconds']} s at each concurrency, with nothing signalling (`none`, as with `head`), "
        f"with the watcher running and with the slot streamed, taking turns; the receiver's backend's CPU (the "
        f"watcher's session, or the walsender that decodes) over the run.")
    add("")
    add("| Clients | Transactions/s: none | watcher | decoding | watcher / none, per run | decoding / none, per run | "
        "Receiver's backend CPU: watcher / decoding |")
    add("| --- | --- | --- | --- | --- | --- | --- |")
    for clients, cell in r["writes"].items():
        none = cell["none"]
        ratios = {m: spread(per_run((x["tps"], y["tps"]) for x, y in zip(cell[m]["runs"], none["runs"])))
                  for m in mechanisms}
        cpu = {m: median([x["receiver_backend_cpu_percent"] for x in cell[m]["runs"]]) for m in mechanisms}
        add(f"| {clients} | {num(none['tps'])} | {num(cell['watcher']['tps'])} | {num(cell['decoding']['tps'])} | "
            f"{ratios['watcher']} | {ratios['decoding']} | {num(cpu['watcher'])}% / {num(cpu['decoding'])}% |")
    add("")

SECTIONS = (
    (V2_HEADING, V2_INTRO, {"rename": rename_block, "burst": burst_block, "unread": unread_block}),
    (PRESENCE_HEADING, PRESENCE_INTRO, {"presence": presence_block}),
    (SCALEOUT_HEADING, SCALEOUT_INTRO, {"writes": writes_block, "sources": sources_block}),
    (STORMS_HEADING, STORMS_INTRO, {"storm": storm_block, "deploy": deploy_block, "burst10": burst10_block}),
    (TOPICS_HEADING, TOPICS_INTRO, {"topics": topics_block}),
    (TYPING_HEADING, TYPING_INTRO, {"typing": typing_block}),
    (WAKEUPS_HEADING, WAKEUPS_INTRO, {"wakeups": wakeups_block}),
    (DECODING_HEADING, DECODING_INTRO, {"decoding": decoding_block}),
)
