import json
from pathlib import Path

import pytest

from images.manifest import MANIFEST_FILE, REQUIRED_KEYS, Manifest, ManifestError, sha256_file


def test_round_trip(tmp_path: Path, fake_build):
    written = fake_build(tmp_path, "rt")
    assert (tmp_path / MANIFEST_FILE).is_file()
    assert not (tmp_path / "manifest.tmp").exists()
    read = Manifest.read(tmp_path)
    assert read == written
    assert read.artifacts["kernel"] == {"file": "vmlinuz", "size": len(b"fake kernel"),
                                        "sha256": sha256_file(tmp_path / "vmlinuz")}


def test_unknown_keys_are_ignored(tmp_path: Path, fake_build):
    written = fake_build(tmp_path)
    data = json.loads((tmp_path / MANIFEST_FILE).read_text()) | {"from_the_future": 1}
    (tmp_path / MANIFEST_FILE).write_text(json.dumps(data))
    assert Manifest.read(tmp_path) == written


@pytest.mark.parametrize("key", REQUIRED_KEYS)
def test_missing_key(tmp_path: Path, fake_build, key):
    fake_build(tmp_path)
    data = json.loads((tmp_path / MANIFEST_FILE).read_text())
    del data[key]
    (tmp_path / MANIFEST_FILE).write_text(json.dumps(data))
    with pytest.raises(ManifestError, match=f"missing {key}"):
        Manifest.read(tmp_path)


def test_missing_artifact_role(tmp_path: Path, fake_build):
    fake_build(tmp_path)
    data = json.loads((tmp_path / MANIFEST_FILE).read_text())
    del data["artifacts"]["initrd"]
    (tmp_path / MANIFEST_FILE).write_text(json.dumps(data))
    with pytest.raises(ManifestError, match="artifacts lack initrd"):
        Manifest.read(tmp_path)


@pytest.mark.parametrize("text", ["[]", '"manifest"', "42", "null", "{not json", ""])
def test_not_a_json_object(tmp_path: Path, text):
    (tmp_path / MANIFEST_FILE).write_text(text)
    with pytest.raises(ManifestError):
        Manifest.read(tmp_path)


def test_no_manifest_file(tmp_path: Path):
    with pytest.raises(ManifestError, match=MANIFEST_FILE):
        Manifest.read(tmp_path)


def test_missing_non_default_field_is_a_manifest_error(tmp_path: Path, fake_build):
    fake_build(tmp_path)
    data = json.loads((tmp_path / MANIFEST_FILE).read_text())
    del data["suite"]
    (tmp_path / MANIFEST_FILE).write_text(json.dumps(data))
    with pytest.raises(ManifestError):
        Manifest.read(tmp_path)


def test_verify_good(tmp_path: Path, fake_build):
    assert fake_build(tmp_path).verify(tmp_path) == []


def test_verify_missing_file(tmp_path: Path, fake_build):
    manifest = fake_build(tmp_path)
    (tmp_path / "vmlinuz").unlink()
    problems = manifest.verify(tmp_path)
    assert len(problems) == 1
    assert problems[0].startswith("kernel: ") and "missing" in problems[0]


def test_verify_wrong_size(tmp_path: Path, fake_build):
    manifest = fake_build(tmp_path)
    (tmp_path / "disk.qcow2").write_bytes(b"truncated")
    [problem] = manifest.verify(tmp_path)
    assert problem.startswith("disk: ") and "size 9" in problem


def test_verify_wrong_checksum(tmp_path: Path, fake_build):
    manifest = fake_build(tmp_path)
    (tmp_path / "initrd.img").write_bytes(b"FAKE INITRD")  # same size, other bytes
    [problem] = manifest.verify(tmp_path)
    assert problem.startswith("initrd: ") and "sha256" in problem
