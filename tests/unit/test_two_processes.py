"""Two ``computed serve`` processes on one PostgreSQL store, hammered at once on loopback:
no double placement, no lost or duplicated instance or usage event, and neither process
steps on the other's work in flight.

Both processes are real (``computed serve``, tests/serve_process.py) and share everything a
second API process of one service shares: the store (a throwaway PostgreSQL database), the
state directory (the key that seals the access keys, the image store with a fake image
whose disk is a real qcow2, the instances' files) and the libvirt hosts. The hosts are
libvirtd's test driver, which ``test+unix:///default`` reaches as one fake hypervisor for
every process connected to it: the default host (``local``, from COMPUTED_LIBVIRT_URI) and
two more added to the store (``Hosts.add``) under URIs that are other spellings of the same
one (a ``socket=`` parameter), each with its own loopback address for the SSH ports. Each
host has room for about a dozen instances (overcommit ratios and sizes below), the
accounts a limit of ten, so the hammer runs the hosts full and beyond.

Twelve client threads of this process (three per account) hammer both processes for a
while: launches (count 1 or 2, t3.nano or t3.micro; most with a client token, some of
them sent again to the other process once answered, some to both at once), describes
(list and one; every instance the client has seen settled must be shown in that state by
either process), stops, starts and terminates of their own instances once settled, keeping
at most a few alive. A launch may be refused only with 503 InsufficientInstanceCapacity or
400 InstanceLimitExceeded; every other answer must be the expected success. Reconciliation
runs every 2 s in each process, and meanwhile each process in turn is drained (no new
requests, its own work finished), stopped and started again: the new one's start-up
reconciliation runs while the other process is busy, which is when it could take the
other's work in flight for interrupted work. Each client also keeps one "veteran"
instance untouched until it has been running longer than the periodic reconciliation's
grace period, and acts on it only then, while both processes reconcile every 2 s. A
sampler reads the hosts' allocations from the store all along.

Then, with both processes idle (and two more reconciliation periods without a change),
the audit, from the store and from libvirtd: every acknowledged launch is in the store
exactly once (a client token launched once across both processes, every answer naming
the same instances), no instance that no client asked for; every instance's usage events
are exactly the transitions its client's accepted requests imply (launch: pending,
running; stop: stopping, stopped; start: pending, running; terminate: shutting-down,
terminated), so nothing was lost, repeated or done by anyone else; replaying all usage
events in commit order (and in every sample), no host ever had more vCPUs or memory than
its capacity times the ratios; each running instance has exactly one domain, active, on
its host, each stopped one an inactive one; terminated ones have no domain and no files;
no domain of this store lacks a live instance; live SSH endpoints are unique, on their
host's address; and neither process logged a warning or an error of its own (a
reconciliation that finds something to repair, a failed launch, start, stop or
terminate), which in a run where nothing crashed means one process interfered with the
other's work."""

from __future__ import annotations

import datetime as dt
import os
import random
import re
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from tests.audit import check_capacity, check_launches, check_usage_walks, read_store
from tests.serve_process import ServeProcess, free_port_range
from tests.store_domains import remove_store_domains, store_domains

pytestmark = [pytest.mark.postgresql, pytest.mark.multiprocess]

LIBVIRT_URI = "test+unix:///default"
#: the hosts: name -> (URI, SSH address); the first is the default host made from the settings
HOSTS = {
    "local": (LIBVIRT_URI, "127.0.1.1"),
    "alias-2": ("test+unix:///default?socket=/run/libvirt/libvirt-sock", "127.0.1.2"),
    "alias-3": ("test+unix:///default?socket=/var/run/libvirt/libvirt-sock", "127.0.1.3"),
}
#: libvirt's test host has 16 CPUs and 3 GiB: 24 vCPUs and 9 GiB per host, a dozen t3.nano/micro
CPU_OVERCOMMIT = 1.5
MEMORY_OVERCOMMIT = 3.0
ACCOUNT_MAX_INSTANCES = 10
ACCOUNTS = 4
CLIENTS = 12
MAX_LIVE = 5
SIZES = ("t3.nano", "t3.micro")
RECONCILE_INTERVAL = 2
#: the periodic reconciliation leaves alone what changed within this (computed/reconcile.py)
GRACE = 60
#: how long the clients hammer: past GRACE, so that the veterans get old enough
HAMMER = GRACE + 15
#: when each process is restarted (seconds into the hammer)
RESTARTS = ((12, 1), (32, 0))
SETTLE_TIMEOUT = 90
TRANSITIONAL = ("pending", "stopping", "shutting-down")
#: an accepted request -> the usage events it implies, and the state they end in
ACTION_EVENTS = {"launch": ["pending", "running"], "stop": ["stopping", "stopped"], "start": ["pending", "running"],
                 "terminate": ["shutting-down", "terminated"]}
