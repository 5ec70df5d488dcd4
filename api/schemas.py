"""Request and response schemas (marshmallow); the OpenAPI document is generated from them."""

from __future__ import annotations

import base64
import binascii

from marshmallow import Schema, ValidationError, fields, post_load, pre_load, validate, validates_schema

from computed.billing.reports import GROUPS
from computed.errors import InvalidParameterValue
from computed.hosts.registry import HOST_NAME, IMAGE_MODES, LIBVIRT_URI, check_uri
from computed.compute.instances import INSTANCE_ID
from computed.compute.launch import CLIENT_TOKEN, CLIENT_TOKEN_RULE, MAX_COUNT, MAX_USER_DATA
from computed.compute.tags import MAX_TAGS, TAG_KEY, TAG_VALUE
from computed.compute.state import NAMES
from computed.compute.keypairs import NAME as KEY_NAME_RE

from .port_schemas import PORTS_FIELD, PortSchema


def _anchored(regex) -> str:
    """REGEX (a whole-string pattern of the core) as a JSON Schema pattern, which matches
    anywhere unless anchored."""
    return f"^(?:{regex.pattern})$"


class Pattern(validate.Regexp):
    """The whole value matches (as a JSON Schema pattern, whose ``$`` is the very end: with
    ``re.match`` it would also let a trailing newline through)."""

    def __call__(self, value):
        if self.regex.fullmatch(value) is None:
            raise ValidationError(self._format_error(value))
        return value


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


#: what the core accepts as a key pair name (1 to 255 characters)
KEY_NAME_PATTERN = _anchored(KEY_NAME_RE)
KEY_NAME = Pattern(KEY_NAME_PATTERN,
                   error="a key pair name is 1 to 255 characters: letters, digits and . _ @ + - (not first)")
INSTANCE_ID_PATTERN = _anchored(INSTANCE_ID)
#: the path parameters of /v1/keypairs/{name} and /v1/instances/{instance_id}, for the document
KEY_NAME_PARAM = {"in": "path", "name": "name", "required": True,
                  "schema": {"type": "string", "pattern": KEY_NAME_PATTERN}}
INSTANCE_ID_PARAM = {"in": "path", "name": "instance_id", "required": True,
                     "schema": {"type": "string", "pattern": INSTANCE_ID_PATTERN, "example": "i-0123456789abcdef0"},
                     "description": "i- and 17 hex digits (anything else is InvalidInstanceID.Malformed)"}
TAG_KEY_PATTERN = Pattern(_anchored(TAG_KEY), error="1 to 128 characters, no control characters")
TAG_VALUE_PATTERN = Pattern(_anchored(TAG_VALUE), error="at most 256 characters, no control characters")
#: a size's or an image's name (any name the catalogs could have: no control characters)
NAME_PATTERN = r"^[^\x00-\x1f\x7f]{1,64}$"
NAME = Pattern(NAME_PATTERN, error="1 to 64 characters, no control characters")
#: base64 as RFC 4648 writes it (padded); whitespace is no base64
BASE64_PATTERN = r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"


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
    message = fields.String(allow_none=True)


class SSHEndpointSchema(Schema):
    host = fields.String(allow_none=True)
    port = fields.Integer(allow_none=True)
    user = fields.String(allow_none=True)
    command = fields.String(allow_none=True, metadata={"description": "an ssh command line that logs in"})


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
    host = fields.String(required=True, metadata={"description": "the libvirt URI of the instance's host"})
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


class BillingQuerySchema(QuerySchema):
    start = fields.AwareDateTime(required=True, metadata={"example": "2026-03-01T00:00:00Z"})
    end = fields.AwareDateTime(required=True)
    group_by = fields.List(fields.String(validate=validate.OneOf(GROUPS)),
                           load_default=lambda: list(GROUPS))
    format = fields.String(load_default="json", validate=validate.OneOf(["json", "csv", "png"]))
    account = fields.String(validate=Pattern(r"^[0-9]{12}$|^default$"),
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


class StrictBoolean(fields.Boolean):
    """true or false only: marshmallow's Boolean also takes 1, "yes", "on"..., which are no
    JSON booleans (and the document says boolean)."""

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, bool):
            raise self.make_error("invalid", input=value)
        return value


