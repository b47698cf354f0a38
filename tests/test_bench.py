"""The benchmark harness still works: a tiny run against real servers on PostgreSQL.

It checks that every poll was held and every change answered, not how fast:
speed is what ``python -m bench`` itself reports.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import postgres_url, require_command, require_postgres

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.postgres
@pytest.mark.slow
def test_held_and_wake_smoke(pg_database, tmp_path):
    output = tmp_path / "results.json"
    command = [
        sys.executable, "-m", "bench", "wake", "--quick", "--waiters", "50",
        "--database-url", pg_database.url, "--output", str(output), "--docs", str(tmp_path / "docs"),
        "--seed", "1",
    ]
    finished = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert finished.returncode == 0, finished.stderr[-3000:]

    results = json.loads(output.read_text())
    for kind in ("longpoll", "naive"):
        (session,) = results["sessions"][kind]
        assert session["round"] == 0
        assert session["waiting"] == 50, session
        assert session["failures"] == 0, session["failure_samples"]
        assert session["early_answers"] == 0
        assert session["rss_per_poll"] > 0
        wake = session["wake"]
        assert wake["changes"] > 0
        assert wake["answered"] == wake["changes"], wake
        assert all(latency > 0 for latency in wake["latencies"])
    report = (tmp_path / "docs" / "benchmarks.md").read_text()
    assert "Wake latency" in report


def quick_run(tmp_path, scenario, *options):
    """``python -m bench SCENARIO --quick`` on databases of its own; its results, its report in tmp_path/docs."""
    require_postgres()
    output = tmp_path / f"{scenario}.json"
    command = [sys.executable, "-m", "bench", scenario, "--quick", *options, "--output", str(output),
               "--docs", str(tmp_path / "docs")]
    finished = subprocess.run(command, cwd=ROOT, env=dict(os.environ, BENCH_DATABASE_URL=postgres_url()),
                              capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr[-3000:]
    return json.loads(output.read_text())


@pytest.mark.postgres
@pytest.mark.slow
def test_change_log_v2_smoke(tmp_path):
    """rename, burst and unread, small, each on databases of its own; their section rendered."""
    results = quick_run(tmp_path, "v2")
    options = results["options"]
    rename = results["rename"]
    # Revision 0001 fans a rename out to every member; head writes one row.
    assert rename["before"]["sql"]["rows"] == rename["before"]["api"]["rows"] == options["rename_members"]
    assert rename["after"]["sql"]["rows"] == rename["after"]["api"]["rows"] == 1
    waiting = rename["waiting"]
    assert waiting["answered"] == waiting["with_rename"] == waiting["waiters"], waiting
    burst = results["burst"]
    assert burst["published"] == options["burst_rate"] * options["burst_seconds"]
    assert burst["quiet"]["joins"] == options["burst_quiet_joins"]
    assert burst["quiet"]["joins_answered"] > 0
    assert burst["compared"] + sum(burst["snapshot_failures"].values()) == options["burst_members"]
    unread = results["unread"]
    # Every busy community is at the cap; the quiet ones have nothing.
    assert unread["busy"]["unread"] == 100 * options["unread_communities"]
    assert unread["quiet"]["unread"] == 0
    for user in ("busy", "quiet"):
        assert all(r["counts"] == {"200": r["requests"]} for r in unread[user]["snapshot"]["rounds"])
    report = (tmp_path / "docs" / "benchmarks.md").read_text()
    for heading in ("### 8. Rename", "### 9. Activity burst", "### 10. Unread counts"):
        assert heading in report


@pytest.mark.postgres
@pytest.mark.slow
def test_presence_smoke(tmp_path):
    """Scenario 11, small: both workers' users counted through either, and through a second host."""
    results = quick_run(tmp_path, "presence")
    presence, options = results["presence"], results["options"]
    online = presence["phases"]["online"]
    assert online["held"] == options["presence_online"]
    # Both workers hold some of the users, and each read counts them all.
    assert len(online["rows_per_worker"]) == 2 and sum(online["rows_per_worker"]) >= online["held"]
    assert min(presence["across_workers"]["counted"]) >= online["held"]
    hosts = presence["across_hosts"]
    assert hosts["held"] == online["held"] + options["presence_other_host"]
    # Host 1's two workers, and host 2's: its few users (presence_other_host) may all
    # connect to one of its two workers, whichever accepts first.
    assert len(hosts["rows_per_worker"]) in (3, 4)
    assert min(hosts["host 1"]["counted"]) >= hosts["held"] and min(hosts["host 2"]["counted"]) >= hosts["held"]
    counts = presence["counts"]
    assert counts["reader_counted"] == counts["communities"]
    assert counts["snapshots"]["reader"]["statuses"] == {"200": counts["snapshots"]["reader"]["statuses"]["200"]}
    report = (tmp_path / "docs" / "benchmarks.md").read_text()
    assert "### 11. Presence" in report


