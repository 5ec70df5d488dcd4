"""Schemas of forwarded guest ports: asked for at launch and under
``/v1/instances/{id}/ports``, and shown with each instance."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from computed.compute.ports import FIRST_UNPRIVILEGED, MAX_PORTS

PORT_RANGE = validate.Range(min=1, max=65535)
HOST_PORT_RANGE = validate.Range(min=FIRST_UNPRIVILEGED, max=65535,
                                 error=f"a host port is {FIRST_UNPRIVILEGED} to 65535: lower ones are privileged")


class PortSpecSchema(Schema):
    guest_port = fields.Integer(required=True, strict=True, validate=PORT_RANGE,
                                metadata={"example": 80, "description": "the TCP port the guest listens on"})
    host_port = fields.Integer(strict=True, validate=HOST_PORT_RANGE, allow_none=True, metadata={
        "example": 8080,
        "description": "the port on the instance's host address: one of the service's forward range (the "
                       "forward_ports setting; another is a 400); left out, a free one of that range"})
    protocol = fields.String(load_default="tcp", validate=validate.OneOf(["tcp"], error="only tcp is forwarded"))


PORTS_FIELD = fields.List(fields.Nested(PortSpecSchema), load_default=list, validate=validate.Length(max=MAX_PORTS),
                          metadata={"description": f"guest ports to forward from the host's address, besides SSH "
                                                   f"(at most {MAX_PORTS})"})


class PortSchema(Schema):
    host = fields.String(required=True, metadata={"description": "the instance's host address", "example": "127.0.0.1"})
    host_port = fields.Integer(required=True)
    guest_port = fields.Integer(required=True)
    protocol = fields.String(required=True)
    address = fields.String(required=True, metadata={"description": "host:port, where clients connect",
                                                     "example": "127.0.0.1:8080"})


class PortListSchema(Schema):
    instance_id = fields.String(required=True)
    ports = fields.List(fields.Nested(PortSchema), required=True)


HOST_PORT_PARAM = {"in": "path", "name": "host_port", "required": True,
                   "schema": {"type": "integer", "minimum": 1, "maximum": 65535}}
