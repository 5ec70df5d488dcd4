"""Settings: built-in defaults, overridden by a TOML config file, overridden by the environment.

The config file is ``$COMPUTED_CONFIG`` if set, else ``computed.toml`` in the state directory
(``var/`` of a source checkout, ``/var/lib/computed`` otherwise). Every setting is declared
once in ``SETTINGS`` below with its table and key in that file and its environment variable;
the README's settings table lists the same.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

SOURCE_ROOT = Path(__file__).resolve().parent.parent


class SettingsError(ValueError):
    """A config file or environment variable that cannot be used."""


def default_var_dir() -> Path:
    """``var/`` beside the code in a source checkout; the FHS place once installed."""
    if (SOURCE_ROOT / "setup.cfg").is_file():
        return SOURCE_ROOT / "var"
    return Path("/var/lib/computed")


def _port_range(value: str) -> tuple[int, int]:
    try:
        low, high = (int(p) for p in str(value).split("-"))
    except ValueError:
        raise ValueError("must look like 42200-42999") from None
    if not 1024 <= low <= high <= 65535:
        raise ValueError("must be unprivileged ports, low-high")
    return low, high


def _choice(*allowed: str) -> Callable[[str], str]:
    def check(value: str) -> str:
        if value not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}")
        return value
    return check


def _positive(value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)) or (isinstance(value, str)
                                                                        and not value.strip().isdigit()):
        raise ValueError("must be a positive whole number")
    number = int(value)
    if number <= 0:
        raise ValueError("must be a positive whole number")
    return number


def _count(value) -> int:
    """A whole number, 0 included."""
    if isinstance(value, bool) or not isinstance(value, (int, str)) or (isinstance(value, str)
                                                                        and not value.strip().isdigit()):
        raise ValueError("must be a whole number, 0 or more")
    number = int(value)
    if number < 0:
        raise ValueError("must be a whole number, 0 or more")
    return number


def _port(value) -> int:
    number = _positive(value)
    if number > 65535:
        raise ValueError("must be a port number, 1 to 65535")
    return number


def _names(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in str(value).split(",") if part.strip())


def _ratio(value) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = 0.0
    if isinstance(value, bool) or not 0 < number < float("inf"):
        raise ValueError("must be a positive number such as 1.5")
    return number


def _name(value: str) -> str:
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,62}", value):
        raise ValueError("must be lower-case letters, digits and dashes (like us-east-1)")
    return value


def _flag(value) -> bool:
    """true or false: TOML's booleans; in the environment true/false, yes/no, on/off, 1/0."""
    if isinstance(value, bool):
        return value
    words = {"true": True, "yes": True, "on": True, "1": True, "false": False, "no": False, "off": False, "0": False}
    if not isinstance(value, str) or value.strip().lower() not in words:
        raise ValueError("must be true or false")
    return words[value.strip().lower()]


#: what guests may not reach when they may open connections out ([network] guest_outbound): the
#: private ranges (RFC 1918, carrier-grade NAT, IPv6 unique local) and loopback
DEFAULT_GUEST_FORBIDDEN = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "127.0.0.0/8",
                           "fc00::/7", "::1/128")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _networks(value) -> tuple[Network, ...]:
    """Address ranges: a TOML list of CIDR strings, or (also in the environment) one string
    with them separated by commas; none at all is allowed."""
    parts = value if isinstance(value, list) else str(value).split(",")
    networks = []
    for part in parts:
        if not isinstance(part, str):
            raise ValueError("must be address ranges such as 10.0.0.0/8, fc00::/7")
        if part.strip():
            try:
                networks.append(ipaddress.ip_network(part.strip()))
            except ValueError:
                raise ValueError(f"has {part.strip()!r}, not an address range such as 10.0.0.0/8 "
                                 "(host bits must be zero)") from None
    return tuple(networks)


@dataclass(frozen=True)
class Setting:
    attr: str
    table: str
    key: str
    env: str
    #: the default, or a function of the state directory
    default: object
    parse: Callable = str


