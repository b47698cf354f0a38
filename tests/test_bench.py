"""The benchmark harness still works: a tiny run against real servers on PostgreSQL.

It checks that every poll was held and every change answered, not how fast:
speed is what ``python -m bench`` itself reports.
"""
import json
import subprocess
import sys
from pathlib import Path

import pytest

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
