"""Instances: RunInstances, DescribeInstances, DescribeInstanceStatus,
DescribeInstanceAttribute, Stop/Start/Reboot/TerminateInstances and GetConsoleOutput."""

from __future__ import annotations

import base64
import dataclasses

from computed.errors import (IdempotentParameterMismatch, InstanceLimitExceeded, InsufficientInstanceCapacity,
                             InvalidParameterValue)
from computed.compute.instances import InstanceFilter, LaunchRequest
from computed.compute.state import State

from . import render
from .catalog import image_name
from .context import action, caller, service
from .errors import InvalidParameterCombination
from .pages import matches
from .params import Params

INSTANCE_FILTERS = frozenset({"instance-id", "instance-state-name", "instance-state-code", "instance-type",
                              "image-id", "key-name", "tag-key", "availability-zone"})
STATUS_FILTERS = frozenset({"instance-id", "instance-state-name", "instance-state-code", "availability-zone"})
PAGE = 1000


# -- launch --------------------------------------------------------------------------------

@action("RunInstances")
def run_instances(p: Params) -> dict:
    image_id = p.string("ImageId")
    size = p.string("InstanceType", required=True)
    min_count = p.integer("MinCount", required=True)
    max_count = p.integer("MaxCount", required=True)
    key_name = p.string("KeyName")
    user_data = p.base64("UserData")
    tags = p.tag_specifications({"instance"}).get("instance", {})
    token = p.string("ClientToken")
    p.check_unknown()
    if min_count < 1:
        raise InvalidParameterValue(f"Invalid value {min_count} for MinCount: it must be at least 1")
    if max_count < min_count:
        raise InvalidParameterValue(f"MaxCount ({max_count}) must not be less than MinCount ({min_count})")
    svc, who = service(), caller()
    image = image_name(image_id) if image_id else svc.settings.default_image
    req = LaunchRequest(size=size, image=image, key_name=key_name, user_data=user_data or None, count=max_count,
                        tags=tags, client_token=token)
    if p.dry_run:  # what the core would look up first (it checks the rest as it launches)
        svc.sizes.get(size)
        if key_name is not None:
            svc.keypairs.get(who, key_name)
    p.finish()
    rows = _launch(req, min_count)
    return {"reservationId": rows[0].reservation_id, "ownerId": rows[0].owner, "groupSet": [],
            "instancesSet": [render.instance(v, who.admin) for v in svc.views.page(rows)]}


def _launch(req: LaunchRequest, min_count: int):
    """As EC2: MaxCount instances if there is room and the account's limits allow, else as
    many as they do, at least MinCount. The core launches exactly a count, so counts are
    tried from MaxCount down. A client token used before answers at the count it launched
    then."""
    svc, who = service(), caller()
    refused = mismatch = None
    for count in range(req.count, min_count - 1, -1):
        try:
            rows, _ = svc.instances.launch(who, dataclasses.replace(req, count=count))
            return rows
        except (InsufficientInstanceCapacity, InstanceLimitExceeded) as e:
            refused = e
        except IdempotentParameterMismatch as e:
            mismatch = e
    raise mismatch or refused


# -- describe ------------------------------------------------------------------------------

def _states(filters: dict) -> set[str] | None:
    states = set(filters["instance-state-name"]) if "instance-state-name" in filters else None
    if "instance-state-code" in filters:
        codes = set()
        for value in filters["instance-state-code"]:
            if not value.isdigit():
                raise InvalidParameterValue(f"Invalid value {value!r} for the filter 'instance-state-code': "
                                            "it must be a state code such as 16")
            codes.add(int(value) & 0xFF)  # EC2's codes are 16 bits; the high byte is internal
        named = {s.value for s in State if s.code in codes}
        states = named if states is None else states & named
    return states