SETTINGS = (
    Setting("image_library", "images", "store", "COMPUTED_IMAGE_STORE", lambda var: var / "images", Path),
    Setting("image_cache", "images", "cache", "COMPUTED_IMAGE_CACHE", lambda var: var / "cache" / "images", Path),
    Setting("default_image", "images", "default", "COMPUTED_DEFAULT_IMAGE", "debian-12-podman"),
    Setting("debian_mirror", "images", "debian_mirror", "COMPUTED_DEBIAN_MIRROR", None),
    Setting("database_url", "database", "url", "COMPUTED_DATABASE_URL",
            lambda var: f"sqlite:///{var / 'computed.db'}"),
    Setting("libvirt_uri", "libvirt", "uri", "COMPUTED_LIBVIRT_URI", "qemu:///system"),
    Setting("domain_type", "libvirt", "domain_type", "COMPUTED_DOMAIN_TYPE", "auto", _choice("auto", "kvm", "qemu")),
    Setting("qemu_user", "libvirt", "qemu_user", "COMPUTED_QEMU_USER", None),
    Setting("qemu_group", "libvirt", "qemu_group", "COMPUTED_QEMU_GROUP", None),
    Setting("network_mode", "network", "mode", "COMPUTED_NETWORK_MODE", "user", _choice("user")),
    Setting("ssh_host", "network", "ssh_host", "COMPUTED_SSH_HOST", "127.0.0.1"),
    Setting("ssh_ports", "network", "ssh_ports", "COMPUTED_SSH_PORTS", (42200, 42999), _port_range),
    Setting("forward_ports", "network", "forward_ports", "COMPUTED_FORWARD_PORTS", (43000, 43999), _port_range),
    Setting("guest_outbound", "network", "guest_outbound", "COMPUTED_GUEST_OUTBOUND", False, _flag),
    Setting("guest_forbidden_ranges", "network", "guest_forbidden_ranges", "COMPUTED_GUEST_FORBIDDEN_RANGES",
            _networks(",".join(DEFAULT_GUEST_FORBIDDEN)), _networks),
    Setting("instances_dir", "instances", "dir", "COMPUTED_INSTANCES_DIR", lambda var: var / "instances", Path),
    Setting("terminated_retention", "instances", "terminated_retention_seconds",
            "COMPUTED_TERMINATED_RETENTION", 3600, _positive),
    Setting("console_log_max_bytes", "instances", "console_log_max_bytes", "COMPUTED_CONSOLE_LOG_MAX_BYTES",
            8 * 1024 * 1024, _positive),
    Setting("boot_timeout", "instances", "boot_timeout_seconds", "COMPUTED_BOOT_TIMEOUT", 600, _positive),
    Setting("stop_timeout", "instances", "stop_timeout_seconds", "COMPUTED_STOP_TIMEOUT", 120, _positive),
    Setting("sizes_file", "instances", "sizes_file", "COMPUTED_SIZES_FILE", None, Path),
    Setting("workers", "instances", "workers", "COMPUTED_WORKERS", 4, _positive),
    Setting("billing_policy", "billing", "policy", "COMPUTED_BILLING_POLICY", "hourly",
            _choice("hourly", "per-second")),
    Setting("account_max_instances", "limits", "account_max_instances", "COMPUTED_ACCOUNT_MAX_INSTANCES", 20,
            _positive),
    Setting("account_max_vcpus", "limits", "account_max_vcpus", "COMPUTED_ACCOUNT_MAX_VCPUS", None, _positive),
    Setting("account_max_memory_mib", "limits", "account_max_memory_mib", "COMPUTED_ACCOUNT_MAX_MEMORY_MIB", None,
            _positive),
    Setting("account_max_forwarded_ports", "limits", "account_max_forwarded_ports",
            "COMPUTED_ACCOUNT_MAX_FORWARDED_PORTS", 50, _positive),
    Setting("account_max_key_pairs", "limits", "account_max_key_pairs", "COMPUTED_ACCOUNT_MAX_KEY_PAIRS", 500,
            _positive),
    Setting("account_max_console_logins", "limits", "account_max_console_logins",
            "COMPUTED_ACCOUNT_MAX_CONSOLE_LOGINS", 20, _positive),
    Setting("cpu_overcommit", "limits", "cpu_overcommit", "COMPUTED_CPU_OVERCOMMIT", 4.0, _ratio),
    Setting("memory_overcommit", "limits", "memory_overcommit", "COMPUTED_MEMORY_OVERCOMMIT", 1.0, _ratio),
    Setting("scheduler_strategy", "scheduler", "strategy", "COMPUTED_SCHEDULER_STRATEGY", "spread",
            _choice("spread", "pack")),
    Setting("host_check_interval", "scheduler", "host_check_interval_seconds", "COMPUTED_HOST_CHECK_INTERVAL", 10,
            _positive),
    Setting("reconcile_interval", "instances", "reconcile_interval_seconds", "COMPUTED_RECONCILE_INTERVAL", 60,
            _positive),
    Setting("budget_check_interval", "billing", "budget_check_interval_seconds", "COMPUTED_BUDGET_CHECK_INTERVAL",
            60, _positive),
    Setting("fault_points", "testing", "fault_points", "COMPUTED_FAULT_POINTS", (), _names),
    Setting("region", "api", "region", "COMPUTED_REGION", "computed-1", _name),
    Setting("availability_zone", "api", "availability_zone", "COMPUTED_AVAILABILITY_ZONE", "computed-1a", _name),
    Setting("api_host", "api", "host", "COMPUTED_API_HOST", "127.0.0.1"),
    Setting("api_port", "api", "port", "COMPUTED_API_PORT", 8080, _port),
    Setting("api_threads", "api", "threads", "COMPUTED_API_THREADS", 8, _positive),
    Setting("api_max_body", "api", "max_body_bytes", "COMPUTED_API_MAX_BODY", 1024 * 1024, _positive),
    Setting("metrics_public", "metrics", "public", "COMPUTED_METRICS_PUBLIC", False, _flag),
    Setting("trusted_proxies", "api", "trusted_proxies", "COMPUTED_TRUSTED_PROXIES", 0, _count),
    Setting("auth_failures_per_source", "api", "auth_failures_per_source", "COMPUTED_AUTH_FAILURES_PER_SOURCE", 10,
            _positive),
    Setting("auth_failures_per_key", "api", "auth_failures_per_key", "COMPUTED_AUTH_FAILURES_PER_KEY", 20, _positive),
    Setting("auth_failure_window", "api", "auth_failure_window_seconds", "COMPUTED_AUTH_FAILURE_WINDOW", 300,
            _positive),
)


