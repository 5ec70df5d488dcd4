"""Load benchmark: many concurrent API clients against one service, then an audit of the
store. Goal: zero errors, zero lost or duplicated instances.

The service runs in this process on libvirt's ``test:///default`` driver (domains are
defined and started at once, no guest boots), with a fake image whose disk is a real tiny
qcow2, its own SQLite store (WAL) in a temporary state directory, and the API served by
waitress on a loopback port. A few accounts are made in its store. The clients run in
child processes (threads in each), so their own Python time does not compete with the
server's for one interpreter lock; each client has its own account's HTTP Basic
credentials and a ``requests.Session`` (keep-alive), and for a bounded time mixes:

- GET /v1/instances (the newest 100 of its account) and GET /v1/instances/{id}
- POST /v1/instances (count 1 or 2, a client token per launch; a request that fails on
  the connection is sent again with the same token, up to 5 times; and a share of them,
  ``--abandon``, is sent again at once without waiting for the first answer, so two
  requests with one token race in the server, as a client's retry after a lost answer)
- DELETE /v1/instances/{id} of one of its own live instances
- the EC2 API's DescribeInstances through boto3 (SigV4), now and then

A client keeps at most ``--max-live`` instances alive; the SSH port range and the
service's limits (host overcommit, instances per account: libvirt's test host has only
3 GiB) are sized so that they are never what stops a launch (InsufficientInstanceCapacity
and InstanceLimitExceeded are counted apart from errors all the same).

Then, with the background work done, the audit: every launch a client saw acknowledged is
in the store exactly once (client token -> the acknowledged instance ids, one reservation);
no instance exists that no client asked for; every instance's usage events start with
pending, follow the state machine with no repeated state, and end in its current state;
every terminated instance has no libvirt domain (and no files) left, every other one is
running with its domain. Finally every instance left is terminated and no domain of the
service may remain. Exit code 1 if the audit fails or any request failed."""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

# the audit and the helpers the benchmarks and the multi-process test share
from tests.audit import REFUSALS, check_launches, check_usage_walks, percentile  # noqa: E402
from tests.serve_process import free_port_range  # noqa: E402

OPS = ("list", "get", "launch", "terminate", "ec2")
LABELS = {"list": "GET /v1/instances", "get": "GET /v1/instances/{id}", "launch": "POST /v1/instances",
          "terminate": "DELETE /v1/instances/{id}", "ec2": "EC2 DescribeInstances"}
WEIGHTS = {"list": 30, "get": 30, "launch": 18, "terminate": 17, "ec2": 5}
SIZE = "t3.nano"
IMAGE = "debian-12-podman"
TIMEOUT = (5, 60)  # connect, read (s)
LAUNCH_ATTEMPTS = 5
ATTEMPTS = 3


# -- the clients (in child processes) -----------------------------------------------------------

