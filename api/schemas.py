"""Request and response schemas (marshmallow); the OpenAPI document is generated from them."""

from __future__ import annotations

import base64
import binascii

from marshmallow import Schema, ValidationError, fields, post_load, pre_load, validate, validates_schema

from computed.billing import GROUPS
from computed.instances import MAX_COUNT, MAX_USER_DATA, STATE_CODES


class ErrorDetailSchema(Schema):
    code = fields.String(required=True, metadata={"example": "InvalidInstanceID.NotFound"})
    message = fields.String(required=True)


class ErrorResponseSchema(Schema):
    error = fields.Nested(ErrorDetailSchema, required=True)


class SizeSchema(Schema):
    name = fields.String(required=True)
    vcpus = fields.Integer(required=True)
    memory_mib = fields.Integer(required=True)
    disk_gib = fields.Integer(required=True)
    price_per_hour = fields.String(required=True, metadata={"description": "decimal, per hour"})
    currency = fields.String(required=True)


class SizeListSchema(Schema):
    sizes = fields.List(fields.Nested(SizeSchema), required=True)


class ContainerEngineSchema(Schema):
    name = fields.String()
    version = fields.String()


class ImageSchema(Schema):
    name = fields.String(required=True)
    version = fields.String(required=True)
    description = fields.String()
    default_user = fields.String(required=True)
    container_engine = fields.Nested(ContainerEngineSchema)
    container_image = fields.String()
    kernel_version = fields.String()
    built_at = fields.String()
    recipe_hash = fields.String()
    disk_size = fields.Integer(attribute="artifacts.disk.size")


class ImageListSchema(Schema):
    images = fields.List(fields.Nested(ImageSchema), required=True)


KEY_NAME = validate.Length(min=1, max=255)


class KeyPairSchema(Schema):
    name = fields.String(required=True)
    key_type = fields.String(required=True)
    fingerprint = fields.String(required=True)
    public_key = fields.String(required=True)
    created_at = fields.DateTime(required=True)


class KeyPairCreatedSchema(KeyPairSchema):
    private_key = fields.String(metadata={"description": "created key pairs only: returned once, never stored"})


class KeyPairListSchema(Schema):
    key_pairs = fields.List(fields.Nested(KeyPairSchema), required=True)


class KeyPairCreateSchema(Schema):
    name = fields.String(required=True, validate=KEY_NAME)
    public_key = fields.String(validate=validate.Length(min=1, max=16384),
                               metadata={"description": "import this OpenSSH public key instead of creating one"})


class InstanceCreateSchema(Schema):
    size = fields.String(required=True, validate=validate.Length(min=1, max=64))
    image = fields.String(validate=validate.Length(min=1, max=64),
                          metadata={"description": "default: the service's default image"})
    key_name = fields.String(validate=KEY_NAME, allow_none=True)
    user_data = fields.String(metadata={"description": f"cloud-init user data as text, at most {MAX_USER_DATA} bytes"})
    user_data_base64 = fields.String(metadata={"description": "user data as base64 (binary, e.g. gzip)"})
    count = fields.Integer(load_default=1, strict=True, validate=validate.Range(min=1, max=MAX_COUNT))
    tags = fields.Dict(keys=fields.String(validate=validate.Length(min=1, max=128)),
                       values=fields.String(validate=validate.Length(max=256)), load_default=dict)
    client_token = fields.String(validate=validate.Length(min=1, max=64))

    @validates_schema
    def _one_user_data(self, data, **kwargs):
        if "user_data" in data and "user_data_base64" in data:
            raise ValidationError("give user_data or user_data_base64, not both", "user_data")

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
    name = fields.String(required=True, validate=validate.OneOf(list(STATE_CODES)))
    code = fields.Integer(required=True)


class StateReasonSchema(Schema):
    code = fields.String(allow_none=True)
    message = fields.String(allow_none=True)


class SSHEndpointSchema(Schema):
    host = fields.String(allow_none=True)
    port = fields.Integer(allow_none=True)
    user = fields.String(allow_none=True)
    command = fields.String(allow_none=True, metadata={"description": "an ssh command line that logs in"})


