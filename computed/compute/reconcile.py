"""Reconciliation: the store, libvirt and the disk brought back into agreement, at start
(after a crash, nothing is in flight, so every transitional state was interrupted) and
periodically (a setting), as Nova's periodic tasks do.

- A domain carrying our metadata whose instance is gone or terminated is destroyed and
  undefined; a directory under the instances directory with no live instance is removed.
- An instance whose domain vanished is ended (terminated) with a state reason; billing
  closes at the time of detection, since the event that ends it is written then.
- A running instance whose guest is off (it powered itself off, or crashed, while nobody
  was looking) becomes stopped with the reason.
- An interrupted launch, start, stop or terminate is completed or rolled back: a launch
  whose domain runs is completed; any other launch is rolled back (its domain and files
  removed) and begins again; a start, stop or terminate is carried out again (each step is
  idempotent).

Work in flight (the worker's) is never touched; in a periodic pass an instance must also
have been in its state for a grace period, so a request committed a moment ago and not yet
handed to the worker is left alone."""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field

from sqlalchemy import select

from computed.clock import Clock
from computed.store.engine import Database
from .instances import INSTANCE_ID
from .lifecycle import Lifecycle
from computed.errors import ServiceUnavailable
from computed.store.models import Host, Instance, UsageEvent
from computed.virt.provisioner import Provisioner
from computed.settings import Settings
from computed.virt.storage import Storage
from .state import CRASHED, LIVE, SELF_SHUTDOWN, VANISHED, State, set_state
from .worker import Worker

log = logging.getLogger(__name__)

GRACE = dt.timedelta(seconds=60)


@dataclass
class Findings:
    orphan_domains: list[str] = field(default_factory=list)
    orphan_files: list[str] = field(default_factory=list)
    vanished: list[str] = field(default_factory=list)
    powered_off: list[str] = field(default_factory=list)
    resumed: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return any((self.orphan_domains, self.orphan_files, self.vanished, self.powered_off, self.resumed))


@dataclass(frozen=True)
class _Seen:
    """What a pass saw of an instance; any change since (every change of state moves
    state_changed_at) means someone else acted on it meanwhile."""
    id: str
    state: str
    state_changed_at: dt.datetime
    handled_by: str | None

    @classmethod
    def of(cls, inst: Instance) -> _Seen:
        return cls(inst.id, inst.state, inst.state_changed_at, inst.handled_by)


