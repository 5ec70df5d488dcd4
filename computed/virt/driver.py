"""The host driver: what the core needs of one host's hypervisor, and nothing of how it is
reached. One driver per host and process; the hosts registry makes them
(``computed.hosts.registry``), the provisioner, lifecycle, ports and reconciliation use them
through this interface only. The one implementation is libvirt's
(``computed.virt.libvirt.connection.LibvirtDriver``).

A domain is the hypervisor's record of one instance, named ``computed-<instance id>``, as
``domain_xml`` builds it. A driver that cannot reach its host raises ServiceUnavailable.

What a driver can do differs between configurations (libvirt's test driver defines and
starts domains but runs no guest): the core asks its ``capabilities``, never which
hypervisor or URI it is."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class Capabilities:
    """What a driver's domains do besides being defined, started and stopped."""

    #: a started domain boots a real guest, which may answer SSH (and has a boot id): the
    #: readiness checks wait for it, a reboot tells the old boot from the new
    boots_guests: bool
    #: a domain's forwarded ports can change: they are in its definition (QEMU's command
    #: line) and, while it runs, in its QEMU (``monitor``)
    port_forwards: bool


@runtime_checkable
class HostDriver(Protocol):
    """One host's hypervisor, as this process reaches it."""

    #: where the driver connects (a libvirt URI)
    uri: str
    #: what its domains can do
    capabilities: Capabilities
    #: connections opened so far: more than one means the driver reconnected
    connections: int
    #: called with (instance id, how) when a guest stops by itself (how: shutdown,
    #: destroyed, crashed, failed)
    on_guest_stopped: Callable[[str, str], None] | None
    #: called with the operation's name when a call to the hypervisor fails (metrics)
    on_error: Callable[[str], None] | None

    def define(self, xml: str) -> None:
        """Define (or redefine) the domain XML describes."""

    def definition(self, name: str) -> str | None:
        """The domain's persistent XML (what its next start boots), or None if no such domain."""

    def monitor(self, name: str, command: str) -> str:
        """A QEMU monitor command run in the domain's running QEMU, and its output (only
        with ``capabilities.port_forwards``)."""

    def start(self, name: str) -> None:
        """Start the domain (no-op if it runs); LookupError if it is not defined."""

    def shutdown(self, name: str) -> None:
        """Ask the guest to power off (ACPI power button); no-op if it does not run."""

    def reboot(self, name: str) -> None:
        """Ask the guest to reboot; no-op if it does not run."""

    def power_off(self, name: str) -> None:
        """Power off at once (no-op if not running or not defined)."""

    def undefine(self, name: str) -> None:
        """Forget the domain (no-op if not defined)."""

    def state(self, name: str) -> str | None:
        """running | shutoff | paused | shutting-down | crashed | suspended | nostate, or
        None if no such domain."""

    def our_domains(self, store: str) -> dict[str, tuple[str, str, str]]:
        """Instance id -> (domain name, state, the host it was placed on or "") of every
        domain of STORE (``computed.store.identity.store_id``) on the host."""

    def wait_for_state(self, name: str, wanted: str, timeout: float, interval: float = 0.5) -> bool:
        """Whether the domain reached WANTED (or is gone) within TIMEOUT seconds."""

    def domain_type(self, setting: str, kernel: Path, initrd: Path, scratch: Path) -> str:
        """The domain type to use: the setting, or for ``auto`` what really boots here."""

    def capacity(self) -> tuple[int, int]:
        """The host's (CPUs, memory in MiB), asked now."""

    def ping(self) -> None:
        """Make sure the host answers now, else ServiceUnavailable."""

    def close(self) -> None:
        """Close the connection (the next call opens another)."""
