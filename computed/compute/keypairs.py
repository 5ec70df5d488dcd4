"""Key pairs: created here (the private key is handed out once and never kept) or imported
from a public key. Only the public key and its fingerprint are stored."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_ssh_public_key
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from computed.virt import ssh
from computed.accounts.registry import Caller
from computed.store.engine import Database
from computed.errors import (InvalidKeyFormat, InvalidKeyPairDuplicate, InvalidParameterValue, KeyPairLimitExceeded,
                             KeyPairNotFound)
from computed.store.models import KeyPair

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,254}")
MIN_RSA_BITS = 2048
MAX_PUBLIC_KEY = 16384


@dataclass(frozen=True)
class ParsedKey:
    key_type: str
    public_key: str  # "TYPE BASE64 [comment]", one line
    fingerprint: str


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise InvalidParameterValue(
            "a key pair name is 1 to 255 characters: letters, digits and . _ @ + - (not first)")
    return name


def parse_public_key(text: str) -> ParsedKey:
    """An OpenSSH public key line: ed25519, ECDSA, or RSA of at least 2048 bits."""
    if not isinstance(text, str) or len(text) > MAX_PUBLIC_KEY:
        raise InvalidKeyFormat("the public key must be one OpenSSH public key line")
    line = text.strip()
    if "\n" in line or "\r" in line:
        raise InvalidKeyFormat("the public key must be a single line")
    parts = line.split(None, 2)
    if len(parts) < 2:
        raise InvalidKeyFormat("the public key must look like 'ssh-ed25519 AAAA... comment'")
    try:
        key = load_ssh_public_key(" ".join(parts[:2]).encode())
    except (ValueError, UnsupportedAlgorithm):
        raise InvalidKeyFormat("the public key is not a valid OpenSSH public key") from None
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < MIN_RSA_BITS:
        raise InvalidKeyFormat(f"RSA keys must have at least {MIN_RSA_BITS} bits")
    if not isinstance(key, (rsa.RSAPublicKey, ed25519.Ed25519PublicKey, ec.EllipticCurvePublicKey)):
        raise InvalidKeyFormat("supported key types: ssh-ed25519, ecdsa-sha2-nistp256/384/521, ssh-rsa")
    comment = parts[2] if len(parts) == 3 else ""
    if any(unicodedata.category(c) in ("Cc", "Zl", "Zp") for c in comment):
        raise InvalidKeyFormat("the key's comment contains control characters")
    normalized = " ".join(p for p in (parts[0], parts[1], comment) if p)
    return ParsedKey(parts[0], normalized, ssh.fingerprint(normalized))


class KeyPairs:
    """Each account's own key pairs (names are unique per account, as on EC2; an admin too
    has only its own)."""

    def __init__(self, db: Database, max_per_account: int | None = None):
        self.db = db
        #: key pairs one account may have (the setting account_max_key_pairs; None: no limit)
        self.max_per_account = max_per_account

    def create(self, caller: Caller, name: str) -> tuple[KeyPair, str]:
        """A new ed25519 key pair; returns the record and the private key (OpenSSH format),
        which is not kept anywhere."""
        check_name(name)
        generated = ssh.generate_keypair(comment=name)
        record = self._insert(caller, name, ParsedKey("ssh-ed25519", generated.public_openssh, generated.fingerprint))
        return record, generated.private_openssh

    def import_key(self, caller: Caller, name: str, public_key: str) -> KeyPair:
        check_name(name)
        return self._insert(caller, name, parse_public_key(public_key))

    def _insert(self, caller: Caller, name: str, parsed: ParsedKey) -> KeyPair:
        try:
            with self.db.session() as s:
                if self._find(s, caller, name) is not None:
                    raise InvalidKeyPairDuplicate(f"the key pair {name!r} already exists")
                # counted in the transaction that inserts (writers run one at a time): exact under concurrency
                limit = self.max_per_account
                if limit is not None and s.scalar(select(func.count()).select_from(KeyPair).where(
                        KeyPair.owner == caller.account_id)) >= limit:
                    raise KeyPairLimitExceeded(f"the account's limit is {limit} key pairs; delete one first")
                record = KeyPair(owner=caller.account_id, name=name, key_type=parsed.key_type,
                                 public_key=parsed.public_key, fingerprint=parsed.fingerprint)
                s.add(record)
        except IntegrityError:
            raise InvalidKeyPairDuplicate(f"the key pair {name!r} already exists") from None
        return record

    @staticmethod
    def _find(s, caller: Caller, name: str) -> KeyPair | None:
        return s.scalar(select(KeyPair).where(KeyPair.owner == caller.account_id, KeyPair.name == name))

    def list(self, caller: Caller) -> list[KeyPair]:
        with self.db.reading() as s:
            return list(s.scalars(select(KeyPair).where(KeyPair.owner == caller.account_id).order_by(KeyPair.name)))

    def find(self, caller: Caller, name: str) -> KeyPair | None:
        with self.db.reading() as s:
            return self._find(s, caller, name)

    def get(self, caller: Caller, name: str) -> KeyPair:
        record = self.find(caller, name)
        if record is None:
            raise KeyPairNotFound(f"the key pair {name!r} does not exist")
        return record

    def delete(self, caller: Caller, name: str) -> None:
        with self.db.session() as s:
            record = self._find(s, caller, name)
            if record is None:
                raise KeyPairNotFound(f"the key pair {name!r} does not exist")
            s.delete(record)
