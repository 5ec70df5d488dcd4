"""Guest ports forwarded from the instance's host address, besides SSH: asked for at launch
or later, listed, removed, released at terminate (the rows go with the instance's state,
``state.set_state``).

QEMU's user-mode network forwards them as it forwards SSH (``hostfwd``). A change is written
to the domain's persistent definition, so the next start has it, and, while the guest
runs, to its running QEMU (``hostfwd_add``/``hostfwd_remove`` on the monitor), so it works
at once. A host port is one instance's at a time on its address (a unique constraint); the
change is decided, applied and committed in one write transaction, so two requests (in one
process or two) never interleave on one instance's definition, and a change QEMU refuses
(the port is taken on the host by another program) is undone and leaves no row."""

from __future__ import annotations

import logging
import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from computed.virt import domain_xml
from computed.accounts.registry import Caller
from computed.store.engine import Database
from computed.errors import (IncorrectInstanceState, InvalidParameterValue, PortInUse, PortLimitExceeded,
                             PortNotFound)
from computed.hosts.registry import Hosts, is_local
from computed.store.models import Instance, PortForward
from computed.hosts.addresses import port_is_free_on
from computed.virt.driver import HostDriver
from computed.virt.provisioner import Provisioner, forwards
from computed.settings import Settings
from . import ssh_ports
from .state import CHANGEABLE, State
from .worker import Worker

log = logging.getLogger(__name__)

#: forwarded ports per instance, besides SSH
MAX_PORTS = 20
#: below this, a port needs privileges on the host: refused, as Multipass and Docker rootless do
FIRST_UNPRIVILEGED = 1024
SPEC = re.compile(r"(?:(?P<host>\d{1,5}):)?(?P<guest>\d{1,5})(?:/(?P<protocol>[a-z]+))?")
#: how long a change waits for the instance's own work in this process (a reboot) to finish
LOCK_WAIT = 10.0
#: how many ports an add picks in turn when QEMU refuses the one picked (taken on the host
#: by something the service's own check could not see: a remote host's bound socket)
PICK_TRIES = 3


class QemuRefused(PortInUse):
    """QEMU refused to forward PORT on its host (its hostfwd_add failed)."""

    def __init__(self, message: str, port: int):
        super().__init__(message)
        self.port = port


@dataclass(frozen=True)
class PortSpec:
    """A guest port to forward, from HOST_PORT or, if None, a free port of the forward range."""
    guest_port: int
    host_port: int | None = None
    protocol: str = "tcp"

    @classmethod
    def parse(cls, text: str) -> PortSpec:
        """``HOST:GUEST`` or ``GUEST`` (a host port chosen), optionally ``/tcp``."""
        m = SPEC.fullmatch(text.strip())
        if m is None:
            raise InvalidParameterValue(f"{text!r} is not a port forward: HOST_PORT:GUEST_PORT or GUEST_PORT")
        host = m["host"]
        return cls(int(m["guest"]), int(host) if host is not None else None, m["protocol"] or "tcp")

    def __str__(self) -> str:
        return f"{'' if self.host_port is None else f'{self.host_port}:'}{self.guest_port}/{self.protocol}"


def check(specs: Iterable[PortSpec], settings: Settings, count: int = 1, existing: Iterable[PortForward] = ()
          ) -> tuple[PortSpec, ...]:
    """SPECS as a request may ask them for COUNT instances (that already forward EXISTING);
    InvalidParameterValue naming what is wrong otherwise. A named host port must be one of
    the service's forward range (the forward_ports setting, an admin's to widen): any other
    unprivileged port of the host may be another service's (a database, libvirt, the API
    itself while it restarts), whose traffic the guest would receive."""
    specs, existing = tuple(specs), list(existing)
    if len(specs) + len(existing) > MAX_PORTS:
        raise InvalidParameterValue(f"at most {MAX_PORTS} forwarded ports per instance "
                                    f"({len(existing)} already, {len(specs)} more asked)")
    low, high = settings.ssh_ports
    forward_low, forward_high = settings.forward_ports
    for spec in specs:
        if spec.protocol != "tcp":
            raise InvalidParameterValue(f"{spec}: only tcp ports are forwarded")
        if not 1 <= spec.guest_port <= 65535:
            raise InvalidParameterValue(f"{spec}: the guest port must be 1 to 65535")
        if spec.host_port is None:
            continue
        if count > 1:
            raise InvalidParameterValue(f"{spec}: a host port can be named only when launching one instance "
                                        "(leave it out: each instance then gets a free one)")
        if spec.host_port > 65535:
            raise InvalidParameterValue(f"{spec}: a host port is at most 65535")
        if spec.host_port < FIRST_UNPRIVILEGED:
            raise InvalidParameterValue(f"{spec}: host port {spec.host_port} is privileged (forward from a port of "
                                        f"the forward range {forward_low}-{forward_high})")
        if low <= spec.host_port <= high:
            raise InvalidParameterValue(f"{spec}: host ports {low}-{high} are kept for the instances' SSH")
        if not forward_low <= spec.host_port <= forward_high:
            raise InvalidParameterValue(f"{spec}: host port {spec.host_port} is outside the service's forward range "
                                        f"{forward_low}-{forward_high} (name one of those, or none for a free one)")
    for what, values in (("host port", [s.host_port for s in specs if s.host_port is not None]),
                         ("guest port", [s.guest_port for s in specs])):
        twice = sorted({v for v in values if values.count(v) > 1})
        if twice:
            raise InvalidParameterValue(f"{what} {twice[0]} is asked for twice")
    return specs