@pytest.mark.postgres
@pytest.mark.slow
def test_wake_sources_smoke(tmp_path):
    """Scenarios 12 and 13, small: pgbench with and without NOTIFY, two hosts in each mode."""
    require_command("pgbench", "apt-get install postgresql")
    writes = quick_run(tmp_path, "writes")
    options = writes["options"]
    cells = writes["writes"]["cells"]
    assert set(cells) == {f"{name}/{clients}" for name in ("activity", "membership")
                          for clients in options["writes_clients"]}
    for cell in cells.values():
        for source in ("notify", "head", "watcher"):
            assert cell[source]["tps"] > 0 and 0 < cell[source]["commit_ms"] <= cell[source]["latency_ms"]
    sources = quick_run(tmp_path, "sources")["sources"]
    assert set(sources) == {"notify", "head", "watcher"}
    for source, runs in sources.items():
        (run,) = runs
        assert run["answered"] == run["writes"] == options["multi_changes"], (source, run)
    # The head checkers check, whatever the number of polls; so does the watcher, for all four workers.
    assert sources["head"][0]["idle"]["head_checks_per_second"] > 5
    assert sources["watcher"][0]["idle"]["head_checks_per_second"] > 5
    assert sources["notify"][0]["idle"]["head_checks_per_second"] == 0
    report = (tmp_path / "docs" / "benchmarks.md").read_text()
    assert "### 12. Concurrent writers" in report and "### 13. Two hosts" in report


@pytest.mark.postgres
@pytest.mark.slow
def test_wake_sources_through_a_transaction_mode_pgbouncer(tmp_path):
    """Scenario 13, small, its servers pooling through a PgBouncer of its own, their wake sources direct."""
    require_command("pgbouncer", "apt-get install pgbouncer")
    results = quick_run(tmp_path, "sources", "--pgbouncer")
    for source, (run,) in results["sources"].items():
        assert run["answered"] == run["writes"] == results["options"]["multi_changes"], (source, run)
    # The pools' transactions went through it: the bench databases', beside PgBouncer's own.
    assert sum(count for name, count in results["pgbouncer"].items() if name.startswith("bench_")) > 0


@pytest.mark.postgres
@pytest.mark.slow
def test_wakeups_and_decoding_smoke(tmp_path):
    """Scenarios 19 and 20, small: each wake source woken, the watcher killed and replaced, the slot streamed."""
    wakeups = quick_run(tmp_path, "wakeups")["wakeups"]
    assert not wakeups["failed"], wakeups["failed"]
    for source, (session,) in wakeups["wake"].items():
        assert session["wake"]["answered"] == session["wake"]["changes"] > 0, source
    # Only the head checks and the watcher read while nothing is written; the watcher's checks are the deployment's.
    idle = {key: cost for key, (cost,) in wakeups["idle"].items()}
    assert idle["notify/2"]["head_checks_per_second"] == 0 < idle["head/2"]["head_checks_per_second"]
    assert idle["watcher/2"]["head_checks_per_second"] > 5
    (failover,) = wakeups["failover"]
    assert failover["answered"] == failover["changes"] and failover["gap"] is not None
    decoding = quick_run(tmp_path, "decoding")["decoding"]
    for mechanism in ("watcher", "decoding"):
        (signals,) = decoding["signals"][mechanism]
        assert signals["signalled"] == signals["changes"] > 0, (mechanism, signals)
    for cell in decoding["writes"].values():
        assert all(cell[side]["tps"] > 0 for side in ("none", "watcher", "decoding"))
    report = (tmp_path / "docs" / "benchmarks.md").read_text()
    assert "### 19. Wake sources" in report and "### 20. Logical decoding" in report


