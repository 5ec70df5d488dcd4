"""Accounts and their credentials. Every instance, key pair and usage event belongs to an
account; a caller sees and acts on its own only, except an admin, who sees everything.

An access key is an id (``AKCD`` and 16 characters, shaped like AWS's) and a secret; the
secret is shown once, when the key is made, and kept sealed (``secret_box``) because
verifying a SigV4 signature needs it. An account has one or two keys, each Active or
Inactive (``access_keys``: made, deactivated, deleted there). The first ``computed serve``
on an empty store makes an admin account and writes its credentials to a file only its
owner can read (``write_credentials_file``, which rotating that key uses too)."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import secrets
from dataclasses import asdict, dataclass, field
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from computed.store.engine import Database
from computed.errors import AccountNotFound, InvalidParameterValue, UnauthorizedOperation
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
    #: the access key the request authenticated with (None when not from a request)
    access_key_id: str | None = field(default=None, compare=False)

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


#: an account id: 12 digits (as AWS's)
ACCOUNT_ID = re.compile(r"[0-9]{12}")


def shown(text: object) -> str:
    """TEXT as an error message may quote it: short, printable."""
    text = str(text)
    return repr(text[:40]) + ("..." if len(text) > 40 else "")


def addressed_account(s: Session, caller: Caller, account_id: str | None, action: str) -> Account:
    """The account a caller addresses: its own, or (admins only, to do ACTION: 403
    otherwise) another; AccountNotFound for an id that names none."""
    if account_id is not None and account_id != caller.account_id:
        require_admin(caller, action)
        if not isinstance(account_id, str) or not ACCOUNT_ID.fullmatch(account_id):
            raise AccountNotFound(f"the account {shown(account_id)} does not exist (an account id is 12 digits)")
    account = s.get(Account, account_id or caller.account_id)
    if account is None:
        raise AccountNotFound(f"the account {shown(account_id or caller.account_id)} does not exist")
    return account


@dataclass(frozen=True)
class Credentials:
    account_id: str
    name: str
    admin: bool
    access_key_id: str
    secret_access_key: str

    @property
    def caller(self) -> Caller:
        return Caller(self.account_id, self.name, self.admin, access_key_id=self.access_key_id)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class KeyLookup:
    """What authenticating with an access key needs: who it stands for, its secret, and
    when it was last recorded as used (``AccessKeys.record_use``)."""
    caller: Caller
    secret: str
    last_used_at: dt.datetime | None


def new_access_key_id() -> str:
    return "AKCD" + "".join(secrets.choice(KEY_ALPHABET) for _ in range(16))


def new_secret() -> str:
    return secrets.token_urlsafe(30)  # 40 characters, 240 bits


def write_credentials_file(path: Path, creds: Credentials) -> None:
    """CREDS as JSON in PATH, readable by its owner only (0600 from the start), replacing
    what was there at once (a reader sees the old file or the new one, never half)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # an older temp file of this pid keeps its mode through O_CREAT
        with os.fdopen(fd, "w") as f:
            json.dump(creds.to_dict(), f, indent=2)
            f.write("\n")
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


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
        secret = new_secret()
        key_id = new_access_key_id()
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

    def find(self, access_key_id: str) -> KeyLookup | None:
        """The caller an active access key stands for, its secret and last use; None if the
        key is unknown, deleted or inactive. Read from the store at every call (one row by
        its primary key, with its account): nothing is cached, so a key deleted or
        deactivated by any process of the service fails in every one at its next request."""
        if not isinstance(access_key_id, str) or len(access_key_id) != 20:
            return None
        with self.db.reading() as s:
            key = s.get(AccessKey, access_key_id)
            if key is None or key.status != "Active":
                return None
            caller = Caller(key.account.id, key.account.name, key.account.admin, access_key_id=key.id)
            sealed, last_used_at = key.sealed_secret, key.last_used_at
        secret = self.box.open(sealed)
        return None if secret is None else KeyLookup(caller, secret, last_used_at)

    def lookup(self, access_key_id: str) -> tuple[Caller, str] | None:
        """(caller, secret) of an active access key, or None (``find``)."""
        found = self.find(access_key_id)
        return None if found is None else (found.caller, found.secret)

    def bootstrap(self, path: Path) -> Credentials | None:
        """On a store without accounts: an admin account, its credentials written to PATH
        (mode 0600). None if there are accounts already."""
        if self.count():
            return None
        try:
            creds = self.create(BOOTSTRAP_NAME, admin=True)
        except InvalidParameterValue:  # another process made it meanwhile
            return None
        write_credentials_file(path, creds)
        return creds
