"""cloud-init NoCloud seeds: an ISO 9660 volume labelled ``cidata`` holding ``meta-data``,
``user-data`` and optionally ``network-config`` and ``vendor-data``, attached to the guest
as a read-only virtio disk."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pycdlib
import yaml

SEED_LABEL = "cidata"


def meta_data(instance_id: str, hostname: str, public_keys: list[str] | None = None) -> str:
    data = {"instance-id": instance_id, "local-hostname": hostname}
    if public_keys:
        data["public-keys"] = list(public_keys)
    return yaml.safe_dump(data, default_flow_style=False, sort_keys=False)


def write_seed(dest: Path, meta: str, user_data: str | bytes = b"", network_config: str | None = None,
               vendor_data: str | bytes | None = None) -> Path:
    """Write a NoCloud seed ISO at DEST. User data is passed through unchanged (any format
    cloud-init reads: #cloud-config, #! scripts, MIME multipart, gzip)."""
    files = {"meta-data": meta, "user-data": user_data, "network-config": network_config,
             "vendor-data": vendor_data}
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, joliet=3, rock_ridge="1.09", vol_ident=SEED_LABEL)
    try:
        for name, content in files.items():
            if content is None:
                continue
            data = content.encode() if isinstance(content, str) else bytes(content)
            iso_name = "/" + name.replace("-", "").upper() + ".;1"
            iso.add_fp(io.BytesIO(data), len(data), iso_path=iso_name, rr_name=name, joliet_path="/" + name)
        tmp = Path(dest).with_suffix(".tmp")
        # the user data is the tenant's: root's alone whatever the umask (the caller may widen it)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as f:
            iso.write_fp(f)
    finally:
        iso.close()
    tmp.replace(dest)
    return Path(dest)
