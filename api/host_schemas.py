"""Schemas of hosts under ``/v1/hosts``: one to add, one as shown (its capacity, room and
allocation), and the list."""

from __future__ import annotations

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from computed.errors import InvalidParameterValue
from computed.hosts.registry import HOST_NAME, IMAGE_MODES, LIBVIRT_URI, check_uri

from .schemas import Pattern, StrictBoolean, anchored

HOST_NAME_PATTERN = anchored(HOST_NAME)
HOST_NAME_PARAM = {"in": "path", "name": "name", "required": True,
                   "schema": {"type": "string", "pattern": HOST_NAME_PATTERN, "example": "node-2"}}
HOST_URI_PATTERN = anchored(LIBVIRT_URI)


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


class ManagementKeySchema(Schema):
    id = fields.String(required=True, metadata={"example": "mk-0123456789abcdef"})
    fingerprint = fields.String(required=True, metadata={"example": "SHA256:lbmsoA0yIEcEiVDRnMWuzm+nV+3ZEEpVIURqFoeSspg"})
    public_key = fields.String(required=True, metadata={"description": "the public half (the private half never "
                                                                       "leaves the service's state directory)"})
    created_at = fields.DateTime(required=True)
    retired_at = fields.DateTime(allow_none=True, metadata={
        "description": "when a rotation replaced it: it stays valid for the guests that have it until they are "
                       "terminated, then is deleted"})
    instances = fields.Integer(required=True, metadata={"description": "instances not terminated that have it"})


class RotatedKeySchema(Schema):
    host = fields.String(required=True)
    management_key = fields.Nested(ManagementKeySchema, required=True, metadata={
        "description": "the new key, which the host's new guests get"})
    retired = fields.List(fields.Nested(ManagementKeySchema), required=True, metadata={
        "description": "the host's older keys still valid for the guests that have them"})


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
    management_keys = fields.List(fields.Nested(ManagementKeySchema), required=True, metadata={
        "description": "the SSH keys the service checks the host's guests with, newest first (public halves)"})


class HostListSchema(Schema):
    hosts = fields.List(fields.Nested(HostSchema), required=True)