class Client:
    """One API client: one account's credentials, one HTTP session, its own instances."""

    def __init__(self, index: int, account: dict, config: dict):
        import requests

        self.requests = requests
        self.index = index
        self.account_id = account["account_id"]
        self.url = config["url"].rstrip("/")
        self.rnd = random.Random(config["seed"] * 1000 + index)
        self.max_live = config["max_live"]
        self.abandon = config["abandon"]
        self.session = requests.Session()
        self.session.auth = (account["access_key_id"], account["secret_access_key"])
        self.ec2 = None
        if config["ec2"]:
            import boto3
            from botocore.config import Config

            self.ec2 = boto3.session.Session().client(
                "ec2", endpoint_url=self.url + "/", region_name=config["region"],
                aws_access_key_id=account["access_key_id"], aws_secret_access_key=account["secret_access_key"],
                config=Config(retries={"total_max_attempts": 1}, connect_timeout=TIMEOUT[0], read_timeout=TIMEOUT[1]))
        self.live: list[str] = []
        self.known: list[str] = []
        self.latency: dict[str, list[float]] = defaultdict(list)
        self.errors: Counter[str] = Counter()
        self.refusals: Counter[str] = Counter()  # "code: message" -> times
        self.connection_retries = 0
        self.abandoned = 0
        self.foreign: list[str] = []  # other accounts' instances this client was shown
        self.launches: list[dict] = []
        self.terminated: list[str] = []
        self.counter = 0

    def run(self, deadline: float) -> None:
        ops, weights = list(WEIGHTS), list(WEIGHTS.values())
        if self.ec2 is None:
            weights[ops.index("ec2")] = 0
        actions = {"list": self.list, "get": self.get, "launch": self.launch, "terminate": self.terminate,
                   "ec2": self.ec2_describe}
        while time.monotonic() < deadline:
            op = self.rnd.choices(ops, weights)[0]
            if op == "launch" and len(self.live) >= self.max_live:
                op = "terminate"
            if op == "terminate" and not self.live:
                op = "launch"
            if op == "get" and not self.known:
                op = "list"
            actions[op]()

    def call(self, op: str, method: str, path: str, attempts: int = ATTEMPTS, abandon: bool = False, **kwargs):
        """The response, or None if it failed (counted). Connection failures are retried:
        every request this client sends is idempotent (a launch carries its client token).
        ABANDON: give up waiting for the first attempt's answer at once (the request was
        sent; the server goes on with it) and send it again."""
        for attempt in range(1, attempts + 1):
            started = time.perf_counter()
            timeout = (TIMEOUT[0], 0.001) if abandon and attempt == 1 else TIMEOUT
            try:
                response = self.session.request(method, self.url + path, timeout=timeout, **kwargs)
            except self.requests.RequestException as e:
                if timeout is not TIMEOUT:
                    self.abandoned += 1
                    continue
                if attempt < attempts:
                    self.connection_retries += 1
                    time.sleep(0.05 * attempt)
                    continue
                self.errors[f"{op} connection {type(e).__name__}"] += 1
                return None
            self.latency[op].append(time.perf_counter() - started)
            if response.status_code >= 400:
                try:
                    code = response.json()["error"]["code"]
                except (ValueError, KeyError, TypeError):
                    code = "?"
                if code in REFUSALS:
                    self.refusals[f"{code}: {response.json()['error']['message'][:100]}"] += 1
                else:
                    self.errors[f"{op} {response.status_code} {code}"] += 1
                return None
            return response
        return None

    def see(self, inst: dict) -> None:
        if inst["owner"] != self.account_id:
            self.foreign.append(inst["id"])

    def list(self) -> None:
        response = self.call("list", "GET", "/v1/instances")
        if response is not None:
            for inst in response.json()["instances"]:
                self.see(inst)

    def get(self) -> None:
        response = self.call("get", "GET", f"/v1/instances/{self.rnd.choice(self.known)}")
        if response is not None:
            self.see(response.json())

    def launch(self) -> None:
        self.counter += 1
        token = f"load-{self.index}-{self.counter}-{uuid.uuid4().hex[:12]}"
        count = self.rnd.choice((1, 1, 1, 2))
        record = {"token": token, "count": count, "ids": None}
        self.launches.append(record)
        body = {"size": SIZE, "image": IMAGE, "count": count, "client_token": token,
                "tags": {"bench": "load", "client": str(self.index)}}
        response = self.call("launch", "POST", "/v1/instances", attempts=LAUNCH_ATTEMPTS,
                             abandon=self.rnd.random() < self.abandon, json=body)
        if response is None:
            return
        ids = [inst["id"] for inst in response.json()["instances"]]
        record["ids"] = ids
        self.live.extend(ids)
        self.known.extend(ids)

    def terminate(self) -> None:
        instance_id = self.live.pop(self.rnd.randrange(len(self.live)))
        response = self.call("terminate", "DELETE", f"/v1/instances/{instance_id}")
        if response is None:
            self.live.append(instance_id)
            return
        self.terminated.append(instance_id)

    def ec2_describe(self) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        started = time.perf_counter()
        try:
            answer = self.ec2.describe_instances(MaxResults=100)
        except ClientError as e:
            self.latency["ec2"].append(time.perf_counter() - started)
            status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "?")
            self.errors[f"ec2 {status} {e.response.get('Error', {}).get('Code', '?')}"] += 1
            return
        except BotoCoreError as e:
            self.errors[f"ec2 connection {type(e).__name__}"] += 1
            return
        self.latency["ec2"].append(time.perf_counter() - started)
        for reservation in answer["Reservations"]:
            if reservation["OwnerId"] != self.account_id:
                self.foreign.extend(i["InstanceId"] for i in reservation["Instances"])

    def result(self) -> dict:
        return {"account_id": self.account_id, "latency": self.latency, "errors": self.errors,
                "refusals": self.refusals, "connection_retries": self.connection_retries,
                "abandoned": self.abandoned,
                "foreign": self.foreign, "launches": self.launches, "terminated": self.terminated}