def instance_filter(ids: list[str], filters: dict) -> InstanceFilter | None:
    """The core's filter for InstanceId.N and EC2 FILTERS (an ami id stands for an image
    name and version); None when nothing can match."""
    if "instance-id" in filters:
        wanted = filters["instance-id"]
        ids = [i for i in ids if i in wanted] if ids else list(wanted)
        if not ids:
            return None
    states = _states(filters)
    if states is not None and not states:
        return None
    if "availability-zone" in filters and not matches(render.availability_zone(), filters["availability-zone"]):
        return None
    images = ()
    if "image-id" in filters:
        images = tuple((i.name, i.manifest.version) for i in service().images.list()
                       if render.image_ami_id(i) in filters["image-id"])
        if not images:
            return None
    tags = tuple((name[4:], tuple(values)) for name, values in filters.items() if name.startswith("tag:"))
    return InstanceFilter(ids=tuple(ids), states=tuple(sorted(states or ())),
                          sizes=tuple(filters.get("instance-type", ())), images=images,
                          key_names=tuple(filters.get("key-name", ())), tags=tags,
                          tag_keys=tuple(filters.get("tag-key", ())))


def describe(ids: list[str], filters: dict, max_results: int | None, token: str | None):
    """(instances, next token) for DescribeInstances and DescribeInstanceStatus."""
    svc, who = service(), caller()
    flt = instance_filter(ids, filters)
    if flt is None:
        return [], None
    if max_results is not None:
        rows, token = svc.instances.describe(who, flt, max_results, token)
    else:  # EC2 answers everything when MaxResults is not given
        rows = []
        while True:
            batch, token = svc.instances.describe(who, flt, PAGE, token)
            rows += batch
            if token is None:
                break
    return rows, token


def _check_ids(ids: list[str]) -> None:
    """Every instance named exists and is the caller's (else Malformed / NotFound)."""
    svc, who = service(), caller()
    for instance_id in ids:
        svc.instances.get(who, instance_id)


def _describe_params(p: Params, allowed: frozenset) -> tuple[list[str], dict, int | None, str | None]:
    ids = p.strings("InstanceId")
    filters = p.filters(allowed, prefixes=("tag:",) if "tag-key" in allowed else ())
    max_results = p.integer("MaxResults", minimum=5, maximum=1000)
    token = p.string("NextToken")
    return ids, filters, max_results, token


@action("DescribeInstances")
def describe_instances(p: Params) -> dict:
    ids, filters, max_results, token = _describe_params(p, INSTANCE_FILTERS)
    p.check_unknown()
    if ids and max_results is not None:
        raise InvalidParameterCombination("The parameter instancesSet cannot be used with the parameter maxResults")
    _check_ids(ids)
    p.finish()
    rows, next_token = describe(ids, filters, max_results, token)
    return {"reservationSet": render.reservations(service().views.page(rows), caller().admin),
            "nextToken": next_token}


def _health(inst) -> tuple[dict, dict]:
    if inst.state != State.RUNNING:
        return {"status": "not-applicable"}, {"status": "not-applicable"}
    system = {"status": "ok", "details": [{"name": "reachability", "status": "passed"}]}
    reached = "passed" if inst.ready_ssh else "initializing"
    instance = {"status": "ok" if inst.ready_ssh else "initializing",
                "details": [{"name": "reachability", "status": reached}]}
    return system, instance


@action("DescribeInstanceStatus")
def describe_instance_status(p: Params) -> dict:
    ids, filters, max_results, token = _describe_params(p, STATUS_FILTERS)
    include_all = p.boolean("IncludeAllInstances")
    p.check_unknown()
    if ids and max_results is not None:
        raise InvalidParameterCombination("The parameter instancesSet cannot be used with the parameter maxResults")
    _check_ids(ids)
    p.finish()
    if not include_all:  # running instances only, unless asked
        names = filters.get("instance-state-name")
        filters = filters | {"instance-state-name": tuple(n for n in names if n == State.RUNNING)
                             if names is not None else (State.RUNNING.value,)}
        if not filters["instance-state-name"]:
            return {"instanceStatusSet": [], "nextToken": None}
    rows, next_token = describe(ids, filters, max_results, token)
    items = []
    for inst in rows:
        system, instance = _health(inst)
        items.append({"instanceId": inst.id, "availabilityZone": render.availability_zone(),
                      "instanceState": render.state(inst.state), "systemStatus": system,
                      "instanceStatus": instance, "eventsSet": []})
    return {"instanceStatusSet": items, "nextToken": next_token}