#: the only answers that may refuse a launch
REFUSAL_STATUS = {"InsufficientInstanceCapacity": 503, "InstanceLimitExceeded": 400}
#: what an accepted request's answer shows
ANSWER_STATE = {"launch": "pending", "stop": "stopping", "start": "pending", "terminate": "shutting-down"}
#: a service log line of its own at WARNING or above ("%(asctime)s %(levelname)s %(name)s: %(message)s")
OWN_TROUBLE = re.compile(r"^\S+ \S+ (WARNING|ERROR|CRITICAL) (computed|api)[\w.]*: .*$", re.MULTILINE)
#: the one such line let pass: the reconciler's report of the domains or files it removed for
#: instances not live, and nothing else. When the other process's terminate of an instance ends
#: between this one's listing of domains (or files) and its reading of the store, this one
#: reports, and removes again (a no-op), what that terminate has just removed. Each one named
#: must be an instance its client terminated.
ORPHANS_ONLY = re.compile(r"reconciled: Findings\(orphan_domains=\[[^\]]*\], orphan_files=\[[^\]]*\], "
                          r"vanished=\[\], powered_off=\[\], resumed=\[\]\)$")
INSTANCE_ID = re.compile(r"i-[0-9a-f]{17}")
LOG_LINE = re.compile(r"^\S+ \S+ (DEBUG|INFO|WARNING|ERROR|CRITICAL) [\w.]+: ", re.MULTILINE)


def utc_now() -> str:
    return f"{dt.datetime.now(dt.UTC):%H:%M:%S.%f}"


def libvirt_or_skip():
    """libvirt's shared test driver through libvirtd; skipped where libvirtd cannot be
    reached, a failure in CI (scripts/setup starts it)."""
    import libvirt

    try:
        for uri, _ in HOSTS.values():
            libvirt.open(uri).close()
    except libvirt.libvirtError as e:
        message = f"libvirtd's test driver cannot be reached ({e.get_error_message()}); scripts/setup starts libvirtd"
        if os.environ.get("CI"):
            pytest.fail(message + " (CI is set)", pytrace=False)
        pytest.skip(message)


@dataclass
class Tracked:
    """What a client knows of one of its instances."""
    id: str
    owner: str
    veteran: bool
    #: the usage events its accepted requests imply, in order
    expected: list = field(default_factory=list)
    #: the state its last accepted request leads to
    target: str = "running"
    settled: bool = False
    #: monotonic time its client first saw it settled (a veteran: in the state it launched to)
    settled_at: float | None = None
    #: the processes that accepted its last request (whose background work that is)
    handlers: set = field(default_factory=set)
    broken: bool = False
    #: its accepted requests: which process answered, when (UTC, as the usage events)
    history: list = field(default_factory=list)


class Proc:
    """One of the two service processes, as the clients route to it."""

    def __init__(self, index: int, settings: dict, logs: Path):
        self.index = index
        self.name = f"process-{'AB'[index]}"
        self.settings = settings
        self.logs = logs
        self.incarnations: list[ServeProcess] = []
        self.up = False
        self.in_flight = 0
        self.requests = 0
        self.start()

    def start(self) -> None:
        n = len(self.incarnations) + 1
        self.incarnations.append(ServeProcess(f"{self.name}#{n}", self.settings, self.logs / f"{self.name}-{n}.log"))
        self.up = True

    @property
    def url(self) -> str:
        return self.incarnations[-1].url

    def stop(self) -> None:
        for serve in self.incarnations:
            serve.stop()


