"""``scripts/bench/report`` at a small scale: its store generator writes what the service's
store reads, and its baseline (one SQL aggregate, written independently of the billing
code) and the billing report agree on the grand total under both policies."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_the_report_benchmark_totals_match_its_sql_baseline(tmp_path):
    store = tmp_path / "bench.sqlite"
    done = subprocess.run([sys.executable, ROOT / "scripts/bench/report.py", "--instances", "60", "--changes", "42",
                           "--runs", "1", "--seed", "7", "--store", store], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "store: 60 instances, 2520 usage events" in done.stdout
    for policy in ("hourly", "per-second"):
        assert f"{policy}: " in done.stdout
    assert done.stdout.count("totals match") == 2, done.stdout
    assert "DIFFER" not in done.stdout
