"""The schemas of ``/v1/account/access-keys`` (marshmallow)."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from computed.accounts.access_keys import KEY_ID, SERVICES, STATUSES
from computed.accounts.registry import ACCOUNT_ID

from .schemas import Pattern, QuerySchema

ACCESS_KEY_ID_PATTERN = f"^(?:{KEY_ID.pattern})$"
ACCESS_KEY_ID_PARAM = {"in": "path", "name": "access_key_id", "required": True,
                       "schema": {"type": "string", "pattern": ACCESS_KEY_ID_PATTERN,
                                  "example": "AKCDEXAMPLE234567ABC"},
                       "description": "the access key's id (anything else, or another account's key, is not found)"}


class AccountQuerySchema(QuerySchema):
    account = fields.String(validate=Pattern(f"^(?:{ACCOUNT_ID.pattern})$", error="an account id: 12 digits"),
                            metadata={"description": "admins only: another account's keys (its 12-digit id); "
                                                     "anyone may name their own"})


class ForceQuerySchema(QuerySchema):
    force = fields.Boolean(load_default=False, metadata={
        "description": "also when it is the account's last active key (else 409 LastActiveAccessKey): the "
                       "account is then left without a way in until an admin makes it a key"})


class AccessKeySchema(Schema):
    access_key_id = fields.String(required=True)
    account_id = fields.String(required=True)
    account_name = fields.String(required=True)
    status = fields.String(required=True, validate=validate.OneOf(STATUSES), metadata={
        "description": "Active, or Inactive: authenticates nothing (and its console logins ended)"})
    created_at = fields.DateTime(required=True)
    last_used_at = fields.DateTime(required=True, allow_none=True, metadata={
        "description": "when it last authenticated a request, to the minute; null if never"})
    last_used_service = fields.String(required=True, allow_none=True, validate=validate.OneOf(SERVICES), metadata={
        "description": "what that request was for: rest, ec2 or console"})
    current = fields.Boolean(required=True, metadata={
        "description": "the key this very request authenticated with"})


class AccessKeyCreatedSchema(AccessKeySchema):
    secret_access_key = fields.String(required=True, metadata={
        "description": "returned this once, never again: keep it"})
    admin = fields.Boolean(required=True, metadata={"description": "the account is an admin"})


class AccessKeyListSchema(Schema):
    access_keys = fields.List(fields.Nested(AccessKeySchema), required=True)


class AccessKeyPatchSchema(Schema):
    status = fields.String(required=True, validate=validate.OneOf(STATUSES), metadata={
        "description": "Inactive: the key authenticates nothing from its next request on, in every service "
                       "process, and its console logins end; Active: it works again"})
