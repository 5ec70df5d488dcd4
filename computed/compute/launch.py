"""Launch requests and their placement: what a request is and when two are the same (its
client token and fingerprint), the checks before a launch (sizes of its parts, the
account's limits, the budget's admission), the scheduler's hosts and the SSH ports, and the
pending instances written in one transaction, which ``lifecycle`` then boots."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from images.library import ImageLibrary

from . import ports, ssh_ports
from computed.store.engine import Database
from computed.errors import (IdempotentParameterMismatch, InstanceLimitExceeded, InvalidImageNotFound,
                             InvalidKeyPairNotFound, InvalidParameterValue)
from computed.accounts.registry import Caller
from .keypairs import KeyPairs
from .lifecycle import Lifecycle
from computed.clock import Clock
from computed.hosts.registry import Hosts
from computed.store.models import Instance, Tag, UsageEvent
from .ports import PortSpec
from .scheduler import Scheduler
from computed.settings import Settings
from .sizes import Size, SizeCatalog
from .state import State
from .tags import check_tags

MAX_USER_DATA = 16 * 1024
MAX_COUNT = 20
#: a client token, for the REST API and EC2's ClientToken alike (the REST schema's pattern)
CLIENT_TOKEN = re.compile(r"[\x20-\x7e]{1,64}")
CLIENT_TOKEN_RULE = "1 to 64 printable ASCII characters"

#: called with an account id before a launch or a start for that account; refuses it by
#: raising (the account's budget: ``billing.budgets``)
Admit = Callable[[str], None]


def admit_all(account_id: str) -> None:
    """An admission that refuses nobody (a service without budgets, or a test)."""


def check_client_token(token: str) -> str:
    if not isinstance(token, str) or not CLIENT_TOKEN.fullmatch(token):
        raise InvalidParameterValue(f"client_token is {CLIENT_TOKEN_RULE}")
    return token


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


class Launcher:
    """Launches of instances (``Instances.launch``)."""

    def __init__(self, settings: Settings, db: Database, sizes: SizeCatalog, keypairs: KeyPairs,
                 images: ImageLibrary, hosts: Hosts, lifecycle: Lifecycle, clock: Clock, admit: Admit):
        self.settings = settings
        self.db = db
        self.sizes = sizes
        self.keypairs = keypairs
        self.images = images
        self.hosts = hosts
        self.lifecycle = lifecycle
        self.clock = clock
        self.admit = admit
        self.scheduler = Scheduler(settings)

    def launch(self, caller: Caller, req: LaunchRequest) -> tuple[list[Instance], bool]:
        """Create REQ's instances as pending and start launching them; (instances, created).
        A client token already used with the same request returns that request's instances.
        The token, the account's limits and the scheduler's placement (``scheduler``) are
        decided in the transaction that inserts, so concurrent launches can neither repeat a
        request nor together exceed a limit or a host's room."""
        if not 1 <= req.count <= MAX_COUNT:
            raise InvalidParameterValue(f"count must be between 1 and {MAX_COUNT}")
        if req.user_data is not None and len(req.user_data) > MAX_USER_DATA:
            raise InvalidParameterValue(f"user data is at most {MAX_USER_DATA} bytes (got {len(req.user_data)})")
        if req.client_token is not None:
            check_client_token(req.client_token)
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
                endpoints = ssh_ports.pick(s, self.settings, placed)
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


def _one_launch_at_a_time(s: Session) -> None:
    """Writers run one at a time already (db.py: SQLite's BEGIN IMMEDIATE, PostgreSQL's
    advisory lock); on PostgreSQL a launch also locks the instances table against other
    writers, so that one that does not take the advisory lock cannot interleave either."""
    if s.get_bind().dialect.name == "postgresql":
        s.execute(text("LOCK TABLE instances IN SHARE ROW EXCLUSIVE MODE"))