HOST_NAME_PATTERN = _anchored(HOST_NAME)
HOST_NAME_PARAM = {"in": "path", "name": "name", "required": True,
                   "schema": {"type": "string", "pattern": HOST_NAME_PATTERN, "example": "node-2"}}
HOST_URI_PATTERN = _anchored(LIBVIRT_URI)


def _safe_uri(uri: str) -> None:
    try:
        check_uri(uri)
    except InvalidParameterValue as e:
        raise ValidationError(e.message) from None


class HostCreateSchema(Schema):
    name = fields.String(required=True, validate=Pattern(
        HOST_NAME_PATTERN, error="1 to 63 lower-case letters, digits and dashes, starting with a letter or digit"),
        metadata={"example": "node-2"})
    uri = fields.String(required=True, validate=[
        validate.Length(max=255),
        Pattern(HOST_URI_PATTERN, error="not a libvirt URI (like qemu+ssh://root@node-2/system)"), _safe_uri],
        metadata={"example": "qemu+ssh://root@node-2/system",
                  "description": "the host's libvirt URI; it must answer now (its capacity comes from libvirt). "
                                 "Not the ext or libssh transports, nor the parameters command, netcat or "
                                 "known_hosts_verify"})
    address = fields.String(validate=Pattern(r"^[A-Za-z0-9.:_-]{1,255}$", error="a host name or IP address"),
                            metadata={"description": "where the instances' SSH ports are reached; default: the "
                                                     "URI's host name, else the service's ssh_host"})
    image_mode = fields.String(load_default="shared", validate=validate.OneOf(IMAGE_MODES), metadata={
        "description": "shared: the host sees the service's image store and instance paths; copy: images are "
                       "copied to the host's storage_dir through libvirt"})
    storage_dir = fields.String(validate=Pattern(r"^/[^\x00-\x1f\x7f]{0,4095}$", error="an absolute path"),
                                metadata={"description": "copy mode only (and needed there): the directory on the "
                                                         "host for images and instance files"})
    enabled = StrictBoolean(load_default=True, metadata={"description": "a disabled host takes no new instance"})

    @validates_schema
    def _storage_dir(self, data, **kwargs):
        if data.get("image_mode") == "copy" and "storage_dir" not in data:
            raise ValidationError("a host in copy mode needs storage_dir, an absolute path on the host",
                                  "storage_dir")
        if data.get("image_mode") != "copy" and "storage_dir" in data:
            raise ValidationError("only a host in copy mode has a storage_dir (a shared host uses the "
                                  "service's own paths)", "storage_dir")


class HostCapacitySchema(Schema):
    vcpus = fields.Integer(allow_none=True, metadata={"description": "CPUs, as libvirt said at the last check "
                                                                     "(null: never reached)"})
    memory_mib = fields.Integer(allow_none=True)


class HostRoomSchema(Schema):
    vcpus = fields.Integer(required=True, metadata={"description": "capacity times cpu_overcommit"})
    memory_mib = fields.Integer(required=True, metadata={"description": "capacity times memory_overcommit"})


class HostAllocationSchema(Schema):
    instances = fields.Integer(required=True)
    vcpus = fields.Integer(required=True)
    memory_mib = fields.Integer(required=True)


class HostSchema(Schema):
    name = fields.String(required=True, metadata={"example": "local"})
    uri = fields.String(required=True, metadata={"example": "qemu:///system"})
    address = fields.String(required=True, metadata={"description": "where the instances' SSH ports are reached"})
    enabled = fields.Boolean(required=True)
    image_mode = fields.String(required=True, validate=validate.OneOf(IMAGE_MODES))
    storage_dir = fields.String(allow_none=True)
    reachable = fields.Boolean(required=True, metadata={"description": "whether the host answered its last check"})
    last_error = fields.String(allow_none=True, metadata={"description": "why the last check failed"})
    checked_at = fields.DateTime(allow_none=True)
    capacity = fields.Nested(HostCapacitySchema, required=True)
    room = fields.Nested(HostRoomSchema, required=True, metadata={
        "description": "what the host's instances may take in all, under the overcommit ratios"})
    allocated = fields.Nested(HostAllocationSchema, required=True, metadata={
        "description": "what its instances that are not terminated take (stopped ones too)"})
    created_at = fields.DateTime(required=True)


class HostListSchema(Schema):
    hosts = fields.List(fields.Nested(HostSchema), required=True)
