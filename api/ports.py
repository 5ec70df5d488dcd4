"""``/v1/instances/{id}/ports``: the guest ports an instance forwards from its host's
address, besides SSH: list, add (working at once on a running instance), remove."""

from __future__ import annotations

from flask.views import MethodView

from computed.store.models import PortForward
from computed.compute.ports import PortSpec

from .auth import current_caller
from .blueprint import Blueprint
from .port_schemas import HOST_PORT_PARAM, PortListSchema, PortSchema, PortSpecSchema
from .schemas import INSTANCE_ID_PARAM, ErrorResponseSchema
from .service import service

blp = Blueprint("ports", __name__, url_prefix="/v1/instances", description="Forwarded ports")


def port_view(p: PortForward) -> dict:
    return {"host": p.host_address, "host_port": p.host_port, "guest_port": p.guest_port, "protocol": p.protocol,
            "address": f"{p.host_address}:{p.host_port}"}


def spec(body: dict) -> PortSpec:
    return PortSpec(body["guest_port"], body.get("host_port"), body.get("protocol", "tcp"))


@blp.route("/<string:instance_id>/ports", parameters=[INSTANCE_ID_PARAM])
class Ports(MethodView):
    @blp.response(200, PortListSchema)
    @blp.alt_response(400, schema=ErrorResponseSchema)
    @blp.alt_response(404, schema=ErrorResponseSchema)
    def get(self, instance_id):
        """The instance's forwarded ports (none once it is terminated)."""
        inst, ports = service().ports.list(current_caller(), instance_id)
        return {"instance_id": inst.id, "ports": [port_view(p) for p in ports]}

    @blp.arguments(PortSpecSchema, error_status_code=400)
    @blp.response(201, PortSchema)
    @blp.alt_response(400, schema=ErrorResponseSchema)
    @blp.alt_response(404, schema=ErrorResponseSchema)
    @blp.alt_response(409, schema=ErrorResponseSchema)
    @blp.alt_response(413, schema=ErrorResponseSchema)
    @blp.alt_response(415, schema=ErrorResponseSchema)
    @blp.alt_response(503, schema=ErrorResponseSchema)
    def post(self, body, instance_id):
        """Forward a guest port of a running or stopped instance, at once: from ``host_port``,
        which must be one of the service's forward range, or a free port of that range. A
        port outside the range is a 400, as is one past the account's limit of forwarded
        ports (``PortLimitExceeded``); one another instance forwards, or another program
        listens on, a 409."""
        _, added = service().ports.add(current_caller(), instance_id, [spec(body)])
        return port_view(added[0])


@blp.route("/<string:instance_id>/ports/<int:host_port>", methods=["DELETE"],
           parameters=[INSTANCE_ID_PARAM, HOST_PORT_PARAM])
@blp.response(204)
@blp.alt_response(400, schema=ErrorResponseSchema)
@blp.alt_response(404, schema=ErrorResponseSchema)
@blp.alt_response(409, schema=ErrorResponseSchema)
@blp.alt_response(503, schema=ErrorResponseSchema)
def remove_port(instance_id, host_port):
    """Stop forwarding a host port to the instance (at once if it runs)."""
    service().ports.remove(current_caller(), instance_id, host_port)
