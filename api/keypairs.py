"""``/v1/keypairs``: create (the private key is returned once), import, list, get, delete."""

from __future__ import annotations

from flask.views import MethodView

from computed.errors import KeyPairNotFound
from computed.compute.keypairs import NAME as KEY_NAME_RE

from .blueprint import Blueprint
from .schemas import (KEY_NAME_PARAM, ErrorResponseSchema, KeyPairCreatedSchema, KeyPairCreateSchema, KeyPairListSchema,
                      KeyPairSchema)
from .auth import current_caller
from .service import service

blp = Blueprint("keypairs", __name__, url_prefix="/v1/keypairs", description="SSH key pairs")


@blp.route("")
class KeyPairs(MethodView):
    @blp.response(200, KeyPairListSchema)
    def get(self):
        """The caller's key pairs."""
        return {"key_pairs": service().keypairs.list(current_caller())}

    @blp.arguments(KeyPairCreateSchema, error_status_code=400)
    @blp.response(201, KeyPairCreatedSchema)
    @blp.alt_response(400, schema=ErrorResponseSchema)
    @blp.alt_response(409, schema=ErrorResponseSchema)
    @blp.alt_response(413, schema=ErrorResponseSchema)
    @blp.alt_response(415, schema=ErrorResponseSchema)
    def post(self, body):
        """Create a key pair (the private key is in this response and nowhere else), or
        import a public key (``public_key``)."""
        if "public_key" in body:
            return service().keypairs.import_key(current_caller(), body["name"], body["public_key"])
        record, private_key = service().keypairs.create(current_caller(), body["name"])
        return {field: getattr(record, field) for field in KeyPairSchema().fields} | {"private_key": private_key}


@blp.route("/<string:name>", parameters=[KEY_NAME_PARAM])
class KeyPair(MethodView):
    @blp.response(200, KeyPairSchema)
    @blp.alt_response(404, schema=ErrorResponseSchema)
    def get(self, name):
        """One key pair."""
        return service().keypairs.get(current_caller(), _possible(name))

    @blp.response(204)
    @blp.alt_response(404, schema=ErrorResponseSchema)
    def delete(self, name):
        """Delete a key pair (instances launched with it keep their key)."""
        service().keypairs.delete(current_caller(), _possible(name))


def _possible(name: str) -> str:
    """NAME if a key pair could have it; else it is not found, without asking the store for
    a name with, say, a NUL in it (which PostgreSQL refuses to compare)."""
    if not KEY_NAME_RE.fullmatch(name):
        raise KeyPairNotFound(f"the key pair {name!r} does not exist")
    return name
