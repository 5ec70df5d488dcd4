"""Who may read the files the service writes: root, and QEMU where QEMU opens them.

libvirt runs QEMU as an unprivileged user (``libvirt-qemu`` on Debian, ``qemu`` on Fedora).
The state directory, the instances directory and each instance's directory are 0750 with
QEMU's group, so that QEMU reaches the files it opens and no other local user lists them;
a disk is 0660 and a seed (the user data) 0640 with that group; everything else (the
store, the console log, keys, credentials, backups) is 0600 root's. Modes are set
explicitly after creating (chmod, chown), whatever the umask is. libvirt's dynamic
ownership (qemu.conf ``dynamic_ownership``, on by default) chowns a running guest's disk
and seed to QEMU's user and back when it stops: their modes stay, so neither is ever
readable by other users.

``reach_problems`` tells whether QEMU's user can walk down to a directory, from the modes,
owners and groups of each of its parents (``serve`` refuses to start when it cannot: a
launch would otherwise fail late with "Permission denied")."""

from __future__ import annotations

import grp
import os
import pwd
import re
import stat
from dataclasses import dataclass
from pathlib import Path

QEMU_CONF = Path("/etc/libvirt/qemu.conf")
#: who libvirt runs QEMU as when qemu.conf names nobody: Debian's build, then Fedora's
DEFAULT_QEMU_USERS = ("libvirt-qemu", "qemu")

PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700
#: a directory QEMU must walk through (and list nothing else of)
QEMU_DIR = 0o750
#: the seed: QEMU reads it
QEMU_READ = 0o640
#: the disk: QEMU writes it
QEMU_WRITE = 0o660


@dataclass(frozen=True)
class QemuUser:
    """The user and group libvirt runs QEMU as, and every group the process has."""
    user: str
    uid: int
    group: str
    gid: int
    groups: frozenset[int]


def _conf_value(text: str, key: str) -> str | None:
    """KEY's string value in a libvirt config file (``key = "value"``), None if unset."""
    for line in text.splitlines():
        m = re.fullmatch(r'\s*' + re.escape(key) + r'\s*=\s*"([^"]*)"\s*(#.*)?', line)
        if m:
            return m.group(1)
    return None


def _user(spec: str) -> pwd.struct_passwd | None:
    """A qemu.conf user: a name, or ``+N`` for the uid N."""
    try:
        return pwd.getpwuid(int(spec[1:])) if spec.startswith("+") else pwd.getpwnam(spec)
    except (KeyError, ValueError):
        return None


def _group(spec: str) -> grp.struct_group | None:
    try:
        return grp.getgrgid(int(spec[1:])) if spec.startswith("+") else grp.getgrnam(spec)
    except (KeyError, ValueError):
        return None


def qemu_user(user: str | None = None, group: str | None = None, qemu_conf: Path = QEMU_CONF) -> QemuUser | None:
    """Whom libvirt runs QEMU as: USER and GROUP if given (the settings), else qemu.conf's
    ``user`` and ``group``, else the first of DEFAULT_QEMU_USERS this machine has and the
    group of that name (its own primary group if there is none). None if nobody fits."""
    try:
        conf = qemu_conf.read_text()
    except OSError:
        conf = ""
    user = user or _conf_value(conf, "user")
    group = group or _conf_value(conf, "group")
    if user:
        pw = _user(user)
    else:
        pw = next((p for p in map(_user, DEFAULT_QEMU_USERS) if p is not None), None)
    if pw is None:
        return None
    gr = _group(group) if group else (_group(pw.pw_name) or _group(f"+{pw.pw_gid}"))
    if gr is None:
        return None
    # libvirt gives QEMU its user's supplementary groups as well
    groups = {gr.gr_gid, *os.getgrouplist(pw.pw_name, gr.gr_gid)}
    return QemuUser(user=pw.pw_name, uid=pw.pw_uid, group=gr.gr_name, gid=gr.gr_gid, groups=frozenset(groups))


def _own(path: Path | int, mode: int, gid: int | None) -> None:
    st = os.stat(path)
    if gid is not None and gid != st.st_gid:
        try:
            os.chown(path, -1, gid)
        except PermissionError:
            pass  # not root: reach_problems says what QEMU cannot reach
    if stat.S_IMODE(st.st_mode) != mode:
        os.chmod(path, mode)


