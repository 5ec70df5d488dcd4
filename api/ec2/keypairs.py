"""Key pairs: CreateKeyPair, ImportKeyPair, DescribeKeyPairs, DeleteKeyPair."""

from __future__ import annotations

from computed.errors import InvalidKeyFormat, InvalidKeyPairNotFound, InvalidParameterValue, MissingParameter

from . import render
from .context import action, caller, service
from .pages import matches
from .params import Params


@action("CreateKeyPair")
def create_key_pair(p: Params) -> dict:
    name = p.string("KeyName", required=True)
    p.choice("KeyType", {"ed25519"}, "ed25519")  # the core makes ed25519 keys (import an RSA one)
    p.choice("KeyFormat", {"pem"}, "pem")  # OpenSSH's format, as EC2 gives ed25519 keys
    p.finish()
    record, private_key = service().keypairs.create(caller(), name)
    return {"keyName": record.name, "keyFingerprint": record.fingerprint, "keyMaterial": private_key,
            "keyPairId": render.key_pair_id(record), "tagSet": []}


@action("ImportKeyPair")
def import_key_pair(p: Params) -> dict:
    name = p.string("KeyName", required=True)
    material = p.base64("PublicKeyMaterial", required=True)
    p.check_unknown()
    try:
        public_key = material.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidKeyFormat("PublicKeyMaterial must be the base64 of an OpenSSH public key line") from None
    p.finish()
    record = service().keypairs.import_key(caller(), name, public_key)
    return {"keyFingerprint": record.fingerprint, "keyName": record.name, "keyPairId": render.key_pair_id(record),
            "tagSet": []}


def _by_id(records, key_pair_id: str):
    for record in records:
        if render.key_pair_id(record) == key_pair_id:
            return record
    raise InvalidKeyPairNotFound(f"The key pair ID '{key_pair_id}' does not exist")


@action("DescribeKeyPairs")
def describe_key_pairs(p: Params) -> dict:
    names = p.strings("KeyName")
    ids = p.strings("KeyPairId")
    filters = p.filters({"key-name", "key-pair-id", "fingerprint", "key-type"})
    include_public_key = p.boolean("IncludePublicKey")
    p.check_unknown()
    svc, who = service(), caller()
    records = svc.keypairs.list(who)
    chosen = [svc.keypairs.get(who, n) for n in names]  # InvalidKeyPair.NotFound
    chosen += [_by_id(records, i) for i in ids]
    p.finish()
    if names or ids:
        records = list({r.id: r for r in chosen}.values())
    rows = []
    for r in records:
        row = {"keyPairId": render.key_pair_id(r), "keyType": render.key_type(r), "tagSet": [],
               "publicKey": r.public_key if include_public_key else None, "createTime": r.created_at,
               "keyName": r.name, "keyFingerprint": r.fingerprint}
        keys = {"key-name": "keyName", "key-pair-id": "keyPairId", "fingerprint": "keyFingerprint",
                "key-type": "keyType"}
        if all(matches(row[keys[n]], v) for n, v in filters.items()):
            rows.append(row)
    return {"keySet": rows}


@action("DeleteKeyPair")
def delete_key_pair(p: Params) -> dict:
    name = p.string("KeyName")
    key_pair_id = p.string("KeyPairId")
    p.check_unknown()
    if name is None and key_pair_id is None:
        raise MissingParameter("The request must contain the parameter KeyName or KeyPairId")
    svc, who = service(), caller()
    record = None
    if key_pair_id is not None:
        record = _by_id(svc.keypairs.list(who), key_pair_id)
        if name is not None and record.name != name:
            raise InvalidParameterValue(f"The key pair {key_pair_id} is not named {name!r}")
    elif name:
        record = svc.keypairs.find(who, name)
    p.finish()
    if record is not None:  # as EC2: deleting a key pair that is not there is no error
        try:
            svc.keypairs.delete(who, record.name)
        except InvalidKeyPairNotFound:  # deleted meanwhile
            pass
    return {"return": True, "keyPairId": render.key_pair_id(record) if record is not None else None}
