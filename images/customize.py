"""Turns a freshly bootstrapped Debian tree into a computed guest.

Runs as an mmdebstrap customize hook (``python -m images.customize PLAN ROOTFS``), while
/dev, /proc and /sys are mounted in ROOTFS, so commands can run chrooted. PLAN is a JSON
file written by the builder (``Builder._customize_plan``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from . import GUEST_DIR

KERNEL_CMDLINE = {
    # quiet: under emulation every console line costs; the serial log still gets errors.
    "fast": "root=/dev/vda rw rootfstype=ext4 console=ttyS0,115200 quiet loglevel=3",
    "stock": "root=/dev/vda ro console=ttyS0,115200",
}

# Documentation and translations are not installed: smaller disks, faster builds.
DPKG_OPTIONS = (
    "path-exclude=/usr/share/man/*", "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*", "path-include=/usr/share/locale/locale.alias",
    "path-exclude=/usr/share/doc/*", "path-include=/usr/share/doc/*/copyright",
)

ROOT_LABEL = "computed-root"
PRELOAD_STORE = "/usr/lib/containers/storage"
DOCKER_ARCHIVES = "/usr/share/computed/containers"
# virtio_net too: udev in the initramfs then gives the NIC its predictable name (eth0 ->
# ens2) before systemd-networkd starts. Renamed later, under a running networkd, systemd 252
# sometimes configures the link twice and gives up on it ("Failed to configure DHCPv4
# client: Device or resource busy", link failed): the guest boots with no IPv4 address.
INITRAMFS_MODULES = ("virtio_pci", "virtio_blk", "virtio_net")

# Boot-time work nobody on a fresh cloud instance is waiting for.
FAST_MASK = (
    "cloud-init-local.service", "cloud-init.service", "cloud-config.service", "cloud-final.service",
    "networking.service", "systemd-networkd-wait-online.service", "ifupdown-wait-online.service",
    "apt-daily.timer", "apt-daily-upgrade.timer", "dpkg-db-backup.timer", "e2scrub_all.timer",
    "e2scrub_reap.service", "fstrim.timer", "getty@tty1.service", "podman-auto-update.timer",
)
FAST_DISABLE = ("podman.service", "podman-auto-update.service")
FAST_ENABLE = ("systemd-networkd.service", "computed-hostkey.service", "computed-seed.service",
               "computed-cloud-init.service")


def run(rootfs: Path, *cmd: str, **kw) -> subprocess.CompletedProcess:
    print("+ chroot", *cmd, flush=True)
    return subprocess.run(["chroot", str(rootfs), *cmd], check=True, **kw)


def copy_tree(src: Path, rootfs: Path) -> None:
    """Copy a guest/ tree into the rootfs, keeping modes; everything owned by root. A path
    part ``dot-NAME`` becomes ``.NAME`` (hidden files do not travel well in Python packages)."""
    for path in sorted(src.rglob("*")):
        parts = path.relative_to(src).parts
        dest = rootfs.joinpath(*("." + p.removeprefix("dot-") if p.startswith("dot-") else p for p in parts))
        if path.is_dir():
            dest.mkdir(parents=True, exist_ok=True)
            os.chown(dest, 0, 0)
        else:
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, dest)
            os.chown(dest, 0, 0)


def write(rootfs: Path, path: str, text: str, mode: int = 0o644) -> None:
    dest = rootfs / path.lstrip("/")
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(text)
    os.chmod(dest, mode)


def user_groups(rootfs: Path, engine: str) -> list[str]:
    wanted = ["adm", "sudo", "systemd-journal"] + (["docker"] if engine == "docker" else [])
    existing = {line.split(":", 1)[0] for line in (rootfs / "etc/group").read_text().splitlines()}
    return [g for g in wanted if g in existing]


def cloud_config(plan: dict, groups: list[str]) -> str:
    """cloud-init settings shared by every profile: where the seed is, and the default user."""
    cfg = {
        "datasource_list": ["NoCloud", "None"],
        "disable_root": True,
        # no ssh_pwauth: sshd_config.d already refuses passwords, and any value makes
        # cloud-init restart sshd during the first boot, dropping sessions users just opened
        "locale": "C.UTF-8",  # needs no locale generation (no locales package here)
        "system_info": {"default_user": {
            "name": plan["default_user"], "lock_passwd": True, "gecos": "computed default user",
            "groups": groups, "sudo": ["ALL=(ALL) NOPASSWD:ALL"], "shell": "/bin/bash",
        }},
    }
    return "# computed: written at image build time\n" + json.dumps(cfg, indent=2) + "\n"


def add_default_user(rootfs: Path, user: str, groups: list[str]) -> None:
    """The fast boot creates the user at build time: SSH must accept it before cloud-init runs."""
    run(rootfs, "useradd", "--create-home", "--shell", "/bin/bash", "--comment", "computed default user",
        "--groups", ",".join(groups), user)
    run(rootfs, "passwd", "--lock", user, stdout=subprocess.DEVNULL)
    write(rootfs, f"/etc/sudoers.d/90-computed-{user}", f"{user} ALL=(ALL) NOPASSWD:ALL\n", 0o440)
    for ids in ("etc/subuid", "etc/subgid"):  # rootless containers
        path = rootfs / ids
        lines = path.read_text().splitlines() if path.exists() else []
        if not any(line.startswith(user + ":") for line in lines):
            path.write_text("".join(line + "\n" for line in lines + [f"{user}:100000:65536"]))


def preload_podman(rootfs: Path, archive: Path) -> None:
    inside = Path("/tmp") / archive.name
    shutil.copy(archive, rootfs / inside.relative_to("/"))
    podman = ["podman", "--root", PRELOAD_STORE, "--runroot", "/run/computed-build-podman",
              "--storage-driver", "overlay", "--cgroup-manager", "cgroupfs", "--events-backend", "none",
              "load", "--input", str(inside)]
    # Podman re-mounts "/" while unpacking layers, so "/" must be a mount point: a private
    # mount namespace where the tree is bind-mounted onto itself (gone when podman exits).
    script = 'mount --rbind "$1" "$1" && shift && exec chroot "$@"'
    print("+ chroot", *podman, flush=True)
    try:
        subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh",
                        str(rootfs), str(rootfs), *podman], check=True)
    finally:
        (rootfs / inside.relative_to("/")).unlink()
        shutil.rmtree(rootfs / "run/computed-build-podman", ignore_errors=True)
    store = rootfs / PRELOAD_STORE.lstrip("/")
    share_store(store)
    os.chmod(store.parent, 0o755)  # podman made /usr/lib/containers 0700 too


def share_store(store: Path) -> None:
    """Rootless Podman reads the preloaded store too: its metadata must be world-readable
    (podman creates it 0700/0600). Layer contents keep the modes the image gave them."""
    shutil.rmtree(store / "libpod", ignore_errors=True)  # the build's own podman state
    for dirpath, dirnames, filenames in os.walk(store):
        here = Path(dirpath)
        if here.name == "diff" and here.parent.parent.name == "overlay":
            dirnames.clear()
            continue
        os.chmod(here, 0o755)
        for name in filenames:
            if not (here / name).is_symlink():
                os.chmod(here / name, 0o644)


def preload_docker(rootfs: Path, archive: Path) -> None:
    dest = rootfs / DOCKER_ARCHIVES.lstrip("/")
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy(archive, dest / archive.name)


def make_instance_neutral(rootfs: Path) -> None:
    """Nothing that must differ between instances may stay in the image."""
    for key in (rootfs / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    (rootfs / "etc/machine-id").write_text("")
    (rootfs / "var/lib/dbus/machine-id").unlink(missing_ok=True)
    shutil.rmtree(rootfs / "var/lib/cloud", ignore_errors=True)
    for log in (rootfs / "var/log").rglob("*.log"):
        log.write_text("")


def tune_fast_boot(rootfs: Path) -> None:
    copy_tree(GUEST_DIR / "fast", rootfs)
    modules = rootfs / "etc/initramfs-tools/modules"
    modules.write_text(modules.read_text() + "".join(m + "\n" for m in INITRAMFS_MODULES))
    # The cloud-init generator runs ds-identify on every boot; our unit runs cloud-init instead.
    generators = rootfs / "etc/systemd/system-generators"
    generators.mkdir(parents=True, exist_ok=True)
    (generators / "cloud-init-generator").unlink(missing_ok=True)
    (generators / "cloud-init-generator").symlink_to("/dev/null")
    run(rootfs, "systemctl", "mask", *FAST_MASK)
    run(rootfs, "systemctl", "disable", *FAST_DISABLE)
    run(rootfs, "systemctl", "enable", *FAST_ENABLE)
    run(rootfs, "update-initramfs", "-u", "-k", "all")


def customize(plan: dict, rootfs: Path) -> None:
    engine = plan["engine"]
    copy_tree(GUEST_DIR / "common", rootfs)
    copy_tree(GUEST_DIR / engine, rootfs)
    groups = user_groups(rootfs, engine)
    write(rootfs, "/etc/cloud/cloud.cfg.d/05_computed.cfg", cloud_config(plan, groups))
    write(rootfs, "/etc/computed/image.json", json.dumps(plan["image_info"], indent=2) + "\n")
    write(rootfs, "/etc/fstab", f"LABEL={ROOT_LABEL} / ext4 defaults,errors=remount-ro 0 1\n")
    write(rootfs, "/etc/hostname", "localhost\n")
    write(rootfs, "/etc/default/locale", "LANG=C.UTF-8\n")
    archive = Path(plan["container_archive"])
    if engine == "podman":
        preload_podman(rootfs, archive)
    else:
        preload_docker(rootfs, archive)
    if plan["boot"] == "fast":
        add_default_user(rootfs, plan["default_user"], groups)
        tune_fast_boot(rootfs)
    make_instance_neutral(rootfs)


def main(argv: list[str]) -> int:
    plan_path, rootfs = argv
    customize(json.loads(Path(plan_path).read_text()), Path(rootfs))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