def make_dir(path: Path, mode: int, gid: int | None = None, exist_ok: bool = True) -> Path:
    """PATH as a directory of MODE and group GID (kept if None), made if missing (its
    missing parents too, 0755 as any system directory: they hold nothing of ours)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.mkdir(path, PRIVATE_DIR)
    except FileExistsError:
        if not exist_ok or not path.is_dir():
            raise
    _own(path, mode, gid)
    return path


def restrict(path: Path, mode: int, gid: int | None = None) -> None:
    """Give the existing file PATH MODE (and group GID); nothing if it is missing."""
    try:
        _own(path, mode, gid)
    except FileNotFoundError:
        pass


def create_file(path: Path, mode: int = PRIVATE_FILE, gid: int | None = None) -> Path:
    """An empty file PATH of MODE and group GID (an existing one keeps its bytes)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, PRIVATE_FILE)
    try:
        _own(fd, mode, gid)
    finally:
        os.close(fd)
    return path


def _reaches(st: os.stat_result, who: QemuUser, bits: int) -> bool:
    """Whether WHO has BITS (of the owner's r/w/x: 4, 2, 1) on a file of ST, as the kernel
    decides from the owner, the group and the rest (ACLs aside)."""
    if who.uid == 0:
        return True
    if st.st_uid == who.uid:
        return bool((st.st_mode >> 6) & bits == bits)
    if st.st_gid in who.groups:
        return bool((st.st_mode >> 3) & bits == bits)
    return bool(st.st_mode & bits == bits)


def reach_problems(directory: Path, who: QemuUser) -> list[str]:
    """What keeps WHO from opening files in DIRECTORY: each directory from / down to it
    that WHO cannot enter, with the command that would let it (empty: it can)."""
    problems = []
    path = Path(os.path.abspath(directory))
    for d in [*reversed(path.parents), path]:
        try:
            st = d.stat()
        except FileNotFoundError:
            break  # made later, by the service, with the modes above
        if not stat.S_ISDIR(st.st_mode):
            problems.append(f"{d} is not a directory")
            break
        if not _reaches(st, who, 1):
            owner = _name(pwd.getpwuid, st.st_uid)
            group = _name(grp.getgrgid, st.st_gid)
            problems.append(f"{d} ({stat.filemode(st.st_mode)} {owner}:{group}) cannot be entered by QEMU's user "
                            f"{who.user} (group {who.group}): let it through with `chmod o+x {d}` or "
                            f"`chgrp {who.group} {d} && chmod g+x {d}`, or use a state directory elsewhere")
    return problems


def _name(lookup, number: int) -> str:
    try:
        return lookup(number)[0]
    except KeyError:
        return str(number)


def prepare_state(var_dir: Path, instances_dir: Path, who: QemuUser | None, image_library: Path | None = None,
                  private_files: tuple[str, ...] = ("computed.toml",)) -> None:
    """The state directory and the instances directory, made or kept with their modes: 0750
    with QEMU's group where QEMU walks through (the instances directory, and the state
    directory if it holds that or the images), 0700 otherwise. PRIVATE_FILES of the state
    directory (the config file may hold the database's password) become 0600."""
    gid = who.gid if who else None
    var_dir, instances_dir = Path(os.path.abspath(var_dir)), Path(os.path.abspath(instances_dir))
    qemu_inside = any(var_dir in Path(os.path.abspath(p)).parents for p in (instances_dir, image_library) if p)
    make_dir(var_dir, QEMU_DIR if qemu_inside else PRIVATE_DIR, gid)
    make_dir(instances_dir, QEMU_DIR, gid)
    for name in private_files:
        restrict(var_dir / name, PRIVATE_FILE)
    for root in instances_dir.iterdir():  # instances made before their files had these modes
        if root.is_dir() and not root.is_symlink():
            tighten_instance(root, gid)


def tighten_instance(root: Path, gid: int | None) -> None:
    """An instance directory's own modes for it and its files (a running guest's disk and
    seed are QEMU's user's by then: a mode change keeps them usable)."""
    restrict(root, QEMU_DIR, gid)
    modes = {"disk.qcow2": QEMU_WRITE, "seed.iso": QEMU_READ}
    for path in root.iterdir():
        if path.is_file() and not path.is_symlink():
            restrict(path, modes.get(path.name, PRIVATE_FILE), gid if path.name in modes else None)
