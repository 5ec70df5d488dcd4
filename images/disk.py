"""From a root file-system tree to a qcow2 base disk: ext4 on the whole device (no partition
table, the kernel boots directly), so an instance grows it with a plain online resize2fs."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from .customize import ROOT_LABEL


def make_disk(rootfs: Path, size_gib: int, workdir: Path, dest: Path) -> dict:
    """Write DEST (qcow2) holding ROOTFS; return {"format", "virtual_size"}."""
    raw = workdir / "disk.raw"
    raw.unlink(missing_ok=True)
    with raw.open("wb") as f:
        f.truncate(size_gib << 30)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-L", ROOT_LABEL, "-d", str(rootfs),
                    "-E", "lazy_itable_init=0,lazy_journal_init=0",
                    str(raw)], check=True)
    subprocess.run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", "-o", "cluster_size=65536",
                    str(raw), str(dest)], check=True)
    raw.unlink()
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(dest)],
                                     check=True, capture_output=True, text=True).stdout)
    return {"format": "qcow2", "virtual_size": info["virtual-size"]}
