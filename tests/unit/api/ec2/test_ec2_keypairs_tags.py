"""Key pairs and tags through boto3 against a real server (SigV4, libvirt's test driver)."""

from __future__ import annotations

import datetime as dt
import re

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from .helpers import expect, ids, raw_error, tags

MISSING = "i-" + "0" * 17


def openssh_public_key(key) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)


# -- key pairs ---------------------------------------------------------------------------------

def test_create_key_pair(ec2, service):
    created = ec2.create_key_pair(KeyName="deploy")
    assert created["KeyName"] == "deploy"
    assert re.fullmatch(r"key-[0-9a-f]{17}", created["KeyPairId"])
    assert created["KeyFingerprint"].startswith("SHA256:")
    private = serialization.load_ssh_private_key(created["KeyMaterial"].encode(), password=None)
    record = service.keypairs.get(ec2.caller, "deploy")
    assert openssh_public_key(private).decode() == " ".join(record.public_key.split()[:2])
    assert record.fingerprint == created["KeyFingerprint"]
    assert ec2.create_key_pair(KeyName="typed", KeyType="ed25519", KeyFormat="pem")["KeyName"] == "typed"

    assert "deploy" in expect("InvalidKeyPair.Duplicate", 400, ec2.create_key_pair, KeyName="deploy")
    expect("InvalidParameterValue", 400, ec2.create_key_pair, KeyName="-starts-with-a-dash")
    expect("InvalidParameterValue", 400, ec2.create_key_pair, KeyName="rsa-one", KeyType="rsa")
    expect("InvalidParameterValue", 400, ec2.create_key_pair, KeyName="ppk-one", KeyFormat="ppk")
    expect("DryRunOperation", 412, ec2.create_key_pair, KeyName="dry", DryRun=True)
    expect("InvalidKeyPair.NotFound", 400, ec2.describe_key_pairs, KeyNames=["dry"])


def test_import_key_pair(ec2, service):
    ed_key = ed25519.Ed25519PrivateKey.generate()
    line = openssh_public_key(ed_key) + b" me@laptop"
    imported = ec2.import_key_pair(KeyName="laptop", PublicKeyMaterial=line)  # boto3 sends it base64 encoded
    record = service.keypairs.get(ec2.caller, "laptop")
    assert imported["KeyName"] == "laptop" and imported["KeyFingerprint"] == record.fingerprint
    assert re.fullmatch(r"key-[0-9a-f]{17}", imported["KeyPairId"])
    assert record.public_key == line.decode()
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec2.import_key_pair(KeyName="old-school", PublicKeyMaterial=openssh_public_key(rsa_key))

    expect("InvalidKeyPair.Duplicate", 400, ec2.import_key_pair, KeyName="laptop", PublicKeyMaterial=line)
    expect("InvalidKey.Format", 400, ec2.import_key_pair, KeyName="junk", PublicKeyMaterial=b"ssh-ed25519 AAAA")
    expect("InvalidKey.Format", 400, ec2.import_key_pair, KeyName="binary", PublicKeyMaterial=b"\xff\xfe\x00")
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    expect("InvalidKey.Format", 400, ec2.import_key_pair, KeyName="weak", PublicKeyMaterial=openssh_public_key(weak))
    expect("DryRunOperation", 412, ec2.import_key_pair, KeyName="dry", PublicKeyMaterial=line, DryRun=True)
    assert [k.name for k in service.keypairs.list(ec2.caller)] == ["laptop", "old-school"]