def taken_on(s: Session, address: str) -> set[int]:
    """The host ports instances hold on ADDRESS, forwarded or SSH (whichever host holds
    them: two hosts may be one machine)."""
    return set(s.scalars(select(PortForward.host_port).where(PortForward.host_address == address))) | \
        ssh_ports.taken(s, address)


def check_account_limit(s: Session, owner: str, more: int, settings: Settings) -> None:
    """PortLimitExceeded if OWNER's instances forward so many ports that MORE would pass the
    account's limit. In the writing transaction that adds them (writers run one at a time),
    so concurrent requests reach the limit exactly."""
    limit = settings.account_max_forwarded_ports
    in_use = s.scalar(select(func.count()).select_from(PortForward).join(Instance)
                      .where(Instance.owner == owner)) or 0
    if in_use + more > limit:
        raise PortLimitExceeded(f"the account's limit is {limit} forwarded ports over all its instances: {in_use} "
                                f"in use, {more} more asked (remove some, or terminate instances)")


def allocate(s: Session, inst: Instance, specs: Iterable[PortSpec], settings: Settings,
             avoid: Collection[int] = ()) -> list[PortForward]:
    """Host ports on INST's host address for SPECS (checked), added to INST in session S,
    within the account's limit of forwarded ports: each named one if no instance forwards it
    or has it as its SSH port and it is free on the host (``port_is_free_on``); else a free
    one of the forward range, outside the SSH range and AVOID (PortInUse if none is left)."""
    specs = list(specs)
    if specs:
        check_account_limit(s, inst.owner, len(specs), settings)
    address = inst.ssh_host
    taken = taken_on(s, address)
    local = is_local(inst.host_uri)
    where = address if local else f"{address} (host {inst.host})"
    ssh_low, ssh_high = settings.ssh_ports
    low, high = settings.forward_ports
    added = []
    for spec in specs:
        if already := next((p for p in inst.ports if p.guest_port == spec.guest_port), None):
            raise PortInUse(f"the instance's guest port {spec.guest_port} is already forwarded from "
                            f"{already.host_address}:{already.host_port}")
        port = spec.host_port
        if port is not None:
            if mine := next((p for p in inst.ports if p.host_port == port), None):
                raise PortInUse(f"host port {port} on {address} already forwards to this instance's guest port "
                                f"{mine.guest_port}")
            if port in taken:
                raise PortInUse(f"host port {port} on {address} is already forwarded to an instance")
            if not port_is_free_on(address, port, local):
                raise PortInUse(f"host port {port} on {where} is in use by another program on the host")
        else:
            port = next((p for p in range(low, high + 1) if p not in taken and p not in avoid
                         and not ssh_low <= p <= ssh_high and port_is_free_on(address, p, local)), None)
            if port is None:
                raise PortInUse(f"no free port left in {low}-{high} on {address} to forward guest port "
                                f"{spec.guest_port} from")
        taken.add(port)
        forward = PortForward(host_address=address, host_port=port, guest_port=spec.guest_port,
                              protocol=spec.protocol)
        inst.ports.append(forward)
        added.append(forward)
    return added


