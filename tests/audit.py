"""What a run of many clients against the service must leave in its store, checked one way
by the benchmarks (scripts/bench/load, scripts/bench/schedule) and the test of several
service processes on one store (tests/unit/test_two_processes.py):

- every launch a client saw acknowledged is in the store exactly once (client token ->
  the acknowledged instances, one reservation, however often and wherever it was sent);
  none that no client asked for (``check_launches``);
- every instance's usage events are a walk of EC2's state machine: pending first, only
  its transitions, none earlier than the one before, the last one its current state
  (``check_usage_walks``);
- no host's instances ever had more vCPUs or memory than its capacity times the
  overcommit ratios: the usage events, in the order of their sequence numbers (the order
  in which the transactions that wrote them committed, since writers run one at a time),
  are replayed and every prefix checked (``check_capacity``).

Each check returns the problems it found (empty: all is well) and what it counted."""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

#: answers to a launch that are the service's limits at work, not failures
REFUSALS = ("InsufficientInstanceCapacity", "InstanceLimitExceeded")
#: state -> the states it may change to (lifecycle.py, instances.py, reconcile.py)
TRANSITIONS = {
    "pending": {"running", "shutting-down", "terminated", "stopped"},
    "running": {"stopping", "stopped", "shutting-down"},
    "stopping": {"stopped", "shutting-down"},
    "stopped": {"pending", "shutting-down"},
    "shutting-down": {"terminated"},
    "terminated": set(),
}


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    pos = (len(sorted_values) - 1) * q
    low = int(pos)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (pos - low)


@dataclass
class StoreView:
    """One snapshot of the store: instances by id, their usage events (by sequence number),
    every usage event in sequence order, hosts by name."""
    instances: dict = field(default_factory=dict)
    events: dict = field(default_factory=dict)
    ordered: list = field(default_factory=list)
    hosts: dict = field(default_factory=dict)


def read_store(db) -> StoreView:
    """A StoreView of DB (a computed.store.engine.Database), read in one snapshot."""
    from sqlalchemy import select

    from computed.store.models import Host, Instance, UsageEvent

    view = StoreView()
    with db.reading() as s:
        view.instances = {i.id: i for i in s.scalars(select(Instance))}
        view.ordered = list(s.scalars(select(UsageEvent).order_by(UsageEvent.id)))
        view.hosts = {h.name: h for h in s.scalars(select(Host))}
    events = defaultdict(list)
    for e in view.ordered:
        events[e.instance_id].append(e)
    view.events = dict(events)
    return view


@dataclass
class LaunchCounts:
    acknowledged: int = 0  # launch requests with at least one acknowledged answer
    acknowledged_instances: int = 0
    unacknowledged: int = 0  # requests never acknowledged
    unacknowledged_found: int = 0  # of which the store has instances (whole)
    unknown: list = field(default_factory=list)  # instances no client launched


def check_launches(records: Iterable[dict], instances: dict) -> tuple[list[str], LaunchCounts]:
    """RECORDS: one per launch request sent (a retry of a client token may be a record of
    its own): {"owner": account id, "token": client token or None, "count": n, "ids": the
    instance ids of its acknowledged answer, or None}. Every answer for one (owner, token)
    must name exactly the store's instances of that token; an acknowledged launch without
    a token, exactly its instances; and the store has no instance none of them covers."""
    problems: list[str] = []
    counts = LaunchCounts()
    by_token: dict[tuple[str, str], list] = defaultdict(list)
    for inst in instances.values():
        if inst.client_token is not None:
            by_token[(inst.owner, inst.client_token)].append(inst)
    requests: dict[tuple, list[dict]] = defaultdict(list)
    covered: set[str] = set()
    for n, r in enumerate(records):
        key = (r["owner"], r["token"]) if r["token"] is not None else ("", n)
        requests[key].append(r)
    for key, sent in requests.items():
        token = key[1] if sent[0]["token"] is not None else None
        answers = [sorted(r["ids"]) for r in sent if r["ids"] is not None]
        if token is not None:
            found = by_token.get(key, [])
        else:
            found = [instances[i] for i in answers[0] if i in instances] if answers else []
        covered.update(i.id for i in found)
        ids = sorted(i.id for i in found)
        what = f"launch {token}" if token is not None else f"launch without a token of {answers[0] if answers else '?'}"
        if answers:
            counts.acknowledged += 1
            counts.acknowledged_instances += len(answers[0])
            for answer in answers:
                if answer != ids:
                    lost = sorted(set(answer) - set(ids))
                    extra = sorted(set(ids) - set(answer))
                    problems.append(f"{what}: acknowledged {answer}, the store has {ids} (lost {lost}, "
                                    f"duplicated/unacknowledged {extra})")
            if len(answers[0]) != sent[0]["count"]:
                problems.append(f"{what}: acknowledged {len(answers[0])} instances for count {sent[0]['count']}")
        else:
            counts.unacknowledged += 1
            counts.unacknowledged_found += bool(found)
            if found and len(found) != sent[0]["count"]:
                problems.append(f"{what} (never acknowledged): {len(found)} instances in the store for count "
                                f"{sent[0]['count']}")
        if any(i.owner != sent[0]["owner"] for i in found):
            problems.append(f"{what}: instances of another account {sorted({i.owner for i in found})}")
        if len({i.reservation_id for i in found}) > 1:
            problems.append(f"{what}: {len({i.reservation_id for i in found})} reservations")
    counts.unknown = sorted(set(instances) - covered)
    if counts.unknown:
        problems.append(f"{len(counts.unknown)} instances no client launched: {counts.unknown[:5]}")
    return problems, counts


