"""The store's tables (SQLAlchemy 2). Changes to them go through Alembic migrations in
``computed/migrations``; ``db.upgrade`` applies them."""

from __future__ import annotations

import datetime as dt
import json

from sqlalchemy import (Boolean, DateTime, ForeignKey, Integer, LargeBinary, MetaData, String, Text,
                        TypeDecorator, UniqueConstraint)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING = {"ix": "ix_%(column_0_label)s", "uq": "uq_%(table_name)s_%(column_0_name)s",
          "ck": "ck_%(table_name)s_%(constraint_name)s",
          "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s", "pk": "pk_%(table_name)s"}


#: the owner of what was made before accounts existed (an admin sees it)
DEFAULT_OWNER = "default"


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class UtcDateTime(TypeDecorator):
    """Aware UTC datetimes in and out, whatever the database keeps (SQLite keeps naive)."""
    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is not None:
            if value.tzinfo is None:
                raise ValueError("naive datetime given to a UTC column")
            value = value.astimezone(dt.UTC)
            if dialect.name == "sqlite":
                value = value.replace(tzinfo=None)
        return value

    def process_result_value(self, value, dialect):
        if value is not None:
            # SQLite's are naive UTC; PostgreSQL's come in the session's time zone
            value = value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)
        return value


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Account(Base):
    """Who owns instances, key pairs and usage. The id is 12 digits, as an AWS account id."""
    __tablename__ = "accounts"
    id: Mapped[str] = mapped_column(String(12), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
    access_keys: Mapped[list[AccessKey]] = relationship(back_populates="account", cascade="all, delete-orphan",
                                                        lazy="selectin")


class AccessKey(Base):
    """An account's credentials: the access key id, and the secret sealed with the service's
    own key (``secret_box``), since verifying a SigV4 signature needs the secret itself. An
    account has at most two (``access_keys.MAX_PER_ACCOUNT``, checked by the code), so that
    it can rotate: make the second, move its clients, deactivate and delete the first."""
    __tablename__ = "access_keys"
    id: Mapped[str] = mapped_column(String(20), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    sealed_secret: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
    #: Active or Inactive (IAM's words): an inactive key authenticates nothing until reactivated
    status: Mapped[str] = mapped_column(String(8), default="Active", server_default="Active")
    #: when the key last authenticated a request, to the minute (``access_keys.USE_RESOLUTION``),
    #: and through what: rest, ec2 or console
    last_used_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    last_used_service: Mapped[str | None] = mapped_column(String(16))
    account: Mapped[Account] = relationship(back_populates="access_keys", lazy="joined")


class ConsoleSession(Base):
    """A web console login (``console_sessions``): its cookie names the row, which logging
    out deletes, so a copy of the cookie ends with it. Rows past ``expires_at`` are deleted
    at the next login; the access key's deletion or deactivation deletes its sessions."""
    __tablename__ = "console_sessions"
    #: random (128 bits, hex); only the signed cookie carries it
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    access_key_id: Mapped[str] = mapped_column(ForeignKey("access_keys.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, index=True)


class Budget(Base):
    """An account's monthly budget (``budgets``): an amount in the price catalog's currency
    and what happens when this month's spend reaches it: ``notify`` (an event) or ``stop``
    (also its running instances stopped, and launches and starts refused)."""
    __tablename__ = "budgets"
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True)
    #: a decimal, as text (never float)
    amount: Mapped[str] = mapped_column(String(32))
    currency: Mapped[str] = mapped_column(String(3))
    action: Mapped[str] = mapped_column(String(8))
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)


class BudgetEvent(Base):
    """A budget's threshold (80 or 100 percent) reached in a calendar month (UTC): once per
    account, month and threshold, whichever service process saw it first."""
    __tablename__ = "budget_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    #: YYYY-MM
    month: Mapped[str] = mapped_column(String(7))
    threshold: Mapped[int] = mapped_column(Integer)
    #: the budget and the month's spend when it was recorded (decimals, as text)
    amount: Mapped[str] = mapped_column(String(32))
    currency: Mapped[str] = mapped_column(String(3))
    spend: Mapped[str] = mapped_column(String(32))
    at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    #: a JSON list of the instance ids the budget's stop action stopped; NULL if it did not run
    instances_stopped: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (UniqueConstraint("account_id", "month", "threshold",
                                       name="uq_budget_events_account_month_threshold"),)


class KeyPair(Base):
    __tablename__ = "key_pairs"
    id: Mapped[int] = mapped_column(primary_key=True)
    owner: Mapped[str] = mapped_column(String(64), index=True, server_default=DEFAULT_OWNER)
    name: Mapped[str] = mapped_column(String(255))
    key_type: Mapped[str] = mapped_column(String(40))
    public_key: Mapped[str] = mapped_column(Text)
    fingerprint: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)

    __table_args__ = (UniqueConstraint("owner", "name", name="uq_key_pairs_owner_name"),)


class Host(Base):
    """A libvirt host instances run on. Its capacity is what libvirt last said (getInfo);
    what is allocated there is summed from its instances, in the transaction that places."""
    __tablename__ = "hosts"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    uri: Mapped[str] = mapped_column(String(255), unique=True)
    #: where the instances' forwarded SSH ports are reached (their SSH endpoint's host)
    address: Mapped[str] = mapped_column(String(255))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    #: shared: the host sees the image library's paths; copy: images are copied to it (libvirt storage)
    image_mode: Mapped[str] = mapped_column(String(16), default="shared")
    #: copy mode: the directory on the host that keeps the copied images and the instances' files
    storage_dir: Mapped[str | None] = mapped_column(Text)
    vcpus: Mapped[int | None] = mapped_column(Integer)
    memory_mib: Mapped[int | None] = mapped_column(Integer)
    reachable: Mapped[bool] = mapped_column(Boolean, default=False)
    checked_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)