class Hammer:
    def __init__(self, procs: list[Proc], db, accounts: list, rnd_seed: int):
        self.procs = procs
        self.db = db
        self.accounts = accounts
        self.seed = rnd_seed
        self.guard = threading.Condition()
        self.tracked: dict[str, Tracked] = {}
        self.records: list[dict] = []
        self.problems: list[str] = []
        self.errors: list[str] = []
        self.refusals: Counter[str] = Counter()
        self.ops: Counter[str] = Counter()
        self.samples = 0
        self.stop = threading.Event()
        #: veterans acted on once in their first state longer than GRACE
        self.veterans_aged = 0
        #: (what, monotonic time) of the run's phases, for the report
        self.timeline: list[tuple[str, float]] = [("start", time.monotonic())]

    # -- routing --------------------------------------------------------------------------

    def route(self, prefer: Proc | None, rnd: random.Random) -> Proc:
        """A process that takes requests (PREFER if it does), counted in flight until release."""
        with self.guard:
            while True:
                up = [p for p in self.procs if p.up]
                if up:
                    break
                self.guard.wait(0.1)
            proc = prefer if prefer is not None and prefer.up else rnd.choice(up)
            proc.in_flight += 1
            proc.requests += 1
            return proc

    def release(self, proc: Proc) -> None:
        with self.guard:
            proc.in_flight -= 1
            self.guard.notify_all()

    def other(self, proc: Proc) -> Proc | None:
        with self.guard:
            others = [p for p in self.procs if p is not proc and p.up]
        return others[0] if others else None

    def drain_and_restart(self, proc: Proc) -> None:
        """No new requests to PROC; wait for its answers and for the background work of every
        instance it accepted a request for; stop it; start a new process in its place."""
        with self.guard:
            proc.up = False
            if not self.guard.wait_for(lambda: proc.in_flight == 0, timeout=60):
                self.problems.append(f"{proc.name}: requests still in flight 60 s after it was drained")
        self.timeline.append((f"{proc.name} answered all", time.monotonic()))
        deadline = time.monotonic() + 60
        while True:
            with self.guard:
                mine = [t.id for t in self.tracked.values() if proc in t.handlers]
            busy = self.transitional(mine)
            if not busy:
                break
            if time.monotonic() > deadline:
                self.problems.append(f"{proc.name}: instances {sorted(busy)[:5]} still transitional 60 s after it "
                                     "was drained")
                break
            time.sleep(0.05)
        with self.guard:
            for t in self.tracked.values():
                t.handlers.discard(proc)
        self.timeline.append((f"{proc.name}'s work done", time.monotonic()))
        proc.incarnations[-1].stop()
        self.timeline.append((f"{proc.name} stopped", time.monotonic()))
        proc.start()  # its start-up reconciliation runs now, while the other process is busy
        self.timeline.append((f"{proc.name} restarted", time.monotonic()))
        with self.guard:
            self.guard.notify_all()

    def transitional(self, ids: list[str]) -> set[str]:
        if not ids:
            return set()
        from sqlalchemy import select

        from computed.store.models import Instance

        with self.db.reading() as s:
            return set(s.scalars(select(Instance.id).where(Instance.id.in_(ids), Instance.state.in_(TRANSITIONAL))))

    # -- the clients ----------------------------------------------------------------------

    def client(self, index: int) -> None:
        try:
            Client(self, index).run()
        except Exception as e:  # noqa: BLE001 (a bug in the client is a failure, never silent)
            with self.guard:
                self.problems.append(f"client {index} crashed: {type(e).__name__}: {e}")
            raise

    def sampler(self) -> None:
        """The hosts' allocations, as the store has them, checked against their room all along."""
        from sqlalchemy import func, select

        from computed.store.models import Host, Instance

        while not self.stop.is_set():
            with self.db.reading() as s:
                room = {name: (int(v * CPU_OVERCOMMIT), int(m * MEMORY_OVERCOMMIT))
                        for name, v, m in s.execute(select(Host.name, Host.vcpus, Host.memory_mib))}
                used = list(s.execute(select(Instance.host, func.count(), func.sum(Instance.vcpus),
                                             func.sum(Instance.memory_mib))
                                      .where(Instance.state != "terminated").group_by(Instance.host)))
            for host, n, vcpus, memory in used:
                if host not in room or vcpus > room[host][0] or memory > room[host][1]:
                    with self.guard:
                        self.problems.append(f"sample {self.samples}: host {host} has {n} instances with {vcpus} "
                                             f"vCPUs and {memory} MiB; room {room.get(host)}")
            self.samples += 1
            time.sleep(0.1)