class Reconciler:
    def __init__(self, settings: Settings, db: Database, provisioner: Provisioner, lifecycle: Lifecycle,
                 worker: Worker, clock: Clock, started: dt.datetime):
        #: when this process started: what changed since is its own to finish
        self.started = started
        self.settings = settings
        self.db = db
        self.provisioner = provisioner
        self.hosts = provisioner.hosts
        self.lifecycle = lifecycle
        self.processes = lifecycle.processes
        self.worker = worker
        self.clock = clock

    def run(self, at_start: bool = False) -> Findings:
        """One pass over every host that answers; one that does not is skipped (its
        instances keep their state) and recorded as unreachable. Raises ServiceUnavailable
        (changing nothing) if no host could be asked."""
        found = Findings()
        with self.db.reading() as s:
            hosts = list(s.scalars(select(Host).order_by(Host.name)))
        reached, failures = 0, []
        for host in hosts:
            try:
                self._host(host, at_start, found)
                reached += 1
            except ServiceUnavailable as e:
                failures.append(e.message)
                self.hosts.check([host.name])
        if hosts and not reached:
            raise ServiceUnavailable("; ".join(failures))
        self._orphan_files(self.provisioner.shared, None, found)
        if found:
            log.warning("reconciled: %s", found)
        return found

    def _host(self, host: Host, at_start: bool, found: Findings) -> None:
        conn = self.hosts.driver(host.name, host.uri)
        # the store first, then the domains: a terminate removes the domain before it ends the
        # instance, so one finishing in between is never taken for an orphan domain
        with self.db.reading() as s:
            live = {i.id: i for i in s.scalars(select(Instance).where(Instance.host == host.name,
                                                                       Instance.state.in_(LIVE)))}
            ever_ran = set(s.scalars(select(UsageEvent.instance_id).where(
                UsageEvent.instance_id.in_(list(live)), UsageEvent.state == State.RUNNING).distinct()))
        domains = {iid: name for iid, (name, _, on) in conn.our_domains(self.provisioner.store).items()
                   if on in (host.name, "")}
        for instance_id, name in domains.items():
            if instance_id not in live and not self.worker.busy(instance_id) and not self._exists_live(instance_id):
                if conn.state(name) is None:
                    continue  # removed meanwhile by whoever ended it
                conn.power_off(name)
                conn.undefine(name)
                found.orphan_domains.append(name)
        if host.image_mode != "shared":
            self._orphan_files(self.provisioner.storage(host.name), host.name, found)
        cutoff = self.started if at_start else self.clock.now() - GRACE
        alive = self.processes.alive()
        for instance_id, inst in live.items():
            owner = inst.handled_by
            if owner not in (None, self.processes.id) and owner in alive:
                continue  # another live process's: it carries out its own work
            # a handler gone (crashed, or shut down) left its work interrupted, whenever it began
            orphaned = owner not in (None, self.processes.id)
            if self.worker.busy(instance_id) or (not orphaned and inst.state_changed_at >= cutoff):
                continue
            lock = self.worker.lock(instance_id)
            if not lock.acquire(blocking=False):
                continue
            try:
                # asked now, not taken from the listing: the instance may have moved on since. A
                # domain the listing did not show is looked up by its name (unique on the host): one
                # made before domains carried their store's id, or under another store id (the
                # database moved), is no vanished one
                domain = conn.state(domains.get(instance_id, inst.domain_name))
                self._instance(_Seen.of(inst), domain, instance_id in ever_ran, at_start or orphaned, found)
            finally:
                lock.release()

    def _orphan_files(self, storage: Storage, host: str | None, found: Findings) -> None:
        """Files of instances that are not live (on HOST, or anywhere for the shared directory)."""
        ids = {i for i in storage.instance_ids() if INSTANCE_ID.fullmatch(i)}
        if not ids:
            return
        with self.db.reading() as s:
            q = select(Instance.id).where(Instance.id.in_(list(ids)), Instance.state.in_(LIVE))
            if host is not None:
                q = q.where(Instance.host == host)
            live = set(s.scalars(q))
        for instance_id in sorted(ids - live):
            if not self.worker.busy(instance_id) and not self._exists_live(instance_id, host):
                storage.remove(instance_id)
                found.orphan_files.append(instance_id)

    def _exists_live(self, instance_id: str, host: str | None = None) -> bool:
        """Asked again at the moment of removing: a launch may have begun since the pass began."""
        with self.db.reading() as s:
            inst = s.get(Instance, instance_id)
            return inst is not None and inst.state in LIVE and host in (None, inst.host)

    def _instance(self, seen: _Seen, domain: str | None, ran_before: bool, interrupted: bool,
                  found: Findings) -> None:
        """An instance's store state brought in line with its DOMAIN's state (asked after SEEN
        was read); INTERRUPTED: whatever work it was in was cut short (by a restart, or its
        handler's death). Nothing is done if the instance changed since SEEN: a request taken
        meanwhile (by this process or another) is its handler's, and DOMAIN may predate it."""
        instance_id = seen.id
        with self.db.session() as s:
            inst = s.get(Instance, instance_id)
            if inst is None or _Seen.of(inst) != seen or not self.lifecycle.mine(inst):
                return
            state, now = inst.state, self.clock.now()
            launching = state == State.PENDING and not ran_before
            if domain is None and not launching and state != State.SHUTTING_DOWN:
                set_state(inst, State.TERMINATED, VANISHED, now)
                found.vanished.append(instance_id)
                return
            if state == State.RUNNING and domain in ("shutoff", "crashed"):
                set_state(inst, State.STOPPED, CRASHED if domain == "crashed" else SELF_SHUTDOWN, now)
                found.powered_off.append(instance_id)
                return
            readiness_cut_short = state == State.RUNNING and interrupted and not inst.ready_ssh
            if not (readiness_cut_short or state in (State.PENDING, State.STOPPING, State.SHUTTING_DOWN)):
                return
            inst.handled_by = self.processes.id  # this process carries on what was cut short
            if launching and domain == "running":  # launched, but the store never heard
                set_state(inst, State.RUNNING, None, now)
                found.resumed.append(instance_id)
                self.lifecycle.readiness(instance_id)
                return
            if readiness_cut_short:
                self.lifecycle.readiness(instance_id)
                return
        if state == State.PENDING and launching:
            self.provisioner.delete(inst)  # whatever the interrupted launch left
            self.lifecycle.launch(instance_id)
        elif state == State.PENDING:
            self.lifecycle.start(instance_id)
        elif state == State.STOPPING:
            self.lifecycle.stop(instance_id)
        elif state == State.SHUTTING_DOWN:
            self.lifecycle.terminate(instance_id)
        else:
            return
        found.resumed.append(instance_id)
