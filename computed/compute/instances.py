"""Instances: launch requests, queries, and the user's actions on them. The states and
the moves between them are ``state``'s; the API's call changes the state at once and the
rest happens in the background (``lifecycle``)."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import re
import secrets
from dataclasses import dataclass, field

from sqlalchemy import and_, delete, func, or_, select, text, true
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from images.store import ImageStore

from computed.store import page_token
from . import ports
from computed.store.engine import Database
from computed.errors import (IdempotentParameterMismatch, IncorrectInstanceState, InstanceIdMalformed, InstanceLimitExceeded,
                     InstanceNotFound, InsufficientInstanceCapacity, InvalidImageNotFound, InvalidKeyPairNotFound,
                     InvalidParameterValue)
from computed.accounts.registry import Caller
from .keypairs import KeyPairs
from .lifecycle import Lifecycle
from computed.clock import Clock
from computed.hosts.registry import Hosts, is_local
from computed.store.models import Host, Instance, Tag, UsageEvent
from .ports import PortSpec
from computed.hosts.addresses import port_is_free
from computed.virt.provisioner import Provisioner
from .scheduler import Scheduler
from computed.settings import Settings
from .sizes import Size, SizeCatalog
from .state import ACTIONS, State, set_state

INSTANCE_ID = re.compile(r"i-[0-9a-f]{17}")
MAX_USER_DATA = 16 * 1024
MAX_COUNT = 20
MAX_TAGS = 50
TAG_KEY = re.compile(r"[^\x00-\x1f\x7f-\x9f]{1,128}")
TAG_VALUE = re.compile(r"[^\x00-\x1f\x7f-\x9f]{0,256}")
#: tag keys only the service sets (like AWS's aws: tags: listed, not editable)
RESERVED_TAG_PREFIXES = ("aws:", "computed:")


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(9)[:17]}"


@dataclass(frozen=True)
class LaunchRequest:
    size: str
    image: str
    key_name: str | None = None
    user_data: bytes | None = None
    count: int = 1
    tags: dict[str, str] = field(default_factory=dict)
    client_token: str | None = None
    #: guest ports to forward from the host's address, besides SSH
    ports: tuple[PortSpec, ...] = ()

    def fingerprint(self) -> str:
        """What makes two requests with one client token "the same request"."""
        data = {"size": self.size, "image": self.image, "key_name": self.key_name, "count": self.count,
                "user_data": base64.b64encode(self.user_data or b"").decode(), "tags": sorted(self.tags.items())}
        if self.ports:  # absent otherwise: a request from before ports keeps its fingerprint
            data["ports"] = [str(p) for p in self.ports]
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class InstanceFilter:
    """What listed instances must match: each field given must match (AND), any of a
    field's values will do (OR), as EC2's filters."""
    ids: tuple[str, ...] = ()
    states: tuple[str, ...] = ()
    sizes: tuple[str, ...] = ()
    #: (image name, version or None for any version)
    images: tuple[tuple[str, str | None], ...] = ()
    key_names: tuple[str, ...] = ()
    #: (tag key, the values it may have, or None for any value): every one must match
    tags: tuple[tuple[str, tuple[str, ...] | None], ...] = ()
    #: has a tag with any of these keys
    tag_keys: tuple[str, ...] = ()


def check_tags(tags: dict[str, str]) -> dict[str, str]:
    if len(tags) > MAX_TAGS:
        raise InvalidParameterValue(f"at most {MAX_TAGS} tags per instance")
    for key, value in tags.items():
        if not isinstance(key, str) or not TAG_KEY.fullmatch(key) or key.lower().startswith(RESERVED_TAG_PREFIXES):
            raise InvalidParameterValue(f"tag key {key!r}: 1 to 128 characters, no control characters, "
                                        "not starting with 'aws:' or 'computed:' (reserved)")
        if not isinstance(value, str) or not TAG_VALUE.fullmatch(value):
            raise InvalidParameterValue(f"tag {key!r}: the value is at most 256 characters, no control characters")
    return tags


class Instances:
    def __init__(self, settings: Settings, db: Database, sizes: SizeCatalog, keypairs: KeyPairs,
                 images: ImageStore, hosts: Hosts, provisioner: Provisioner, lifecycle: Lifecycle, clock: Clock):
        self.clock = clock
        self.hosts = hosts
        self.scheduler = Scheduler(settings)
        self.settings = settings
        self.db = db
        self.sizes = sizes
        self.keypairs = keypairs
        self.images = images
        self.provisioner = provisioner
        self.lifecycle = lifecycle
        #: called with an account id before a launch or a start for that account; refuses it by
        #: raising (the account's budget: ``budgets``, which the service plugs in)
        self.admit = lambda account_id: None

    # -- launch ------------------------------------------------------------------------

    def run(self, caller: Caller, req: LaunchRequest) -> tuple[list[Instance], bool]:
        """Create REQ's instances as pending and start launching them; (instances, created).
        A client token already used with the same request returns that request's instances.
        The token, the account's limits and the scheduler's placement (``scheduler``) are
        decided in the transaction that inserts, so concurrent launches can neither repeat a
        request nor together exceed a limit or a host's room."""
        if not 1 <= req.count <= MAX_COUNT:
            raise InvalidParameterValue(f"count must be between 1 and {MAX_COUNT}")
        if req.user_data is not None and len(req.user_data) > MAX_USER_DATA:
            raise InvalidParameterValue(f"user data is at most {MAX_USER_DATA} bytes (got {len(req.user_data)})")
        if req.client_token is not None and not (0 < len(req.client_token) <= 64 and req.client_token.isascii()):
            raise InvalidParameterValue("client_token is 1 to 64 ASCII characters")
        check_tags(req.tags)
        ports.check(req.ports, self.settings, req.count)
        fingerprint = req.fingerprint()
        if req.client_token:  # a retry needs neither the write lock nor what it named to exist still
            with self.db.reading() as s:
                if earlier := self._earlier(s, caller, req.client_token, fingerprint):
                    return earlier, False
        size = self.sizes.get(req.size)
        image = self.images.get(req.image)
        if image is None:
            known = ", ".join(i.name for i in self.images.list()) or "none built"
            raise InvalidImageNotFound(f"the image {req.image!r} does not exist (images: {known})")
        key = None
        if req.key_name is not None:
            key = self.keypairs.find(caller, req.key_name)
            if key is None:
                raise InvalidKeyPairNotFound(f"the key pair {req.key_name!r} does not exist")
        self.admit(caller.account_id)  # BudgetExceeded (409) while its budget stops it
        self.hosts.check_usable()  # ServiceUnavailable (503) while no host can be reached
        try:
            with self.db.session() as s:
                _one_launch_at_a_time(s)
                if req.client_token and (earlier := self._earlier(s, caller, req.client_token, fingerprint)):
                    return earlier, False
                self._check_limits(s, caller, size, req.count)
                placed = self.scheduler.place(s, size, image, req.count)
                endpoints = self._free_ports(s, placed)
                reservation = new_id("r")
                now = self.clock.now()
                created = []
                for index, (host, port) in enumerate(zip(placed, endpoints)):
                    instance_id = new_id("i")
                    inst = Instance(
                        id=instance_id, reservation_id=reservation, owner=caller.account_id, launch_index=index,
                        state=State.PENDING,
                        size=size.name, vcpus=size.vcpus, memory_mib=size.memory_mib, disk_gib=size.disk_gib,
                        price_per_hour=str(size.price_per_hour), currency=size.currency,
                        image=image.name, image_version=image.manifest.version, image_path=str(image.path),
                        key_name=key.name if key else None, public_key=key.public_key if key else None,
                        user_data=req.user_data, client_token=req.client_token, request_hash=fingerprint,
                        host=host.name, host_uri=host.uri, domain_name=f"computed-{instance_id}",
                        ssh_host=host.address, ssh_port=port, ready_ssh=False, ready_engine=False,
                        handled_by=self.lifecycle.processes.id,
                        launch_time=now, state_changed_at=now,
                        tags=[Tag(key=k, value=v) for k, v in sorted(req.tags.items())], ports=[])
                    s.add(inst)
                    ports.allocate(s, inst, req.ports, self.settings)
                    s.add(UsageEvent.of(inst))
                    created.append(inst)
        except IntegrityError:
            # (owner, client_token, launch_index) is unique: a database that lets writers run
            # side by side refuses the loser of a race for one token, which answers the winner's
            if req.client_token:
                with self.db.reading() as s:
                    if earlier := self._earlier(s, caller, req.client_token, fingerprint):
                        return earlier, False
            raise
        for inst in created:
            self.lifecycle.launch(inst.id)
        return created, True

    def _earlier(self, s: Session, caller: Caller, token: str, fingerprint: str) -> list[Instance]:
        """The instances of an earlier request of this account with this client token (as
        EC2: the same token and parameters are the same request)."""
        earlier = list(s.scalars(select(Instance).where(Instance.owner == caller.account_id,
                                                        Instance.client_token == token)
                                 .order_by(Instance.launch_index)))
        if earlier and earlier[0].request_hash != fingerprint:
            raise IdempotentParameterMismatch("this client_token was used with other parameters; use a new token")
        return earlier

    def _check_limits(self, s: Session, caller: Caller, size: Size, count: int) -> None:
        """COUNT instances of SIZE fit the account's limits (else InstanceLimitExceeded).
        Every instance not terminated counts: a stopped one keeps its place."""
        used = s.execute(select(func.count(), func.coalesce(func.sum(Instance.vcpus), 0),
                                func.coalesce(func.sum(Instance.memory_mib), 0))
                         .where(Instance.state != State.TERMINATED, Instance.owner == caller.account_id)).one()
        wanted = (count, size.vcpus * count, size.memory_mib * count)
        limits = (self.settings.account_max_instances, self.settings.account_max_vcpus,
                  self.settings.account_max_memory_mib)
        for what, limit, in_use, more in zip(("instances", "vCPUs", "MiB of memory"), limits, used, wanted):
            if limit is not None and in_use + more > limit:
                raise InstanceLimitExceeded(f"the account's limit is {limit} {what}: {in_use} in use, {more} "
                                            "requested (instances count until they are terminated)")

    def _free_ports(self, s: Session, hosts: list[Host]) -> list[int]:
        """A free SSH port for an instance on each of HOSTS, on the host's address. A port is
        taken on an address whichever host holds it (two hosts may be one machine); on a
        host of this machine it must also be free now."""
        low, high = self.settings.ssh_ports
        taken: dict[str, set[int]] = {}
        ports = []
        for host in hosts:
            if host.address not in taken:
                taken[host.address] = set(s.scalars(select(Instance.ssh_port).where(
                    Instance.ssh_host == host.address, Instance.ssh_port.is_not(None))))
            used = taken[host.address]
            local = is_local(host.uri)
            port = next((p for p in range(low, high + 1)
                         if p not in used and (not local or port_is_free(host.address, p))), None)
            if port is None:
                raise InsufficientInstanceCapacity(
                    f"no free SSH port left in {low}-{high} on {host.address} (host {host.name})")
            used.add(port)
            ports.append(port)
        return ports

    # -- queries -----------------------------------------------------------------------

    def get(self, caller: Caller, instance_id: str) -> Instance:
        """One instance the caller sees; another account's answers as one that does not exist."""
        check_instance_id(instance_id)
        with self.db.reading() as s:
            inst = s.get(Instance, instance_id)
        if inst is None or not caller.sees(inst.owner) or self._forgotten(inst):
            raise not_found(instance_id)
        return inst

    def _retention_cutoff(self) -> dt.datetime:
        return self.clock.now() - dt.timedelta(seconds=self.settings.terminated_retention)

    def _forgotten(self, inst: Instance) -> bool:
        """Terminated longer ago than the retention: gone, though the periodic purge may not
        have deleted its row yet (reads never write)."""
        return inst.state == State.TERMINATED and inst.terminated_at is not None and \
            inst.terminated_at < self._retention_cutoff()

    def describe(self, caller: Caller, flt: InstanceFilter = InstanceFilter(), limit: int = 100,
                 next_token: str | None = None) -> tuple[list[Instance], str | None]:
        offset = page_token.decode(next_token)
        q = select(Instance).where(or_(Instance.state != State.TERMINATED, Instance.terminated_at.is_(None),
                                       Instance.terminated_at >= self._retention_cutoff()))
        if caller.scope is not None:
            q = q.where(Instance.owner == caller.scope)
        if flt.ids:
            q = q.where(Instance.id.in_(flt.ids))
        if flt.states:
            q = q.where(Instance.state.in_(flt.states))
        if flt.sizes:
            q = q.where(Instance.size.in_(flt.sizes))
        if flt.images:
            q = q.where(or_(*(and_(Instance.image == name, true() if version is None else Instance.image_version == version)
                              for name, version in flt.images)))
        if flt.key_names:
            q = q.where(Instance.key_name.in_(flt.key_names))
        for key, values in flt.tags:
            cond = (Tag.instance_id == Instance.id) & (Tag.key == key)
            if values is not None:
                cond &= Tag.value.in_(values)
            q = q.where(select(Tag.key).where(cond).exists())
        if flt.tag_keys:
            q = q.where(select(Tag.key).where(Tag.instance_id == Instance.id, Tag.key.in_(flt.tag_keys)).exists())
        q = q.order_by(Instance.launch_time.desc(), Instance.reservation_id, Instance.launch_index)
        with self.db.reading() as s:
            rows = list(s.scalars(q.offset(offset).limit(limit + 1)))
        more = len(rows) > limit
        return rows[:limit], page_token.encode(offset + limit) if more else None

    def console(self, caller: Caller, instance_id: str) -> tuple[Instance, str]:
        inst = self.get(caller, instance_id)
        return inst, self.provisioner.console_output(inst)

    def purge(self) -> int:
        """Forget instances terminated longer ago than the retention setting."""
        with self.db.session() as s:
            result = s.execute(delete(Instance).where(Instance.state == State.TERMINATED,
                                                      Instance.terminated_at < self._retention_cutoff()))
        return result.rowcount or 0

    def count(self) -> int:
        with self.db.session() as s:
            return s.scalar(select(func.count()).select_from(Instance))

    # -- actions -----------------------------------------------------------------------

    def change(self, caller: Caller, action: str, instance_ids: list[str],
               reason: tuple[str, str] | None = None) -> list[tuple[Instance, str]]:
        """ACTION ("stop", "start", "terminate") on every instance named, or on none: all
        are checked (id, owner, state) in one transaction before any changes, as EC2 does.
        Returns (instance, previous state) for each. Stopping a stopped instance, starting a
        running one or terminating a terminated one is no error and changes nothing. REASON
        (code, message) is the state reason of those it changes, the user's by default."""
        act = ACTIONS[action]
        allowed, verb, schedule, reason = act.moves, act.verb, act.step, reason or act.reason
        with self.db.reading() as s:
            owned = self._owned(s, caller, instance_ids)
        if action == "start":
            for owner in sorted({inst.owner for inst in owned if inst.state == State.STOPPED}):
                self.admit(owner)  # BudgetExceeded (409) while the owner's budget stops it
        hosts = {inst.host for inst in owned if inst.host}
        self.hosts.ping(hosts)  # ServiceUnavailable (503) while a host cannot be reached
        with self.db.session() as s:
            found = self._owned(s, caller, instance_ids)
            for inst in found:
                if inst.state not in allowed:
                    raise IncorrectInstanceState(f"the instance {inst.id} is {inst.state}; it cannot be {verb}")
            changed = []
            now = self.clock.now()
            for inst in found:
                previous, target = inst.state, allowed[inst.state]
                if target is not None:
                    set_state(inst, target, reason, now)
                if inst.state != previous or (action == "terminate" and inst.state == State.SHUTTING_DOWN):
                    inst.handled_by = self.lifecycle.processes.id  # this process carries it out
                changed.append((inst, previous))
        for inst, previous in changed:
            # a terminate also retries one that failed part-way (still shutting-down)
            if inst.state != previous or (action == "terminate" and inst.state == State.SHUTTING_DOWN):
                getattr(self.lifecycle, schedule)(inst.id)
        return changed

    def stop(self, caller: Caller, instance_id: str) -> Instance:
        return self.change(caller, "stop", [instance_id])[0][0]

    def start(self, caller: Caller, instance_id: str) -> Instance:
        return self.change(caller, "start", [instance_id])[0][0]

    def reboot(self, caller: Caller, instance_id: str) -> Instance:
        inst = self.get(caller, instance_id)
        self.hosts.ping({inst.host})  # ServiceUnavailable (503) while its host cannot be reached
        with self.db.session() as s:
            inst = s.get(Instance, instance_id)
            if inst is None:
                raise not_found(instance_id)
            if inst.state != State.RUNNING:
                raise IncorrectInstanceState(f"the instance {instance_id} is {inst.state}; it cannot be rebooted")
            inst.ready_ssh = inst.ready_engine = False
            inst.handled_by = self.lifecycle.processes.id
        self.lifecycle.reboot(instance_id)
        return inst

    def terminate(self, caller: Caller, instance_id: str) -> Instance:
        return self.change(caller, "terminate", [instance_id])[0][0]


    # -- tags --------------------------------------------------------------------------

    def _owned(self, s: Session, caller: Caller, instance_ids: list[str]) -> list[Instance]:
        if not instance_ids:
            raise InvalidParameterValue("name at least one instance")
        for instance_id in instance_ids:
            check_instance_id(instance_id)
        found = {i.id: i for i in s.scalars(select(Instance).where(Instance.id.in_(instance_ids)))}
        for instance_id in instance_ids:
            if instance_id not in found or not caller.sees(found[instance_id].owner):
                raise not_found(instance_id)
        return [found[i] for i in dict.fromkeys(instance_ids)]

    def create_tags(self, caller: Caller, instance_ids: list[str], tags: dict[str, str]) -> None:
        """Add or overwrite TAGS on every instance named, or on none if any is not the caller's."""
        check_tags(tags)
        with self.db.session() as s:
            for inst in self._owned(s, caller, instance_ids):
                current = {t.key: t for t in inst.tags}
                if len(set(current) | set(tags)) > MAX_TAGS:
                    raise InvalidParameterValue(f"at most {MAX_TAGS} tags per instance ({inst.id})")
                for key, value in tags.items():
                    if key in current:
                        current[key].value = value
                    else:
                        inst.tags.append(Tag(key=key, value=value))

    def delete_tags(self, caller: Caller, instance_ids: list[str], tags: dict[str, str | None]) -> None:
        """Remove TAGS (key -> value, or None for whatever value) from every instance named;
        a tag whose value differs stays, as on EC2."""
        for key in tags:
            if not isinstance(key, str) or key.lower().startswith(RESERVED_TAG_PREFIXES):
                raise InvalidParameterValue(f"tag key {key!r} is reserved or invalid")
        with self.db.session() as s:
            for inst in self._owned(s, caller, instance_ids):
                inst.tags = [t for t in inst.tags if not (t.key in tags and tags[t.key] in (None, t.value))]

    def tags(self, caller: Caller, instance_ids: tuple[str, ...] = (), keys: tuple[str, ...] = (),
             values: tuple[str, ...] = ()) -> list[tuple[str, str, str]]:
        """(instance id, key, value) of the caller's instances' tags, by instance and key."""
        q = select(Tag.instance_id, Tag.key, Tag.value).join(Instance)
        if caller.scope is not None:
            q = q.where(Instance.owner == caller.scope)
        if instance_ids:
            q = q.where(Tag.instance_id.in_(instance_ids))
        if keys:
            q = q.where(Tag.key.in_(keys))
        if values:
            q = q.where(Tag.value.in_(values))
        with self.db.reading() as s:
            return [tuple(row) for row in s.execute(q.order_by(Tag.instance_id, Tag.key))]


def _one_launch_at_a_time(s: Session) -> None:
    """Writers run one at a time already (db.py: SQLite's BEGIN IMMEDIATE, PostgreSQL's
    advisory lock); on PostgreSQL a launch also locks the instances table against other
    writers, so that one that does not take the advisory lock cannot interleave either."""
    if s.get_bind().dialect.name == "postgresql":
        s.execute(text("LOCK TABLE instances IN SHARE ROW EXCLUSIVE MODE"))


def check_instance_id(instance_id: str) -> str:
    if not isinstance(instance_id, str) or not INSTANCE_ID.fullmatch(instance_id):
        raise InstanceIdMalformed(f"{instance_id!r} is not an instance id (i- and 17 hex digits)")
    return instance_id


def not_found(instance_id: str) -> InstanceNotFound:
    return InstanceNotFound(f"the instance {instance_id} does not exist")
