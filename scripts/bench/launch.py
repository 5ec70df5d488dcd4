"""Seconds from ``POST /v1/instances`` to the user's SSH login with their own key at the
endpoint the API reports, against the same image booted by a bare ``qemu-system-x86_64``
with the same accelerator, vCPUs and memory. Interleaved runs; prints each run, both
medians, and the ratio service/bare measured in this run (goal: at most 1.05)."""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

import paramiko

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from computed.virt import cloudinit, ssh  # noqa: E402
from computed.settings import Settings  # noqa: E402
from images import recipe as recipes  # noqa: E402
from images.builder import Builder  # noqa: E402
from images.qemu import QemuGuest  # noqa: E402
from tests.vm.service_harness import RunningService  # noqa: E402


def through_service(svc: RunningService, size: str, key: paramiko.PKey, timeout: float) -> float:
    started = time.monotonic()
    [inst] = svc.call("POST", "/v1/instances", expect=202, json={"size": size, "key_name": "bench"})["instances"]
    try:
        client = ssh.wait_for_login(inst["ssh"]["host"], inst["ssh"]["port"], inst["ssh"]["user"], key,
                                    started + timeout, interval=0.1)
        seconds = time.monotonic() - started
        client.close()
        return seconds
    finally:
        svc.call("DELETE", f"/v1/instances/{inst['id']}", expect=202)
        svc.wait_state(inst["id"], "terminated")


def bare_qemu(image, workdir: Path, vcpus: int, memory: int, timeout: float) -> float:
    keypair = ssh.generate_keypair()
    seed = cloudinit.write_seed(workdir / "seed.iso", cloudinit.meta_data("i-0bench", "bench", [keypair.public_openssh]))
    guest = QemuGuest(image, workdir, seed, vcpus=vcpus, memory_mib=memory, name="bare")
    started = time.monotonic()
    guest.start()
    try:
        client = ssh.wait_for_login("127.0.0.1", guest.ssh_port, image.manifest.default_user, keypair.pkey(),
                                    started + timeout, interval=0.1)
        seconds = time.monotonic() - started
        client.close()
        return seconds
    finally:
        guest.kill()
        guest.disk.unlink(missing_ok=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--size", default="t3.micro")
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args()
    settings = Settings.load()
    image = Builder(settings).build(recipes.find(settings.default_image)).image
    (settings.var_dir / "test-tmp").mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-", dir=settings.var_dir / "test-tmp") as tmp:
        Path(tmp).chmod(0o755)  # libvirt's QEMU user opens the instances' files
        svc = RunningService(Path(tmp) / "service", settings.image_library, (43300, 43399), domain_type="qemu")
        try:
            size = svc.service.sizes.get(args.size)
            created = svc.call("POST", "/v1/keypairs", expect=201, json={"name": "bench"})
            key = paramiko.Ed25519Key.from_private_key(io.StringIO(created["private_key"]))
            print(f"launch benchmark: {image.name}, {size.name} ({size.vcpus} vCPU, {size.memory_mib} MiB), "
                  f"TCG, {args.runs} runs each, interleaved", flush=True)
            service_times, bare_times = [], []
            for run in range(1, args.runs + 1):
                service_times.append(through_service(svc, size.name, key, args.timeout))
                print(f"  run {run} service  POST to ssh login {service_times[-1]:6.1f}s", flush=True)
                bare_times.append(bare_qemu(image, Path(tmp), size.vcpus, size.memory_mib, args.timeout))
                print(f"  run {run} bare     qemu to ssh login {bare_times[-1]:6.1f}s", flush=True)
        finally:
            svc.close()
    s, b = statistics.median(service_times), statistics.median(bare_times)
    print(f"\nmedian through the service: {s:.1f}s\nmedian bare qemu:           {b:.1f}s\n"
          f"ratio service/bare: {s / b:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