class Ports:
    def __init__(self, settings: Settings, db: Database, hosts: Hosts, provisioner: Provisioner, worker: Worker,
                 instances):
        self.settings = settings
        self.db = db
        self.hosts = hosts
        self.provisioner = provisioner
        self.worker = worker
        self.instances = instances

    def list(self, caller: Caller, instance_id: str) -> tuple[Instance, list[PortForward]]:
        inst = self.instances.get(caller, instance_id)
        return inst, ([] if inst.state == State.TERMINATED else list(inst.ports))

    def add(self, caller: Caller, instance_id: str, specs: Iterable[PortSpec]) -> tuple[Instance, list[PortForward]]:
        """Forward SPECS to a running or stopped instance of the caller's; the forwarded ports
        added, working at once if it runs."""
        specs = tuple(specs)
        if not specs:
            raise InvalidParameterValue("name at least one port to forward")
        named = {spec.host_port for spec in specs}
        refused: set[int] = set()
        for attempt in range(PICK_TRIES):
            try:
                return self._change(caller, instance_id, lambda s, inst: self._add(s, inst, specs, refused))
            except QemuRefused as e:
                # a port it picked itself, that QEMU found taken on the host: the next one
                if e.port in named or attempt == PICK_TRIES - 1:
                    raise
                log.info("QEMU refused port %s for %s; picking another", e.port, instance_id)
                refused.add(e.port)
        raise AssertionError("unreachable")

    def remove(self, caller: Caller, instance_id: str, host_port: int) -> tuple[Instance, list[PortForward]]:
        """Stop forwarding HOST_PORT to the instance; the forwarded port removed."""
        def drop(s: Session, inst: Instance) -> list[PortForward]:
            found = [p for p in inst.ports if p.host_port == host_port]
            if not found:
                raise PortNotFound(f"the instance {inst.id} forwards no host port {host_port}")
            inst.ports.remove(found[0])
            return found
        return self._change(caller, instance_id, drop)

    def _add(self, s: Session, inst: Instance, specs: tuple[PortSpec, ...], avoid: Collection[int] = ()
             ) -> list[PortForward]:
        check(specs, self.settings, existing=inst.ports)
        return allocate(s, inst, specs, self.settings, avoid)

    def _change(self, caller: Caller, instance_id: str, change) -> tuple[Instance, list[PortForward]]:
        inst = self.instances.get(caller, instance_id)  # 404 for one the caller does not see
        _check_state(instance_id, inst)  # at once, not after waiting for its work to finish
        self.hosts.ping({inst.host})  # ServiceUnavailable (503) while its host cannot be reached
        lock = self.worker.lock(instance_id)
        if not lock.acquire(timeout=LOCK_WAIT):
            raise IncorrectInstanceState(f"the instance {instance_id} is busy, try again")
        try:
            try:
                with self.db.session() as s:
                    inst = s.get(Instance, instance_id)
                    _check_state(instance_id, inst)
                    before = forwards(inst)
                    changed = change(s, inst)
                    s.flush()  # a port another writer took meanwhile fails here, before libvirt is touched
                    self._apply(inst, before)
            except IntegrityError:
                raise PortInUse("that host port was forwarded to an instance meanwhile, try again") from None
        finally:
            lock.release()
        return inst, changed

    def _apply(self, inst: Instance, before: tuple[tuple[str, int, int], ...]) -> None:
        """INST's forwarded ports (changed from BEFORE) into its domain: the definition, and the
        running QEMU if it runs. Undone on failure (PortInUse if QEMU refused a port)."""
        if not self.provisioner.capabilities(inst).port_forwards:
            return  # no QEMU command line to change, no QEMU running (libvirt's test driver)
        driver = self.provisioner.driver_of(inst)
        old = driver.definition(inst.domain_name)
        if old is None:
            raise IncorrectInstanceState(f"the instance {inst.id} has no domain on its host")
        after = forwards(inst)
        driver.define(domain_xml.with_forwards(old, inst.ssh_host, inst.ssh_port, after, self.provisioner.outbound))
        if inst.state != State.RUNNING or driver.state(inst.domain_name) != "running":
            return
        done: list[str] = []
        try:
            for rule in (r for r in after if r not in before):
                _monitor(driver, inst.domain_name, f"hostfwd_add {domain_xml.NETDEV} {domain_xml.hostfwd(*rule)}",
                         rule[1])
                done.append(f"hostfwd_remove {domain_xml.NETDEV} tcp:{rule[0]}:{rule[1]}")
            for rule in (r for r in before if r not in after):
                _monitor(driver, inst.domain_name, f"hostfwd_remove {domain_xml.NETDEV} tcp:{rule[0]}:{rule[1]}")
        except Exception:
            for undo in reversed(done):
                try:
                    driver.monitor(inst.domain_name, undo)
                except Exception:
                    log.exception("undoing a port forward of %s failed", inst.id)
            driver.define(old)
            raise


def _check_state(instance_id: str, inst: Instance | None) -> None:
    if inst is None or inst.state not in CHANGEABLE:
        raise IncorrectInstanceState(f"the instance {instance_id} is {inst.state if inst else 'gone'}: "
                                     "its ports can change while it is running or stopped")


#: what QEMU's monitor says when it did not do a hostfwd_add or hostfwd_remove (it has no status)
REFUSALS = ("could not", "invalid", "error")


def _monitor(driver: HostDriver, name: str, command: str, port: int | None = None) -> None:
    """COMMAND on the domain's monitor; PortInUse (QemuRefused for the host PORT it adds) with
    QEMU's words if its output says it was refused."""
    out = driver.monitor(name, command).strip()
    if any(word in out.lower() for word in REFUSALS):
        message = f"QEMU refused {command.split()[0]} {command.split()[-1]}: {out}"
        raise QemuRefused(message, port) if port is not None else PortInUse(message)
