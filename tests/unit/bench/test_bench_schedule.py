"""``scripts/bench/schedule`` at a small scale: 5 fake hosts, 100 placements through the
REST API on one API process with SQLite, one with PostgreSQL and two sharing a PostgreSQL
store; no request failing, every run's audit passing, the spread and the ratios against
the SQLite run printed."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests import postgres

ROOT = Path(__file__).resolve().parents[3]
RUNS = ("(a) 1 API process, SQLite", "(b) 1 API process, PostgreSQL", "(c) 2 API processes, one PostgreSQL")


@pytest.mark.postgresql
def test_the_schedule_benchmark_places_everything_once_within_capacity_on_each_store():
    try:
        postgres.find_bindir()
    except postgres.Unavailable as e:
        postgres.unavailable(str(e))
    done = subprocess.run([sys.executable, ROOT / "scripts/bench/schedule.py", "--hosts", "5", "--placements", "100",
                           "--clients", "4"], check=False, capture_output=True, text=True, timeout=600, cwd=ROOT)
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    for run in RUNS:
        # the table's row: placements, wall, per s, p50, p99, instances per host max/min, used share, errors
        row = re.search(re.escape(run) + r" +(\d+) +([\d.]+) +([\d.]+) +[\d.]+ +[\d.]+ +(\d+)/(\d+) = \S+ "
                        r"+([\d.]+)/([\d.]+) = \S+ +(\d+)$", out, re.MULTILINE)
        assert row, f"no table row for {run}:\n{out}"
        placements, wall, rate, most, least, used_most, used_least, errors = row.groups()
        assert int(placements) == 100 and int(errors) == 0, row.group(0)
        assert float(rate) > 0 and float(wall) > 0, row.group(0)
        assert int(least) <= int(most) and 0 < float(used_most) <= 1 and float(used_least) <= float(used_most)
        assert re.search(re.escape(run) + r": 100 requests.*\n  errors: 0\n  audit: OK: 100 placements acknowledged "
                         r"-> 100 instances, each in the store exactly once under its client token; 0 never "
                         r"acknowledged; 0 instances that no client asked for; \d+ usage events, \d+ transitions "
                         r"checked; \d+ prefixes of the usage events replayed: no host over its room at any time",
                         out), out
    ratios = re.search(r"^placements per second against \(a\) 1 API process, SQLite: \(b\) 1 API process, "
                       r"PostgreSQL ([\d.]+)x; \(c\) 2 API processes, one PostgreSQL ([\d.]+)x$", out, re.MULTILINE)
    assert ratios and all(float(r) > 0 for r in ratios.groups()), out