class ManagementKey(Base):
    """One of a host's management keys (``computed.virt.management_key``): the SSH key the
    service checks that host's guests with. Only the public half is here; the private half
    is a 0600 file under the state directory, named after the id. A host's newest key that
    is not retired goes into new guests; a retired one stays until no instance that is not
    terminated has it, then row and file go."""
    __tablename__ = "management_keys"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    host: Mapped[str] = mapped_column(String(64), index=True)
    public_key: Mapped[str] = mapped_column(Text)
    fingerprint: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
    retired_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)


class HostImage(Base):
    """An image build copied to a copy-mode host and verified there (sha256 of what the
    host holds, read back through libvirt)."""
    __tablename__ = "host_images"
    host: Mapped[str] = mapped_column(ForeignKey("hosts.name", ondelete="CASCADE"), primary_key=True)
    #: the build's disk checksum, as its manifest gives it: one copy per build, whatever its name
    disk_sha256: Mapped[str] = mapped_column(String(80), primary_key=True)
    image: Mapped[str] = mapped_column(String(64))
    image_version: Mapped[str] = mapped_column(String(32))
    verified_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)


class ServiceProcess(Base):
    """A service process using the store, alive while its heartbeat is fresh (``processes``)."""
    __tablename__ = "service_processes"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    hostname: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    heartbeat_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, index=True)


