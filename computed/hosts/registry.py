"""Hosts: the libvirt hosts instances run on. Each is a row in the store (shared by every API
process) and, in each process, one driver (``computed.virt.driver.HostDriver``, libvirt's).

A host's capacity (CPUs, memory) is what libvirt's getInfo said at its last check; what is
allocated there is summed from its instances that are not terminated (a stopped instance
keeps its place, as its start must not fail for room). Reachability is checked by every
process's housekeeping and, for the hosts a launch may go to, right before the launch
(a real round trip, so a host that just died is not chosen). An unreachable host's
instances keep their state and are shown as on an unreachable host, never ended."""

from __future__ import annotations

import functools
import logging
import re
import threading
import time
import urllib.parse
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from sqlalchemy import func, select, update

from computed.clock import Clock
from computed.store.engine import Database
from computed.errors import HostInUse, HostNotFound, InvalidHostDuplicate, InvalidParameterValue, ServiceUnavailable
from computed.virt.driver import HostDriver
from computed.virt.libvirt.connection import LibvirtDriver
from .capacity import Allocation, allocations
from computed.compute.state import State
from computed.store.models import Host, Instance
from computed.settings import Settings

log = logging.getLogger(__name__)

#: the host a store gets when it has none: the service's own libvirt_uri setting
DEFAULT_HOST = "local"
HOST_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
#: scheme://[user@][host][:port]/[path][?query]: what libvirt.open takes, without spaces or
#: controls, and without the ``ext`` transport (it runs a local program)
LIBVIRT_URI = re.compile(r"[a-z][a-z0-9]*(?:\+(?:ssh|libssh|libssh2|tcp|tls|unix))?://[^\s\x00-\x1f\x7f]*")
#: URI parameters refused: ``command`` (the local program ssh's transport runs), ``netcat``
#: (a command run on the remote host) and ``known_hosts_verify`` (``auto`` has libvirt add
#: the host's key to the known_hosts file, one the URI may name)
UNSAFE_URI_PARAMS = frozenset({"command", "netcat", "known_hosts_verify"})
#: transports refused for what they do to the service: libvirt's libssh client (Debian 12's
#: libvirt 9.0 with libssh 0.10) crashes the process (SIGSEGV) when a volume stream is in
#: flight on a connection, as a copy-mode host's console read or image copy is, while libvirt's
#: event loop or another thread uses it too; measured in tests/unit/virt/test_remote_streams.py
UNSAFE_TRANSPORTS = {"libssh": "libvirt's libssh client crashes the process when a volume stream and "
                                "another call share a connection; use qemu+ssh:// (the ssh program) or "
                                "qemu+libssh2://"}
IMAGE_MODES = ("shared", "copy")
#: a launch re-checks a host it may use if this process last heard from it longer ago
FRESH = 1.0


@dataclass(frozen=True)
class HostFacts:
    """What never changes about a host once added (kept per process, no store read each time)."""
    name: str
    uri: str
    address: str
    image_mode: str
    storage_dir: str | None


@dataclass(frozen=True)
class HostState:
    """A host as listed: its row and what its instances (not terminated) take."""
    host: Host
    allocated: Allocation


def check_name(name: str) -> str:
    if not isinstance(name, str) or not HOST_NAME.fullmatch(name):
        raise InvalidParameterValue(f"host name {name!r}: 1 to 63 lower-case letters, digits and dashes, "
                                    "starting with a letter or digit")
    return name


def check_uri(uri: str) -> str:
    """A libvirt URI the service may open: it parses, runs no command, writes no file of the
    caller's choosing, reads no file as a test driver's node description but a .xml
    (libvirt's error for a file that is not one quotes its first line), and uses no transport
    known to crash the process."""
    if not isinstance(uri, str) or len(uri) > 255 or not LIBVIRT_URI.fullmatch(uri):
        raise InvalidParameterValue(f"{uri!r} is not a libvirt URI (like qemu+ssh://root@host/system; "
                                    "not the ext transport)")
    try:
        parts = urllib.parse.urlsplit(uri)
        parts.port  # noqa: B018 - a port that is no number raises here
    except ValueError as e:
        raise InvalidParameterValue(f"{uri!r} is not a URI libvirt can take ({e})") from None
    # libvirt splits its parameters at & and ;, decodes %XX and compares names in any case;
    # all that follows the first ? is looked at, so no parser's idea of the query's end matters
    names = {urllib.parse.unquote(p.partition("=")[0]).strip().lower()
             for p in re.split(r"[&;?#]", uri.partition("?")[2])}
    if refused := refused_transport(uri):
        raise InvalidParameterValue(refused)
    if unsafe := sorted(names & UNSAFE_URI_PARAMS):
        raise InvalidParameterValue(f"a host's URI may not set {', '.join(unsafe)} "
                                    "(a program to run or a file to write on the service's machine or the host)")
    # whatever the transport: test+unix:///PATH has the local libvirtd read PATH
    if parts.scheme.partition("+")[0] == "test" and not (parts.path == "/default" or parts.path.endswith(".xml")):
        raise InvalidParameterValue("a test driver URI names /default or a node description, PATH.xml "
                                    "(test:///default, test:///PATH.xml)")
    return uri


