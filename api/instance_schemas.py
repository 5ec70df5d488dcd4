"""Schemas of instances: a launch's request and result, an instance as shown, the list's
query and its page, and the serial console."""

from __future__ import annotations

import base64
import binascii

from marshmallow import Schema, ValidationError, fields, post_load, validate, validates_schema

from computed.compute.launch import CLIENT_TOKEN, CLIENT_TOKEN_RULE, MAX_COUNT, MAX_USER_DATA
from computed.compute.tags import MAX_TAGS, TAG_KEY, TAG_VALUE
from computed.compute.state import NAMES

from .port_schemas import PORTS_FIELD, PortSchema
from .schemas import BASE64_PATTERN, KEY_NAME, NAME, Pattern, QuerySchema, anchored

TAG_KEY_PATTERN = Pattern(anchored(TAG_KEY), error="1 to 128 characters, no control characters")
TAG_VALUE_PATTERN = Pattern(anchored(TAG_VALUE), error="at most 256 characters, no control characters")


class InstanceCreateSchema(Schema):
    size = fields.String(required=True, validate=NAME, metadata={"example": "t3.micro"})
    image = fields.String(validate=NAME, metadata={"description": "default: the service's default image"})
    key_name = fields.String(validate=KEY_NAME, allow_none=True)
    user_data = fields.String(metadata={"description": f"cloud-init user data as text, at most {MAX_USER_DATA} bytes "
                                                       "in UTF-8; not with user_data_base64"})
    user_data_base64 = fields.String(
        validate=Pattern(BASE64_PATTERN, error="not valid base64"),
        metadata={"description": f"user data as base64 (binary, e.g. gzip), at most {MAX_USER_DATA} bytes once "
                                 "decoded; not with user_data"})
    count = fields.Integer(load_default=1, strict=True, validate=validate.Range(min=1, max=MAX_COUNT))
    tags = fields.Dict(keys=fields.String(validate=TAG_KEY_PATTERN), values=fields.String(validate=TAG_VALUE_PATTERN),
                       load_default=dict,
                       metadata={"maxProperties": MAX_TAGS,
                                 "description": f"at most {MAX_TAGS}; keys starting with aws: or computed: are "
                                                "reserved"})
    client_token = fields.String(validate=Pattern(f"^{CLIENT_TOKEN.pattern}$", error=CLIENT_TOKEN_RULE),
                                 metadata={"description": f"{CLIENT_TOKEN_RULE}: a retry with the same "
                                                          "token and parameters is the same request"})
    ports = PORTS_FIELD

    @validates_schema
    def _across_fields(self, data, **kwargs):
        if "user_data" in data and "user_data_base64" in data:
            raise ValidationError("give user_data or user_data_base64, not both", "user_data")
        if len(data.get("tags") or ()) > MAX_TAGS:
            raise ValidationError(f"at most {MAX_TAGS} tags", "tags")

    @post_load
    def _decode(self, data, **kwargs):
        if "user_data_base64" in data:
            try:
                data["user_data"] = base64.b64decode(data.pop("user_data_base64"), validate=True)
            except (binascii.Error, ValueError):
                raise ValidationError("not valid base64", "user_data_base64") from None
        elif "user_data" in data:
            data["user_data"] = data["user_data"].encode()
        if data.get("user_data") is not None and len(data["user_data"]) > MAX_USER_DATA:
            raise ValidationError(f"at most {MAX_USER_DATA} bytes", "user_data")
        return data


class StateSchema(Schema):
    name = fields.String(required=True, validate=validate.OneOf(list(NAMES)))
    code = fields.Integer(required=True)


class StateReasonSchema(Schema):
    code = fields.String(allow_none=True)
    message = fields.String(allow_none=True, metadata={
        "description": "why; a failure's is generic with an error id (e.g. 'the launch failed (error id "
                       "e-1a2b3c4d)'), which the service's log has with the detail"})
    detail = fields.String(metadata={"description": "admins only: a failure's own words (libvirt's, qemu-img's)"})


