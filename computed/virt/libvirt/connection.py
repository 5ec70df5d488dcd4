"""The libvirt driver: the host driver (``computed.virt.driver.HostDriver``) on libvirt. One
``LibvirtDriver`` per libvirt URI; a lost connection is reopened on the next call, and a
host that cannot be reached is reported as ServiceUnavailable (503), never as a crash.
libvirt's test driver (``test:///...``) is one configuration of it: its domains are
defined and started but run no guest and no QEMU, which its ``capabilities`` say."""

from __future__ import annotations

import functools
import logging
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path

import libvirt
import libvirt_qemu

from computed.virt import domain_xml
from computed.virt.driver import Capabilities
from computed.errors import ServiceUnavailable

log = logging.getLogger(__name__)

# libvirt's domain states (virDomainState) as plain names.
STATES = {
    libvirt.VIR_DOMAIN_NOSTATE: "nostate", libvirt.VIR_DOMAIN_RUNNING: "running",
    libvirt.VIR_DOMAIN_BLOCKED: "running", libvirt.VIR_DOMAIN_PAUSED: "paused",
    libvirt.VIR_DOMAIN_SHUTDOWN: "shutting-down", libvirt.VIR_DOMAIN_SHUTOFF: "shutoff",
    libvirt.VIR_DOMAIN_CRASHED: "crashed", libvirt.VIR_DOMAIN_PMSUSPENDED: "suspended",
}

libvirt.registerErrorHandler(lambda ctx, err: None, None)  # errors arrive as exceptions

#: lifecycle events (virDomainEventType) that mean the guest stopped by itself, with
#: the details that say how; a stop or destroy the service asks for is told apart by the
#: instance's own state (stopping, shutting-down), not here
STOPPED_DETAILS = {
    libvirt.VIR_DOMAIN_EVENT_STOPPED_SHUTDOWN: "shutdown", libvirt.VIR_DOMAIN_EVENT_STOPPED_DESTROYED: "destroyed",
    libvirt.VIR_DOMAIN_EVENT_STOPPED_CRASHED: "crashed", libvirt.VIR_DOMAIN_EVENT_STOPPED_FAILED: "failed",
}
DOMAIN_PREFIX = "computed-"
#: how long opening a connection may take before the host counts as unreachable, in seconds
OPEN_TIMEOUT = 15.0

#: libvirt's test driver: domains that run nothing (no guest, no QEMU command line)
TEST_DRIVER = Capabilities(boots_guests=False, port_forwards=False)
#: QEMU (qemu:///system, qemu+ssh://..., any URI but the test driver's)
QEMU = Capabilities(boots_guests=True, port_forwards=True)

_events_lock = threading.Lock()
_events_started = False


def _start_event_loop() -> None:
    """libvirt's default event loop, once per process, in a thread of its own. It must be
    registered before a connection opens for that connection to deliver events."""
    global _events_started
    with _events_lock:
        if _events_started:
            return
        libvirt.virEventRegisterDefaultImpl()

        def loop():
            while True:
                try:
                    libvirt.virEventRunDefaultImpl()
                except Exception:  # never let the loop die
                    log.exception("libvirt event loop")
                    time.sleep(1)

        threading.Thread(target=loop, name="libvirt-events", daemon=True).start()
        _events_started = True


def capabilities_of(uri: str) -> Capabilities:
    """What the domains of the libvirt URI can do, known from the URI without connecting:
    libvirt's test driver (test:///default, test+unix:///PATH.xml, ...) or QEMU."""
    return TEST_DRIVER if uri.startswith("test") else QEMU


def _reported(operation: str):
    """A LibvirtDriver method whose libvirt errors are reported (``on_error``) as OPERATION's."""
    def wrap(method):
        @functools.wraps(method)
        def reporting(self, *args, **kwargs):
            try:
                return method(self, *args, **kwargs)
            except libvirt.libvirtError:
                self._failed(operation)
                raise
        return reporting
    return wrap