class Client:
    """One client thread: one account's credentials, a keep-alive session per process."""

    def __init__(self, hammer: Hammer, index: int):
        self.h = hammer
        self.index = index
        self.rnd = random.Random(hammer.seed * 1000 + index)
        creds = hammer.accounts[index % len(hammer.accounts)]
        self.owner = creds.account_id
        self.auth = (creds.access_key_id, creds.secret_access_key)
        self.sessions = {}
        for proc in hammer.procs:
            s = requests.Session()
            s.auth = self.auth
            self.sessions[proc] = s
        #: this client's instances (an account's other clients have theirs)
        self.mine: dict[str, Tracked] = {}

    # -- requests -------------------------------------------------------------------------

    def send(self, op: str, proc: Proc, method: str, path: str, own_session: bool = False, **kw):
        """PROC's response, or None if it failed on the connection (an error). OWN_SESSION: on
        a connection of its own (from another thread)."""
        with self.h.guard:
            self.h.ops[f"{op} {proc.name}"] += 1
        try:
            if own_session:
                return requests.request(method, proc.url + path, timeout=(5, 60), auth=self.auth, **kw)
            return self.sessions[proc].request(method, proc.url + path, timeout=(5, 60), **kw)
        except requests.RequestException as e:
            self.error(f"{op} {method} {path} to {proc.name}: {type(e).__name__}: {e}")
            return None

    def call(self, op: str, method: str, path: str, then=None, **kw):
        """A request to a process that takes requests; THEN(process, response or None) is
        called before the process counts it answered (a drain waits for what it records)."""
        proc = self.h.route(None, self.rnd)
        try:
            response = self.send(op, proc, method, path, **kw)
            if then is not None:
                then(proc, response)
            return proc, response
        finally:
            self.h.release(proc)

    def error(self, what: str) -> None:
        with self.h.guard:
            self.h.errors.append(what)

    def problem(self, what: str) -> None:
        with self.h.guard:
            self.h.problems.append(what)

    @staticmethod
    def code(response) -> str:
        try:
            return response.json()["error"]["code"]
        except (ValueError, KeyError, TypeError):
            return "?"

    # -- the loop -------------------------------------------------------------------------

    def run(self) -> None:
        self.launch(veteran=True)
        while not self.h.stop.is_set():
            self.step()
        self.settle_all()

    def live(self) -> list[Tracked]:
        return [t for t in self.mine.values() if t.target != "terminated" and not t.broken]

    def actionable(self) -> list[Tracked]:
        """Settled instances the client may act on now, but veterans."""
        return [t for t in self.live() if t.settled and not t.veteran]

    @staticmethod
    def aged(t: Tracked) -> bool:
        """A veteran in its state for longer than GRACE (it got there before its client saw it)."""
        return t.veteran and t.settled and t.settled_at is not None and time.monotonic() - t.settled_at > GRACE + 1

    def step(self) -> None:
        unsettled = [t for t in self.mine.values() if not t.settled and not t.broken]
        if unsettled and self.rnd.random() < 0.5:
            self.look(self.rnd.choice(unsettled))
            return
        aged = [t for t in self.live() if self.aged(t)]
        if aged:  # the first request for a veteran: the periodic reconciliation may look at it now
            aged[0].veteran = False
            self.act(aged[0])
            with self.h.guard:
                self.h.veterans_aged += 1
            return
        op = self.rnd.choices(("launch", "list", "get", "act"), (30, 15, 15, 40))[0]
        if op == "launch" and len(self.live()) >= MAX_LIVE:
            op = "act"
        if op == "act" and not self.actionable():
            op = "launch" if len(self.live()) < MAX_LIVE else "list"
        if op == "get" and not self.mine:
            op = "list"
        if op == "launch":
            self.launch()
        elif op == "list":
            self.list()
        elif op == "get":
            self.look(self.rnd.choice(list(self.mine.values())))
        else:
            self.act(self.rnd.choice(self.actionable()))

    # -- launch ---------------------------------------------------------------------------

    def launch(self, veteran: bool = False) -> None:
        count = 1 if veteran else self.rnd.choice((1, 1, 1, 2))
        size = self.rnd.choice(SIZES)
        token = None if not veteran and self.rnd.random() < 0.3 else f"c{self.index}-{uuid.uuid4().hex[:16]}"
        mode = "once" if token is None else self.rnd.choice(("once", "again", "again", "race", "race"))
        body = {"size": size, "image": "debian-12-podman", "count": count,
                "tags": {"test": "two-processes", "client": str(self.index)}}
        if token:
            body["client_token"] = token
        # the processes are held (counted in flight) until their answers are recorded
        held = [self.h.route(None, self.rnd)]
        try:
            if mode == "race" or mode == "again":
                other = self.h.other(held[0])
                held.append(self.h.route(other, self.rnd))
            send = lambda proc, own=False: self.send("launch", proc, "POST", "/v1/instances",  # noqa: E731
                                                     own_session=own, json=body)
            if mode == "race":  # one request to each process at once, as a retry after a lost answer
                out = {}
                thread = threading.Thread(target=lambda: out.__setitem__(1, send(held[1], True)))
                thread.start()
                out[0] = send(held[0])
                thread.join()
                answers = [(held[0], out[0]), (held[1], out[1])]
            else:  # and again, once answered, to the other process
                answers = [(proc, send(proc)) for proc in held]
            self.launched(answers, token, count, veteran)
        finally:
            for proc in held:
                self.h.release(proc)

    def launched(self, answers: list, token: str | None, count: int, veteran: bool) -> None:
        for proc, response in answers:
            record = {"owner": self.owner, "token": token, "count": count, "ids": None}
            with self.h.guard:
                self.h.records.append(record)
            if response is None:
                continue
            if response.status_code == 202:
                instances = response.json()["instances"]
                record["ids"] = [i["id"] for i in instances]
                for inst in instances:
                    self.accepted(inst, "launch", proc, veteran, again=token is not None)
            elif REFUSAL_STATUS.get(self.code(response)) == response.status_code:
                with self.h.guard:
                    self.h.refusals[self.code(response)] += 1
            else:
                self.error(f"launch to {proc.name}: {response.status_code} {response.text[:300]}")
        if veteran and not any(r is not None and r.status_code == 202 for _, r in answers):
            self.problem(f"client {self.index}: its veteran's launch was not accepted: "
                         f"{[(r.status_code, r.text[:200]) for _, r in answers if r is not None]}")

    def accepted(self, inst: dict, action: str, proc: Proc, veteran: bool = False, again: bool = False) -> None:
        """The answer to an accepted request for INST: the model moves on. AGAIN: a launch with
        a client token, whose answer may come from a retry, when the instance may be running."""
        with self.h.guard:
            t = self.h.tracked.get(inst["id"])
            if action == "launch" and t is not None:  # a retry of a token: the same instance
                t.handlers.add(proc)
                t.history.append(f"launch again by {proc.incarnations[-1].name} at {utc_now()}")
                return
            if action == "launch":
                t = Tracked(inst["id"], self.owner, veteran)
                self.h.tracked[t.id] = t
                self.mine[t.id] = t
            if inst["owner"] != self.owner:
                self.h.problems.append(f"{inst['id']}: answered to {self.owner}, owned by {inst['owner']}")
            if inst["state"]["name"] != ANSWER_STATE[action] and not (again and inst["state"]["name"] == "running"):
                self.h.problems.append(f"{inst['id']}: {action} accepted by {proc.name}, which answered state "
                                       f"{inst['state']['name']}, not {ANSWER_STATE[action]}")
            t.expected += ACTION_EVENTS[action]
            t.target = ACTION_EVENTS[action][-1]
            t.settled = False
            t.handlers = {proc}
            t.history.append(f"{action} by {proc.incarnations[-1].name} at {utc_now()}")

    # -- the others -----------------------------------------------------------------------

    def act(self, t: Tracked) -> None:
        if t.target == "running":
            action = self.rnd.choice(("stop", "stop", "terminate"))
        else:
            action = self.rnd.choice(("start", "start", "terminate"))
        method, path = ("DELETE", f"/v1/instances/{t.id}") if action == "terminate" else \
            ("POST", f"/v1/instances/{t.id}/{action}")
        def then(proc: Proc, response) -> None:
            if response is None:
                return
            if response.status_code != 202:
                self.error(f"{action} {t.id} (seen {t.target}) to {proc.name}: {response.status_code} "
                           f"{response.text[:300]}")
                t.broken = True
                return
            self.accepted(response.json(), action, proc)

        self.call(action, method, path, then=then)

    def list(self) -> None:
        proc, response = self.call("list", "GET", "/v1/instances", params={"limit": 100})
        if response is None:
            return
        if response.status_code != 200:
            self.error(f"list to {proc.name}: {response.status_code} {response.text[:300]}")
            return
        for inst in response.json()["instances"]:
            self.seen(inst, proc)

    def look(self, t: Tracked) -> None:
        proc, response = self.call("get", "GET", f"/v1/instances/{t.id}")
        if response is None:
            return
        if response.status_code != 200:
            self.error(f"get {t.id} to {proc.name}: {response.status_code} {response.text[:300]}")
            return
        self.seen(response.json(), proc)

    def seen(self, inst: dict, proc: Proc) -> None:
        """An instance as a process shows it: the client's own; a settled one in the state
        its client left it in; an unsettled one on its way there."""
        if inst["owner"] != self.owner:
            self.problem(f"client {self.index} was shown {inst['id']} of another account by {proc.name}")
            return
        t = self.mine.get(inst["id"])
        if t is None or t.broken:
            return  # another client's of this account, or one whose launch's answer is not read yet
        state = inst["state"]["name"]
        if state == t.target:
            t.settled = True
            if t.settled_at is None:
                t.settled_at = time.monotonic()
            return
        on_the_way = {"running": ("pending",), "stopped": ("stopping",), "terminated": ("shutting-down",)}[t.target]
        if t.settled or state not in on_the_way:
            self.problem(f"{t.id} is {state} as {proc.name} shows it ({inst['state_reason']}), but its client's "
                         f"last accepted request leads to {t.target}" + (" and it was there" if t.settled else ""))
            t.broken = True

    def settle_all(self) -> None:
        deadline = time.monotonic() + SETTLE_TIMEOUT
        while (waiting := [t for t in self.mine.values() if not t.settled and not t.broken]):
            if time.monotonic() > deadline:
                self.problem(f"client {self.index}: {[(t.id, t.target) for t in waiting][:5]} not settled within "
                             f"{SETTLE_TIMEOUT} s of the end of the hammer")
                return
            for t in waiting:
                self.look(t)
            time.sleep(0.05)