class SSHEndpointSchema(Schema):
    host = fields.String(allow_none=True)
    port = fields.Integer(allow_none=True)
    user = fields.String(allow_none=True)
    command = fields.String(allow_none=True, metadata={"description": "an ssh command line that logs in"})
    host_key = fields.String(allow_none=True, metadata={
        "description": "the public half of the guest's SSH host key, which the service made and gave it in its "
                       "seed (OpenSSH format); null if not known",
        "example": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA..."})
    host_key_fingerprints = fields.List(fields.String(), metadata={
        "description": "the host key's fingerprints as ssh-keygen -l and EC2's console output show them",
        "example": ["256 SHA256:lbmsoA0yIEcEiVDRnMWuzm+nV+3ZEEpVIURqFoeSspg (ED25519)"]})
    known_hosts = fields.String(allow_none=True, metadata={
        "description": "a known_hosts line for the SSH endpoint, for plain ssh",
        "example": "[127.0.0.1]:42201 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA..."})


class ReadinessSchema(Schema):
    ssh = fields.Boolean(required=True)
    container_engine = fields.Boolean(required=True)


class PlacementSchema(Schema):
    host = fields.String(required=True, allow_none=True, metadata={
        "description": "the host's name (see /v1/hosts); null once a terminated instance's host is removed"})
    availability_zone = fields.String(required=True)
    host_reachable = fields.Boolean(required=True, metadata={
        "description": "whether the host answered its last check; an unreachable host's instances keep "
                       "their state until it answers again"})


class InstanceSchema(Schema):
    id = fields.String(required=True, metadata={"example": "i-0123456789abcdef0"})
    reservation_id = fields.String(required=True)
    owner = fields.String(required=True, metadata={"description": "the owning account's id"})
    launch_index = fields.Integer(required=True)
    state = fields.Nested(StateSchema, required=True)
    state_reason = fields.Nested(StateReasonSchema, allow_none=True)
    size = fields.String(required=True)
    vcpus = fields.Integer(required=True)
    memory_mib = fields.Integer(required=True)
    disk_gib = fields.Integer(required=True)
    price_per_hour = fields.String(required=True)
    currency = fields.String(required=True)
    image = fields.String(required=True)
    image_version = fields.String(required=True)
    key_name = fields.String(allow_none=True)
    tags = fields.Dict(keys=fields.String(), values=fields.String(), required=True)
    launch_time = fields.DateTime(required=True)
    state_changed_at = fields.DateTime(required=True)
    host = fields.String(required=True, allow_none=True, metadata={
        "description": "the instance's host: its libvirt URI for an admin, its name for anyone else"})
    placement = fields.Nested(PlacementSchema, required=True)
    ssh = fields.Nested(SSHEndpointSchema, required=True)
    ports = fields.List(fields.Nested(PortSchema), required=True,
                        metadata={"description": "guest ports forwarded from the host's address, besides SSH"})
    ready = fields.Nested(ReadinessSchema, required=True)
    cost_so_far = fields.String(required=True, metadata={"description": "since launch, exact decimal, in currency"})


class InstanceListSchema(Schema):
    instances = fields.List(fields.Nested(InstanceSchema), required=True)
    next_token = fields.String(allow_none=True)


class LaunchResultSchema(Schema):
    reservation_id = fields.String(required=True)
    instances = fields.List(fields.Nested(InstanceSchema), required=True)


class InstanceQuerySchema(QuerySchema):
    state = fields.List(fields.String(validate=validate.OneOf(list(NAMES))))
    size = fields.String(validate=NAME)
    image = fields.String(validate=NAME)
    key_name = fields.String(validate=KEY_NAME)
    tag = fields.List(fields.String(validate=Pattern(r"^[^\x00-\x1f\x7f-\x9f]{1,400}$",
                                                     error="KEY=VALUE or KEY, no control characters")),
                      metadata={"description": "KEY=VALUE, or KEY for any value; repeatable"})
    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=1000))
    next_token = fields.String(validate=Pattern(r"^[A-Za-z0-9_-]{0,200}$", error="not a token this service gives out"),
                               metadata={"description": "the next_token of the previous page"})


class ConsoleSchema(Schema):
    instance_id = fields.String(required=True)
    output = fields.String(required=True, metadata={"description": "the last 64 KiB of the serial console"})
    timestamp = fields.DateTime(required=True)