def check_usage_walks(instances: dict, events: dict) -> tuple[list[str], int]:
    """(problems, transitions checked): every instance's usage events start with pending,
    follow TRANSITIONS (so no state is repeated), never go back in time and end in its
    current state; no instance without events, no events without an instance."""
    problems: list[str] = []
    transitions = 0
    for instance_id, history in events.items():
        inst = instances.get(instance_id)
        if inst is None:
            problems.append(f"usage events of {instance_id}, which is not in the store")
            continue
        states = [e.state for e in history]
        if states[0] != "pending":
            problems.append(f"{instance_id}: its first usage event is {states[0]}, not pending")
        for before, after in itertools.pairwise(history):
            transitions += 1
            if after.state not in TRANSITIONS[before.state]:
                problems.append(f"{instance_id}: usage events {before.state} -> {after.state} (ids {before.id}, "
                                f"{after.id}): not a transition of the state machine")
            if after.at < before.at:
                problems.append(f"{instance_id}: usage event {after.id} is earlier than {before.id}")
        if states[-1] != inst.state:
            problems.append(f"{instance_id}: is {inst.state}, its last usage event says {states[-1]}")
    for instance_id in instances.keys() - events.keys():
        problems.append(f"{instance_id}: no usage event")
    return problems, transitions


@dataclass
class Peak:
    instances: int = 0
    vcpus: int = 0
    memory_mib: int = 0


def check_capacity(view: StoreView, cpu_overcommit: float, memory_overcommit: float
                   ) -> tuple[list[str], dict[str, Peak]]:
    """(problems, host -> the most its instances ever had at once): the usage events replayed
    in sequence order, an instance taking its place on its host from its first event
    (written in the transaction that placed it) until its terminated event; after each
    event, no host may have more than its vCPUs and memory times the overcommit ratios
    (the hosts' capacity as the store has it now)."""
    problems: list[str] = []
    used: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    peak: dict[str, Peak] = {name: Peak() for name in view.hosts}
    seen: set[str] = set()
    gone: set[str] = set()
    for e in view.ordered:
        inst = view.instances.get(e.instance_id)
        if inst is None or inst.host is None:
            continue
        if e.instance_id not in seen:
            seen.add(e.instance_id)
            sign = 1
        elif e.state == "terminated" and e.instance_id not in gone:
            gone.add(e.instance_id)
            sign = -1
        else:
            continue
        u = used[inst.host]
        u[0] += sign
        u[1] += sign * inst.vcpus
        u[2] += sign * inst.memory_mib
        host = view.hosts.get(inst.host)
        if host is None:
            problems.append(f"{inst.id} is on {inst.host}, which is not a host of the store")
            continue
        p = peak.setdefault(inst.host, Peak())
        p.instances, p.vcpus, p.memory_mib = max(p.instances, u[0]), max(p.vcpus, u[1]), max(p.memory_mib, u[2])
        room = (int((host.vcpus or 0) * cpu_overcommit), int((host.memory_mib or 0) * memory_overcommit))
        if sign > 0 and (u[1] > room[0] or u[2] > room[1]):
            problems.append(f"host {inst.host} over capacity after usage event {e.id} ({inst.id} placed): "
                            f"{u[0]} instances with {u[1]} vCPUs and {u[2]} MiB, room for {room[0]} vCPUs and "
                            f"{room[1]} MiB")
    return problems, peak