# -- the test -------------------------------------------------------------------------------------

def our_domains(store: str) -> dict[str, list[tuple[str, bool, str]]]:
    """Instance id -> [(domain name, active, host in its metadata)] of STORE's domains on libvirtd's test driver."""
    return store_domains(LIBVIRT_URI, store)


def remove_domains(store: str) -> None:
    remove_store_domains(LIBVIRT_URI, store)


def details(problems: list[str], view, hammer: Hammer) -> str:
    """The history of the instances the problems name (at most 10), to see who did what when."""
    lines = [f"  {serve.name}: pid {serve.proc.pid}" for p in hammer.procs for serve in p.incarnations]
    try:  # the store's registry of service processes, where there is one
        from sqlalchemy import text

        with hammer.db.reading() as s:
            lines += [f"  registered process {row[0]}: pid {row[1]}"
                      for row in s.execute(text("SELECT id, pid FROM service_processes"))]
    except Exception:  # noqa: BLE001 (no registry in this version of the store)
        pass
    for instance_id in list(dict.fromkeys(i for p in problems for i in INSTANCE_ID.findall(p)))[:10]:
        inst, t = view.instances.get(instance_id), hammer.tracked.get(instance_id)
        events = ", ".join(f"{e.id}:{e.state}@{e.at:%H:%M:%S.%f}" for e in view.events.get(instance_id, []))
        lines.append(f"  {instance_id} on {inst.host if inst else '?'}, now {inst.state if inst else '?'} "
                     f"({(inst.state_reason_code, inst.state_reason_message) if inst else '?'}); usage events "
                     f"{events}; handled by {getattr(inst, 'handled_by', '?')}; its client expects "
                     f"{t.expected if t else '?'}; its client's requests answered: {t.history if t else '?'}")
    return "\n\nthe instances named:\n" + "\n".join(lines) if lines else ""