def child() -> int:
    """A client process: reads its config (a JSON line), makes its clients, says "ready",
    waits for "go", runs them for the given seconds, prints their results as JSON."""
    config = json.loads(sys.stdin.readline())
    clients = [Client(c["index"], c["account"], config) for c in config["clients"]]
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return 1
    started = time.monotonic()
    deadline = started + config["seconds"]
    threads = [threading.Thread(target=_run_client, args=(c, deadline), name=f"client-{c.index}") for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    print(json.dumps([c.result() | {"elapsed": elapsed} for c in clients]), flush=True)
    return 0


def _run_client(client: Client, deadline: float) -> None:
    try:
        client.run(deadline)
    except Exception as e:  # noqa: BLE001 (a bug in the client: counted, never silent)
        client.errors[f"client crashed: {type(e).__name__}: {e}"] += 1


# -- the service (in this process) -------------------------------------------------------------

def limits(most: int) -> dict:
    """Settings that keep the service's limits on instances out of the way (where this
    version of the service has them) for MOST instances at once: libvirt's test host has 16
    CPUs and 3 GiB of memory, room for six t3.nano at the default overcommit ratios."""
    import libvirt

    from computed.settings import Settings
    from computed.compute.sizes import DEFAULT_SIZES

    size = next(s for s in DEFAULT_SIZES if s.name == SIZE)
    conn = libvirt.open("test:///default")
    try:
        _, memory_mib, cpus, *_ = conn.getInfo()
    finally:
        conn.close()
    wanted = {"cpu_overcommit": max(4.0, most * size.vcpus / cpus),
              "memory_overcommit": max(1.0, most * size.memory_mib / memory_mib),
              "account_max_instances": most}
    return {k: v for k, v in wanted.items() if k in Settings.__dataclass_fields__}


# -- the audit -----------------------------------------------------------------------------------

def audit(svc, results: list[dict]) -> tuple[list[str], list[str]]:
    """(problems, facts): what is wrong in the store and the libvirt host after the run, and
    what was checked."""
    from tests.audit import read_store

    view = read_store(svc.db)
    instances, events = view.instances, view.events
    domains = {d.name() for d in svc.default_driver.conn().listAllDomains()}

    records = [{"owner": r["account_id"], "token": launch["token"], "count": launch["count"], "ids": launch["ids"]}
               for r in results for launch in r["launches"]]
    problems, launched = check_launches(records, instances)
    walk_problems, transitions = check_usage_walks(instances, events)
    problems += walk_problems

    terminated_acked = {i for r in results for i in r["terminated"]}
    gone = 0
    for inst in instances.values():
        if inst.state == "terminated":
            if inst.domain_name in domains:
                problems.append(f"{inst.id} is terminated but its domain {inst.domain_name} is still defined")
            elif svc.provisioner.files(inst.id).root.exists():
                problems.append(f"{inst.id} is terminated but its files are still there")
            else:
                gone += 1
        elif inst.id in terminated_acked:
            problems.append(f"{inst.id}: its termination was acknowledged, it is {inst.state}")
        elif inst.state != "running":
            problems.append(f"{inst.id} is {inst.state} once all background work is done (reason "
                            f"{inst.state_reason_code}: {inst.state_reason_message})")
        elif inst.domain_name not in domains:
            problems.append(f"{inst.id} is running with no domain")
    foreign = [i for r in results for i in r["foreign"]]
    if foreign:
        problems.append(f"clients were shown {len(foreign)} instances of other accounts: {foreign[:5]}")
    running = sum(1 for i in instances.values() if i.state == "running")
    facts = [(f"{launched.acknowledged} launches acknowledged -> {launched.acknowledged_instances} instances, each in "
              f"the store exactly once under its client token; {launched.unacknowledged} never acknowledged "
              f"({launched.unacknowledged_found} of them in the store, whole)"),
             f"{len(instances)} instances in the store, {len(launched.unknown)} that no client launched",
             (f"{sum(len(h) for h in events.values())} usage events, {transitions} transitions checked "
              f"(pending first, no state repeated, last = current state)"),
             (f"{gone} terminated instances without domain or files ({len(terminated_acked)} terminations "
              f"acknowledged), {running} running, each with its domain")]
    return problems, facts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=16, help="concurrent API clients")
    parser.add_argument("--seconds", type=float, default=30, help="how long they run")
    parser.add_argument("--processes", type=int, default=2, help="client processes (the clients are threads in them)")
    parser.add_argument("--accounts", type=int, default=4, help="accounts the clients are spread over")
    parser.add_argument("--threads", type=int, default=8, help="the server's request threads")
    parser.add_argument("--max-live", type=int, default=6, help="instances a client keeps alive at most")
    parser.add_argument("--abandon", type=float, default=0.1, metavar="SHARE",
                        help="launches whose first answer the client does not wait for, sending the request again "
                             "with the same client token at once (default 0.1)")
    parser.add_argument("--no-ec2", dest="ec2", action="store_false", help="no EC2 API calls (boto3)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child()
    if args.clients < 1 or args.seconds <= 0 or args.processes < 1 or args.accounts < 1:
        parser.error("--clients, --seconds, --processes and --accounts must be positive")

    import logging

    from api.app import create_app
    from computed.accounts.registry import Caller
    from computed.settings import Settings
    from images.library import ImageLibrary
    from tests.fakes import publish_with_disk
    from tests.http_server import ThreadedServer

    logging.getLogger("waitress.queue").setLevel(logging.ERROR)  # "task queue depth" is the point here
    rnd = random.Random(args.seed)
    processes = min(args.processes, args.clients)
    accounts = min(args.accounts, args.clients)
    # every client's live instances, those shutting down, and room to spare: never the limit
    # at most this many instances not terminated at once (a launch of 2 at max_live - 1,
    # those shutting down): twice that is never the limit
    most = 2 * args.clients * (args.max_live + 2)
    ports = free_port_range(max(200, most), rnd)
    raised = limits(most)
    with tempfile.TemporaryDirectory(prefix="computed-load-") as tmp:
        settings = Settings.load(environ={}, var_dir=Path(tmp), libvirt_uri="test:///default", ssh_ports=ports,
                                 api_threads=args.threads, **raised)
        publish_with_disk(ImageLibrary(settings.image_library), IMAGE)
        app = create_app(settings)
        svc = app.extensions["computed"]
        server = ThreadedServer(app, threads=args.threads)
        try:
            return run(args, svc, server.url, processes, accounts, ports, raised,
                       Caller("000000000000", "load-admin", admin=True))
        finally:
            server.close()
            svc.close()


def run(args, svc, url: str, processes: int, accounts: int, ports: tuple[int, int], raised: dict, admin) -> int:
    creds = [svc.accounts.create(f"load-{i}").to_dict() for i in range(accounts)]
    groups: list[list[dict]] = [[] for _ in range(processes)]
    for i in range(args.clients):
        groups[i % processes].append({"index": i, "account": creds[i % accounts]})
    children = []
    for group in groups:
        p = subprocess.Popen([sys.executable, __file__, "--child"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True)
        p.stdin.write(json.dumps({"url": url, "clients": group, "seconds": args.seconds, "seed": args.seed,
                                  "max_live": args.max_live, "abandon": args.abandon, "ec2": args.ec2, "region": svc.settings.region}) + "\n")
        p.stdin.flush()
        children.append(p)
    for p in children:
        if p.stdout.readline().strip() != "ready":
            raise SystemExit("a client process failed to start")
    print(f"load: {args.clients} clients ({processes} processes, {accounts} accounts) for {args.seconds:g} s against "
          f"{url} (waitress, {args.threads} threads; libvirt test:///default; SQLite WAL; "
          f"{svc.settings.workers} workers; SSH ports {ports[0]}-{ports[1]})", flush=True)
    if raised:
        print("limits raised for the test host: " + ", ".join(f"{k} {v:g}" for k, v in raised.items()), flush=True)
    usage0 = resource.getrusage(resource.RUSAGE_SELF)
    for p in children:
        p.stdin.write("go\n")
        p.stdin.close()
    results = []
    for p in children:
        out = p.stdout.read()
        if p.wait() != 0:
            raise SystemExit(f"a client process failed with exit code {p.returncode}")
        results.extend(json.loads(out))
    elapsed = max(r["elapsed"] for r in results)  # from "go" to the last request's answer
    usage1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (usage1.ru_utime - usage0.ru_utime) + (usage1.ru_stime - usage0.ru_stime)
    settled = svc.worker.idle(timeout=120)

    latency: dict[str, list[float]] = defaultdict(list)
    errors: Counter[str] = Counter()
    for r in results:
        for op, values in r["latency"].items():
            latency[op].extend(values)
        errors.update(r["errors"])
    total = sum(len(v) for v in latency.values())
    print(f"\n{'operation':26} {'requests':>8} {'per s':>7} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for op in OPS:
        values = sorted(latency.get(op, []))
        if not values:
            continue
        print(f"{LABELS[op]:26} {len(values):8d} {len(values) / elapsed:7.1f} {percentile(values, .5) * 1000:8.1f} "
              f"{percentile(values, .99) * 1000:8.1f} {values[-1] * 1000:8.1f}")
    print(f"{'all':26} {total:8d} {total / elapsed:7.1f}")
    print(f"\nwall {elapsed:.1f} s; server process CPU {cpu:.1f} s ({cpu / elapsed:.2f} cores of {os.cpu_count()})")
    print(f"errors: {sum(errors.values())}" + "".join(f"\n  {n:6d}  {what}" for what, n in errors.most_common()))
    refusals: Counter[str] = Counter()
    for r in results:
        refusals.update(r["refusals"])
    print(f"launches refused by the service's limits (not errors): {sum(refusals.values())}"
          + "".join(f"\n  {n:6d}  {what}" for what, n in refusals.most_common()))
    print(f"launches abandoned on purpose and sent again with the same client token: "
          f"{sum(r['abandoned'] for r in results)}; connection failures retried: "
          f"{sum(r['connection_retries'] for r in results)}")

    problems, facts = audit(svc, results)
    if not settled:
        problems.insert(0, "the background work did not finish within 120 s of the run")
    # the end: every instance left is terminated, and no domain of the service remains
    rows, _ = svc.instances.describe(admin, limit=100000)
    left = [i.id for i in rows if i.state not in ("terminated", "shutting-down")]
    for instance_id in left:
        svc.instances.terminate(admin, instance_id)
    if not svc.worker.idle(timeout=120):
        problems.append("terminating the instances left did not finish within 120 s")
    stray = sorted(name for name in (d.name() for d in svc.default_driver.conn().listAllDomains())
                   if name.startswith("computed-"))
    if stray:
        problems.append(f"{len(stray)} domains left after terminating everything: {stray[:5]}")
    facts.append(f"then {len(left)} left terminated: {len(stray)} domains of the service remain")

    print(f"\naudit: {'OK' if not problems else 'FAILED'}: " + "; ".join(facts))
    for problem in problems[:50]:
        print(f"  PROBLEM: {problem}")
    if len(problems) > 50:
        print(f"  ... and {len(problems) - 50} more")
    return 1 if problems or errors else 0


if __name__ == "__main__":
    sys.exit(main())