ATTRIBUTES = frozenset({"instanceType", "kernel", "ramdisk", "userData", "disableApiTermination",
                        "instanceInitiatedShutdownBehavior", "rootDeviceName", "blockDeviceMapping",
                        "productCodes", "sourceDestCheck", "groupSet", "ebsOptimized", "sriovNetSupport",
                        "enaSupport", "enclaveOptions", "disableApiStop"})
#: the attributes this service has, as EC2 writes them
SUPPORTED_ATTRIBUTES = {
    "instanceType": lambda inst: {"value": inst.size},
    "userData": lambda inst: {"value": base64.b64encode(inst.user_data).decode()} if inst.user_data else {},
    "disableApiTermination": lambda inst: {"value": False},  # no protection against either here
    "disableApiStop": lambda inst: {"value": False},
    "productCodes": lambda inst: [],
    "groupSet": lambda inst: [],
}


@action("DescribeInstanceAttribute")
def describe_instance_attribute(p: Params) -> dict:
    instance_id = p.string("InstanceId", required=True)
    attribute = p.string("Attribute", required=True)
    p.check_unknown()
    if attribute not in ATTRIBUTES:
        raise InvalidParameterValue(f"Invalid value {attribute!r} for Attribute")
    if attribute not in SUPPORTED_ATTRIBUTES:
        raise InvalidParameterValue(f"The attribute {attribute} is not supported by this service "
                                    f"({', '.join(SUPPORTED_ATTRIBUTES)})")
    inst = service().instances.get(caller(), instance_id)
    p.finish()
    return {"instanceId": inst.id, attribute: SUPPORTED_ATTRIBUTES[attribute](inst)}


# -- state changes -------------------------------------------------------------------------

def _change(p: Params, action: str) -> dict:
    ids = p.strings("InstanceId", required=True)
    p.check_unknown()
    _check_ids(ids)
    p.finish()
    changed = service().instances.change(caller(), action, ids)
    return {"instancesSet": [{"instanceId": inst.id, "currentState": render.state(inst.state),
                              "previousState": render.state(previous)} for inst, previous in changed]}


@action("StopInstances")
def stop_instances(p: Params) -> dict:
    return _change(p, "stop")


@action("StartInstances")
def start_instances(p: Params) -> dict:
    return _change(p, "start")


@action("TerminateInstances")
def terminate_instances(p: Params) -> dict:
    return _change(p, "terminate")


@action("RebootInstances")
def reboot_instances(p: Params) -> dict:
    ids = p.strings("InstanceId", required=True)
    p.check_unknown()
    _check_ids(ids)
    p.finish()
    svc, who = service(), caller()
    for instance_id in ids:
        svc.instances.reboot(who, instance_id)
    return {"return": True}


@action("GetConsoleOutput")
def get_console_output(p: Params) -> dict:
    instance_id = p.string("InstanceId", required=True)
    p.boolean("Latest")  # the output is always the latest
    p.check_unknown()
    svc, who = service(), caller()
    svc.instances.get(who, instance_id)
    p.finish()
    inst, output = svc.instances.console(who, instance_id)
    # first, as the service knows them: the serial console's own copy is the guest's word
    output = svc.views.of(inst).host_key_block + output
    return {"instanceId": inst.id, "timestamp": svc.clock.now(),
            "output": base64.b64encode(output.encode("utf-8", "replace")).decode()}
