"""``/v1/keypairs``: create (the private key is returned once), import, list, get, delete."""

from __future__ import annotations

from flask.views import MethodView
from flask_smorest import Blueprint

from .schemas import ErrorResponseSchema, KeyPairCreateSchema, KeyPairCreatedSchema, KeyPairListSchema, KeyPairSchema
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
    def post(self, body):
        """Create a key pair (the private key is in this response and nowhere else), or
        import a public key (``public_key``)."""
        if "public_key" in body:
            return service().keypairs.import_key(current_caller(), body["name"], body["public_key"])
        record, private_key = service().keypairs.create(current_caller(), body["name"])
        return {field: getattr(record, field) for field in KeyPairSchema().fields} | {"private_key": private_key}


@blp.route("/<string:name>")
class KeyPair(MethodView):
    @blp.response(200, KeyPairSchema)
    @blp.alt_response(404, schema=ErrorResponseSchema)
    def get(self, name):
        """One key pair."""
        return service().keypairs.get(current_caller(), name)

    @blp.response(204)
    @blp.alt_response(404, schema=ErrorResponseSchema)
    def delete(self, name):
        """Delete a key pair (instances launched with it keep their key)."""
        service().keypairs.delete(current_caller(), name)