def refused_transport(uri: str) -> str | None:
    """Why the service does not open URI's transport (UNSAFE_TRANSPORTS), or None."""
    transport = uri.partition(":")[0].partition("+")[2].lower()
    if transport in UNSAFE_TRANSPORTS:
        return f"the {transport} transport is not supported: {UNSAFE_TRANSPORTS[transport]}"
    return None


def uri_hostname(uri: str) -> str | None:
    """The machine a libvirt URI names (None for a local one: qemu:///system, test:///...)."""
    return urllib.parse.urlsplit(uri).hostname


def is_local(uri: str) -> bool:
    return uri_hostname(uri) is None


class Hosts:
    def __init__(self, settings: Settings, db: Database, clock: Clock, *,
                 on_guest_stopped: Callable[[str, str], None] | None = None,
                 on_libvirt_error: Callable[[str, str], None] | None = None):
        self.settings = settings
        self.db = db
        self.clock = clock
        self._guard = threading.Lock()
        self._drivers: dict[str, HostDriver] = {}
        self._heard: dict[str, float] = {}  # host name -> monotonic time of its last good round trip here
        self._asked: set[str] = set()  # the hosts this process has checked at least once
        self._facts: dict[str, HostFacts] = {}
        self._askers = ThreadPoolExecutor(max_workers=8, thread_name_prefix="computed-host-check")
        #: called with (instance id, how) when a guest on any host stops by itself
        self.on_guest_stopped = on_guest_stopped
        #: called with (host name, operation) when a libvirt call to a host fails (metrics)
        self.on_libvirt_error = on_libvirt_error

    # -- the store's hosts -------------------------------------------------------------

    def ensure_default(self) -> None:
        """A store with no host gets one, ``local``, from the settings (libvirt_uri, ssh_host);
        instances from before hosts existed are given the host of their URI."""
        with self.db.session() as s:
            if s.scalar(select(func.count()).select_from(Host)) == 0:
                s.add(Host(name=DEFAULT_HOST, uri=self.settings.libvirt_uri, address=self.settings.ssh_host,
                           enabled=True, image_mode="shared", reachable=False, created_at=self.clock.now()))
                s.flush()
            orphans = set(s.scalars(select(Instance.host_uri).where(Instance.host.is_(None)).distinct()))
            for uri in orphans:
                host = s.scalar(select(Host).where(Host.uri == uri))
                if host is None:  # placed on a URI the store has no host for: keep it visible, disabled
                    host = Host(name=_free_name(s, uri), uri=uri, address=self.settings.ssh_host, enabled=False,
                                image_mode="shared", reachable=False, created_at=self.clock.now())
                    s.add(host)
                    s.flush()
                s.execute(update(Instance).where(Instance.host.is_(None), Instance.host_uri == uri)
                          .values(host=host.name))

    def add(self, name: str, uri: str, address: str | None = None, image_mode: str = "shared",
            storage_dir: str | None = None, enabled: bool = True) -> HostState:
        """Register a host. It must answer now (its capacity comes from libvirt)."""
        check_name(name)
        check_uri(uri)
        if image_mode not in IMAGE_MODES:
            raise InvalidParameterValue(f"image_mode must be one of {', '.join(IMAGE_MODES)}")
        if image_mode == "copy" and not (storage_dir and storage_dir.startswith("/")):
            raise InvalidParameterValue("a host in copy mode needs storage_dir, an absolute path on the host")
        if address is None:
            address = uri_hostname(uri) or self.settings.ssh_host
        if not isinstance(address, str) or not re.fullmatch(r"[A-Za-z0-9.:_-]{1,255}", address):
            raise InvalidParameterValue(f"address {address!r}: a host name or IP address")
        with self.db.reading() as s:
            if s.get(Host, name) is not None:
                raise InvalidHostDuplicate(f"a host named {name!r} exists already")
            if (other := s.scalar(select(Host.name).where(Host.uri == uri))) is not None:
                raise InvalidHostDuplicate(f"the host {other!r} has the URI {uri} already")
        conn = LibvirtDriver(uri)
        try:
            cpus, memory_mib = conn.capacity()
        except ServiceUnavailable as e:
            conn.close()
            raise InvalidParameterValue(f"the host {name} cannot be added: {e.message}") from None
        conn.close()
        with self.db.session() as s:
            if s.get(Host, name) is not None or s.scalar(select(Host.name).where(Host.uri == uri)) is not None:
                raise InvalidHostDuplicate(f"a host named {name!r} or with the URI {uri} exists already")
            now = self.clock.now()
            host = Host(name=name, uri=uri, address=address, enabled=enabled, image_mode=image_mode,
                        storage_dir=storage_dir if image_mode == "copy" else None, vcpus=cpus, memory_mib=memory_mib,
                        reachable=True, checked_at=now, last_error=None, created_at=now)
            s.add(host)
        return HostState(host, Allocation())

    def remove(self, name: str) -> None:
        """Forget a host; refused while any instance not terminated is placed there."""
        with self.db.session() as s:
            host = self._row(s, name)
            there = s.scalar(select(func.count()).select_from(Instance)
                             .where(Instance.host == name, Instance.state != State.TERMINATED))
            if there:
                raise HostInUse(f"the host {name} has {there} instance(s) that are not terminated; "
                                "terminate them first (stopped ones count too)")
            s.execute(update(Instance).where(Instance.host == name).values(host=None))
            s.delete(host)
        with self._guard:
            conn = self._drivers.pop(name, None)
            self._heard.pop(name, None)
            self._facts.pop(name, None)
        if conn is not None:
            conn.close()

    def set_enabled(self, name: str, enabled: bool) -> HostState:
        """A disabled host takes no new instance; what runs there goes on (stop, start, terminate)."""
        with self.db.session() as s:
            host = self._row(s, name)
            host.enabled = enabled
        return self.get(name)

    def get(self, name: str) -> HostState:
        with self.db.reading() as s:
            host = self._row(s, name)
            return HostState(host, allocations(s, [name]).get(name, Allocation()))

    def list(self) -> list[HostState]:
        with self.db.reading() as s:
            hosts = list(s.scalars(select(Host).order_by(Host.name)))
            used = allocations(s)
        return [HostState(h, used.get(h.name, Allocation())) for h in hosts]

    @staticmethod
    def _row(s, name: str) -> Host:
        host = s.get(Host, name) if isinstance(name, str) else None
        if host is None:
            raise HostNotFound(f"the host {name!r} does not exist")
        return host

    def facts(self, name: str) -> HostFacts:
        with self._guard:
            if (known := self._facts.get(name)) is not None:
                return known
        with self.db.reading() as s:
            h = self._row(s, name)
            facts = HostFacts(h.name, h.uri, h.address, h.image_mode, h.storage_dir)
        with self._guard:
            self._facts[name] = facts
        return facts

    # -- drivers -----------------------------------------------------------------------

    def driver(self, name: str, uri: str | None = None) -> HostDriver:
        """This process's driver of the host NAME (made on first use, connecting on its first call)."""
        with self._guard:
            conn = self._drivers.get(name)
            if conn is not None and (uri is None or conn.uri == uri):
                return conn
        if uri is None:
            with self.db.reading() as s:
                uri = self._row(s, name).uri
        if refused := refused_transport(uri):  # a host stored before the transport was refused
            raise ServiceUnavailable(f"the host {name} is not opened: {refused} (host rm, then host add)")
        with self._guard:
            conn = self._drivers.get(name)
            if conn is None or conn.uri != uri:
                conn = LibvirtDriver(uri)
                conn.on_guest_stopped = self._guest_stopped
                conn.on_error = functools.partial(self._libvirt_error, name)
                self._drivers[name] = conn
            return conn

    def drivers(self) -> dict[str, HostDriver]:
        with self._guard:
            return dict(self._drivers)

    def _guest_stopped(self, instance_id: str, how: str) -> None:
        if self.on_guest_stopped is not None:
            self.on_guest_stopped(instance_id, how)

    def _libvirt_error(self, name: str, operation: str) -> None:
        if self.on_libvirt_error is not None:
            self.on_libvirt_error(name, operation)

    def close(self) -> None:
        self._askers.shutdown(wait=False, cancel_futures=True)
        with self._guard:
            conns = list(self._drivers.values())
            self._drivers.clear()
        for conn in conns:
            conn.close()

    # -- reachability ------------------------------------------------------------------

    def check(self, names: list[str] | None = None) -> dict[str, str | None]:
        """Ask each host (all, or NAMES) for its capacity now: a real round trip. Records
        reachable, capacity and the error in the store; returns name -> error or None."""
        with self.db.reading() as s:
            q = select(Host.name, Host.uri)
            if names is not None:
                q = q.where(Host.name.in_(names))
            hosts = list(s.execute(q))
        def ask(name: str, uri: str) -> tuple[tuple[int, int] | None, str | None]:
            try:
                return self.driver(name, uri).capacity(), None
            except ServiceUnavailable as e:
                return None, e.message

        if len(hosts) == 1 or all(is_local(uri) for _, uri in hosts):
            results = {name: ask(name, uri) for name, uri in hosts}
        else:  # side by side: one silent host must not hold up the others' checks
            futures = {name: self._askers.submit(ask, name, uri) for name, uri in hosts}
            results = {name: future.result() for name, future in futures.items()}
        self._record(results)
        now = time.monotonic()
        with self._guard:  # only once the store says so: a launch trusting it must find it reachable there
            self._asked.update(results)
            self._heard.update({name: now for name, (_, error) in results.items() if error is None})
        return {name: error for name, (_, error) in results.items()}

    def _record(self, results: dict[str, tuple[tuple[int, int] | None, str | None]]) -> None:
        if not results:
            return
        now = self.clock.now()
        with self.db.session() as s:
            for host in s.scalars(select(Host).where(Host.name.in_(list(results)))):
                capacity, error = results[host.name]
                if host.reachable != (error is None):
                    if error:
                        log.warning("host %s cannot be reached: %s", host.name, error)
                    else:
                        log.info("host %s is reachable again", host.name)
                host.reachable, host.last_error, host.checked_at = error is None, error, now
                if capacity is not None:
                    host.vcpus, host.memory_mib = capacity

    def check_usable(self) -> None:
        """Before a launch: the enabled hosts the store calls reachable (and those this
        process never asked) answer now, each at most once a second per process, so a host
        that just died is marked unreachable rather than chosen. An unreachable one is left
        to the housekeeping's checks. ServiceUnavailable if no enabled host answers."""
        with self.db.reading() as s:
            usable = list(s.execute(select(Host.name, Host.uri, Host.reachable).where(Host.enabled.is_(True))))
        if not usable:
            return  # the scheduler says why no host fits
        now = time.monotonic()
        with self._guard:
            stale = [name for name, _, reachable in usable
                     if (reachable or name not in self._asked) and now - self._heard.get(name, float("-inf")) > FRESH]
        errors = self.check(stale) if stale else {}
        if not any((reachable or name in stale or self._heard.get(name, float("-inf")) >= now - FRESH)
                   and not errors.get(name) for name, _, reachable in usable):
            # by name: libvirt's words name the host's URI (a user, key files), an admin's to see
            # (the log, and each host's last_error under /v1/hosts)
            names = ", ".join(sorted(name for name, _, _ in usable))
            raise ServiceUnavailable(f"no host can take the launch: the libvirt hosts cannot be reached ({names})")

    def ping(self, names: set[str]) -> None:
        """A round trip to each of NAMES now (ServiceUnavailable for the first that fails,
        which is then recorded as unreachable)."""
        errors = self.check(sorted(names))
        for name in sorted(names):
            if errors.get(name):  # libvirt's words, with the URI, are logged by check (and in last_error)
                raise ServiceUnavailable(f"the host {name} cannot be reached now; try again later")


def _free_name(s, uri: str) -> str:
    base = re.sub(r"[^a-z0-9-]+", "-", (uri_hostname(uri) or "host").lower()).strip("-")[:50] or "host"
    n = 1
    while s.get(Host, f"{base}-{n}") is not None:
        n += 1
    return f"{base}-{n}"