def wait_idle(db, after: float) -> tuple[int, list[str]]:
    """Until no instance is transitional; then AFTER seconds more (reconciliation periods),
    which must change nothing. (the last usage event id, problems)."""
    from sqlalchemy import func, select

    from computed.store.models import Instance, UsageEvent

    def state():
        with db.reading() as s:
            return (s.scalar(select(func.max(UsageEvent.id))),
                    sorted(s.scalars(select(Instance.id).where(Instance.state.in_(TRANSITIONAL)))))

    deadline = time.monotonic() + 60
    while (now := state())[1]:
        if time.monotonic() > deadline:
            return now[0], [f"instances still transitional 60 s after the clients settled: {now[1][:5]}"]
        time.sleep(0.1)
    time.sleep(after)
    later = state()
    if later != now:
        return later[0], [f"the store changed while both processes were idle (reconciliation): usage events up to "
                          f"{now[0]} became {later[0]}, transitional {later[1][:5]}"]
    return now[0], []


@pytest.mark.timeout(600)
def test_two_processes_on_one_postgresql_store_hammered_at_once(new_postgres_database, tmp_path, libvirtd_up):
    from computed.compute import reconcile

    libvirt_or_skip()
    if hasattr(reconcile, "GRACE"):  # the veterans are aged to pass it
        assert reconcile.GRACE == dt.timedelta(seconds=GRACE), "computed/reconcile.py's GRACE changed: update it here"
    from computed.accounts.registry import KEY_FILE, Accounts
    from computed.clock import Clock
    from computed.store.engine import Database
    from computed.hosts.registry import Hosts
    from computed.store.identity import store_id
    from computed.accounts.secret_box import SecretBox
    from computed.settings import Settings
    from images.library import ImageLibrary
    from tests.fakes import publish_with_disk

    url = new_postgres_database()
    store = store_id(url)
    var = tmp_path / "var"
    ports = free_port_range(80, random.Random())
    settings = {
        "COMPUTED_VAR_DIR": str(var), "COMPUTED_DATABASE_URL": url, "COMPUTED_LIBVIRT_URI": LIBVIRT_URI,
        "COMPUTED_SSH_HOST": HOSTS["local"][1], "COMPUTED_SSH_PORTS": f"{ports[0]}-{ports[1]}",
        "COMPUTED_RECONCILE_INTERVAL": str(RECONCILE_INTERVAL), "COMPUTED_HOST_CHECK_INTERVAL": "3",
        "COMPUTED_CPU_OVERCOMMIT": str(CPU_OVERCOMMIT), "COMPUTED_MEMORY_OVERCOMMIT": str(MEMORY_OVERCOMMIT),
        "COMPUTED_ACCOUNT_MAX_INSTANCES": str(ACCOUNT_MAX_INSTANCES), "COMPUTED_STOP_TIMEOUT": "5",
    }
    core = Settings.load(environ=settings)
    publish_with_disk(ImageLibrary(core.image_library), "debian-12-podman")
    db = Database(url)
    procs: list[Proc] = []
    timeline = [("start", time.monotonic())]
    hammer, clients = None, []
    try:
        procs.append(Proc(0, settings, tmp_path))  # makes the default host, local, from COMPUTED_LIBVIRT_URI
        hosts = Hosts(core, db, Clock())
        for name, (uri, address) in HOSTS.items():
            if name != "local":
                hosts.add(name, uri, address=address)
        hosts.close()
        procs.append(Proc(1, settings, tmp_path))
        timeline.append(("both up", time.monotonic()))
        accounts = Accounts(db, SecretBox(var / KEY_FILE))
        creds = [accounts.create(f"hammer-{i}") for i in range(ACCOUNTS)]

        hammer = Hammer(procs, db, creds, rnd_seed=random.randrange(1 << 30))
        hammer.timeline = timeline
        sampler = threading.Thread(target=hammer.sampler, name="sampler", daemon=True)
        sampler.start()
        clients = [threading.Thread(target=hammer.client, args=(i,), name=f"client-{i}") for i in range(CLIENTS)]
        began = time.monotonic()
        for t in clients:
            t.start()
        for at, index in RESTARTS:
            time.sleep(max(0.0, began + at - time.monotonic()))
            hammer.drain_and_restart(procs[index])
        time.sleep(max(0.0, began + HAMMER - time.monotonic()))
        hammer.stop.set()
        timeline.append(("hammer stopped", time.monotonic()))
        for t in clients:
            t.join()
        sampler.join()
        timeline.append(("clients settled", time.monotonic()))
        last_event, idle_problems = wait_idle(db, 2 * RECONCILE_INTERVAL + 1)
        timeline.append(("idle", time.monotonic()))

        # -- the audit --------------------------------------------------------------------------
        problems = list(hammer.problems) + idle_problems
        view = read_store(db)
        found, launched = check_launches(hammer.records, view.instances)
        problems += found
        walks, transitions = check_usage_walks(view.instances, view.events)
        problems += walks
        for t in hammer.tracked.values():
            states = [e.state for e in view.events.get(t.id, [])]
            if states != t.expected:
                inst = view.instances.get(t.id)
                problems.append(f"{t.id}: usage events {states}, its client's accepted requests imply {t.expected} "
                                f"(now {inst.state if inst else '?'}, reason "
                                f"{(inst.state_reason_code, inst.state_reason_message) if inst else '?'})")
        capacity, peak = check_capacity(view, CPU_OVERCOMMIT, MEMORY_OVERCOMMIT)
        problems += capacity

        domains = our_domains(store)
        live = {i.id: i for i in view.instances.values() if i.state != "terminated"}
        for inst in view.instances.values():
            doms = domains.get(inst.id, [])
            if inst.state == "terminated":
                if doms:
                    problems.append(f"{inst.id} is terminated, its domain is still there: {doms}")
                if (core.instances_dir / inst.id).exists():
                    problems.append(f"{inst.id} is terminated, its files are still there")
            elif len(doms) != 1:
                problems.append(f"{inst.id} is {inst.state} with {len(doms)} domains: {doms}")
            else:
                name, active, host = doms[0]
                if host != inst.host or name != inst.domain_name:
                    problems.append(f"{inst.id} is on {inst.host} as {inst.domain_name}; its domain is {name} "
                                    f"on {host}")
                if inst.state not in ("running", "stopped") or active != (inst.state == "running"):
                    problems.append(f"{inst.id} is {inst.state}, its domain {'is' if active else 'is not'} active")
        for instance_id, doms in domains.items():
            if instance_id not in live:
                problems.append(f"domains of this store without a live instance: {instance_id}: {doms}")
        endpoints = Counter((i.ssh_host, i.ssh_port) for i in live.values())
        problems += [f"SSH endpoint {e} taken by {n} live instances" for e, n in endpoints.items() if n > 1]
        problems += [f"{i.id} on {i.host} has its SSH port on {i.ssh_host}, not {HOSTS[i.host][1]}"
                     for i in live.values() if i.ssh_host != HOSTS.get(i.host, (None, None))[1]]

        logs = {serve.name: serve.log_text() for p in procs for serve in p.incarnations}
        benign: list[str] = []
        for name, text in logs.items():
            if not LOG_LINE.search(text):
                problems.append(f"{name}'s log has no line in the service's log format: its check would see nothing")
            for line in (m.group(0) for m in OWN_TROUBLE.finditer(text)):
                if ORPHANS_ONLY.search(line):
                    benign.append(f"{name}: {line}")
                    problems += [f"{name} removed the domain or files of {i}, which its client did not terminate: "
                                 f"{line}" for i in INSTANCE_ID.findall(line)
                                 if i in hammer.tracked and hammer.tracked[i].target != "terminated"]
                else:
                    problems.append(f"{name} logged: {line[:400]}")

        # the hammer did what it is for: both processes took requests, the hosts and the
        # accounts' limits were reached, every kind of request was accepted
        print(f"\ntwo processes: ops {dict(sorted(hammer.ops.items()))}; refusals {dict(hammer.refusals)}; "
              f"{launched.acknowledged} launches acknowledged -> {launched.acknowledged_instances} instances; "
              f"{len(view.ordered)} usage events (last {last_event}), {transitions} transitions; {hammer.samples} "
              f"samples; {hammer.veterans_aged} veterans acted on past GRACE; peak per host (instances, vCPUs, MiB) "
              f"{ {k: (p.instances, p.vcpus, p.memory_mib) for k, p in peak.items()} }; "
              f"domains {sum(len(d) for d in domains.values())}; reconciler reports let pass: {benign}; timeline "
              + ", ".join(f"{what} {at - timeline[0][1]:.1f} s" for what, at in timeline[1:]))
        assert not hammer.errors, f"{len(hammer.errors)} requests failed:\n" + "\n".join(hammer.errors[:30])
        assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems[:40]) + details(problems, view, hammer)
        for p in procs:
            assert p.requests > 100, f"{p.name} took only {p.requests} requests"
        assert hammer.refusals["InsufficientInstanceCapacity"] > 0, "the hosts were never full"
        assert hammer.refusals["InstanceLimitExceeded"] > 0, "no account reached its limit"
        for op in ("launch", "stop", "start", "terminate", "list", "get"):
            assert sum(n for k, n in hammer.ops.items() if k.startswith(op + " ")) > 0, op
        assert max(p.instances for p in peak.values()) > 0
        assert all(len(p.incarnations) == 2 for p in procs)
        assert hammer.veterans_aged >= CLIENTS // 2, f"only {hammer.veterans_aged} veterans were acted on past GRACE"
    finally:
        if hammer is not None:
            hammer.stop.set()
            for t in clients:
                t.join(SETTLE_TIMEOUT + 30)
        for p in procs:
            p.stop()
        remove_domains(store)
        db.dispose()