@pytest.mark.postgres
@pytest.mark.slow
def test_storm_deploy_and_burst10_smoke(tmp_path):
    """Scenarios 14-16, small: every client waiting and given the fan-out once, before and after a reload."""
    results = quick_run(tmp_path, "storm", "--clients", "50")
    for kind, (entry,) in results["storm"]["rounds"].items():
        assert entry["round"] == 0
        assert entry["waiting"] == 50 and entry["all_waiting"], (kind, entry)
        assert entry["refused"] == {} and entry["connection_errors"] == {}, entry["failure_samples"]
        assert entry["rss_per_poll"] > 0
        fanout = entry["fanout"]
        assert fanout["answered"] == fanout["once"] == 50 and fanout["answered_again"] == 0, (kind, fanout)
    assert results["storm"]["rounds"]["longpoll"][0]["parked"] == 50
    assert results["storm"]["rounds"]["longpoll"][0]["statements"] > 0

    deploy = quick_run(tmp_path, "deploy", "--clients", "50")["deploy"]
    assert deploy["replaced"] and deploy["all_waiting"], deploy
    # Each waiting poll ended somehow; none was refused, and the change reached everyone once.
    assert sum(deploy["first_outcome"].values()) + deploy["untouched"] == 50
    assert deploy["first_outcome"]["refused"] == 0
    # Polls sent again to the worker leaving are answered or find their connection closed, never reset.
    assert deploy["outcomes"].get("reset", 0) == 0, deploy["failure_samples"]
    assert deploy["change"] == {"once": 50, "twice_or_more": 0, "missing": 0}, deploy

    burst = quick_run(tmp_path, "burst10")
    assert burst["burst10"]["rate"] == burst["options"]["burst10_rate"]
    assert burst["burst10"]["published"] == burst["options"]["burst10_rate"] * burst["options"]["burst10_seconds"]
    report = (tmp_path / "docs" / "benchmarks.md").read_text()
    for heading in ("### 14. Arrival storm", "### 15. Deploy", "### 16. Activity burst"):
        assert heading in report


@pytest.mark.postgres
@pytest.mark.slow
def test_topics_smoke(tmp_path):
    """Scenario 17, small: the reply wakes its watchers only, collapsed votes never go back, both reads answered."""
    results = quick_run(tmp_path, "topics")
    topics, options = results["topics"], results["options"]
    assert topics["failed"] == [] and "errors" not in results
    wake = topics["wake"]
    assert wake["held"] == options["topics_members"] and wake["watchers"] == options["topics_watchers"]
    for entry in wake["rounds"]:
        reply, community = entry["topic"], entry["community"]
        assert reply["woken"] == reply["woken_watchers"] == reply["watchers_with_row"] == wake["watchers"], reply
        assert reply["server_wakeups"] == wake["watchers"]
        assert community["woken"] == community["server_wakeups"] == wake["held"], community
        assert reply["statements"] > 0 and reply["rereads"] >= 1
        assert len(reply["watchers_latencies"]) == wake["watchers"]
        assert all(latency > 0 for latency in reply["watchers_latencies"])
    assert wake["unwatched_rows"] == 0
    votes = topics["votes"]
    rows = options["topics_vote_rate"] * options["topics_vote_seconds"]
    for entry in votes["rounds"]:
        for side in ("collapse", "plain"):
            run = entry[side]
            assert run["published"] == rows
            assert run["with_last"] == votes["watchers"] and run["last_values"] == {str(rows): votes["watchers"]}
            assert run["violations"] == run["repeats"] == 0, run["violation_samples"]
            assert run["refused"] == {}
        # A collapsed key reaches a watcher once an answer; the rows themselves come a hundred at most.
        assert entry["collapse"]["rows_delivered"]["max"] == entry["collapse"]["answers_per_watcher"]["max"]
        assert entry["plain"]["rows_per_watcher"] > entry["collapse"]["rows_per_watcher"]
    reads = topics["reads"]
    assert len(reads["watches"]) == 20
    assert reads["statuses"] == {side: {"snapshot": "reset", "poll": "unchanged"} for side in ("watching", "none")}
    for entry in reads["rounds"]:
        for side in ("watching", "none"):
            for read in ("snapshot", "poll"):
                assert entry[side][f"{read}_counts"] == {"200": entry[side][f"{read}_requests"] - 1}
    report = (tmp_path / "docs" / "benchmarks.md").read_text()
    assert "### 17. Topics" in report and "**What it shows.**" in report


