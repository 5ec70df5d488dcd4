"""Seconds from QEMU start to SSH login, for the tuned image and for a stock-configured image
built from the same recipe and package list (``NAME-stock``: Debian's own boot, cloud-init
on the boot path). Both boot with plain qemu-system-x86_64, same accelerator, vCPUs and
memory, interleaved, each with a fresh key and user data; user data must have run before a
boot counts. Prints each run, the medians, and the ratio tuned/stock measured in this run."""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from computed.virt import cloudinit, ssh
from computed.settings import Settings
from images import recipe as recipes
from images.builder import Builder
from images.qemu import QemuGuest, accelerator

USER_DATA = "#cloud-config\nwrite_files:\n  - path: /var/tmp/bench\n    content: ran\n"


def boot_once(image, workdir: Path, vcpus: int, memory: int, timeout: float) -> tuple[float, float]:
    """(seconds to SSH login, seconds until cloud-init finished with the user data)."""
    keypair = ssh.generate_keypair()
    seed = cloudinit.write_seed(workdir / "seed.iso", cloudinit.meta_data("i-0bench", "bench", [keypair.public_openssh]),
                                USER_DATA)
    guest = QemuGuest(image, workdir, seed, vcpus=vcpus, memory_mib=memory, name=image.name)
    guest.start()
    try:
        client = ssh.wait_for_login("127.0.0.1", guest.ssh_port, image.manifest.default_user, keypair.pkey(),
                                    time.monotonic() + timeout, interval=0.1)
        login = time.monotonic() - guest.started_at
        rc, out, _ = ssh.run(client, "cloud-init status --wait >/dev/null; cat /var/tmp/bench", timeout=timeout)
        done = time.monotonic() - guest.started_at
        client.close()
        if out.strip() != "ran":
            raise RuntimeError(f"{image.name}: user data did not run (cloud-init rc {rc})")
        return login, done
    finally:
        guest.kill()
        guest.disk.unlink(missing_ok=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--image", default="debian-12-podman")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--vcpus", type=int, default=2)
    parser.add_argument("--memory", type=int, default=1024, help="MiB")
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args()

    builder = Builder(Settings.load())
    tuned_recipe = recipes.find(args.image)
    images = {"stock": builder.build(tuned_recipe.with_boot("stock")).image,
              "tuned": builder.build(tuned_recipe).image}
    results: dict[str, list[tuple[float, float]]] = {k: [] for k in images}
    accel = accelerator()
    print(f"boot benchmark: {args.image}, qemu accel {accel}, {args.vcpus} vCPU, {args.memory} MiB, "
          f"{args.runs} runs each, interleaved", flush=True)
    with tempfile.TemporaryDirectory(prefix="computed-bench-") as tmp:
        for run in range(1, args.runs + 1):
            for kind, image in images.items():
                login, done = boot_once(image, Path(tmp), args.vcpus, args.memory, args.timeout)
                results[kind].append((login, done))
                print(f"  run {run} {kind:5} {image.name:28} ssh login {login:6.1f}s   user data done {done:6.1f}s",
                      flush=True)
    medians = {k: (statistics.median(r[0] for r in v), statistics.median(r[1] for r in v)) for k, v in results.items()}
    print()
    print(f"{'image':28} {'median ssh login':>17} {'median user data done':>22}")
    for kind, image in images.items():
        print(f"{image.name:28} {medians[kind][0]:16.1f}s {medians[kind][1]:21.1f}s")
    print(f"ratio tuned/stock, ssh login: {medians['tuned'][0] / medians['stock'][0]:.2f}")
    print(f"ratio tuned/stock, user data done: {medians['tuned'][1] / medians['stock'][1]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
