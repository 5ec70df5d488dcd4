"""What can be launched and where: DescribeInstanceTypes (the size catalog),
DescribeImages (the image library, as ``ami-`` ids), DescribeRegions and
DescribeAvailabilityZones (one of each, from the settings)."""

from __future__ import annotations

import datetime as dt

from flask import request

from computed.errors import InvalidImageNotFound, InvalidParameterValue

from . import render
from .context import action, service
from .errors import InvalidAMIIDMalformed
from .pages import matches, page
from .params import Params

OPT_IN = "opt-in-not-required"
#: who owns every image (DescribeImages' Owner.N)
OWNER_ALIAS = "computed"


# -- instance types ------------------------------------------------------------------------

def _instance_type(size) -> dict:
    return {
        "instanceType": size.name,
        "currentGeneration": True,
        "supportedUsageClasses": ["on-demand"],
        "supportedVirtualizationTypes": ["hvm"],
        "bareMetal": False,
        "vCpuInfo": {"defaultVCpus": size.vcpus},
        "memoryInfo": {"sizeInMiB": size.memory_mib},
    }


@action("DescribeInstanceTypes")
def describe_instance_types(p: Params) -> dict:
    names = p.strings("InstanceType")
    filters = p.filters({"instance-type", "vcpu-info.default-vcpus", "memory-info.size-in-mib",
                         "current-generation"})
    max_results = p.integer("MaxResults", minimum=5, maximum=100)
    token = p.string("NextToken")
    p.check_unknown()
    sizes = service().sizes
    chosen = [sizes.get(n) for n in names] if names else sizes.all()  # InvalidInstanceType
    p.finish()
    chosen = [s for s in chosen
              if matches(s.name, filters.get("instance-type"))
              and matches(s.vcpus, filters.get("vcpu-info.default-vcpus"))
              and matches(s.memory_mib, filters.get("memory-info.size-in-mib"))
              and matches(True, filters.get("current-generation"))]
    rows, next_token = page(chosen, max_results, token)
    return {"instanceTypeSet": [_instance_type(s) for s in rows], "nextToken": next_token}


# -- images --------------------------------------------------------------------------------

def _creation_date(built_at: str) -> dt.datetime | str:
    try:
        when = dt.datetime.fromisoformat(built_at)
    except (TypeError, ValueError):
        return built_at
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def _image(image) -> dict:
    m = image.manifest
    return {
        "imageId": render.image_ami_id(image),
        "imageLocation": f"computed/{m.name}/{m.version}",
        "imageState": "available",
        "imageOwnerAlias": OWNER_ALIAS,
        "creationDate": _creation_date(m.built_at),
        "isPublic": True,
        "architecture": render.ARCHITECTURES.get(m.architecture, m.architecture),
        "imageType": "machine",
        "name": m.name,
        "description": m.description or None,
        "platformDetails": "Linux/UNIX",
        "virtualizationType": "hvm",
        "tagSet": [{"key": "computed:version", "value": m.version},
                   {"key": "computed:default-user", "value": m.default_user}],
    }


def find_image(image_id: str):
    """The stored image an ``ami-`` id stands for; InvalidAMIID.Malformed / .NotFound."""
    if not render.AMI_ID.fullmatch(image_id):
        raise InvalidAMIIDMalformed(f"Invalid id: {image_id!r} (an image id is ami- and 17 hex digits)")
    for image in service().images.list():
        if render.image_ami_id(image) == image_id:
            return image
    raise InvalidImageNotFound(f"The image id '[{image_id}]' does not exist")


def image_name(image_id: str) -> str:
    """RunInstances' ImageId as the core's image name: an ``ami-`` id of DescribeImages, or
    an image's name (the core says whether it exists)."""
    return find_image(image_id).name if image_id.startswith("ami-") else image_id


@action("DescribeImages")
def describe_images(p: Params) -> dict:
    ids = p.strings("ImageId")
    owners = p.strings("Owner")
    filters = p.filters({"image-id", "name", "architecture", "state", "image-type", "is-public", "owner-alias"})
    p.boolean("IncludeDeprecated")  # nothing is ever deprecated or disabled here
    p.boolean("IncludeDisabled")
    max_results = p.integer("MaxResults", minimum=5, maximum=1000)
    token = p.string("NextToken")
    p.check_unknown()
    images = [find_image(i) for i in ids] if ids else service().images.list()
    p.finish()
    rows = [_image(i) for i in images]
    if owners and OWNER_ALIAS not in owners:  # every image here is the service's
        rows = []
    keys = {"image-id": "imageId", "name": "name", "architecture": "architecture", "state": "imageState",
            "image-type": "imageType", "is-public": "isPublic", "owner-alias": "imageOwnerAlias"}
    rows = [r for r in rows if all(matches(r[keys[name]], values) for name, values in filters.items())]
    rows, next_token = page(rows, max_results, token)
    return {"imagesSet": rows, "nextToken": next_token}


# -- regions and zones ---------------------------------------------------------------------

@action("DescribeRegions")
def describe_regions(p: Params) -> dict:
    names = p.strings("RegionName")
    filters = p.filters({"region-name", "endpoint", "opt-in-status"})
    p.boolean("AllRegions")
    p.check_unknown()
    region = render.region()
    unknown = [n for n in names if n != region]
    if unknown:
        raise InvalidParameterValue(f"Invalid region: {', '.join(unknown)} (this service has {region})")
    p.finish()
    row = {"regionName": region, "regionEndpoint": request.host, "optInStatus": OPT_IN}
    keys = {"region-name": "regionName", "endpoint": "regionEndpoint", "opt-in-status": "optInStatus"}
    rows = [row] if all(matches(row[keys[n]], v) for n, v in filters.items()) else []
    return {"regionInfo": rows}


@action("DescribeAvailabilityZones")
def describe_availability_zones(p: Params) -> dict:
    names = p.strings("ZoneName")
    zone_ids = p.strings("ZoneId")
    filters = p.filters({"zone-name", "zone-id", "region-name", "state", "zone-type", "group-name",
                         "opt-in-status"})
    p.boolean("AllAvailabilityZones")
    p.check_unknown()
    region, zone = render.region(), render.availability_zone()
    zone_id = f"{region}-az1"
    unknown = [n for n in names if n != zone] + [i for i in zone_ids if i != zone_id]
    if unknown:
        raise InvalidParameterValue(f"Invalid availability zone: [{', '.join(unknown)}] (this service has {zone})")
    p.finish()
    row = {"zoneName": zone, "zoneId": zone_id, "zoneState": "available", "regionName": region,
           "groupName": region, "networkBorderGroup": region, "zoneType": "availability-zone",
           "optInStatus": OPT_IN, "messageSet": []}
    keys = {"zone-name": "zoneName", "zone-id": "zoneId", "region-name": "regionName", "state": "zoneState",
            "zone-type": "zoneType", "group-name": "groupName", "opt-in-status": "optInStatus"}
    rows = [row] if all(matches(row[keys[n]], v) for n, v in filters.items()) else []
    return {"availabilityZoneInfo": rows}
