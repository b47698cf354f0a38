"""Render recorded results as docs/benchmarks.md and two plots in docs/.

The tables come from the results JSON; ``bench/notes.md`` (the profiles, what
bounds a missed target and what would move it) is appended as written.
"""
from pathlib import Path

from .stack import median

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
NOTES = Path(__file__).resolve().parent / "notes.md"


def ms(seconds):
    return "n/a" if seconds is None else f"{seconds * 1000:.1f} ms"


def num(value, digits=0):
    return "n/a" if value is None else f"{value:,.{digits}f}"


def ratio(a, b):
    return "n/a" if not a or not b else f"{a / b:,.1f}x"


def verdict(ok):
    return "met" if ok else "**missed**"


def sessions(results, kind):
    return results.get("sessions", {}).get(kind, [])


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
    """Write ``benchmarks.md`` and the plots into ``docs``."""
    docs = Path(docs)
    docs.mkdir(exist_ok=True)
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
    add(f"- Repetitions: {len(long_runs)} long-poll sessions of {options['waiters']:,} held polls each, "
        f"{len(naive_runs)} of the naive baseline; {options['runs']} rounds of each throughput test.")
    add("  Figures are medians over runs unless marked; every ratio compares figures of the same run.")
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
    if NOTES.exists():
        add(NOTES.read_text().rstrip())
        add("")
    (docs / "benchmarks.md").write_text("\n".join(lines) + "\n")


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
        add(f"| 1 | Held polls | {n:,} held, none failed, RSS ≤ 15 KB/poll | {held:,} held, {failures} failed, "
            f"{num(per_poll / 1000, 1)} KB/poll | naive: {num((naive_per_poll or 0) / 1000, 1)} KB/poll; bare Flask "
            f"view waiting on an event: {num((floor or 0) / 1000, 1)} KB | "
            f"naive uses {ratio(naive_per_poll, per_poll)} as much | {verdict(held >= n and failures == 0 and per_poll <= 15000)} |")
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
            f"p99 {ms(med(small, 'wake', 'p99'))} | p50 {ratio(naive_p50 or small_p50, p50)} lower | "
            f"{verdict(p50 <= 0.005 and p99 <= 0.020)} |")
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
        add(f"| 3 | Fan-out: rename, {n:,} members waiting | all within 1 s; queries independent of members | "
            f"last answer {ms(last)}; {num(statements)} statements ({num(small_statements)} for "
            f"{results['options']['small']:,} members) | naive: last {ms(naive_last)}, {num(naive_statements)} "
            f"statements | {ratio(naive_statements, statements)} fewer statements | "
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
            f"{ratio(naive_rate, rate) if rate else 'n/a (zero)'} | {verdict(rate <= 1.0)} |")
    cond = results.get("conditional")
    if cond:
        add(f"| 5 | Conditional snapshots (304) | ≥ 80% of hello-world; ≤ 1 query/request | "
            f"{num(cond['snapshot_304']['rps'])} req/s, {num(cond['statements_per_request'], 2)} statements/request | "
            f"bare hello {num(cond['hello_bare']['rps'])} req/s; in-app hello {num(cond['hello_in_app']['rps'])} req/s | "
            f"{cond['ratio']:.0%} of bare, {cond['ratio_in_app']:.0%} of in-app | "
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
                           ("bare wait", sessions(results, "bare_wait"))):
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
        add("taking turns; `GET /me/communities` with a matching `If-None-Match` (all 304).")
        add("")
        add("| Round | 304 req/s | bare hello req/s | in-app hello req/s | 304 / bare | 304 / in-app | "
            "worker CPU per request (304 / bare / in-app) |")
        add("| --- | --- | --- | --- | --- | --- | --- |")
        rounds = cond["rounds"]
        for i, (s, h, a) in enumerate(zip(rounds["snapshot_304"], rounds["hello_bare"], rounds["hello_in_app"]), 1):
            add(f"| {i} | {s['rps']:,.0f} | {h['rps']:,.0f} | {a['rps']:,.0f} | {s['rps'] / h['rps']:.0%} | "
                f"{s['rps'] / a['rps']:.0%} | {s['worker_cpu_us_per_request']:.0f} / "
                f"{h['worker_cpu_us_per_request']:.0f} / {a['worker_cpu_us_per_request']:.0f} µs |")
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
