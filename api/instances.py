"""``/v1/instances``: launch, list, show, stop, start, reboot, terminate, console."""

from __future__ import annotations

import datetime as dt

from flask.views import MethodView
from marshmallow import RAISE

from computed.compute.instances import InstanceFilter, LaunchRequest
from computed.compute.state import State
from computed.compute.view import InstanceView
from computed.store.models import Instance

from .blueprint import Blueprint
from .ports import port_view, spec
from .instance_schemas import (ConsoleSchema, InstanceCreateSchema, InstanceListSchema, InstanceQuerySchema,
                               InstanceSchema, LaunchResultSchema)
from .schemas import INSTANCE_ID_PARAM, ErrorResponseSchema
from .auth import current_caller
from .service import service

blp = Blueprint("instances", __name__, url_prefix="/v1/instances", description="Instances")


def view(v: InstanceView) -> dict:
    """The instance as the API shows it (to the current caller: an admin sees its host's
    URI and a failure's detail; anyone else the host's name and the failure's error id)."""
    inst = v.instance
    host, port = v.ssh_endpoint or (None, None)
    admin = current_caller().admin
    reason = v.state_reason(admin)
    return {
        "id": inst.id, "reservation_id": inst.reservation_id, "owner": inst.owner, "launch_index": inst.launch_index,
        "state": {"name": inst.state, "code": State(inst.state).code},
        "state_reason": (None if reason is None else {"code": reason[0], "message": reason[1]}
                         | ({"detail": reason[2]} if reason[2] else {})),
        "size": inst.size, "vcpus": inst.vcpus, "memory_mib": inst.memory_mib, "disk_gib": inst.disk_gib,
        "price_per_hour": inst.price_per_hour, "currency": inst.currency,
        "image": inst.image, "image_version": inst.image_version, "key_name": inst.key_name,
        "tags": dict(v.tags),
        "launch_time": inst.launch_time, "state_changed_at": inst.state_changed_at, "host": v.host_shown(admin),
        "placement": {"host": inst.host, "availability_zone": v.availability_zone,
                      "host_reachable": v.host_reachable},
        "ssh": {"host": host, "port": port, "user": v.login_user, "command": v.ssh_command,
                "host_key": v.host_key, "host_key_fingerprints": list(v.host_key_fingerprints),
                "known_hosts": v.known_hosts_line},
        "ports": [port_view(p) for p in v.ports],
        "ready": {"ssh": inst.ready_ssh, "container_engine": inst.ready_engine},
        "cost_so_far": str(v.cost_so_far),
    }


def one(inst: Instance) -> dict:
    return view(service().views.of(inst))


def views(rows: list[Instance]) -> list[dict]:
    """ROWS as the API shows them (their hosts' reachability and costs read once for all)."""
    return [view(v) for v in service().views.page(rows)]


def _filter(args: dict) -> InstanceFilter:
    tags = []
    for item in args.get("tag", []):
        key, sep, value = item.partition("=")
        tags.append((key, (value,) if sep else None))
    one = lambda name: (args[name],) if args.get(name) else ()  # noqa: E731
    return InstanceFilter(states=tuple(args.get("state", ())), sizes=one("size"),
                          images=tuple((name, None) for name in one("image")), key_names=one("key_name"),
                          tags=tuple(tags))


@blp.route("")
class Instances(MethodView):
    @blp.arguments(InstanceQuerySchema, location="query", error_status_code=400, unknown=RAISE)
    @blp.response(200, InstanceListSchema)
    @blp.alt_response(400, schema=ErrorResponseSchema)
    def get(self, args):
        """Instances, newest first, filtered by state, size, image, key and tags; paginated
        with ``limit`` and the ``next_token`` of the previous page."""
        rows, token = service().instances.describe(current_caller(), _filter(args), args["limit"],
                                                   args.get("next_token"))
        return {"instances": views(rows), "next_token": token}

    @blp.arguments(InstanceCreateSchema, error_status_code=400)
    @blp.response(202, LaunchResultSchema)
    @blp.alt_response(400, schema=ErrorResponseSchema)
    @blp.alt_response(409, schema=ErrorResponseSchema)
    @blp.alt_response(413, schema=ErrorResponseSchema)
    @blp.alt_response(415, schema=ErrorResponseSchema)
    @blp.alt_response(503, schema=ErrorResponseSchema)
    def post(self, body):
        """Launch ``count`` instances; they start ``pending`` and boot in the background.
        Retrying with the same ``client_token`` and parameters returns the same instances."""
        svc = service()
        req = LaunchRequest(size=body["size"], image=body.get("image") or svc.settings.default_image,
                            key_name=body.get("key_name"), user_data=body.get("user_data"), count=body["count"],
                            tags=body["tags"], client_token=body.get("client_token"),
                            ports=tuple(spec(p) for p in body["ports"]))
        rows, _ = svc.instances.launch(current_caller(), req)
        return {"reservation_id": rows[0].reservation_id, "instances": views(rows)}


@blp.route("/<string:instance_id>", parameters=[INSTANCE_ID_PARAM])
class InstanceResource(MethodView):
    @blp.response(200, InstanceSchema)
    @blp.alt_response(400, schema=ErrorResponseSchema)
    @blp.alt_response(404, schema=ErrorResponseSchema)
    def get(self, instance_id):
        """One instance."""
        return one(service().instances.get(current_caller(), instance_id))

    @blp.response(202, InstanceSchema)
    @blp.alt_response(400, schema=ErrorResponseSchema)
    @blp.alt_response(404, schema=ErrorResponseSchema)
    @blp.alt_response(503, schema=ErrorResponseSchema)
    def delete(self, instance_id):
        """Terminate: the instance goes ``shutting-down``, then ``terminated``, and stays
        visible as terminated for an hour. Terminating a terminated instance is no error.
        While the instance's host cannot be reached: 503."""
        return one(service().instances.terminate(current_caller(), instance_id))


def _action(name: str, doc: str):
    def handler(instance_id):
        return one(getattr(service().instances, name)(current_caller(), instance_id))
    handler.__name__ = f"{name}_instance"
    handler.__doc__ = doc
    handler = blp.alt_response(503, schema=ErrorResponseSchema)(handler)  # while its host cannot be reached
    handler = blp.alt_response(409, schema=ErrorResponseSchema)(handler)
    handler = blp.alt_response(404, schema=ErrorResponseSchema)(handler)
    handler = blp.alt_response(400, schema=ErrorResponseSchema)(handler)
    handler = blp.response(202, InstanceSchema)(handler)
    blp.route(f"/<string:instance_id>/{name}", methods=["POST"], parameters=[INSTANCE_ID_PARAM])(handler)


_action("stop", "Stop a running instance (ACPI power-off, forced after the stop timeout).")
_action("start", "Start a stopped instance.")
_action("reboot", "Reboot a running instance.")


@blp.route("/<string:instance_id>/console", parameters=[INSTANCE_ID_PARAM])
@blp.response(200, ConsoleSchema)
@blp.alt_response(400, schema=ErrorResponseSchema)
@blp.alt_response(404, schema=ErrorResponseSchema)
def console(instance_id):
    """The serial console's output (the last 64 KiB)."""
    inst, output = service().instances.console(current_caller(), instance_id)
    return {"instance_id": inst.id, "output": output, "timestamp": dt.datetime.now(dt.UTC)}
