"""The core's objects as EC2 describes them, and the ids EC2 shows for things the core
names otherwise (images are ``ami-...``, key pairs ``key-...``)."""

from __future__ import annotations

import hashlib
import ipaddress
import re

from computed.compute.state import USER_STOP, State
from computed.compute.view import InstanceView
from computed.store.models import Instance, KeyPair

from .context import settings

AMI_ID = re.compile(r"ami-[0-9a-f]{17}")
KEY_PAIR_ID = re.compile(r"key-[0-9a-f]{17}")
#: the system tag carrying the port that forwards SSH to the instance: listed, not editable
SSH_PORT_TAG = "computed:ssh-port"
ARCHITECTURES = {"amd64": "x86_64", "arm64": "arm64", "i386": "i386"}


def region() -> str:
    return settings().region


def availability_zone() -> str:
    return settings().availability_zone


def ami_id(name: str, version: str) -> str:
    """An image's EC2 id: the same for a name and version wherever it is asked."""
    return "ami-" + hashlib.sha256(f"{name}:{version}".encode()).hexdigest()[:17]


def image_ami_id(image) -> str:
    return ami_id(image.name, image.manifest.version)


def key_pair_id(kp: KeyPair) -> str:
    """A key pair's EC2 id: stable, and telling nothing of the store's row numbers."""
    if isinstance(kp.id, str) and KEY_PAIR_ID.fullmatch(kp.id):
        return kp.id
    return "key-" + hashlib.sha256(f"key-pair:{kp.id}".encode()).hexdigest()[:17]


def key_type(kp: KeyPair) -> str:
    kind = kp.key_type
    if kind == "ssh-ed25519":
        return "ed25519"
    if kind == "ssh-rsa":
        return "rsa"
    if kind.startswith("ecdsa-"):
        return "ecdsa"
    return kind


def state(name: str) -> dict:
    return {"code": State(name).code, "name": name}


def system_tags(view: InstanceView) -> list[tuple[str, str]]:
    """The instance's system tags: the port forwarded to its SSH, while it has one."""
    return [(SSH_PORT_TAG, str(view.ssh_endpoint[1]))] if view.ssh_endpoint else []


def _is_ip(host: str | None) -> bool:
    try:
        ipaddress.ip_address(host or "")
        return True
    except ValueError:
        return False


def _message(reason: tuple[str, str, str | None]) -> str:
    """A state reason's message, with a failure's detail where the caller may see it."""
    code, message, detail = reason
    return f"{message}: {detail}" if detail else message


def _transition_reason(inst: Instance, reason: tuple[str, str, str | None] | None) -> str:
    if reason is None:
        return ""
    when = inst.state_changed_at.strftime("%Y-%m-%d %H:%M:%S GMT")
    if reason[0] == USER_STOP.code:  # USER_TERMINATE's code too
        return f"User initiated ({when})"
    return f"{_message(reason) or reason[0]} ({when})"


def instance(view: InstanceView, admin: bool = False) -> dict:
    """The instance as EC2 shows it; a failure's detail to an ADMIN only."""
    inst = view.instance
    reason = view.state_reason(admin)
    host = view.ssh_endpoint[0] if view.ssh_endpoint else None
    tags = list(view.tags) + system_tags(view)
    return {
        "instanceId": inst.id,
        "imageId": ami_id(inst.image, inst.image_version),
        "instanceState": state(inst.state),
        "privateDnsName": host or "",
        "dnsName": host or "",
        "reason": _transition_reason(inst, reason),
        "keyName": inst.key_name,
        "amiLaunchIndex": inst.launch_index,
        "productCodes": [],
        "instanceType": inst.size,
        "launchTime": inst.launch_time,
        # hostId: EC2's dedicated host id; here the host the scheduler placed the instance on
        "placement": {"availabilityZone": view.availability_zone, "groupName": "", "hostId": inst.host,
                      "tenancy": "default"},
        "platformDetails": "Linux/UNIX",
        "monitoring": {"state": "disabled"},
        "ipAddress": host if _is_ip(host) else None,
        "groupSet": [],
        "stateReason": {"code": reason[0], "message": _message(reason)} if reason else None,
        "virtualizationType": "hvm",
        "clientToken": inst.client_token,
        "tagSet": [{"key": k, "value": v} for k, v in tags],
    }


def reservations(views: list[InstanceView], admin: bool = False) -> list[dict]:
    """Instances grouped by reservation, in the order they come."""
    groups: dict[str, dict] = {}
    for view in views:
        inst = view.instance
        group = groups.get(inst.reservation_id)
        if group is None:
            group = groups[inst.reservation_id] = {"reservationId": inst.reservation_id, "ownerId": inst.owner,
                                                   "groupSet": [], "instancesSet": []}
        group["instancesSet"].append(instance(view, admin))
    return list(groups.values())