class ReadinessSchema(Schema):
    ssh = fields.Boolean(required=True)
    container_engine = fields.Boolean(required=True)


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
    host = fields.String(required=True, metadata={"description": "the libvirt URI of the instance's host"})
    ssh = fields.Nested(SSHEndpointSchema, required=True)
    ready = fields.Nested(ReadinessSchema, required=True)
    cost_so_far = fields.String(required=True, metadata={"description": "since launch, exact decimal, in currency"})


class InstanceListSchema(Schema):
    instances = fields.List(fields.Nested(InstanceSchema), required=True)
    next_token = fields.String(allow_none=True)


class LaunchResultSchema(Schema):
    reservation_id = fields.String(required=True)
    instances = fields.List(fields.Nested(InstanceSchema), required=True)


#: the query parameters of a presigned (SigV4) request: its credentials, checked by api.auth
SIGNATURE_PARAMS = frozenset({"X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires",
                              "X-Amz-SignedHeaders", "X-Amz-Signature"})


class QuerySchema(Schema):
    """A query string's arguments: a presigned request's signature parameters are not
    arguments, so they are no unknown field either."""

    @pre_load
    def _drop_signature(self, data, **kwargs):
        if not any(key in SIGNATURE_PARAMS for key in data):
            return data
        return {key: data[key] for key in data if key not in SIGNATURE_PARAMS}


class InstanceQuerySchema(QuerySchema):
    state = fields.List(fields.String(validate=validate.OneOf(list(STATE_CODES))))
    size = fields.String(validate=validate.Length(max=64))
    image = fields.String(validate=validate.Length(max=64))
    key_name = fields.String(validate=KEY_NAME)
    tag = fields.List(fields.String(validate=validate.Length(min=1, max=400)),
                      metadata={"description": "KEY=VALUE, or KEY for any value; repeatable"})
    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=1000))
    next_token = fields.String(validate=validate.Length(max=200))


class ConsoleSchema(Schema):
    instance_id = fields.String(required=True)
    output = fields.String(required=True, metadata={"description": "the last 64 KiB of the serial console"})
    timestamp = fields.DateTime(required=True)


class BillingQuerySchema(QuerySchema):
    start = fields.AwareDateTime(required=True, metadata={"example": "2026-03-01T00:00:00Z"})
    end = fields.AwareDateTime(required=True)
    group_by = fields.List(fields.String(validate=validate.OneOf(GROUPS)),
                           load_default=lambda: list(GROUPS))
    format = fields.String(load_default="json", validate=validate.OneOf(["json", "csv", "png"]))
    account = fields.String(validate=validate.Regexp(r"^[0-9]{12}$|^default$"),
                            metadata={"description": "admins only: one account's usage (its 12-digit id)"})


class BillingRowSchema(Schema):
    hour = fields.DateTime(required=True)
    instance_id = fields.String(required=True)
    owner = fields.String(required=True)
    size = fields.String(required=True)
    image = fields.String(required=True)
    tags = fields.Dict(keys=fields.String(), values=fields.String())
    seconds_running = fields.Integer(required=True)
    quantity = fields.String(required=True, metadata={"description": "instance-hours or seconds billed (decimal)"})
    rate_per_hour = fields.String(required=True)
    cost = fields.String(required=True, metadata={"description": "exact decimal"})
    currency = fields.String(required=True)


class MoneySchema(Schema):
    currency = fields.String(required=True)
    cost = fields.String(required=True)


class GroupTotalSchema(MoneySchema):
    key = fields.String(required=True)


class BillingReportSchema(Schema):
    start = fields.DateTime(required=True)
    end = fields.DateTime(required=True)
    policy = fields.String(required=True)
    unit = fields.String(required=True)
    rows = fields.List(fields.Nested(BillingRowSchema), required=True)
    total = fields.List(fields.Nested(MoneySchema), required=True)
    totals = fields.Dict(keys=fields.String(), values=fields.List(fields.Nested(GroupTotalSchema)))
