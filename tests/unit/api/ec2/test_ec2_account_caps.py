"""Issue 17, finding 9: an account's key pairs are capped (account_max_key_pairs), through
EC2's CreateKeyPair and ImportKeyPair too, with EC2's KeyPairLimitExceeded."""

from __future__ import annotations

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from .helpers import expect


def public_key() -> bytes:
    return ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)


def test_key_pairs_per_account(serve):
    endpoint = serve(account_max_key_pairs=2)
    alice, bob = endpoint.client("alice"), endpoint.client("bob")
    alice.create_key_pair(KeyName="one")
    alice.import_key_pair(KeyName="two", PublicKeyMaterial=public_key())
    message = expect("KeyPairLimitExceeded", 400, alice.create_key_pair, KeyName="three")
    assert "limit is 2 key pairs" in message
    expect("KeyPairLimitExceeded", 400, alice.import_key_pair, KeyName="three", PublicKeyMaterial=public_key())
    assert sorted(k["KeyName"] for k in alice.describe_key_pairs()["KeyPairs"]) == ["one", "two"]
    bob.create_key_pair(KeyName="one")  # bob's own limit
    alice.delete_key_pair(KeyName="one")
    assert alice.create_key_pair(KeyName="three")["KeyName"] == "three"
