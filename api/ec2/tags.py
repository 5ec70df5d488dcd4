"""Tags: CreateTags, DeleteTags, DescribeTags. Only instances carry tags here. Besides the
user's tags, every instance lists the system tag ``computed:ssh-port``; the core refuses
changes to ``computed:`` and ``aws:`` keys."""

from __future__ import annotations

from computed.compute.instances import InstanceFilter

from . import render
from .context import action, caller, service
from .pages import matches, page
from .params import Params

RESOURCE_TYPE = "instance"
PAGE = 1000


@action("CreateTags")
def create_tags(p: Params) -> dict:
    ids = p.strings("ResourceId", required=True)
    tags = p.tags("Tag")
    p.check_unknown()
    if not tags:
        p.string("Tag.1.Key", required=True)
    p.finish()
    service().instances.create_tags(caller(), ids, tags)
    return {"return": True}


@action("DeleteTags")
def delete_tags(p: Params) -> dict:
    ids = p.strings("ResourceId", required=True)
    tags = p.tags("Tag", value_required=False)
    p.finish()
    svc, who = service(), caller()
    if not tags:  # as EC2: no Tag.N deletes every user tag of the resources
        for _, key, _ in svc.instances.tags(who, instance_ids=tuple(ids)):
            tags[key] = None
        if not tags:  # nothing to delete; still an error for ids that are not the caller's
            for instance_id in ids:
                svc.instances.get(who, instance_id)
            return {"return": True}
    svc.instances.delete_tags(who, ids, tags)
    return {"return": True}


def _system_tags(ids: tuple[str, ...]) -> list[tuple[str, str, str]]:
    svc, who = service(), caller()
    out, token = [], None
    while True:
        rows, token = svc.instances.describe(who, InstanceFilter(ids=ids), PAGE, token)
        out += [(v.instance.id, key, value) for v in svc.views.page(rows) for key, value in render.system_tags(v)]
        if token is None:
            return out


@action("DescribeTags")
def describe_tags(p: Params) -> dict:
    filters = p.filters({"resource-id", "resource-type", "key", "value"})
    max_results = p.integer("MaxResults", minimum=5, maximum=1000)
    token = p.string("NextToken")
    p.finish()
    if not matches(RESOURCE_TYPE, filters.get("resource-type")):
        return {"tagSet": [], "nextToken": None}
    ids = tuple(filters.get("resource-id", ()))
    keys, values = tuple(filters.get("key", ())), tuple(filters.get("value", ()))
    rows = service().instances.tags(caller(), instance_ids=ids, keys=keys, values=values)
    rows += [(i, k, v) for i, k, v in _system_tags(ids) if (not keys or k in keys) and (not values or v in values)]
    rows.sort(key=lambda row: (row[0], row[1]))
    rows, next_token = page(rows, max_results, token)
    return {"tagSet": [{"resourceId": i, "resourceType": RESOURCE_TYPE, "key": k, "value": v} for i, k, v in rows],
            "nextToken": next_token}
