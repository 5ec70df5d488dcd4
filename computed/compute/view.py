"""The core's read model of an instance: its row and the facts both APIs show about it,
derived here once: its SSH endpoint, who its key logs in as and the ssh command that does,
whether its host answered its last check, its cost so far, the ports it forwards and its
tags. The REST API and the EC2 Query API render these views; neither derives them.

The facts that cost a file read or a query (the login user reads the image's manifest; a
host's reachability and the costs read the store) are worked out when first asked for,
and for a page of instances once for the whole page: one reachability query and one cost
computation. So the REST API, which shows them all, reads each once per page, and EC2,
which shows only the SSH endpoint, reads none of them."""

from __future__ import annotations

import shlex
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from functools import cached_property

from computed.compute.state import State
from computed.hosts.status import reachability
from computed.settings import Settings
from computed.store.engine import Database
from computed.store.models import Instance, PortForward
from computed.virt import ssh

#: who an instance's key logs in as (its image's default user); None if that is unknown
LoginUser = Callable[[Instance], str | None]
#: instance id -> what it has cost from its launch until now, for a page of instances at once
CostsSoFar = Callable[[Collection[Instance]], dict[str, Decimal]]


class _Page:
    """What the store says about a page of instances as a whole: read on first use, once."""

    def __init__(self, rows: list[Instance], db: Database, costs_so_far: CostsSoFar):
        self._rows, self._db, self._costs_so_far = rows, db, costs_so_far

    @cached_property
    def reachable(self) -> dict[str, bool]:
        """Host name -> whether it answered its last check, for the page's hosts."""
        return reachability(self._db, (i.host for i in self._rows))

    @cached_property
    def costs(self) -> dict[str, Decimal]:
        return self._costs_so_far(self._rows)


@dataclass(frozen=True)
class InstanceView:
    """An instance as the APIs show it. ``instance`` is its row, for what the APIs show as
    stored (ids, state, size, times, ...); the rest is derived."""

    instance: Instance
    #: (host address, port) forwarded to the guest's SSH; None without a port or once
    #: terminated (a terminated instance has given its port back)
    ssh_endpoint: tuple[str, int] | None
    #: the ports the instance forwards besides SSH, as shown: none once it is terminated
    ports: tuple[PortForward, ...]
    #: the user's tags, (key, value) in the store's order
    tags: tuple[tuple[str, str], ...]
    #: the zone the instance is in: the service's one zone
    availability_zone: str
    _login_user: LoginUser = field(repr=False, compare=False)
    _page: _Page = field(repr=False, compare=False)

    @cached_property
    def login_user(self) -> str | None:
        """The image's default user, whom the instance's key logs in as."""
        return self._login_user(self.instance)

    @cached_property
    def ssh_command(self) -> str | None:
        """The ssh command line that logs in (with the key pair's ``NAME.pem`` if it has
        one); None without an SSH endpoint or a known login user."""
        user = self.login_user
        if self.ssh_endpoint is None or not user:
            return None
        host, port = self.ssh_endpoint
        key_name = self.instance.key_name
        key = f"-i {shlex.quote(key_name + '.pem')} " if key_name else ""
        return f"ssh {key}-p {port} {user}@{host}"

    def host_shown(self, admin: bool) -> str | None:
        """The instance's host as a caller sees it: an admin its libvirt URI (which may name a
        user and key files on the service's machine), anyone else its name only."""
        return self.instance.host_uri if admin else self.instance.host

    def state_reason(self, admin: bool) -> tuple[str, str, str | None] | None:
        """(code, message, detail) of the instance's state reason, or None. A failure's
        message is generic with an error id (``state.failure``); its detail, the error's own
        words (host paths, libvirt's and qemu-img's errors), is an admin's only (None for
        others, and where there is none)."""
        inst = self.instance
        if not inst.state_reason_code:
            return None
        return inst.state_reason_code, inst.state_reason_message or "", inst.state_reason_detail if admin else None

    @property
    def host_key(self) -> str | None:
        """The public half of the guest's SSH host key (the service made it and put it in the
        seed), as an OpenSSH line; None if not known (yet), or once terminated (the guest is gone)."""
        if self.instance.state == State.TERMINATED:
            return None
        return self.instance.ssh_host_key

    @property
    def host_key_fingerprints(self) -> tuple[str, ...]:
        """The host key as ``ssh-keygen -l`` shows it: ``256 SHA256:... (ED25519)``."""
        return (ssh.fingerprint_line(self.host_key),) if self.host_key else ()

    @property
    def host_key_block(self) -> str:
        """The host key as EC2's console output shows it (cloud-init prints the same blocks),
        but from the store, so a guest cannot forge it: empty if no host key is known."""
        if not self.host_key:
            return ""
        key = " ".join(self.host_key.split()[:2])
        return ("-----BEGIN SSH HOST KEY FINGERPRINTS-----\n" + "".join(f"{f}\n" for f in self.host_key_fingerprints)
                + "-----END SSH HOST KEY FINGERPRINTS-----\n"
                + f"-----BEGIN SSH HOST KEY KEYS-----\n{key}\n-----END SSH HOST KEY KEYS-----\n")

    @cached_property
    def known_hosts_line(self) -> str | None:
        """The guest's host key as a known_hosts line for its SSH endpoint (``[host]:port``)."""
        if self.ssh_endpoint is None or not self.host_key:
            return None
        return f"{ssh.host_key_entry(*self.ssh_endpoint)} {' '.join(self.host_key.split()[:2])}"

    @property
    def host_reachable(self) -> bool:
        """Whether the instance's host answered its last check (False for a host the store
        no longer knows, or none)."""
        return self._page.reachable.get(self.instance.host, False)

    @property
    def cost_so_far(self) -> Decimal:
        """What the instance has cost from its launch until now."""
        return self._page.costs[self.instance.id]


def ssh_endpoint(inst: Instance) -> tuple[str, int] | None:
    """INST's SSH endpoint: a port, and not terminated."""
    if inst.ssh_port is None or inst.state == State.TERMINATED:
        return None
    return inst.ssh_host, inst.ssh_port


class InstanceViews:
    """Makes the views of one instance or of a page of instances."""

    def __init__(self, db: Database, settings: Settings, login_user: LoginUser, costs_so_far: CostsSoFar):
        self.db = db
        self.settings = settings
        self.login_user = login_user
        self.costs_so_far = costs_so_far

    def of(self, inst: Instance) -> InstanceView:
        return self.page([inst])[0]

    def page(self, rows: Iterable[Instance]) -> list[InstanceView]:
        """The views of ROWS, in their order, sharing one reachability query and one cost
        computation (made when first asked for)."""
        rows = list(rows)
        page = _Page(rows, self.db, self.costs_so_far)
        return [self._view(inst, page) for inst in rows]

    def _view(self, inst: Instance, page: _Page) -> InstanceView:
        return InstanceView(
            instance=inst, ssh_endpoint=ssh_endpoint(inst),
            ports=tuple(inst.ports) if inst.state != State.TERMINATED else (),
            tags=tuple((t.key, t.value) for t in inst.tags),
            availability_zone=self.settings.availability_zone,
            _login_user=self.login_user, _page=page)
