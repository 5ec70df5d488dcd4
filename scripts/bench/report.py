"""Billing report benchmark: the hourly cost report over a 30-day period from a store of
10,000 instances with 100 state changes each (1,000,000 usage events), next to a baseline
measured in the same run: one SQL aggregate over the raw events that computes the same
grand total. The two totals must match to the last decimal place.

The store is an SQLite file set up exactly as the service's default store (same engine,
pragmas and Alembic migrations) under var/bench/, not the service's own. It is generated
once per set of parameters and reused. Every measurement runs in a fresh child process,
baseline and report interleaved; its peak memory is the child's maximum resident set.
The report's time includes reading the store, the rows and every total (hour, owner,
size, tag). Goal: report time at most 2x the baseline's."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from computed.billing import metering  # noqa: E402
from computed.accounts.registry import Caller  # noqa: E402
from computed.billing.reports import Billing  # noqa: E402
from computed.clock import FakeClock  # noqa: E402
from computed.store.engine import Database  # noqa: E402
from computed.settings import Settings  # noqa: E402
from computed.compute.sizes import DEFAULT_SIZES  # noqa: E402

PERIOD_START = dt.datetime(2026, 10, 1, tzinfo=dt.UTC)
PERIOD = dt.timedelta(days=30)
NOW = PERIOD_START + PERIOD + dt.timedelta(days=30)  # the clock: after every event
STILL_RUNNING = 0.05  # the share of instances never stopped at the end

# The baseline: the running stretches found with window functions, as the service's store
# finds them (a run opens at `running` after any other state and closes at the next
# other state), then one aggregate of the billed quantity per price. Only the handful of
# per-price sums leave SQL; Python multiplies them by the price (or per-second rate).
BASELINE_SQL = """
WITH marked AS (
  SELECT instance_id, id, state, at, price_per_hour, currency,
         LAG(state) OVER (PARTITION BY instance_id ORDER BY id) AS prev
  FROM usage_events
), edges AS (
  SELECT state, at, price_per_hour, currency,
         LEAD(at) OVER (PARTITION BY instance_id ORDER BY id) AS until
  FROM marked WHERE (state = 'running') != (coalesce(prev, '') = 'running')
), runs AS (
  SELECT price_per_hour, currency,
         CAST(strftime('%s', substr(at, 1, 19)) AS INTEGER) AS s,
         CAST(strftime('%s', substr(until, 1, 19)) AS INTEGER) AS e
  FROM edges WHERE state = 'running'
), bounded AS (
  SELECT price_per_hour, currency, s, e IS NOT NULL AS ended,
         CASE WHEN e IS NULL THEN max(:now, s) ELSE max(e, s) END AS run_end
  FROM runs
)
SELECT price_per_hour, currency, SUM({quantity}) FROM bounded GROUP BY price_per_hour, currency
"""
# hourly: instance-hours k = 0, 1, ... starting at s + k h, k < max(1, ceil(length / 1 h)),
# counted when :p0 <= s + k h < :p1 and s + k h <= max(:now, s)
HOURLY_QUANTITY = """max(0,
  min(max(1, (run_end - s + 3599) / 3600),
      CASE WHEN min(:p1 - 1, max(:now, s)) < s THEN 0 ELSE (min(:p1 - 1, max(:now, s)) - s) / 3600 + 1 END)
  - CASE WHEN :p0 <= s THEN 0 ELSE (:p0 - s + 3599) / 3600 END)"""
# per-second: the seconds inside the period and before now, plus the top-up to 60 seconds
# of an ended run that started inside the period
PER_SECOND_QUANTITY = """max(0, min(run_end, :p1, max(:now, :p0)) - max(s, :p0))
  + CASE WHEN ended AND run_end - s < 60 AND s >= :p0 AND s < :p1 THEN 60 - (run_end - s) ELSE 0 END"""


def sql_time(t: dt.datetime) -> str:
    """As SQLAlchemy writes a UTC datetime into SQLite."""
    return t.astimezone(dt.UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


def instance_history(rnd: random.Random, changes: int, running_at_end: bool) -> list[tuple[str, dt.datetime]]:
    """One instance's state changes: launch, then stop/start cycles of mixed lengths (a
    third shorter than five minutes, around the 60-second minimum), then terminate; or
    with a failed start (pending -> stopped) in place of the terminate, still running."""
    t = PERIOD_START + dt.timedelta(seconds=rnd.uniform(-86400, 2 * 86400))
    steps = []

    def step(state: str, after: float) -> None:
        nonlocal t
        t += dt.timedelta(seconds=after)
        steps.append((state, t))

    step("pending", 0)
    step("running", rnd.uniform(8, 40))
    cycles = (changes - 4) // 4
    failed_start = rnd.randrange(cycles) if running_at_end else -1
    for cycle in range(cycles):
        r = rnd.random()
        step("stopping", rnd.uniform(1, 300) if r < 0.3 else rnd.uniform(300, 3 * 3600) if r < 0.8
             else rnd.uniform(3 * 3600, 12 * 3600))
        step("stopped", rnd.uniform(2, 30))
        if cycle == failed_start:
            step("pending", rnd.uniform(60, 3600))
            step("stopped", rnd.uniform(5, 60))
        step("pending", rnd.uniform(60, 40 * 3600))
        step("running", rnd.uniform(8, 40))
    if not running_at_end:
        step("shutting-down", rnd.uniform(60, 6 * 3600))
        step("terminated", rnd.uniform(2, 30))
    while len(steps) < changes:  # changes not a multiple of 4: more stops and starts
        state = "stopping" if steps[-1][0] == "running" else "running"
        step(state, rnd.uniform(10, 600))
    return steps[:changes]


def generate(path: Path, instances: int, changes: int, seed: int) -> None:
    """The store, with every instance's state changes interleaved in time order as the
    service writes them (the sequence number follows time)."""
    path.unlink(missing_ok=True)
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    Database(f"sqlite:///{path}").dispose()  # the service's schema, by its migrations
    rnd = random.Random(seed)
    owners = [f"team-{i:02d}" for i in range(20)]
    events = []
    for i in range(instances):
        iid = f"i-{i:017x}"
        size = rnd.choice(DEFAULT_SIZES)
        tags = json.dumps({"env": rnd.choice(["prod", "dev", "ci"]), "project": f"p{rnd.randrange(50)}"},
                          sort_keys=True)
        facts = (iid, rnd.choice(owners), size.name, "debian-12-podman", str(size.price_per_hour), size.currency)
        for state, when in instance_history(rnd, changes, rnd.random() < STILL_RUNNING):
            events.append((when, facts, state, tags))
    events.sort(key=lambda e: e[0])
    con = sqlite3.connect(path)
    with con:
        con.executemany("INSERT INTO usage_events (instance_id, owner, size, image, price_per_hour, currency, "
                        "state, at, tags) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        ((*facts, state, sql_time(when), tags) for when, facts, state, tags in events))
    con.close()


def epoch(t: dt.datetime) -> int:
    return int(t.timestamp())


def run_baseline(store: Path, policy: str) -> dict:
    quantity = HOURLY_QUANTITY if policy == "hourly" else PER_SECOND_QUANTITY
    params = {"p0": epoch(PERIOD_START), "p1": epoch(PERIOD_START + PERIOD), "now": epoch(NOW)}
    started = time.perf_counter()
    con = sqlite3.connect(store)
    totals: dict[str, Decimal] = {}
    for price, currency, amount in con.execute(BASELINE_SQL.format(quantity=quantity), params):
        unit = Decimal(price) if policy == "hourly" else metering.per_second_rate(Decimal(price))
        totals[currency] = totals.get(currency, Decimal(0)) + unit * amount
    con.close()
    return {"seconds": time.perf_counter() - started, "total": {c: str(v) for c, v in totals.items()}}


def run_report(store: Path, policy: str) -> dict:
    db = Database(f"sqlite:///{store}")
    billing = Billing(db, policy, FakeClock(NOW))
    started = time.perf_counter()
    report = billing.report(Caller("000000000000", "bench", admin=True), PERIOD_START, PERIOD_START + PERIOD)
    total = report.total()
    groups = [report.by_hour(), report.by_owner(), report.by_size(), report.by_tag()]
    seconds = time.perf_counter() - started
    db.dispose()
    return {"seconds": seconds, "total": {c: str(v) for c, v in total.items()}, "rows": len(report.rows),
            "groups": [len(g) for g in groups]}


MEASURES = {"baseline": run_baseline, "report": run_report}


def measure(kind: str, store: Path, policy: str) -> dict:
    """One measurement in a fresh child process; adds its peak resident set (MiB)."""
    child = subprocess.Popen([sys.executable, __file__, "--child", kind, "--policy", policy, "--store", str(store)],
                             stdout=subprocess.PIPE, text=True)
    out = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"{kind} ({policy}) failed with exit code {child.returncode}")
    return json.loads(out) | {"peak_mib": usage.ru_maxrss / 1024}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instances", type=int, default=10_000)
    parser.add_argument("--changes", type=int, default=100, help="state changes per instance")
    parser.add_argument("--runs", type=int, default=3, help="measurements of each, interleaved")
    parser.add_argument("--policy", choices=[*metering.POLICIES, "both"], default="both")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--store", type=Path, help="the SQLite file (default: var/bench/report-*.sqlite)")
    parser.add_argument("--child", choices=sorted(MEASURES), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(MEASURES[args.child](args.store, args.policy)))
        return 0

    store = args.store or (Settings.load().var_dir / "bench" /
                           f"report-{args.instances}x{args.changes}-seed{args.seed}.sqlite")
    stamp = store.with_suffix(".done")
    if not stamp.exists():
        print(f"generating {args.instances} instances x {args.changes} state changes into {store} ...", flush=True)
        started = time.perf_counter()
        store.parent.mkdir(parents=True, exist_ok=True)
        generate(store, args.instances, args.changes, args.seed)
        stamp.touch()
        print(f"  generated in {time.perf_counter() - started:.1f}s", flush=True)
    con = sqlite3.connect(store)
    [(events, instances)] = con.execute("SELECT count(*), count(DISTINCT instance_id) FROM usage_events")
    con.close()
    print(f"store: {instances} instances, {events} usage events, {store.stat().st_size / 2**20:.0f} MiB; "
          f"report period {PERIOD_START:%Y-%m-%d} + {PERIOD.days} days; {args.runs} runs each, interleaved\n")

    failed = False
    policies = metering.POLICIES if args.policy == "both" else (args.policy,)
    for policy in policies:
        results: dict[str, list[dict]] = {"baseline": [], "report": []}
        for run in range(1, args.runs + 1):
            for kind in ("baseline", "report"):
                results[kind].append(measure(kind, store, policy))
                r = results[kind][-1]
                print(f"  {policy:10} run {run} {kind:8} {r['seconds']:6.2f}s  peak {r['peak_mib']:6.0f} MiB  "
                      f"total {r['total']}", flush=True)
        base, rep = (statistics.median(r["seconds"] for r in results[k]) for k in ("baseline", "report"))
        base_mem, rep_mem = (max(r["peak_mib"] for r in results[k]) for k in ("baseline", "report"))
        totals = {json.dumps(r["total"], sort_keys=True) for k in results for r in results[k]}
        match = len(totals) == 1
        failed = failed or not match
        last = results["report"][-1]
        print(f"\n{policy}: {last['rows']} report rows, groups (hour, owner, size, tag) {last['groups']}\n"
              f"  baseline (one SQL aggregate): median {base:6.2f}s   peak {base_mem:6.0f} MiB\n"
              f"  report (rows and totals):     median {rep:6.2f}s   peak {rep_mem:6.0f} MiB\n"
              f"  ratio report/baseline: {rep / base:.2f} (goal <= 2)   totals "
              f"{'match: ' + totals.pop() if match else 'DIFFER: ' + ' vs '.join(sorted(totals))}\n", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