def test_import_key_pair_needs_base64(endpoint, ec2):
    params = {"Action": "ImportKeyPair", "Version": "2016-11-15", "KeyName": "raw",
              "PublicKeyMaterial": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA me"}
    assert "PublicKeyMaterial" in raw_error(endpoint.raw(ec2, params), 400, "InvalidParameterValue")
    del params["PublicKeyMaterial"]
    raw_error(endpoint.raw(ec2, params), 400, "MissingParameter")


def test_describe_key_pairs(ec2):
    before = dt.datetime.now(dt.UTC).replace(microsecond=0)
    deploy = ec2.create_key_pair(KeyName="deploy")
    ec2.import_key_pair(KeyName="laptop", PublicKeyMaterial=openssh_public_key(ed25519.Ed25519PrivateKey.generate()))
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec2.import_key_pair(KeyName="rsa", PublicKeyMaterial=openssh_public_key(rsa_key))

    listed = ec2.describe_key_pairs()["KeyPairs"]
    assert [k["KeyName"] for k in listed] == ["deploy", "laptop", "rsa"]
    first = listed[0]
    assert first["KeyPairId"] == deploy["KeyPairId"] and first["KeyFingerprint"] == deploy["KeyFingerprint"]
    assert first["KeyType"] == "ed25519" and listed[2]["KeyType"] == "rsa"
    assert before <= first["CreateTime"] <= dt.datetime.now(dt.UTC)
    assert "PublicKey" not in first and "KeyMaterial" not in first
    with_keys = ec2.describe_key_pairs(KeyNames=["laptop"], IncludePublicKey=True)["KeyPairs"]
    assert [k["KeyName"] for k in with_keys] == ["laptop"] and with_keys[0]["PublicKey"].startswith("ssh-ed25519 ")

    def names(**kwargs):
        return [k["KeyName"] for k in ec2.describe_key_pairs(**kwargs)["KeyPairs"]]

    assert names(KeyNames=["rsa", "deploy"]) == ["rsa", "deploy"]
    assert names(KeyPairIds=[deploy["KeyPairId"]]) == ["deploy"]
    assert names(Filters=[{"Name": "key-name", "Values": ["l*", "r?a"]}]) == ["laptop", "rsa"]
    assert names(Filters=[{"Name": "key-type", "Values": ["rsa"]}]) == ["rsa"]
    assert names(Filters=[{"Name": "fingerprint", "Values": [deploy["KeyFingerprint"]]}]) == ["deploy"]
    assert names(Filters=[{"Name": "key-pair-id", "Values": [deploy["KeyPairId"]]}]) == ["deploy"]
    assert "nobody" in expect("InvalidKeyPair.NotFound", 400, ec2.describe_key_pairs, KeyNames=["deploy", "nobody"])
    expect("InvalidKeyPair.NotFound", 400, ec2.describe_key_pairs, KeyPairIds=["key-" + "0" * 17])
    expect("InvalidParameterValue", 400, ec2.describe_key_pairs, Filters=[{"Name": "colour", "Values": ["x"]}])
    expect("DryRunOperation", 412, ec2.describe_key_pairs, DryRun=True)


def test_delete_key_pair(ec2, service):
    ec2.create_key_pair(KeyName="one")
    two = ec2.create_key_pair(KeyName="two")
    expect("DryRunOperation", 412, ec2.delete_key_pair, KeyName="one", DryRun=True)
    assert ec2.delete_key_pair(KeyName="one")["Return"] is True
    deleted = ec2.delete_key_pair(KeyPairId=two["KeyPairId"])
    assert deleted["Return"] is True and deleted["KeyPairId"] == two["KeyPairId"]
    assert ec2.describe_key_pairs()["KeyPairs"] == []
    assert ec2.delete_key_pair(KeyName="one")["Return"] is True  # as EC2: no error when it is not there
    expect("InvalidKeyPair.NotFound", 400, ec2.delete_key_pair, KeyPairId=two["KeyPairId"])
    expect("MissingParameter", 400, ec2.delete_key_pair)


def test_key_pairs_are_the_accounts_own(endpoint, ec2, ami):
    bob = endpoint.client("bob")
    mine = ec2.create_key_pair(KeyName="deploy")
    theirs = bob.create_key_pair(KeyName="deploy")  # names are per account, as on EC2
    assert mine["KeyPairId"] != theirs["KeyPairId"]
    ec2.create_key_pair(KeyName="private")
    assert [k["KeyName"] for k in bob.describe_key_pairs()["KeyPairs"]] == ["deploy"]
    expect("InvalidKeyPair.NotFound", 400, bob.describe_key_pairs, KeyNames=["private"])
    expect("InvalidKeyPair.NotFound", 400, bob.describe_key_pairs, KeyPairIds=[mine["KeyPairId"]])
    expect("InvalidKeyPair.NotFound", 400, bob.run_instances, ImageId=ami, InstanceType="t3.micro",
           MinCount=1, MaxCount=1, KeyName="private")
    bob.delete_key_pair(KeyName="private")  # no error, and nothing of alice's is touched
    assert [k["KeyName"] for k in ec2.describe_key_pairs()["KeyPairs"]] == ["deploy", "private"]


# -- tags ----------------------------------------------------------------------------------------

def launch(ec2, ami, count=1, **tagged) -> list[str]:
    specs = [{"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in tagged.items()]}] if tagged else []
    return ids(ec2.run_instances(ImageId=ami, InstanceType="t3.micro", MinCount=count, MaxCount=count,
                                 TagSpecifications=specs))


def user_tags(ec2, instance_id) -> dict[str, str]:
    inst = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    return {k: v for k, v in tags(inst).items() if not k.startswith("computed:")}


def test_create_and_delete_tags(ec2, service, ami):
    a, b = launch(ec2, ami, 2)
    assert ec2.create_tags(Resources=[a, b], Tags=[{"Key": "env", "Value": "prod"}, {"Key": "team", "Value": ""}])
    assert user_tags(ec2, a) == user_tags(ec2, b) == {"env": "prod", "team": ""}
    ec2.create_tags(Resources=[a], Tags=[{"Key": "env", "Value": "dev"}])  # overwrites
    assert user_tags(ec2, a) == {"env": "dev", "team": ""}

    ec2.delete_tags(Resources=[a, b], Tags=[{"Key": "env", "Value": "prod"}])  # only where the value is prod
    assert user_tags(ec2, a) == {"env": "dev", "team": ""} and user_tags(ec2, b) == {"team": ""}
    ec2.delete_tags(Resources=[a], Tags=[{"Key": "env"}])  # whatever the value
    assert user_tags(ec2, a) == {"team": ""}
    ec2.delete_tags(Resources=[a], Tags=[{"Key": "team", "Value": "x"}])
    assert user_tags(ec2, a) == {"team": ""}
    ec2.delete_tags(Resources=[a], Tags=[{"Key": "team", "Value": ""}])
    assert user_tags(ec2, a) == {}
    ec2.create_tags(Resources=[a], Tags=[{"Key": "x", "Value": "1"}, {"Key": "y", "Value": "2"}])
    ec2.delete_tags(Resources=[a])  # no Tag.N: every user tag goes; the system tag stays
    inst = ec2.describe_instances(InstanceIds=[a])["Reservations"][0]["Instances"][0]
    assert list(tags(inst)) == ["computed:ssh-port"]
    ec2.delete_tags(Resources=[a])  # nothing left to delete is no error


def test_tag_errors(endpoint, ec2, ami):
    a = launch(ec2, ami, Name="a")[0]
    for key in ("computed:ssh-port", "computed:anything", "aws:cloudformation:stack", "AWS:x"):
        expect("InvalidParameterValue", 400, ec2.create_tags, Resources=[a], Tags=[{"Key": key, "Value": "1"}])
        expect("InvalidParameterValue", 400, ec2.delete_tags, Resources=[a], Tags=[{"Key": key}])
    expect("InvalidParameterValue", 400, ec2.create_tags, Resources=[a], Tags=[{"Key": "k" * 129, "Value": "1"}])
    # all or nothing: an id that does not exist leaves the others untagged
    assert MISSING in expect("InvalidInstanceID.NotFound", 400, ec2.create_tags, Resources=[a, MISSING],
                             Tags=[{"Key": "env", "Value": "prod"}])
    assert user_tags(ec2, a) == {"Name": "a"}
    expect("InvalidInstanceID.NotFound", 400, ec2.delete_tags, Resources=[MISSING], Tags=[{"Key": "Name"}])
    expect("InvalidInstanceID.NotFound", 400, ec2.delete_tags, Resources=[MISSING])
    expect("InvalidInstanceID.Malformed", 400, ec2.create_tags, Resources=["vol-1"], Tags=[{"Key": "a", "Value": ""}])
    base = {"Action": "CreateTags", "Version": "2016-11-15"}
    assert "ResourceId.1" in raw_error(endpoint.raw(ec2, base | {"Tag.1.Key": "a"}), 400, "MissingParameter")
    assert "Tag.1.Key" in raw_error(endpoint.raw(ec2, base | {"ResourceId.1": a}), 400, "MissingParameter")
    expect("DryRunOperation", 412, ec2.create_tags, Resources=[a], Tags=[{"Key": "env", "Value": "x"}], DryRun=True)
    expect("DryRunOperation", 412, ec2.delete_tags, Resources=[a], Tags=[{"Key": "Name"}], DryRun=True)
    assert user_tags(ec2, a) == {"Name": "a"}


def test_tags_of_another_account(endpoint, ec2, ami):
    bob = endpoint.client("bob")
    theirs = launch(bob, ami, Name="bobs")[0]
    expect("InvalidInstanceID.NotFound", 400, ec2.create_tags, Resources=[theirs], Tags=[{"Key": "a", "Value": ""}])
    expect("InvalidInstanceID.NotFound", 400, ec2.delete_tags, Resources=[theirs], Tags=[{"Key": "Name"}])
    expect("InvalidInstanceID.NotFound", 400, ec2.delete_tags, Resources=[theirs])
    assert ec2.describe_tags()["Tags"] == []
    assert ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": [theirs]}])["Tags"] == []
    assert user_tags(bob, theirs) == {"Name": "bobs"}


def test_describe_tags(ec2, service, ami):
    a = launch(ec2, ami, Name="a", env="prod")[0]
    b = launch(ec2, ami, Name="b", env="dev")[0]
    port = {i: str(service.instances.get(ec2.caller, i).ssh_port) for i in (a, b)}

    def found(*filters, **kwargs):
        flt = [{"Name": name, "Values": list(values)} for name, *values in filters]
        return [(t["ResourceId"], t["Key"], t["Value"]) for t in ec2.describe_tags(Filters=flt, **kwargs)["Tags"]]

    every = sorted([(a, "Name", "a"), (a, "env", "prod"), (a, "computed:ssh-port", port[a]),
                    (b, "Name", "b"), (b, "env", "dev"), (b, "computed:ssh-port", port[b])])
    assert found() == every
    assert all(t["ResourceType"] == "instance" for t in ec2.describe_tags()["Tags"])
    assert found(("resource-id", a)) == [t for t in every if t[0] == a]
    assert found(("resource-id", MISSING, "not-an-id")) == []
    # ordered by resource id, then key
    assert found(("key", "env")) == sorted([(a, "env", "prod"), (b, "env", "dev")])
    assert found(("key", "env", "Name"), ("value", "a", "dev")) == sorted([(a, "Name", "a"), (b, "env", "dev")])
    assert found(("key", "computed:ssh-port"), ("resource-id", b)) == [(b, "computed:ssh-port", port[b])]
    assert found(("value", port[a])) == [(a, "computed:ssh-port", port[a])]
    assert found(("resource-type", "instance"), ("key", "Name")) == sorted([(a, "Name", "a"), (b, "Name", "b")])
    assert found(("resource-type", "volume")) == []

    page = ec2.describe_tags(MaxResults=5)
    assert len(page["Tags"]) == 5 and page["NextToken"]
    rest = ec2.describe_tags(MaxResults=5, NextToken=page["NextToken"])
    assert len(rest["Tags"]) == 1 and "NextToken" not in rest
    paged = [(t["ResourceId"], t["Key"], t["Value"])
             for p in ec2.get_paginator("describe_tags").paginate(PaginationConfig={"PageSize": 5}) for t in p["Tags"]]
    assert paged == every
    expect("InvalidParameterValue", 400, ec2.describe_tags, MaxResults=4)
    expect("InvalidParameterValue", 400, ec2.describe_tags, NextToken="garbage")
    expect("InvalidParameterValue", 400, ec2.describe_tags, Filters=[{"Name": "tag:Name", "Values": ["a"]}])
    expect("DryRunOperation", 412, ec2.describe_tags, DryRun=True)
