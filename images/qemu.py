"""Boot a stored image with plain ``qemu-system-x86_64``: direct kernel boot, a qcow2
overlay on the base disk, a NoCloud seed as a read-only virtio disk, and SSH forwarded to
a port on 127.0.0.1 (QEMU user-mode networking). Used by the image tests and the boot
benchmark; the service itself boots guests through libvirt."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

from .library import ImageBuild


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def accelerator() -> str:
    """QEMU's -accel for direct boots: ``COMPUTED_QEMU_ACCEL`` (kvm | tcg), TCG by default.
    A /dev/kvm that exists is no proof that KVM runs guests (nested or paravirtual KVM can
    hang them in the kernel's decompressor), so KVM is chosen, not guessed."""
    accel = os.environ.get("COMPUTED_QEMU_ACCEL", "tcg")
    if accel not in ("kvm", "tcg"):
        raise ValueError(f"COMPUTED_QEMU_ACCEL must be kvm or tcg, not {accel!r}")
    return "kvm" if accel == "kvm" else "tcg,thread=multi"


class QemuGuest:
    def __init__(self, image: ImageBuild, workdir: Path, seed: Path | None = None, *, vcpus: int = 2,
                 memory_mib: int = 1024, accel: str | None = None, name: str = "guest"):
        self.image = image
        self.workdir = Path(workdir)
        self.seed = seed
        self.vcpus = vcpus
        self.memory_mib = memory_mib
        self.accel = accel or accelerator()
        self.name = name
        self.disk = self.workdir / f"{name}.qcow2"
        self.console_log = self.workdir / f"{name}.console.log"
        self.qmp_path = self.workdir / f"{name}.qmp"
        self.ssh_port = 0
        self.started_at = 0.0
        self.proc: subprocess.Popen | None = None

    def command(self) -> list[str]:
        m = self.image.manifest
        cmd = [
            shutil.which("qemu-system-x86_64") or "qemu-system-x86_64",
            "-name", self.name, "-machine", "pc", "-accel", self.accel, "-cpu", "max",
            "-smp", str(self.vcpus), "-m", str(self.memory_mib),
            "-nodefaults", "-no-user-config", "-display", "none",
            "-serial", f"file:{self.console_log}",
            "-qmp", f"unix:{self.qmp_path},server=on,wait=off",
            "-kernel", str(self.image.artifact_path("kernel")),
            "-initrd", str(self.image.artifact_path("initrd")),
            "-append", m.kernel_cmdline,
            "-drive", f"file={self.disk},if=virtio,format=qcow2,discard=unmap",
            "-netdev", f"user,id=net0,hostfwd=tcp:127.0.0.1:{self.ssh_port}-:22",
            "-device", "virtio-net-pci,netdev=net0",
            "-device", "virtio-rng-pci",
        ]
        if self.seed:
            cmd += ["-drive", f"file={self.seed},if=virtio,format=raw,readonly=on"]
        return cmd

    def start(self) -> QemuGuest:
        self.workdir.mkdir(parents=True, exist_ok=True)
        base = self.image.artifact_path("disk")
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(base),
                        str(self.disk)], check=True)
        for attempt in range(5):
            self.ssh_port = free_port()
            self.console_log.write_text("")
            self.started_at = time.monotonic()
            self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                         stderr=subprocess.STDOUT, text=True)
            time.sleep(0.3)
            if self.proc.poll() is None:
                return self
            out = self.proc.stdout.read()
            if "hostfwd" not in out and "Could not set up host forwarding" not in out:
                raise RuntimeError(f"qemu failed to start: {out}")
        raise RuntimeError("qemu could not forward a port for SSH")

    def console(self) -> str:
        return self.console_log.read_text(errors="replace") if self.console_log.exists() else ""

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def qmp(self, command: str) -> None:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(str(self.qmp_path))
            f = s.makefile("rw")
            f.readline()  # greeting
            for cmd in ("qmp_capabilities", command):
                f.write(json.dumps({"execute": cmd}) + "\n")
                f.flush()
                f.readline()

    def wait(self, timeout: float) -> bool:
        try:
            self.proc.wait(timeout=timeout)
            return True
        except subprocess.TimeoutExpired:
            return False

    def stop(self, timeout: float = 60) -> None:
        """ACPI power button, then wait; kill if the guest does not power off in time."""
        if self.running():
            try:
                self.qmp("system_powerdown")
            except OSError:
                pass
            if not self.wait(timeout):
                self.kill()
        self.disk.unlink(missing_ok=True)

    def kill(self) -> None:
        if self.running():
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> QemuGuest:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.kill()
        self.disk.unlink(missing_ok=True)