@pytest.mark.postgres
@pytest.mark.slow
def test_typing_smoke(tmp_path):
    """Scenario 18, small: keypresses rendered at every watcher, none shown while nobody types, joins woken,
    and the same across two hosts."""
    from bench import typists

    results = quick_run(tmp_path, "typing")
    typing, options = results["typing"], results["options"]
    assert typing["failed"] == [] and "errors" not in results
    assert typing["held"] == typing["hosts"]["held"] == options["typing_watchers"]
    assert typing["held_bystanders"] == options["typing_bystanders"]
    (entry,) = typing["rounds"]
    assert entry["order"] == ["typing", "quiet"]
    busy, quiet = entry["typing"], entry["quiet"]
    assert busy["appearances"] > 0 and busy["pairs"] == busy["appearances"] * options["typing_watchers"]
    assert busy["rendered"] > 0 and busy["render_p50"] > 0 and busy["render_p95"] >= busy["render_p50"]
    assert busy["answers_per_watcher_second"] > 0 and busy["answers_without_typing"] == 0
    assert busy["starts"] > 0 and busy["stops"] > 0 and busy["requests_refused"] == 0
    assert quiet["typists_shown"] == 0 and quiet["starts"] == 0
    for side in (busy, quiet):
        assert side["joins"] > 0 and side["joins_answered"] == side["joins"]
        assert side["join_p99"] > 0 and side["statements_per_second"] > 0
        assert len(side["worker_cpu_percents"]) == 2
    assert set(entry["ratios"]) == {name for name, *_ in typists.COMPARED}
    hosts = typing["hosts"]
    # Watchers on both hosts rendered what was typed through the first.
    assert sum(host["pairs"] for host in hosts["hosts"]) == hosts["rendered"]
    assert all(host["pairs"] > 0 and host["p50"] > 0 for host in hosts["hosts"])
    assert len(hosts["worker_cpu_percents"]) == 4
    report = (tmp_path / "docs" / "benchmarks.md").read_text()
    assert "### 18. Typing" in report and "**What a busy thread costs the database.**" in report


# -- the report: ratios and re-rendering, no servers --------------------------------------

QUICK_RESULTS = ROOT / "tests" / "data" / "bench-quick.json"


def session(kind, number, rss_per_poll):
    return {"kind": kind, "round": number, "rss_per_poll": rss_per_poll}


def test_a_ratio_to_a_baseline_is_the_median_of_per_round_ratios():
    from bench import report

    # Listed out of round order; the baseline's round 1 is slow, its others fast.
    results = {"sessions": {
        "longpoll": [session("longpoll", 2, 10), session("longpoll", 0, 10), session("longpoll", 1, 30)],
        "bare_wait": [session("bare_wait", 0, 20), session("bare_wait", 1, 60), session("bare_wait", 2, 40)],
    }}
    ratios = report.paired(results, "longpoll", "bare_wait", report.rss)
    assert sorted(ratios) == [0.25, 0.5, 0.5]
    # The ratio of the medians (10 / 40) would say 0.25x.
    assert report.spread(ratios) == "0.50x (0.25-0.50x)"
    assert report.spread([0.8]) == "0.80x (one run)"
    assert report.spread([0.49, 0.61, 0.48], report.percent) == "49% (48-61%)"


def test_a_session_run_out_of_turns_is_not_compared():
    from bench import report

    # As recorded before sessions ran in rounds: nothing says which ran beside which.
    results = {"sessions": {"longpoll": [{"rss_per_poll": 10}, session("longpoll", 1, 10)],
                            "bare_wait": [{"rss_per_poll": 20}]}}
    assert report.paired(results, "longpoll", "bare_wait", report.rss) == []
    assert report.spread([]) == "n/a"