class Instance(Base):
    __tablename__ = "instances"
    id: Mapped[str] = mapped_column(String(19), primary_key=True)
    reservation_id: Mapped[str] = mapped_column(String(19), index=True)
    owner: Mapped[str] = mapped_column(String(64), index=True, server_default=DEFAULT_OWNER)
    launch_index: Mapped[int] = mapped_column(Integer, default=0)
    state: Mapped[str] = mapped_column(String(16), index=True)
    state_reason_code: Mapped[str | None] = mapped_column(String(64))
    state_reason_message: Mapped[str | None] = mapped_column(Text)
    #: what failed, in the failure's own words (host paths, libvirt's errors): admins only see it
    state_reason_detail: Mapped[str | None] = mapped_column(Text)
    state_changed_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
    # the size as it was at launch: a later catalog change does not alter an instance
    size: Mapped[str] = mapped_column(String(64), index=True)
    vcpus: Mapped[int] = mapped_column(Integer)
    memory_mib: Mapped[int] = mapped_column(Integer)
    disk_gib: Mapped[int] = mapped_column(Integer)
    price_per_hour: Mapped[str] = mapped_column(String(32))
    currency: Mapped[str] = mapped_column(String(3))
    image: Mapped[str] = mapped_column(String(64), index=True)
    image_version: Mapped[str] = mapped_column(String(32))
    #: the image build directory the instance's disk is layered on
    image_path: Mapped[str] = mapped_column(Text)
    key_name: Mapped[str | None] = mapped_column(String(255), index=True)
    #: the key pair's public key at launch (the key pair may be deleted later, as on EC2)
    public_key: Mapped[str | None] = mapped_column(Text)
    user_data: Mapped[bytes | None] = mapped_column(LargeBinary)
    client_token: Mapped[str | None] = mapped_column(String(64), index=True)
    request_hash: Mapped[str | None] = mapped_column(String(64))
    #: the host the scheduler placed it on (it stays there through stop and start)
    host: Mapped[str | None] = mapped_column(String(64), index=True)
    host_uri: Mapped[str] = mapped_column(String(255))
    domain_name: Mapped[str] = mapped_column(String(64))
    ssh_host: Mapped[str | None] = mapped_column(String(255))
    ssh_port: Mapped[int | None] = mapped_column(Integer)
    #: the public half of the SSH host key the service made for the guest and put in its seed
    #: (OpenSSH line); the private half was never stored. NULL: launched before that, the
    #: first key the service saw is recorded here
    ssh_host_key: Mapped[str | None] = mapped_column(Text)
    #: the management key in its seed (``management_keys``); NULL: the one key of before 0010
    management_key_id: Mapped[str | None] = mapped_column(String(32), index=True)
    #: the service process that made the last change and carries out what follows (``processes``)
    handled_by: Mapped[str | None] = mapped_column(String(32))
    ready_ssh: Mapped[bool] = mapped_column(Boolean, default=False)
    ready_engine: Mapped[bool] = mapped_column(Boolean, default=False)
    launch_time: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
    terminated_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, index=True)
    tags: Mapped[list[Tag]] = relationship(back_populates="instance", cascade="all, delete-orphan",
                                           lazy="selectin", order_by="Tag.key")
    #: guest ports forwarded from its host's address, besides SSH (released at terminate)
    ports: Mapped[list[PortForward]] = relationship(back_populates="instance", cascade="all, delete-orphan",
                                                    lazy="selectin", order_by="PortForward.host_port")

    __table_args__ = (UniqueConstraint("host_uri", "ssh_host", "ssh_port", name="uq_instances_ssh_endpoint"),
                      # a client token names one request: its instances, one per launch index
                      UniqueConstraint("owner", "client_token", "launch_index", name="uq_instances_client_token"))


class UsageEvent(Base):
    """Append-only: one row per state change of an instance, written in the transaction of
    the change, carrying what billing needs as it was then (a later change of the price
    catalog never rewrites past usage). ``id`` is the monotonic sequence number."""
    __tablename__ = "usage_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    instance_id: Mapped[str] = mapped_column(String(19), index=True)  # outlives the instance row
    owner: Mapped[str] = mapped_column(String(64), index=True)
    size: Mapped[str] = mapped_column(String(64))
    image: Mapped[str] = mapped_column(String(64))
    price_per_hour: Mapped[str] = mapped_column(String(32))
    currency: Mapped[str] = mapped_column(String(3))
    state: Mapped[str] = mapped_column(String(16))
    at: Mapped[dt.datetime] = mapped_column(UtcDateTime, index=True)
    #: the instance's tags then, as a JSON object (reports group by them after a purge too)
    tags: Mapped[str] = mapped_column(Text, default="{}")

    @classmethod
    def of(cls, inst: Instance) -> UsageEvent:
        return cls(instance_id=inst.id, owner=inst.owner, size=inst.size, image=inst.image,
                   price_per_hour=inst.price_per_hour, currency=inst.currency, state=inst.state,
                   at=inst.state_changed_at,
                   tags=json.dumps({t.key: t.value for t in inst.tags}, sort_keys=True))


class Tag(Base):
    __tablename__ = "tags"
    instance_id: Mapped[str] = mapped_column(ForeignKey("instances.id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    value: Mapped[str] = mapped_column(String(256), default="")
    instance: Mapped[Instance] = relationship(back_populates="tags")


class PortForward(Base):
    """A guest TCP port reached through a port of the instance's host address (QEMU's
    user-mode networking forwards it, as it does SSH). A host port is one instance's at a
    time on its address; the row goes when the instance is terminated."""
    __tablename__ = "port_forwards"
    instance_id: Mapped[str] = mapped_column(ForeignKey("instances.id", ondelete="CASCADE"), primary_key=True)
    host_port: Mapped[int] = mapped_column(Integer, primary_key=True)
    host_address: Mapped[str] = mapped_column(String(255))
    guest_port: Mapped[int] = mapped_column(Integer)
    protocol: Mapped[str] = mapped_column(String(3), default="tcp")
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
    instance: Mapped[Instance] = relationship(back_populates="ports")

    __table_args__ = (UniqueConstraint("host_address", "host_port", "protocol", name="uq_port_forwards_host_port"),
                      UniqueConstraint("instance_id", "guest_port", "protocol", name="uq_port_forwards_guest_port"))
