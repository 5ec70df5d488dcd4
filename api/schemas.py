"""Request and response schemas (marshmallow); the OpenAPI document is generated from them.
Here: what the others share (patterns, errors, query strings), sizes and images, key pairs and
billing; instances are in instance_schemas, hosts in host_schemas, ports and budgets in their own."""

from __future__ import annotations

from marshmallow import Schema, ValidationError, fields, pre_load, validate

from computed.billing.reports import GROUPS
from computed.compute.instances import INSTANCE_ID
from computed.compute.keypairs import NAME as KEY_NAME_RE


def anchored(regex) -> str:
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
KEY_NAME_PATTERN = anchored(KEY_NAME_RE)
KEY_NAME = Pattern(KEY_NAME_PATTERN,
                   error="a key pair name is 1 to 255 characters: letters, digits and . _ @ + - (not first)")
INSTANCE_ID_PATTERN = anchored(INSTANCE_ID)
#: the path parameters of /v1/keypairs/{name} and /v1/instances/{instance_id}, for the document
KEY_NAME_PARAM = {"in": "path", "name": "name", "required": True,
                  "schema": {"type": "string", "pattern": KEY_NAME_PATTERN}}
INSTANCE_ID_PARAM = {"in": "path", "name": "instance_id", "required": True,
                     "schema": {"type": "string", "pattern": INSTANCE_ID_PATTERN, "example": "i-0123456789abcdef0"},
                     "description": "i- and 17 hex digits (anything else is InvalidInstanceID.Malformed)"}
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