class LibvirtDriver:
    """The host driver of one libvirt URI."""

    def __init__(self, uri: str):
        self.uri = uri
        self.capabilities = capabilities_of(uri)
        self._conn: libvirt.virConnect | None = None
        self._opening: Future | None = None  # a libvirt.open under way (under _lock)
        self._lock = threading.RLock()
        self._domain_type: str | None = None
        #: called with (instance id, how) when a guest stops by itself
        self.on_guest_stopped = None
        #: connections opened so far: more than one means the service reconnected
        self.connections = 0
        #: called with the operation's name when a libvirt call fails (metrics)
        self.on_error: Callable[[str], None] | None = None
        _start_event_loop()

    def _failed(self, operation: str) -> None:
        if self.on_error is not None:
            try:
                self.on_error(operation)
            except Exception:  # counting an error must never add one
                log.exception("reporting a libvirt error")

    # -- connection ----------------------------------------------------------------------

    def conn(self) -> libvirt.virConnect:
        with self._lock:
            if self._conn is not None:
                try:
                    if self._conn.isAlive():
                        return self._conn
                except libvirt.libvirtError:
                    pass
                self._conn = None
            conn = self._open()
            try:
                if not self.uri.startswith("test:"):
                    conn.setKeepAlive(5, 3)  # a dead libvirtd is noticed within ~20 s
                conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._lifecycle_event, None)
            except libvirt.libvirtError as e:
                self._failed("events")
                log.warning("libvirt events on %s are not available: %s", self.uri, e.get_error_message())
            self._conn = conn
            self.connections += 1
            if self.connections > 1:
                log.info("reconnected to libvirt at %s", self.uri)
            return self._conn

    def _open(self) -> libvirt.virConnect:
        """libvirt.open, given OPEN_TIMEOUT: a host that does not answer (an SSH or TCP
        transport to a silent address) would otherwise hold the caller for minutes. The
        attempt goes on in its thread; the next call waits for the same attempt."""
        if self._opening is None:
            attempt: Future = Future()

            def run():
                try:
                    attempt.set_result(libvirt.open(self.uri))
                except BaseException as e:  # noqa: BLE001 - handed to the waiting caller
                    attempt.set_exception(e)

            threading.Thread(target=run, name=f"libvirt-open {self.uri}", daemon=True).start()
            self._opening = attempt
        attempt = self._opening
        try:
            return attempt.result(timeout=OPEN_TIMEOUT)
        except FutureTimeout:
            self._failed("open")
            raise ServiceUnavailable(f"the libvirt host {self.uri} cannot be reached: no answer within "
                                     f"{OPEN_TIMEOUT:g} s") from None
        except libvirt.libvirtError as e:
            self._failed("open")
            raise ServiceUnavailable(f"the libvirt host {self.uri} cannot be reached: {e.get_error_message()}") from None
        finally:
            if attempt.done():
                self._opening = None

    def _lifecycle_event(self, conn, dom, event: int, detail: int, opaque) -> None:
        try:
            name = dom.name()
            how = None
            if event == libvirt.VIR_DOMAIN_EVENT_STOPPED:
                how = STOPPED_DETAILS.get(detail)
            elif event == libvirt.VIR_DOMAIN_EVENT_CRASHED:
                how = "crashed"
            if how and name.startswith(DOMAIN_PREFIX) and self.on_guest_stopped is not None:
                self.on_guest_stopped(name.removeprefix(DOMAIN_PREFIX), how)
        except Exception:  # an event handler must never break libvirt's loop
            log.exception("handling a libvirt event")

    def ping(self) -> None:
        """Make sure libvirt answers now (a round trip, reconnecting once if the connection
        died), else ServiceUnavailable: for requests that must not be accepted while the
        host cannot carry them out."""
        self.capacity()

    def capacity(self) -> tuple[int, int]:
        """The host's (CPUs, memory in MiB), asked now: a round trip, reconnecting once if
        the connection died; ServiceUnavailable if the host cannot be reached."""
        for attempt in (1, 2):
            conn = self.conn()
            try:
                _, memory_mib, cpus, *_ = conn.getInfo()
                return cpus, memory_mib
            except libvirt.libvirtError as e:
                self._failed("capacity")
                with self._lock:
                    if self._conn is conn:
                        self._conn = None
                if attempt == 2:
                    raise ServiceUnavailable(f"the libvirt host {self.uri} cannot be reached: "
                                             f"{e.get_error_message()}") from None

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                try:
                    self._conn.close()
                except libvirt.libvirtError:
                    pass
                self._conn = None

    def _domain(self, name: str) -> libvirt.virDomain | None:
        try:
            return self.conn().lookupByName(name)
        except libvirt.libvirtError as e:
            if e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return None
            raise

    # -- domains -------------------------------------------------------------------------

    @_reported("define")
    def define(self, xml: str) -> None:
        self.conn().defineXML(xml)

    @_reported("definition")
    def definition(self, name: str) -> str | None:
        """The domain's persistent XML (what its next start boots), or None if no such domain."""
        dom = self._domain(name)
        return None if dom is None else dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)

    @_reported("monitor")
    def monitor(self, name: str, command: str) -> str:
        """A QEMU human monitor command run in the domain's running QEMU; its output (QEMU
        reports many failures only there). libvirt marks the domain tainted (custom-monitor)."""
        dom = self._domain(name)
        if dom is None:
            raise LookupError(f"no domain {name}")
        return libvirt_qemu.qemuMonitorCommand(dom, command, libvirt_qemu.VIR_DOMAIN_QEMU_MONITOR_COMMAND_HMP)

    @_reported("start")
    def start(self, name: str) -> None:
        dom = self._domain(name)
        if dom is None:
            raise LookupError(f"no domain {name}")
        if not dom.isActive():
            dom.create()

    @_reported("shutdown")
    def shutdown(self, name: str) -> None:
        """Ask the guest to power off (ACPI power button)."""
        dom = self._domain(name)
        if dom is not None and dom.isActive():
            dom.shutdown()

    @_reported("reboot")
    def reboot(self, name: str) -> None:
        dom = self._domain(name)
        if dom is not None and dom.isActive():
            dom.reboot(0)

    @_reported("destroy")  # libvirt's name for it, the metrics label users see
    def power_off(self, name: str) -> None:
        """Power off at once (no-op if not running or not defined): libvirt's destroy."""
        dom = self._domain(name)
        if dom is not None and dom.isActive():
            try:
                dom.destroy()
            except libvirt.libvirtError as e:
                if e.get_error_code() != libvirt.VIR_ERR_OPERATION_INVALID:
                    raise

    @_reported("undefine")
    def undefine(self, name: str) -> None:
        dom = self._domain(name)
        if dom is not None:
            dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA)

    @_reported("state")
    def state(self, name: str) -> str | None:
        """running | shutoff | paused | ..., or None if no such domain."""
        dom = self._domain(name)
        if dom is None:
            return None
        return STATES.get(dom.state()[0], "nostate")

    def our_domains(self, store: str) -> dict[str, tuple[str, str, str]]:
        """Instance id -> (domain name, state, the host it was placed on or "") of every
        domain carrying our metadata for STORE (another service's domains on the same host
        are not ours; one libvirtd may be two hosts of ours, by two URIs). Raises
        ServiceUnavailable rather than answer with a partial list."""
        found = {}
        conn = self.conn()
        try:
            for dom in conn.listAllDomains():
                try:
                    meta = dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, domain_xml.METADATA_NS)
                except libvirt.libvirtError as e:
                    if e.get_error_code() in (libvirt.VIR_ERR_NO_DOMAIN_METADATA, libvirt.VIR_ERR_NO_DOMAIN):
                        continue  # not ours, or gone meanwhile
                    raise
                meta = domain_xml.read_instance_element(meta)
                if meta.get("id") and meta.get("store") == store:
                    try:
                        state = dom.state()[0]
                    except libvirt.libvirtError as e:
                        if e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                            continue  # undefined meanwhile (a terminate)
                        raise
                    found[meta["id"]] = (dom.name(), STATES.get(state, "nostate"), meta.get("host", ""))
        except libvirt.libvirtError as e:
            self._failed("list_domains")
            with self._lock:
                if self._conn is conn:  # reconnect next time
                    self._conn = None
            raise ServiceUnavailable(f"listing the domains of {self.uri} failed: {e.get_error_message()}") from None
        return found

    def wait_for_state(self, name: str, wanted: str, timeout: float, interval: float = 0.5) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.state(name) in (wanted, None):
                return True
            time.sleep(interval)
        return self.state(name) in (wanted, None)

    # -- which hypervisor ------------------------------------------------------------------

    def domain_type(self, setting: str, kernel: Path, initrd: Path, scratch: Path) -> str:
        """The domain type to use: the setting, or for ``auto`` what really boots here."""
        if self.uri.startswith("test:"):
            return "test"
        if setting in ("kvm", "qemu"):
            return setting
        with self._lock:
            if self._domain_type is None:
                self._domain_type = "kvm" if self._kvm_boots(kernel, initrd, scratch) else "qemu"
                log.info("libvirt host %s: using domain type %s", self.uri, self._domain_type)
            return self._domain_type

    def _kvm_boots(self, kernel: Path, initrd: Path, scratch: Path, timeout: float = 20) -> bool:
        """A /dev/kvm that exists is no proof: nested or paravirtual KVM can hang a guest in
        the kernel's decompressor. Boot the image's kernel under KVM and look for it on the
        serial console."""
        try:
            caps = self.conn().getDomainCapabilities(None, "x86_64", None, "kvm")
        except libvirt.libvirtError:
            return False
        if "<domain>kvm</domain>" not in caps:
            return False
        scratch.mkdir(parents=True, exist_ok=True)
        console = scratch / f"kvm-probe-{uuid.uuid4().hex[:8]}.log"
        spec = domain_xml.DomainSpec(
            name=f"computed-kvm-probe-{uuid.uuid4().hex[:8]}", domain_type="kvm", vcpus=1, memory_mib=256,
            kernel=str(kernel), initrd=str(initrd), cmdline="console=ttyS0 panic=-1", disk="", seed="",
            console_log=str(console), ssh_host="127.0.0.1", ssh_port=0)
        xml = domain_xml.build_probe(spec)
        dom = None
        try:
            dom = self.conn().createXML(xml, 0)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if console.exists() and "Linux version" in console.read_text(errors="replace"):
                    return True
                time.sleep(0.5)
            return False
        except libvirt.libvirtError as e:
            log.info("KVM probe on %s failed: %s", self.uri, e.get_error_message())
            return False
        finally:
            if dom is not None:
                try:
                    dom.destroy()
                except libvirt.libvirtError:
                    pass
            console.unlink(missing_ok=True)
