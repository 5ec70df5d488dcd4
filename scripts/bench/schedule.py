"""Scheduling benchmark: 100 fake libvirt hosts, 10,000 placements through the REST API, on
one API process with SQLite (the baseline), one with PostgreSQL, and two API processes
sharing one PostgreSQL store with the load split between them. For each run: placements
per second, latency, the spread (instances per host, and the used share of each host's
room, max and min) and errors (must be 0); then the ratios of the PostgreSQL runs against
the baseline measured in the same invocation, and an audit of each run's store.

The hosts are libvirt's test driver with a node file each (``test:///DIR/hostNNN.xml``:
CPUs and memory, of four sizes, room for 100 to 200 t3.nano at the overcommit ratios set
here), registered in the store before the API processes start (``Hosts.add``), each with a
loopback address of its own (127.0.1.N) so that the SSH port range is per host. Each
``computed serve`` is a real child process (tests/serve_process.py) on a fresh state
directory with a fake image that has a real qcow2 disk (tests/fakes.py), so a placement's
background launch (overlay disk, seed, domain) really runs, as it would, beside the API.
The clients are threads of this process (the API processes are others), each with an
account's HTTP Basic credentials and its own keep-alive session, sending POST
/v1/instances (count ``--count``, a client token each; a request that fails on the
connection is sent again with the same token) to the API process it is given (round
robin), until the placements are all acknowledged. The wall time runs from the first
request to the last answer; the API processes are then stopped (work still queued in
the background is abandoned: the benchmark measures placement, not boots) and the store
is audited (tests/audit.py): every acknowledged placement is in the store exactly once
under its client token, none that no client asked for, every usage event history is a
walk of the state machine, and replaying the usage events in commit order no host ever
had more vCPUs or memory than its capacity times the overcommit ratios.

Why the two-process run is set up as it is: a test:///PATH node file is a fake
hypervisor private to each libvirt *connection*, so each of the two processes has its
own copy of every host, and sees none of the other's domains. Reconciliation in one
process would take the other's instances for instances whose domain vanished and
terminate them. So the reconciliation interval is set far beyond the run (for every run
alike), and both processes are started, and have done their start-up reconciliation on
the empty store, before the first placement. Placement itself never asks libvirt about
domains: it is decided in the store, in the launch's transaction, which is what this
measures."""

from __future__ import annotations

import argparse
import random
import signal
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.audit import (StoreView, check_capacity, check_launches, check_usage_walks, percentile,  # noqa: E402
                         read_store)
from tests.serve_process import ServeProcess, free_port_range  # noqa: E402

SIZE = "t3.nano"
IMAGE = "debian-12-podman"
CPU_OVERCOMMIT = 4.0
MEMORY_OVERCOMMIT = 1.0
#: host CPUs, in turn: room for twice as many t3.nano (2 vCPUs, 512 MiB) at the ratios above
HOST_CPUS = (50, 64, 76, 100)
#: far longer than any run: see the module's docstring
RECONCILE_INTERVAL = 7 * 24 * 3600
TIMEOUT = (5, 120)  # connect, read (s)
ATTEMPTS = 5


@dataclass
class Result:
    name: str
    placements: int = 0
    requests: int = 0
    wall: float = 0.0
    latency: list = field(default_factory=list)
    errors: Counter = field(default_factory=Counter)
    connection_retries: int = 0
    per_host: dict = field(default_factory=dict)  # host -> instances
    used: dict = field(default_factory=dict)  # host -> share of its room used
    running_at_end: int = 0
    problems: list = field(default_factory=list)
    facts: list = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.placements / self.wall if self.wall else 0.0


def node_xml(cpus: int, memory_mib: int) -> str:
    """A node file for libvirt's test driver: one NUMA node with CPUS cores and MEMORY_MIB."""
    return (f"<node>\n  <cpu>\n    <mhz>2000</mhz>\n    <model>x86_64</model>\n    <active>{cpus}</active>\n"
            f"    <nodes>1</nodes>\n    <sockets>1</sockets>\n    <cores>{cpus}</cores>\n    <threads>1</threads>\n"
            f"  </cpu>\n  <memory>{memory_mib * 1024}</memory>\n</node>\n")


def host_address(index: int) -> str:
    return f"127.0.{1 + index // 254}.{1 + index % 254}"


def size_spec():
    from computed.compute.sizes import DEFAULT_SIZES

    return next(s for s in DEFAULT_SIZES if s.name == SIZE)


def host_room(cpus: int) -> int:
    """How many SIZE instances a host of CPUS fits (its memory is made to fit as many)."""
    size = size_spec()
    return int(cpus * CPU_OVERCOMMIT) // size.vcpus


