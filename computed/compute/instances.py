"""Instances: queries, the user's actions on them and their tags; a launch is ``launch``'s.
The states and the moves between them are ``state``'s; the API's call changes the state at
once and the rest happens in the background (``lifecycle``)."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from sqlalchemy import and_, delete, func, or_, select, true
from sqlalchemy.orm import Session

from images.library import ImageLibrary

from computed.store import page_token
from computed.store.engine import Database
from computed.errors import IncorrectInstanceState, InstanceIdMalformed, InstanceNotFound, InvalidParameterValue
from computed.accounts.registry import Caller
from .keypairs import KeyPairs
from .launch import Admit, LaunchRequest, Launcher, admit_all
from .lifecycle import Lifecycle
from computed.clock import Clock
from computed.hosts.registry import Hosts
from computed.store.models import Instance, Tag
from computed.virt.provisioner import Provisioner
from computed.settings import Settings
from .sizes import SizeCatalog
from .state import ACTIONS, State, set_state
from .tags import MAX_TAGS, RESERVED_TAG_PREFIXES, check_tags

INSTANCE_ID = re.compile(r"i-[0-9a-f]{17}")


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


class Instances:
    def __init__(self, settings: Settings, db: Database, sizes: SizeCatalog, keypairs: KeyPairs,
                 images: ImageLibrary, hosts: Hosts, provisioner: Provisioner, lifecycle: Lifecycle, clock: Clock,
                 admit: Admit = admit_all):
        self.clock = clock
        self.hosts = hosts
        self.settings = settings
        self.db = db
        self.provisioner = provisioner
        self.lifecycle = lifecycle
        #: refuses a launch or a start for an account by raising (its budget: ``billing.admission``)
        self.admit = admit
        self.launcher = Launcher(settings, db, sizes, keypairs, images, hosts, lifecycle, clock, admit)

    def launch(self, caller: Caller, req: LaunchRequest) -> tuple[list[Instance], bool]:
        """Create REQ's instances as pending and start launching them (``Launcher.launch``)."""
        return self.launcher.launch(caller, req)

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


def check_instance_id(instance_id: str) -> str:
    if not isinstance(instance_id, str) or not INSTANCE_ID.fullmatch(instance_id):
        raise InstanceIdMalformed(f"{instance_id!r} is not an instance id (i- and 17 hex digits)")
    return instance_id


def not_found(instance_id: str) -> InstanceNotFound:
    return InstanceNotFound(f"the instance {instance_id} does not exist")
