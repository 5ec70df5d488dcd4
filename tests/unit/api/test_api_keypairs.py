"""/v1/keypairs: create (the private key is answered once and kept nowhere), import,
get, list, delete, and every way a name or public key can be wrong."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from sqlalchemy import select, text

from computed.virt import ssh
from computed.store.models import Base, KeyPair

PUBLIC_FIELDS = {"name", "key_type", "fingerprint", "public_key", "created_at"}


def openssh_public(private_key, comment: str = "") -> str:
    line = private_key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                 serialization.PublicFormat.OpenSSH).decode()
    return f"{line} {comment}" if comment else line


@pytest.fixture(scope="module")
def keys() -> dict[str, str]:
    """OpenSSH public key lines, generated once for the module."""
    return {
        "ed25519": openssh_public(ed25519.Ed25519PrivateKey.generate(), "alice@laptop"),
        "rsa2048": openssh_public(rsa.generate_private_key(65537, 2048), "bob@desktop"),
        "rsa1024": openssh_public(rsa.generate_private_key(65537, 1024), "weak"),
        "ecdsa256": openssh_public(ec.generate_private_key(ec.SECP256R1()), "p256"),
        "ecdsa384": openssh_public(ec.generate_private_key(ec.SECP384R1())),
        "ecdsa521": openssh_public(ec.generate_private_key(ec.SECP521R1()), "p521"),
        "ed25519b": openssh_public(ed25519.Ed25519PrivateKey.generate()),
    }


def ssh_keygen_fingerprint(public_key: str, tmp_path) -> str:
    path = tmp_path / "key.pub"
    path.write_text(public_key + "\n")
    out = subprocess.run(["ssh-keygen", "-lf", str(path)], capture_output=True, text=True, check=True).stdout
    return out.split()[1]


# -- create ------------------------------------------------------------------------------

def test_create_returns_the_private_key_once(client, service, settings):
    response = client.post("/v1/keypairs", json={"name": "deploy"})
    assert response.status_code == 201
    created = response.get_json()
    assert set(created) == PUBLIC_FIELDS | {"private_key"}
    assert created["name"] == "deploy"
    assert created["key_type"] == "ssh-ed25519"
    assert created["public_key"].startswith("ssh-ed25519 ") and created["public_key"].endswith(" deploy")
    assert created["fingerprint"] == ssh.fingerprint(created["public_key"])
    private = created["private_key"]
    assert private.startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    # the private key belongs to the public key
    loaded = serialization.load_ssh_private_key(private.encode(), password=None)
    assert openssh_public(loaded) == created["public_key"].rsplit(" ", 1)[0]

    # GET and list never show it again
    one = client.get("/v1/keypairs/deploy")
    assert one.status_code == 200
    assert set(one.get_json()) == PUBLIC_FIELDS
    assert {k: created[k] for k in PUBLIC_FIELDS} == one.get_json()
    listing = client.get("/v1/keypairs")
    assert listing.get_json() == {"key_pairs": [one.get_json()]}
    secret_line = private.splitlines()[2]  # a line of the key's body
    for response in (one, listing):
        assert "PRIVATE" not in response.get_data(as_text=True)
        assert secret_line not in response.get_data(as_text=True)

    # nor does the store: no column for it, and the bytes are nowhere in the database files
    assert {c.name for c in KeyPair.__table__.columns} == {"id", "owner", "name", "key_type", "public_key", "fingerprint",
                                                          "created_at"}
    with service.db.session() as s:
        row = s.scalar(select(KeyPair).where(KeyPair.name == "deploy"))
        assert row.public_key == created["public_key"]
    if service.db.engine.dialect.name == "sqlite":
        service.db.dispose()  # let SQLite checkpoint, then look at every file it writes
        stored = b"".join(p.read_bytes() for p in settings.var_dir.glob("computed.db*"))
    else:  # every row of every table, as PostgreSQL writes it out
        with service.db.reading() as s:
            stored = "".join(row for table in Base.metadata.tables
                             for row in s.scalars(text(f"SELECT t::text FROM {table} AS t"))).encode()
    assert created["public_key"].split()[1].encode() in stored
    assert secret_line.encode() not in stored
    assert b"PRIVATE KEY" not in stored


@pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="ssh-keygen is not installed")
def test_created_fingerprint_matches_ssh_keygen(client, tmp_path):
    created = client.post("/v1/keypairs", json={"name": "k"}).get_json()
    assert created["fingerprint"] == ssh_keygen_fingerprint(created["public_key"], tmp_path)


# -- import ------------------------------------------------------------------------------

@pytest.mark.parametrize("kind, key_type", [
    ("ed25519", "ssh-ed25519"), ("rsa2048", "ssh-rsa"), ("ecdsa256", "ecdsa-sha2-nistp256"),
    ("ecdsa384", "ecdsa-sha2-nistp384"), ("ecdsa521", "ecdsa-sha2-nistp521")])
def test_import_public_key(client, keys, kind, key_type, tmp_path):
    response = client.post("/v1/keypairs", json={"name": f"imported-{kind}", "public_key": keys[kind]})
    assert response.status_code == 201, response.get_json()
    got = response.get_json()
    assert "private_key" not in got
    assert got["key_type"] == key_type
    assert got["public_key"] == keys[kind]
    assert got["fingerprint"] == ssh.fingerprint(keys[kind])
    if shutil.which("ssh-keygen"):
        assert got["fingerprint"] == ssh_keygen_fingerprint(keys[kind], tmp_path)
    assert client.get(f"/v1/keypairs/imported-{kind}").get_json() == got


def test_import_normalizes_whitespace_and_a_trailing_newline(client, keys):
    kind, blob, comment = keys["ed25519"].split(" ", 2)
    pasted = f"  {kind}   {blob}  {comment}\n"
    got = client.post("/v1/keypairs", json={"name": "pasted", "public_key": pasted}).get_json()
    assert got["public_key"] == f"{kind} {blob} {comment}"


def test_import_without_a_comment(client, keys):
    got = client.post("/v1/keypairs", json={"name": "bare", "public_key": keys["ed25519b"]}).get_json()
    assert got["public_key"] == keys["ed25519b"]


def test_rsa_1024_is_refused(client, keys, expect_error):
    message = expect_error(client.post("/v1/keypairs", json={"name": "weak", "public_key": keys["rsa1024"]}),
                           400, "InvalidKey.Format")
    assert "2048" in message
    assert client.get("/v1/keypairs").get_json() == {"key_pairs": []}


def bad_public_keys(keys):
    ed_type, ed_blob, _ = keys["ed25519"].split(" ", 2)
    rsa_blob = keys["rsa2048"].split()[1]
    return {
        "garbage": "this is not a key",
        "type only": "ssh-ed25519",
        "blob not base64": "ssh-ed25519 !!!!not-base64!!!!",
        "blob truncated": f"{ed_type} {ed_blob[:20]}",
        "type and blob disagree": f"ssh-ed25519 {rsa_blob}",
        "unknown type": f"ssh-foo {ed_blob}",
        "private key": "-----BEGIN OPENSSH PRIVATE KEY-----",
        "two lines": keys["ed25519"] + "\n" + keys["ed25519b"],
        "carriage return": keys["ed25519"] + "\r" + keys["ed25519b"],
        "newline inside": f"{ed_type} {ed_blob} first\nsecond",
        "NUL in comment": f"{ed_type} {ed_blob} a\x00b",
        "escape in comment": f"{ed_type} {ed_blob} \x1b[31mred",
        "tab in comment": f"{ed_type} {ed_blob} a\tb",
        "bell in comment": f"{ed_type} {ed_blob} ding\x07",
        "too long": f"{ed_type} {ed_blob} " + "c" * 17000,
    }


def test_bad_public_keys_are_refused(client, keys, expect_error, case):
    for label, public_key in bad_public_keys(keys).items():
        with case(label):
            expect_error(client.post("/v1/keypairs", json={"name": "bad", "public_key": public_key}), 400,
                         {"InvalidKey.Format", "InvalidParameterValue"})
            assert client.get("/v1/keypairs").get_json() == {"key_pairs": []}


def test_public_key_of_the_wrong_shape(client, expect_error, case):
    for public_key in ("", 42, None, ["ssh-ed25519 AAAA"], {"key": "x"}):
        with case(public_key):
            expect_error(client.post("/v1/keypairs", json={"name": "bad", "public_key": public_key}), 400,
                         "InvalidParameterValue")


@pytest.mark.parametrize("char", ["\x7f", "\x9b"], ids=["DEL", "CSI"])
def test_other_control_characters_in_the_comment_are_refused(client, keys, expect_error, char):
    line = f"{keys['ed25519b']} evil{char}[2Jcomment"
    expect_error(client.post("/v1/keypairs", json={"name": "bad", "public_key": line}), 400, "InvalidKey.Format")


# -- names -------------------------------------------------------------------------------

def test_duplicate_names(client, keys, expect_error):
    assert client.post("/v1/keypairs", json={"name": "dup"}).status_code == 201
    first = client.get("/v1/keypairs/dup").get_json()
    expect_error(client.post("/v1/keypairs", json={"name": "dup"}), 409, "InvalidKeyPair.Duplicate")
    expect_error(client.post("/v1/keypairs", json={"name": "dup", "public_key": keys["ed25519"]}), 409,
                 "InvalidKeyPair.Duplicate")
    assert client.get("/v1/keypairs").get_json() == {"key_pairs": [first]}  # the first one is untouched
    # import first, then create: also a duplicate
    assert client.post("/v1/keypairs", json={"name": "imp", "public_key": keys["ed25519"]}).status_code == 201
    expect_error(client.post("/v1/keypairs", json={"name": "imp"}), 409, "InvalidKeyPair.Duplicate")


def test_names_are_case_sensitive(client):
    assert client.post("/v1/keypairs", json={"name": "Key"}).status_code == 201
    assert client.post("/v1/keypairs", json={"name": "key"}).status_code == 201
    assert [k["name"] for k in client.get("/v1/keypairs").get_json()["key_pairs"]] == ["Key", "key"]


def test_good_names(client, case):
    for name in ("a", "A.b_c@d+e-f", "9lives", "x" * 255):
        with case(name):
            assert client.post("/v1/keypairs", json={"name": name}).status_code == 201
            assert client.get(f"/v1/keypairs/{name}").get_json()["name"] == name


def test_bad_names(client, expect_error, case):
    for name in ("", "-lead", ".lead", "_lead", "has space", "a/b", "a\\b", "x" * 256, "ünï", "semi;colon",
                 "a\x00b", "tab\tname", "\nlead", 123, None, ["a"]):
        with case(name):
            expect_error(client.post("/v1/keypairs", json={"name": name}), 400, "InvalidParameterValue")
            assert client.get("/v1/keypairs").get_json() == {"key_pairs": []}


def test_missing_name(client, expect_error):
    expect_error(client.post("/v1/keypairs", json={}), 400, "MissingParameter")


def test_unknown_field(client, expect_error):
    expect_error(client.post("/v1/keypairs", json={"name": "k", "private_key": "x"}), 400, "InvalidParameterValue")


def test_a_name_with_a_trailing_newline_is_refused(client, expect_error):
    expect_error(client.post("/v1/keypairs", json={"name": "evil\n"}), 400, "InvalidParameterValue")


# -- get, list, delete -------------------------------------------------------------------

def test_get_list_delete(client, keys, expect_error):
    for name in ("charlie", "alpha", "bravo"):
        assert client.post("/v1/keypairs", json={"name": name, "public_key": keys["ed25519"]}).status_code == 201
    names = [k["name"] for k in client.get("/v1/keypairs").get_json()["key_pairs"]]
    assert names == ["alpha", "bravo", "charlie"]

    response = client.delete("/v1/keypairs/bravo")
    assert response.status_code == 204
    assert response.get_data() == b""
    expect_error(client.get("/v1/keypairs/bravo"), 404, "InvalidKeyPair.NotFound")
    assert [k["name"] for k in client.get("/v1/keypairs").get_json()["key_pairs"]] == ["alpha", "charlie"]
    expect_error(client.delete("/v1/keypairs/bravo"), 404, "InvalidKeyPair.NotFound")
    # the name is free again
    assert client.post("/v1/keypairs", json={"name": "bravo"}).status_code == 201


def test_unknown_key_pair(client, expect_error):
    assert "nope" in expect_error(client.get("/v1/keypairs/nope"), 404, "InvalidKeyPair.NotFound")
    expect_error(client.delete("/v1/keypairs/nope"), 404, "InvalidKeyPair.NotFound")


def test_empty_list(client):
    assert client.get("/v1/keypairs").get_json() == {"key_pairs": []}


def test_created_at_is_utc(client):
    created = client.post("/v1/keypairs", json={"name": "t"}).get_json()
    assert created["created_at"].endswith("+00:00")


def test_deleting_a_key_pair_leaves_instances_with_it(client, launch, wait, expect_error, parse_ssh):
    created = client.post("/v1/keypairs", json={"name": "gone-soon"}).get_json()
    inst = launch(key_name="gone-soon")["instances"][0]
    wait()
    assert client.delete("/v1/keypairs/gone-soon").status_code == 204
    got = client.get(f"/v1/instances/{inst['id']}").get_json()
    assert got["key_name"] == "gone-soon"
    assert parse_ssh(got["ssh"]["command"])[0]["-i"] == "gone-soon.pem"
    assert created["fingerprint"]
    # and a new launch with that name fails
    expect_error(client.post("/v1/instances", json={"size": "t3.micro", "key_name": "gone-soon"}), 400,
                 "InvalidKeyPair.NotFound")