def make_hosts(db, settings, nodes: Path, count: int) -> int:
    """COUNT hosts in the store, each a node file of its own; their room in all."""
    from computed.clock import Clock
    from computed.hosts.registry import Hosts

    hosts = Hosts(settings, db, Clock())
    size = size_spec()
    total = 0
    nodes.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        cpus = HOST_CPUS[i % len(HOST_CPUS)]
        room = host_room(cpus)
        memory_mib = int(room * size.memory_mib / MEMORY_OVERCOMMIT) + 1
        path = nodes / f"host{i + 1:03d}.xml"
        path.write_text(node_xml(cpus, memory_mib))
        hosts.add(f"host{i + 1:03d}", f"test://{path}", address=host_address(i))
        total += room
    hosts.close()
    return total


def run(name: str, args, database_url: str | None, processes: int, ports: tuple[int, int]) -> Result:
    """One run: a fresh state directory and store, the hosts, PROCESSES API processes, the
    placements, then the audit."""
    import requests

    from computed.accounts.registry import KEY_FILE, Accounts
    from computed.store.engine import Database
    from computed.accounts.secret_box import SecretBox
    from computed.settings import Settings
    from images.library import ImageLibrary
    from tests.fakes import publish_with_disk

    result = Result(name)
    with tempfile.TemporaryDirectory(prefix="computed-schedule-") as tmp:
        var = Path(tmp) / "var"
        url = database_url or f"sqlite:///{var / 'computed.db'}"
        env = {"COMPUTED_VAR_DIR": str(var), "COMPUTED_DATABASE_URL": url,
               "COMPUTED_LIBVIRT_URI": "test:///default",  # unused: the store has its hosts already
               "COMPUTED_SSH_PORTS": f"{ports[0]}-{ports[1]}",
               "COMPUTED_RECONCILE_INTERVAL": str(RECONCILE_INTERVAL),
               "COMPUTED_CPU_OVERCOMMIT": str(CPU_OVERCOMMIT), "COMPUTED_MEMORY_OVERCOMMIT": str(MEMORY_OVERCOMMIT),
               "COMPUTED_ACCOUNT_MAX_INSTANCES": str(args.placements * args.count + 1),
               "COMPUTED_SCHEDULER_STRATEGY": "spread", "COMPUTED_API_THREADS": str(args.threads)}
        settings = Settings.load(environ=env)
        publish_with_disk(ImageLibrary(settings.image_library), IMAGE)
        db = Database(url)
        try:
            make_hosts(db, settings, Path(tmp) / "nodes", args.hosts)
            servers: list[ServeProcess] = []
            try:
                for p in range(processes):  # one after the other: each reconciles an empty store at its start
                    servers.append(ServeProcess(f"api-{p + 1}", env, Path(tmp) / f"api-{p + 1}.log"))
                accounts = Accounts(db, SecretBox(var / KEY_FILE))
                creds = [accounts.create(f"schedule-{i}") for i in range(args.accounts)]
                records, wall = place(args, [s.url for s in servers], creds, result, requests)
                result.wall = wall
                with db.reading() as s:
                    from sqlalchemy import func, select

                    from computed.store.models import Instance
                    result.running_at_end = s.scalar(select(func.count()).select_from(Instance)
                                                     .where(Instance.state == "running"))
            finally:
                codes = [s.stop() for s in servers]
            for server, code in zip(servers, codes):
                if code not in (0, -15):
                    result.problems.append(f"{server.name} ended with exit code {code}:\n{server.log_tail(2000)}")
            audit(db, records, result)
        finally:
            db.dispose()
    return result


