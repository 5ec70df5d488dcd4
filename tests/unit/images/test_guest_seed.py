"""The first-boot script that installs SSH keys from the NoCloud seed (runs inside guests)."""

import importlib.machinery
import importlib.util
import sys

import pytest

from images import GUEST_DIR

SEED_SCRIPT = GUEST_DIR / "fast" / "usr" / "lib" / "computed" / "seed"
K1 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKey1 one@host"
K2 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKey2 two@host"


@pytest.fixture(scope="module")
def seed():
    loader = importlib.machinery.SourceFileLoader("computed_guest_seed", str(SEED_SCRIPT))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    module = importlib.util.module_from_spec(spec)
    # No __pycache__ in images/guest/: that tree is copied into the image as it is.
    saved, sys.dont_write_bytecode = sys.dont_write_bytecode, True
    try:
        loader.exec_module(module)
    finally:
        sys.dont_write_bytecode = saved
    return module


def test_meta_data_key_list(seed):
    meta = f"instance-id: i-1\npublic-keys:\n  - {K1}\n  - {K2}\n"
    assert seed.seed_keys(meta, None) == [K1, K2]


def test_meta_data_single_key(seed):
    assert seed.seed_keys(f"instance-id: i-1\npublic-keys: {K1}\n", b"") == [K1]


def test_meta_data_key_dict(seed):
    meta = f"public-keys:\n  first: {K1}\n  second:\n    - {K2}\n"
    assert seed.seed_keys(meta, None) == [K1, K2]


def test_meta_data_public_keys_with_underscore(seed):
    assert seed.seed_keys(f"public_keys: [\"{K1}\"]\n", None) == [K1]


def test_cloud_config_keys(seed):
    user = f"#cloud-config\nssh_authorized_keys:\n  - {K2}\n".encode()
    assert seed.seed_keys(f"public-keys: [\"{K1}\"]\n", user) == [K1, K2]
    assert seed.seed_keys(None, b"\n  " + user) == [K2]


def test_script_user_data_gives_nothing(seed):
    user = f"#!/bin/sh\n# ssh_authorized_keys:\n#  - {K2}\necho {K2} >> /root/.ssh/authorized_keys\n".encode()
    assert seed.seed_keys(None, user) == []


def test_keys_of_other_users_are_not_taken(seed):
    user = f"#cloud-config\nusers:\n  - name: alice\n    ssh_authorized_keys:\n      - {K2}\n".encode()
    assert seed.seed_keys(None, user) == []


@pytest.mark.parametrize("meta, user", [
    ("public-keys: [unclosed\n", None),
    (None, b"#cloud-config\nssh_authorized_keys: [unclosed\n"),
    ("- just\n- a list\n", b"#cloud-config\n- a list\n"),
    (None, b"#cloud-config\n\xff\xfe not utf-8: [\n"),
])
def test_invalid_yaml_gives_no_keys(seed, meta, user):
    assert seed.seed_keys(meta, user) == []


def test_comments_and_blank_lines_dropped(seed):
    meta = "public-keys: |\n  # the ops team\n  " + K1 + "\n\n  " + K2 + "\n"
    user = b"#cloud-config\nssh_authorized_keys:\n  - '# disabled key'\n  - '   '\n"
    assert seed.seed_keys(meta, user) == [K1, K2]


def test_no_seed(seed):
    assert seed.seed_keys(None, None) == []
    assert seed.seed_keys("", b"") == []


def test_the_seeds_host_key(seed, tmp_path):
    from computed.virt import ssh
    from computed.virt.provisioner import host_key_vendor_data
    key = ssh.generate_keypair()
    vendor = host_key_vendor_data(key).encode()  # as the service writes it
    assert seed.seed_host_key(vendor) == (key.private_openssh, key.public_openssh)
    path = tmp_path / "ssh_host_ed25519_key"
    seed.install_host_key(*seed.seed_host_key(vendor), path=str(path))
    assert path.read_text() == key.private_openssh
    assert (tmp_path / "ssh_host_ed25519_key.pub").read_text() == key.public_openssh + "\n"
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    for other in (None, b"", b"#!/bin/sh\n", b"#cloud-config\nssh_keys: [a]\n", b"#cloud-config\n: [\n",
                  b"#cloud-config\nssh_keys:\n  ed25519_public: ssh-ed25519 AAAA\n"):
        assert seed.seed_host_key(other) is None