@dataclass(frozen=True)
class Settings:
    var_dir: Path
    #: where built images live
    image_library: Path
    #: downloaded Debian packages and build scratch space
    image_cache: Path
    #: the image ``computed image build --default`` builds and launches default to
    default_image: str = "debian-12-podman"
    #: a Debian mirror URL for image builds; unset means mmdebstrap's default mirrors
    debian_mirror: str | None = None
    #: any SQLAlchemy URL; SQLite (WAL) under the state directory by default
    database_url: str = ""
    #: the first host (``local``) of a store that has none; more come from ``computed host add``
    libvirt_uri: str = "qemu:///system"
    #: kvm | qemu | auto (auto probes whether KVM really boots a guest)
    domain_type: str = "auto"
    #: whom libvirt runs QEMU as, and its group (None: as /etc/libvirt/qemu.conf says, else
    #: libvirt-qemu or qemu): the instances' files are readable by that group only
    qemu_user: str | None = None
    qemu_group: str | None = None
    #: user: QEMU user-mode networking, SSH forwarded from a port on ssh_host
    network_mode: str = "user"
    ssh_host: str = "127.0.0.1"
    ssh_ports: tuple[int, int] = (42200, 42999)
    #: where a forwarded guest port gets its host port when the user names none
    forward_ports: tuple[int, int] = (43000, 43999)
    #: guests may open connections out of the host (through the guest firewall the service
    #: installs); else their network is restricted to the forwards and the service's own
    guest_outbound: bool = False
    #: with guest_outbound, what guests may not reach besides the host's own, link-local and
    #: multicast addresses (which they never reach)
    guest_forbidden_ranges: tuple[Network, ...] = _networks(",".join(DEFAULT_GUEST_FORBIDDEN))
    #: per-instance disks, seeds and console logs
    instances_dir: Path = Path()
    #: the most an instance's console log files may hold together, in bytes: ``serve``
    #: refuses to start if the local virtlogd (which rotates them) would let them grow more
    console_log_max_bytes: int = 8 * 1024 * 1024
    #: how long a terminated instance stays visible, in seconds
    terminated_retention: int = 3600
    #: how long a launch may take to answer SSH before it is ended as failed, in seconds
    boot_timeout: int = 600
    #: how long a stop waits for a clean power-off before pulling the plug, in seconds
    stop_timeout: int = 120
    #: a TOML file replacing the built-in size catalog
    sizes_file: Path | None = None
    #: background workers that launch, stop, start and terminate
    workers: int = 4
    #: hourly (each started instance-hour) | per-second (60-second minimum per start)
    billing_policy: str = "hourly"
    #: what one account may have that is not terminated (None: no limit)
    account_max_instances: int | None = 20
    account_max_vcpus: int | None = None
    account_max_memory_mib: int | None = None
    #: forwarded ports (besides SSH) over all of one account's instances
    account_max_forwarded_ports: int = 50
    #: key pairs one account may have
    account_max_key_pairs: int = 500
    #: web console logins one account may have open; a new one past it ends the oldest
    account_max_console_logins: int = 20
    #: the libvirt host's CPUs and memory times these are what its instances may have
    cpu_overcommit: float = 4.0
    memory_overcommit: float = 1.0
    #: spread (new instances go to the host with the most room) | pack (the least)
    scheduler_strategy: str = "spread"
    #: how often each API process asks every host for its capacity and reachability, in seconds
    host_check_interval: int = 10
    #: how often the store is compared with libvirt and the disk (and at start), in seconds
    reconcile_interval: int = 60
    #: how often each process checks every account's monthly budget, in seconds
    budget_check_interval: int = 60
    #: crash tests only: named points where the service kills itself (computed/compute/faults.py)
    fault_points: tuple[str, ...] = ()
    #: the one region and availability zone the EC2 API reports (SigV4 signs with the region)
    region: str = "computed-1"
    availability_zone: str = "computed-1a"
    #: where ``computed serve`` listens, and its request threads
    api_host: str = "127.0.0.1"
    api_port: int = 8080
    api_threads: int = 8
    #: the largest request body the API reads (REST and EC2), in bytes; larger is 413
    api_max_body: int = 1024 * 1024
    #: /metrics without credentials (for a Prometheus on the same machine); else admins only
    metrics_public: bool = False
    #: reverse proxies in front of the API whose X-Forwarded-For/-Proto/-Host are believed
    #: (werkzeug's ProxyFix, that many hops); 0: none, the headers are ignored
    trusted_proxies: int = 0
    #: failed authentications (Basic, SigV4, console login) from one source address (an IPv6
    #: /64) or claiming one access key id, within auth_failure_window seconds, after which
    #: both answer 429 with Retry-After until the window ends (per service process)
    auth_failures_per_source: int = 10
    auth_failures_per_key: int = 20
    auth_failure_window: int = 300

    @classmethod
    def load(cls, environ: Mapping[str, str] | None = None, **overrides) -> Settings:
        env = os.environ if environ is None else environ
        var_dir = Path(env.get("COMPUTED_VAR_DIR") or overrides.get("var_dir") or default_var_dir()).absolute()
        config_path = Path(env.get("COMPUTED_CONFIG") or var_dir / "computed.toml")
        config = _read_config(config_path, explicit=bool(env.get("COMPUTED_CONFIG")))
        values = {"var_dir": var_dir}
        for s in SETTINGS:
            table = config.get(s.table, {})
            if not isinstance(table, dict):
                raise SettingsError(f"{config_path}: [{s.table}] must be a table")
            if env.get(s.env):
                raw, where = env[s.env], s.env
            elif s.key in table:
                raw, where = table[s.key], f"{config_path}: [{s.table}] {s.key}"
            else:
                default = s.default(var_dir) if callable(s.default) else s.default
                values[s.attr] = default
                continue
            if (isinstance(raw, dict) or isinstance(raw, list) and s.parse is not _networks
                    or isinstance(raw, bool) and s.parse is not _flag
                    or s.parse in (str, Path) and not isinstance(raw, str)):
                raise SettingsError(f"{where} must be a string")
            try:
                value = s.parse(raw)
            except (TypeError, ValueError) as e:
                raise SettingsError(f"{where} {e}") from None
            values[s.attr] = value.absolute() if isinstance(value, Path) else value
        values.update(overrides)
        return cls(**values)

    def replace(self, **changes) -> Settings:
        return dataclasses.replace(self, **changes)


def _read_config(path: Path, explicit: bool) -> dict:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        if explicit:
            raise SettingsError(f"config file {path} (from COMPUTED_CONFIG) does not exist") from None
        return {}
    except tomllib.TOMLDecodeError as e:
        raise SettingsError(f"{path}: {e}") from None
