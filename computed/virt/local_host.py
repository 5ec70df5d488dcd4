"""What ``serve`` checks of this machine before it starts any guest on the local libvirtd
(``qemu:///system``): that QEMU's user can walk down to the instances directory and the
image library (it opens the disks, seeds, kernels and initrds there), and that virtlogd
caps the console logs (``console_log``). A problem found is a refusal to start, with what
to change; a launch would otherwise fail late ("Permission denied"), or a guest could fill
the disk."""

from __future__ import annotations

from urllib.parse import urlsplit

from computed.settings import Settings

from . import console_log, file_access


def is_local_system(uri: str) -> bool:
    """Whether URI is the system libvirtd of this machine (its QEMU runs as QEMU's user)."""
    parts = urlsplit(uri)
    return parts.scheme in ("qemu", "qemu+unix") and not parts.netloc and parts.path == "/system"


def problems(settings: Settings, qemu_conf=file_access.QEMU_CONF, virtlogd_conf=console_log.VIRTLOGD_CONF) -> list[str]:
    """Why the local libvirtd could not run guests safely from SETTINGS' directories (empty:
    it can). The service's own directories get their modes first (``prepare_state``)."""
    if not is_local_system(settings.libvirt_uri):
        return []
    who = file_access.qemu_user(settings.qemu_user, settings.qemu_group, qemu_conf)
    if who is None:
        return [f"cannot tell whom libvirt runs QEMU as ({qemu_conf} names no user, and neither of "
                f"{', '.join(file_access.DEFAULT_QEMU_USERS)} exists): set [libvirt] qemu_user (COMPUTED_QEMU_USER)"]
    file_access.prepare_state(settings.var_dir, settings.instances_dir, who, settings.image_library)
    found = []
    for directory in (settings.instances_dir, settings.image_library):
        found += [p for p in file_access.reach_problems(directory, who) if p not in found]
    return found + console_log.logd_problems(settings.console_log_max_bytes, qemu_conf, virtlogd_conf)
