"""Accounts and their credentials. Every instance, key pair and usage event belongs to an
account; a caller sees and acts on its own only, except an admin, who sees everything.

An access key is an id (``AKCD`` and 16 characters, shaped like AWS's) and a secret; the
secret is shown once, when the account is made, and kept sealed (``secret_box``) because
verifying a SigV4 signature needs it. The first ``computed serve`` on an empty store makes
an admin account and writes its credentials to a file only its owner can read."""

from __future__ import annotations

import json
import os
import re
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from computed.store.engine import Database
from computed.errors import InvalidParameterValue, UnauthorizedOperation
from computed.store.models import AccessKey, Account
from .secret_box import SecretBox

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}")
#: under the state directory: the key that seals secrets, and the first admin's credentials
KEY_FILE = Path("secrets") / "access-keys.key"
ADMIN_CREDENTIALS_FILE = Path("admin-credentials.json")
KEY_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
BOOTSTRAP_NAME = "admin"


@dataclass(frozen=True)
class Caller:
    """Who a request comes from, once authenticated."""
    account_id: str
    name: str
    admin: bool = False

    @property
    def scope(self) -> str | None:
        """The owner whose resources this caller sees; None for all (an admin)."""
        return None if self.admin else self.account_id

    def sees(self, owner: str) -> bool:
        return self.admin or owner == self.account_id


def require_admin(caller: Caller, action: str) -> None:
    """UnauthorizedOperation (403) unless CALLER is an admin; ACTION says what was refused
    ("manage hosts")."""
    if not caller.admin:
        raise UnauthorizedOperation(f"only an admin account may {action}; the account {caller.name} is not one")


@dataclass(frozen=True)
class Credentials:
    account_id: str
    name: str
    admin: bool
    access_key_id: str
    secret_access_key: str

    @property
    def caller(self) -> Caller:
        return Caller(self.account_id, self.name, self.admin)

    def to_dict(self) -> dict:
        return asdict(self)


def _access_key_id() -> str:
    return "AKCD" + "".join(secrets.choice(KEY_ALPHABET) for _ in range(16))


def _account_id() -> str:
    return str(secrets.randbelow(9 * 10**11) + 10**11)  # 12 digits, no leading zero


class Accounts:
    def __init__(self, db: Database, box: SecretBox):
        self.db = db
        self.box = box

    def create(self, name: str, admin: bool = False) -> Credentials:
        """A new account with one access key; the secret is in the result and nowhere else
        in the clear."""
        if not isinstance(name, str) or not NAME.fullmatch(name):
            raise InvalidParameterValue("an account name is 1 to 64 characters: letters, digits and . _ @ + - "
                                        "(not first)")
        secret = secrets.token_urlsafe(30)  # 40 characters, 240 bits
        key_id = _access_key_id()
        try:
            with self.db.session() as s:
                if s.scalar(select(Account.id).where(Account.name == name)) is not None:
                    raise InvalidParameterValue(f"the account {name!r} already exists")
                account_id = _account_id()
                while s.get(Account, account_id) is not None:
                    account_id = _account_id()
                s.add(Account(id=account_id, name=name, admin=admin,
                              access_keys=[AccessKey(id=key_id, sealed_secret=self.box.seal(secret))]))
        except IntegrityError:
            raise InvalidParameterValue(f"the account {name!r} already exists") from None
        return Credentials(account_id, name, admin, key_id, secret)

    def list(self) -> list[Account]:
        with self.db.reading() as s:
            return list(s.scalars(select(Account).order_by(Account.created_at, Account.name)))

    def count(self) -> int:
        with self.db.reading() as s:
            return s.scalar(select(func.count()).select_from(Account))

    def lookup(self, access_key_id: str) -> tuple[Caller, str] | None:
        """The caller an access key id stands for and its secret, or None if unknown."""
        if not isinstance(access_key_id, str) or len(access_key_id) != 20:
            return None
        with self.db.reading() as s:
            key = s.get(AccessKey, access_key_id)
            if key is None:
                return None
            caller = Caller(key.account.id, key.account.name, key.account.admin)
            sealed = key.sealed_secret
        secret = self.box.open(sealed)
        return None if secret is None else (caller, secret)

    def bootstrap(self, path: Path) -> Credentials | None:
        """On a store without accounts: an admin account, its credentials written to PATH
        (mode 0600). None if there are accounts already."""
        if self.count():
            return None
        try:
            creds = self.create(BOOTSTRAP_NAME, admin=True)
        except InvalidParameterValue:  # another process made it meanwhile
            return None
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_name(f".{path.name}.{os.getpid()}")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(creds.to_dict(), f, indent=2)
            f.write("\n")
        os.replace(temp, path)
        return creds