def place(args, urls: list[str], creds: list, result: Result, requests) -> tuple[list[dict], float]:
    """ARGS.placements placements, ARGS.clients client threads, client i sending to URLS[i %
    len(URLS)] as account i % len(CREDS). (records, wall seconds)."""
    requests_wanted = args.placements // args.count
    todo = iter(range(requests_wanted))
    progress = max(1, requests_wanted // 10)
    guard = threading.Lock()
    records: list[dict] = []
    latency: list[float] = []
    errors: Counter = Counter()
    retries = [0]
    start = threading.Barrier(args.clients + 1)

    def client(index: int) -> None:
        session = requests.Session()
        account = creds[index % len(creds)]
        session.auth = (account.access_key_id, account.secret_access_key)
        url = urls[index % len(urls)] + "/v1/instances"
        start.wait()
        while True:
            with guard:
                n = next(todo, None)
            if n is None:
                return
            token = f"schedule-{n}-{uuid.uuid4().hex[:12]}"
            record = {"owner": account.account_id, "token": token, "count": args.count, "ids": None}
            body = {"size": SIZE, "image": IMAGE, "count": args.count, "client_token": token}
            for attempt in range(1, ATTEMPTS + 1):
                began = time.perf_counter()
                try:
                    answer = session.post(url, json=body, timeout=TIMEOUT)
                except requests.RequestException as e:
                    if attempt < ATTEMPTS:
                        with guard:
                            retries[0] += 1
                        time.sleep(0.05 * attempt)
                        continue
                    with guard:
                        errors[f"connection {type(e).__name__}"] += 1
                    break
                took = time.perf_counter() - began
                if answer.status_code == 202:
                    record["ids"] = [i["id"] for i in answer.json()["instances"]]
                    with guard:
                        latency.append(took)
                else:
                    try:
                        error = answer.json()["error"]
                        what = f"{answer.status_code} {error['code']}: {error['message'][:150]}"
                    except (ValueError, KeyError, TypeError):
                        what = f"{answer.status_code} {answer.text[:150]!r}"
                    with guard:
                        errors[what] += 1
                break
            with guard:
                records.append(record)
                if len(records) % progress == 0:  # progress, apart from the results (stdout)
                    print(f"  {result.name}: {len(records)}/{requests_wanted} requests answered", file=sys.stderr,
                          flush=True)

    threads = [threading.Thread(target=client, args=(i,), name=f"client-{i}") for i in range(args.clients)]
    for t in threads:
        t.start()
    start.wait()
    began = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - began
    result.latency = sorted(latency)
    result.errors = errors
    result.connection_retries = retries[0]
    result.requests = len(records)
    result.placements = sum(len(r["ids"]) for r in records if r["ids"] is not None)
    return records, wall


def audit(db, records: list[dict], result: Result) -> None:
    view: StoreView = read_store(db)
    problems, launched = check_launches(records, view.instances)
    walks, transitions = check_usage_walks(view.instances, view.events)
    capacity, peak = check_capacity(view, CPU_OVERCOMMIT, MEMORY_OVERCOMMIT)
    problems += walks + capacity
    placed = {name: 0 for name in view.hosts}
    used = {name: [0, 0] for name in view.hosts}
    for inst in view.instances.values():
        if inst.state != "terminated" and inst.host is not None:
            placed[inst.host] = placed.get(inst.host, 0) + 1
            used.setdefault(inst.host, [0, 0])
            used[inst.host][0] += inst.vcpus
            used[inst.host][1] += inst.memory_mib
    for name, host in view.hosts.items():
        room = (int((host.vcpus or 0) * CPU_OVERCOMMIT), int((host.memory_mib or 0) * MEMORY_OVERCOMMIT))
        v, m = used.get(name, (0, 0))
        result.used[name] = max(v / room[0] if room[0] else 0.0, m / room[1] if room[1] else 0.0)
        if v > room[0] or m > room[1]:
            problems.append(f"host {name} is over capacity: {v} vCPUs and {m} MiB for room of {room[0]} and {room[1]}")
    result.per_host = placed
    if launched.acknowledged_instances != result.placements:
        problems.append(f"{result.placements} placements acknowledged, the records say "
                        f"{launched.acknowledged_instances}")
    result.problems += problems
    result.facts = [
        (f"{launched.acknowledged} placements acknowledged -> {launched.acknowledged_instances} instances, each in the "
         f"store exactly once under its client token; {launched.unacknowledged} never acknowledged; "
         f"{len(launched.unknown)} instances that no client asked for"),
        f"{len(view.ordered)} usage events, {transitions} transitions checked",
        (f"{len(view.ordered)} prefixes of the usage events replayed: no host over its room at any time "
         f"(the fullest host peaked at {max((p.instances for p in peak.values()), default=0)} instances)"
         if not capacity else f"{len(capacity)} times a host went over its room"),
    ]


def spread(values: list[float]) -> str:
    top, low = max(values), min(values)
    return f"{top:g}/{low:g} = {top / low:.2f}" if low else f"{top:g}/{low:g} = inf"


def report(results: list[Result], args, total_room: int, ports: tuple[int, int]) -> int:
    print(f"\n{'run':34} {'placements':>10} {'wall s':>7} {'per s':>7} {'p50 ms':>7} {'p99 ms':>7} "
          f"{'inst/host max/min':>20} {'used max/min':>20} {'errors':>6}")
    for r in results:
        counts = list(r.per_host.values()) or [0]
        used = [round(u, 3) for u in r.used.values()] or [0.0]
        print(f"{r.name:34} {r.placements:10d} {r.wall:7.1f} {r.rate:7.1f} "
              f"{percentile(r.latency, .5) * 1000:7.1f} {percentile(r.latency, .99) * 1000:7.1f} "
              f"{spread(counts):>20} {spread(used):>20} {sum(r.errors.values()):6d}")
    base = results[0]
    if base.rate:
        print("\nplacements per second against " + base.name + ": "
              + "; ".join(f"{r.name} {r.rate / base.rate:.2f}x" for r in results[1:]))
    failed = False
    for r in results:
        print(f"\n{r.name}: {r.requests} requests, {r.connection_retries} connection failures retried; "
              f"{r.running_at_end} instances already running when the last placement was answered (the rest were "
              f"still launching in the background); mean instances per host "
              f"{statistics.mean(r.per_host.values()) if r.per_host else 0:.1f}")
        if r.errors:
            failed = True
            print(f"  errors: {sum(r.errors.values())}"
                  + "".join(f"\n    {n:6d}  {what}" for what, n in r.errors.most_common(10)))
        else:
            print("  errors: 0")
        print(f"  audit: {'OK' if not r.problems else 'FAILED'}: " + "; ".join(r.facts))
        for problem in r.problems[:20]:
            print(f"    PROBLEM: {problem}")
        if len(r.problems) > 20:
            print(f"    ... and {len(r.problems) - 20} more")
        failed |= bool(r.problems)
    return 1 if failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hosts", type=int, default=100, help="fake libvirt hosts (default 100)")
    parser.add_argument("--placements", type=int, default=10000, help="instances placed per run (default 10000)")
    parser.add_argument("--clients", type=int, default=8, help="client threads, split over the API processes")
    parser.add_argument("--count", type=int, default=1, help="instances per request (default 1)")
    parser.add_argument("--accounts", type=int, default=4, help="accounts the clients are spread over")
    parser.add_argument("--threads", type=int, default=8, help="request threads of each API process")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    if min(args.hosts, args.placements, args.clients, args.count, args.accounts, args.threads) < 1:
        parser.error("every number must be positive")
    if args.placements % args.count:
        parser.error("--placements must be a multiple of --count")
    if args.hosts > 254 * 254:
        parser.error("at most 64516 hosts (one loopback address each)")

    import logging

    logging.getLogger("alembic").setLevel(logging.WARNING)
    # a SIGTERM ends the run as Ctrl-C does: the API processes stopped, the state directories removed
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    from tests import postgres

    most = max(host_room(c) for c in HOST_CPUS)
    ports = free_port_range(most + 50, random.Random(args.seed))
    rooms = [host_room(HOST_CPUS[i % len(HOST_CPUS)]) for i in range(args.hosts)]
    total_room = sum(rooms)
    print(f"schedule: {args.hosts} hosts (libvirt test:///DIR/hostNNN.xml, one loopback address each, room for "
          f"{min(rooms)} to {max(rooms)} {SIZE}, {total_room} in all at cpu_overcommit {CPU_OVERCOMMIT:g} and "
          f"memory_overcommit {MEMORY_OVERCOMMIT:g}); {args.placements} placements of {SIZE} per run "
          f"(count {args.count}, a client token each) through POST /v1/instances from {args.clients} client threads; "
          f"computed serve with {args.threads} request threads; strategy spread; SSH ports {ports[0]}-{ports[1]}",
          flush=True)
    if args.placements > total_room:
        print(f"note: {args.placements} placements exceed the hosts' room ({total_room}): expect "
              f"InsufficientInstanceCapacity errors", flush=True)
    results = []
    results.append(run("(a) 1 API process, SQLite", args, None, 1, ports))
    print(f"{results[-1].name}: {results[-1].placements} in {results[-1].wall:.1f} s", flush=True)
    try:
        server = postgres.Server()
    except postgres.Unavailable as e:
        print(f"PostgreSQL cannot run here: {e}", flush=True)
        return 1
    try:
        for name, processes in (("(b) 1 API process, PostgreSQL", 1), ("(c) 2 API processes, one PostgreSQL", 2)):
            url = server.create_database()
            try:
                results.append(run(name, args, url, processes, ports))
            finally:
                server.drop_database(url)
            print(f"{results[-1].name}: {results[-1].placements} in {results[-1].wall:.1f} s", flush=True)
    finally:
        server.stop()
    return report(results, args, total_room, ports)


if __name__ == "__main__":
    sys.exit(main())