def report_of(results_file, docs):
    finished = subprocess.run([sys.executable, "-m", "bench", "report", str(results_file), "--docs", str(docs)],
                              cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert finished.returncode == 0, finished.stderr[-3000:]
    return (docs / "benchmarks.md").read_text()


def test_report_renders_the_page_from_its_results_alone(tmp_path):
    """The page is a function of the kept results: a stale page in the way changes nothing."""
    stale = tmp_path / "stale"
    stale.mkdir()
    (stale / "benchmarks.md").write_text("# Benchmarks\n\nxyzzy figures\n\n<!-- bench:rename -->\nxyzzy\n"
                                         "<!-- /bench:rename -->\n")
    fresh = report_of(QUICK_RESULTS.relative_to(ROOT), tmp_path / "fresh")
    assert report_of(QUICK_RESULTS.relative_to(ROOT), stale) == fresh
    assert "xyzzy" not in fresh
    # It names the file it comes from, in the page and in each scenario's section.
    assert fresh.count("`python -m bench report tests/data/bench-quick.json` renders") == 7
    # The summary quotes the median of the rounds' ratios, and the ratio table lists them round by round.
    from bench import report

    results = json.loads(QUICK_RESULTS.read_text())
    floor = report.paired(results, "longpoll", "bare_wait", report.rss)
    assert len(floor) == results["options"]["sessions"] == 2
    assert f"{report.spread(floor)} the floor;" in fresh
    medians = [report.spread(report.paired(results, kind, baseline, value))
               for _, kind, baseline, value in report.COMPARISONS]
    assert "| median (min-max) | " + " | ".join(medians) + " |" in fresh
    for number in (0, 1):
        assert f"| {number + 1} | " + " | ".join(
            report.factor_text(report.paired(results, kind, baseline, value)[number])
            for _, kind, baseline, value in report.COMPARISONS) + " |" in fresh


STORM_RESULTS = ROOT / "tests" / "data" / "bench-storm.json"


def test_storm_sections_render_from_their_results(tmp_path):
    """Scenarios 14-16 from one small recorded run: their sections, the file named, ratios round by round."""
    from bench import report

    page = report_of(STORM_RESULTS.relative_to(ROOT), tmp_path / "docs")
    assert page.count("`python -m bench report tests/data/bench-storm.json` renders") == 3
    for heading in (report.STORMS_HEADING, "### 14. Arrival storm", "### 15. Deploy", "### 16. Activity burst"):
        assert heading in page
    results = json.loads(STORM_RESULTS.read_text())
    storm = results["storm"]
    # The floor's round 0 pairs with the long poll's round 0 whatever order they are listed in.
    ratios = {label: report.storm_ratios(storm, value) for label, value in report.STORM_COMPARED.items()}
    assert all(len(values) == len(storm["rounds"]["longpoll"]) for values in ratios.values())
    for number in range(len(storm["rounds"]["longpoll"])):
        assert (f"| {number + 1} | " + " | ".join(report.factor_text(values[number]) for values in ratios.values())
                + " |") in page
    last = ratios["Fan-out, last answer"]
    assert f"| {report.spread(last)} |" in page
    deploy = results["deploy"]
    first = deploy["first_outcome"]
    assert f"{first['answered']:,} answered (200), {first['closed']:,} closed cleanly, {first['reset']:,} reset" in page


def test_storm_ratios_pair_rounds_and_skip_missing_figures():
    from bench import report

    def entry(number, seconds):
        return {"round": number, "waiting_seconds": seconds}

    storm = {"rounds": {"longpoll": [entry(1, 3.0), entry(0, 2.0), entry(2, None)],
                        "bare_wait": [entry(0, 1.0), entry(1, 6.0), entry(2, 1.0)]}}
    assert report.storm_ratios(storm, report.STORM_COMPARED["Until all waiting"]) == [0.5, 2.0]


@pytest.mark.parametrize("name, rounds", [("turns-burst", 3), ("turns-burst-served-apart", 2),
                                         ("turns-burst-handed-rows", 2), ("turns-burst-handed-kept", 2),
                                         ("turns-storm", 2), ("turns-deploy", 2), ("turns-burst10", 2),
                                         ("turns-burst-newest", 2), ("turns-wake", 2), ("turns-wake-counts", 2),
                                         ("turns-wake-analyze", 2)])
def test_the_kept_burst_turns_re_derive_their_ratios(name, rounds):
    """The turns docs/benchmarks.md quotes: every ratio follows from the raw runs kept."""
    import statistics

    from bench import turns

    kept = json.loads((ROOT / "bench" / "results" / f"{name}.json").read_text())
    assert len(kept["rounds"]) == rounds
    for entry in kept["rounds"]:
        assert sorted(entry["order"]) == ["before", "now"]
        compared = turns.SUITES[kept.get("suite", "burst")][1]
        figures = {side: compared(entry["raw"][side]) for side in ("before", "now")}
        assert figures == entry["figures"]
        assert entry["ratios"] == {name: figures["now"][name] / figures["before"][name] for name in figures["now"]}
    for name, spread in kept["ratios_now_to_before"].items():
        assert spread["median"] == statistics.median(entry["ratios"][name] for entry in kept["rounds"])
    # The rounds took turns: the order reversed each round.
    assert [entry["order"][0] for entry in kept["rounds"]][:2] == ["before", "now"]


def test_the_kept_topics_run_re_derives_its_ratios():
    """Scenario 17's kept run: each round's ratios follow from its figures, the summary from the rounds."""
    import statistics

    from bench import topics

    kept = json.loads((ROOT / "bench" / "results" / "topics.json").read_text())
    assert kept["results_file"] == "bench/results/topics.json" and not kept["quick"]
    for measurement, compared in topics.COMPARED.items():
        result = kept["topics"][measurement]
        rounds = result["rounds"]
        assert len(rounds) >= 2
        for number, entry in enumerate(rounds):
            # The two took turns: the order reversed every other round.
            assert entry["order"] == list(topics.SIDES[measurement][::1 if number % 2 == 0 else -1])
            for name, side, baseline, figure in compared:
                assert entry["ratios"][name] == entry[side][figure] / entry[baseline][figure]
        for name, *_ in compared:
            assert result["ratios"][name]["median"] == statistics.median(entry["ratios"][name] for entry in rounds)
    assert kept["topics"]["failed"] == []


def test_the_kept_typing_run_re_derives_its_ratios():
    """Scenario 18's kept run: each round's ratios and differences follow from its figures, the summary
    from the rounds, and the rounds took turns."""
    import statistics

    from bench import typists

    kept = json.loads((ROOT / "bench" / "results" / "typing.json").read_text())
    assert kept["results_file"] == "bench/results/typing.json" and not kept["quick"]
    result = kept["typing"]
    rounds = result["rounds"]
    assert len(rounds) >= 2
    for number, entry in enumerate(rounds):
        assert entry["order"] == list(typists.SIDES[::1 if number % 2 == 0 else -1])
        for name, side, baseline, figure in typists.COMPARED:
            assert entry["ratios"][name] == entry[side][figure] / entry[baseline][figure]
        for key in typists.BEYOND_QUIET:
            assert entry["beyond_quiet"][key] == entry["typing"][key] - entry["quiet"][key]
    for name, *_ in typists.COMPARED:
        assert result["ratios"][name]["median"] == statistics.median(entry["ratios"][name] for entry in rounds)
    for key in typists.BEYOND_QUIET:
        assert result["beyond_quiet"][key]["median"] == statistics.median(
            entry["beyond_quiet"][key] for entry in rounds)
    assert result["failed"] == []


def test_the_deploy_is_met_only_when_every_client_waits_again_within_the_target():
    """The target: all back and waiting within 5 s of the reload, not merely all back."""
    from bench import report

    kept = json.loads((ROOT / "bench" / "results" / "deploy.json").read_text())

    def waiting_again_row(seconds):
        results = {**kept, "deploy": {**kept["deploy"], "waiting_again_seconds": seconds}}
        lines = []
        report.deploy_block(results, lines.append)
        return next(line for line in lines if line.startswith("| All waiting again"))

    assert waiting_again_row(16.8).endswith("| **missed** |")
    assert waiting_again_row(4.0).endswith("| met |")


@pytest.mark.parametrize("key, wake_met, wake_missed, caught_up_met, caught_up_missed",
                         [("burst", 0.09, 0.2, 1.5, 3.0), ("burst10", 0.9, 1.2, 4.5, 6.0)])
def test_a_burst_is_judged_by_its_own_targets(key, wake_met, wake_missed, caught_up_met, caught_up_missed):
    """Scenario 9: joins' p99 under 100 ms, every member caught up within 2 s, memory back within 10%;
    its tenfold version: under 1 s and within 5 s."""
    from bench import report

    kept = json.loads((ROOT / "bench" / "results" / "burst10.json").read_text())
    burst = {**kept["burst10"], "mismatches": 0, "caught_up": kept["burst10"]["members"],
             "compared": kept["burst10"]["members"], "worker_rss_before": 100 * 2**20}

    def row(starts, **figures):
        lines = []
        report.burst_block({**kept, key: {**burst, **figures}}, lines.append, key=key)
        return next(line for line in lines if line.startswith(starts))

    assert row("| Unrelated join", wake_p99=wake_met).endswith("| met |")
    assert row("| Unrelated join", wake_p99=wake_missed).endswith("| **missed** |")
    assert row("| Every member caught up", drain_seconds=caught_up_met).endswith("| met |")
    assert row("| Every member caught up", drain_seconds=caught_up_missed).endswith("| **missed** |")
    memory = "| Worker memory"
    if key == "burst":
        assert row(memory, worker_rss=109 * 2**20).endswith("| met |")
        assert row(memory, worker_rss=111 * 2**20).endswith("| **missed** |")
    else:
        assert "| (report) |" in row(memory, worker_rss=200 * 2**20)
