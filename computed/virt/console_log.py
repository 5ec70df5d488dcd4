"""An instance's serial console log, capped in size.

The guest's serial port is a pty whose output libvirt logs through virtlogd
(``<log file=... append='off'/>``): virtlogd, not QEMU, writes the file, and renames it to
``console.log.0`` (``.0`` to ``.1``...) once it reaches ``max_size``, keeping
``max_backups`` old files (virtlogd.conf). An instance's console files together hold at
most ``max_size * (1 + max_backups)`` bytes, however much the guest writes. The service
checks at start that the local host's virtlogd and qemu.conf give that cap, and that it is
within the setting ``console_log_max_bytes`` (``logd_problems``). The console API reads
the tail across the newest rotation (``tail``)."""

from __future__ import annotations

import re
from pathlib import Path

from .file_access import QEMU_CONF, _conf_value

VIRTLOGD_CONF = Path("/etc/libvirt/virtlogd.conf")
#: virtlogd's own defaults (libvirt's src/logging/log_daemon_config.c)
VIRTLOGD_MAX_SIZE = 2 * 1024 * 1024
VIRTLOGD_MAX_BACKUPS = 3


def _int_value(text: str, key: str) -> int | None:
    for line in text.splitlines():
        m = re.fullmatch(r"\s*" + re.escape(key) + r"\s*=\s*(\d+)\s*(#.*)?", line)
        if m:
            return int(m.group(1))
    return None


def logd_cap(virtlogd_conf: Path = VIRTLOGD_CONF) -> tuple[int, int]:
    """(max_size, max_backups) virtlogd rotates a log at, from its config file or defaults."""
    try:
        text = virtlogd_conf.read_text()
    except FileNotFoundError:
        text = ""
    max_size = _int_value(text, "max_size")
    max_backups = _int_value(text, "max_backups")
    return (VIRTLOGD_MAX_SIZE if max_size is None else max_size,
            VIRTLOGD_MAX_BACKUPS if max_backups is None else max_backups)


def logd_problems(max_bytes: int, qemu_conf: Path = QEMU_CONF, virtlogd_conf: Path = VIRTLOGD_CONF) -> list[str]:
    """Why the local host would not cap a console log at MAX_BYTES (empty: it does)."""
    problems = []
    try:
        handler = _conf_value(qemu_conf.read_text(), "stdio_handler")
    except FileNotFoundError:
        handler = None
    if handler not in (None, "logd"):
        problems.append(f'{qemu_conf} has stdio_handler = "{handler}": QEMU would write console logs itself, '
                        f'without a size cap; set stdio_handler = "logd" (then restart libvirtd)')
    max_size, max_backups = logd_cap(virtlogd_conf)
    if max_size == 0:
        problems.append(f"{virtlogd_conf} has max_size = 0: virtlogd never rotates a console log; "
                        f"set max_size (scripts/setup writes one), then `systemctl reload virtlogd`")
    elif max_size * (1 + max_backups) > max_bytes:
        problems.append(f"{virtlogd_conf} lets a console log reach {max_size * (1 + max_backups)} bytes "
                        f"(max_size {max_size} times 1 + max_backups {max_backups}), more than the setting "
                        f"console_log_max_bytes ({max_bytes}); lower them there, then `systemctl reload virtlogd`, "
                        f"or raise the setting")
    return problems


def rotated(path: Path, n: int = 0) -> Path:
    """The Nth older file of the log PATH, as virtlogd names it."""
    return path.with_name(f"{path.name}.{n}")


def _tail(path: Path, limit: int) -> bytes:
    try:
        with path.open("rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - limit))
            return f.read()
    except FileNotFoundError:
        return b""


def tail(path: Path, limit: int) -> str:
    """The last LIMIT bytes the guest wrote: the end of the log PATH, preceded by the end
    of the file it last rotated to if PATH holds less."""
    data = _tail(path, limit)
    if len(data) < limit:
        data = _tail(rotated(path), limit - len(data)) + data
    return data.decode("utf-8", "replace")
