import io
from pathlib import Path

import pycdlib
import pytest
import yaml

from computed.virt.cloudinit import meta_data, write_seed

USER_DATA = "#cloud-config\nwrite_files:\n  - path: /etc/motd\n    content: \"grüße, 世界\"\n"
NETWORK = "version: 2\nethernets:\n  eth0:\n    dhcp4: true\n"


def read_iso(path: Path) -> tuple[bytes, bytes, dict[str, bytes], dict[str, bytes]]:
    """(primary volume id, Joliet volume id, files by Rock Ridge name, files by Joliet name)."""
    iso = pycdlib.PyCdlib()
    iso.open(str(path))
    try:
        rr_names = [c.rock_ridge.name().decode() for c in iso.list_children(rr_path="/")
                    if c.rock_ridge is not None and c.is_file()]

        def get(**where) -> bytes:
            out = io.BytesIO()
            iso.get_file_from_iso_fp(out, **where)
            return out.getvalue()

        by_rr = {n: get(rr_path="/" + n) for n in rr_names}
        by_joliet = {n: get(joliet_path="/" + n) for n in rr_names}
        return iso.pvd.volume_identifier, iso.joliet_vd.volume_identifier, by_rr, by_joliet
    finally:
        iso.close()


@pytest.mark.parametrize("user_data", [USER_DATA, USER_DATA.encode(), b"#!/bin/sh\necho \xff\xfe raw\n"])
def test_seed_files_read_back(tmp_path: Path, user_data):
    meta = meta_data("i-0123456789abcdef", "node-1", ["ssh-ed25519 AAAA key@host"])
    dest = tmp_path / "seed.iso"
    assert write_seed(dest, meta, user_data, network_config=NETWORK) == dest
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seed.iso"]

    pvd_label, joliet_label, by_rr, by_joliet = read_iso(dest)
    assert pvd_label.rstrip(b" ") == b"cidata"
    assert joliet_label.decode("utf-16-be").rstrip(" ") == "cidata"
    expected_user = user_data.encode() if isinstance(user_data, str) else user_data
    expected = {"meta-data": meta.encode(), "user-data": expected_user, "network-config": NETWORK.encode()}
    assert by_rr == expected
    assert by_joliet == expected


def test_optional_files(tmp_path: Path):
    dest = tmp_path / "seed.iso"
    write_seed(dest, meta_data("i-1", "h"))
    _, _, files, _ = read_iso(dest)
    assert files == {"meta-data": meta_data("i-1", "h").encode(), "user-data": b""}

    write_seed(dest, meta_data("i-1", "h"), "", vendor_data=b"#cloud-config\n{}\n")
    _, _, files, _ = read_iso(dest)
    assert files["vendor-data"] == b"#cloud-config\n{}\n"
    assert "network-config" not in files


def test_meta_data():
    keys = ["ssh-ed25519 AAAA one@host", "ssh-rsa BBBB two@host"]
    assert yaml.safe_load(meta_data("i-42", "web-1", keys)) == {
        "instance-id": "i-42", "local-hostname": "web-1", "public-keys": keys}
    assert yaml.safe_load(meta_data("i-42", "web-1")) == {"instance-id": "i-42", "local-hostname": "web-1"}
    assert list(yaml.safe_load(meta_data("i-1", "h", keys))) == ["instance-id", "local-hostname", "public-keys"]
