"""``/v1/account/access-keys``: the caller's access keys (an admin's: any account's, with
``?account=ID`` to list or make them, and by id for the rest): make one (its secret is in
that answer only; two at most), list them, show, deactivate or reactivate (PATCH
``status``), delete. A key deleted or deactivated fails at its next request, this one's own
key included; the account's last active key goes only with ``force=true``."""

from __future__ import annotations

from flask.views import MethodView
from marshmallow import RAISE

from computed.accounts.access_keys import KeyInfo

from .access_key_schemas import (ACCESS_KEY_ID_PARAM, AccessKeyCreatedSchema, AccessKeyListSchema,
                                 AccessKeyPatchSchema, AccessKeySchema, AccountQuerySchema, ForceQuerySchema)
from .auth import current_caller
from .blueprint import Blueprint
from .schemas import ErrorResponseSchema
from .service import service

blp = Blueprint("access_keys", __name__, url_prefix="/v1/account/access-keys", description="Access keys")


def view(key: KeyInfo) -> dict:
    return {"access_key_id": key.access_key_id, "account_id": key.account_id, "account_name": key.account_name,
            "status": key.status, "created_at": key.created_at, "last_used_at": key.last_used_at,
            "last_used_service": key.last_used_service,
            "current": key.access_key_id == current_caller().access_key_id}


@blp.route("")
class AccessKeys(MethodView):
    @blp.arguments(AccountQuerySchema, location="query", error_status_code=400, unknown=RAISE)
    @blp.response(200, AccessKeyListSchema)
    @blp.alt_response(400, schema=ErrorResponseSchema)
    @blp.alt_response(403, schema=ErrorResponseSchema)
    @blp.alt_response(404, schema=ErrorResponseSchema)
    def get(self, args):
        """The account's access keys, oldest first, with their status and last use (never a secret)."""
        return {"access_keys": [view(k) for k in service().access_keys.list(current_caller(), args.get("account"))]}

    @blp.arguments(AccountQuerySchema, location="query", error_status_code=400, unknown=RAISE)
    @blp.response(201, AccessKeyCreatedSchema)
    @blp.alt_response(400, schema=ErrorResponseSchema)
    @blp.alt_response(403, schema=ErrorResponseSchema)
    @blp.alt_response(404, schema=ErrorResponseSchema)
    @blp.alt_response(409, schema=ErrorResponseSchema)
    def post(self, args):
        """Make an access key, active at once; its secret is in this answer and nowhere else.
        An account has two at most (409 ``LimitExceeded``): to rotate one, make the second,
        move the clients to it, deactivate the first, and delete it."""
        info, creds = service().access_keys.create(current_caller(), args.get("account"))
        return view(info) | {"secret_access_key": creds.secret_access_key, "admin": creds.admin}


@blp.route("/<string:access_key_id>", parameters=[ACCESS_KEY_ID_PARAM])
class AccessKey(MethodView):
    @blp.response(200, AccessKeySchema)
    @blp.alt_response(404, schema=ErrorResponseSchema)
    def get(self, access_key_id):
        """One access key."""
        return view(service().access_keys.get(current_caller(), access_key_id))

    @blp.arguments(ForceQuerySchema, location="query", error_status_code=400, unknown=RAISE)
    @blp.arguments(AccessKeyPatchSchema, error_status_code=400, unknown=RAISE)
    @blp.response(200, AccessKeySchema)
    @blp.alt_response(400, schema=ErrorResponseSchema)
    @blp.alt_response(404, schema=ErrorResponseSchema)
    @blp.alt_response(409, schema=ErrorResponseSchema)
    @blp.alt_response(413, schema=ErrorResponseSchema)
    @blp.alt_response(415, schema=ErrorResponseSchema)
    def patch(self, args, body, access_key_id):
        """Deactivate (``Inactive``) or reactivate (``Active``) an access key. Deactivating the
        key this request is signed with is allowed: this answer is the last it gets."""
        return view(service().access_keys.set_status(current_caller(), access_key_id, body["status"],
                                                     force=args["force"]))

    @blp.arguments(ForceQuerySchema, location="query", error_status_code=400, unknown=RAISE)
    @blp.response(204)
    @blp.alt_response(400, schema=ErrorResponseSchema)
    @blp.alt_response(404, schema=ErrorResponseSchema)
    @blp.alt_response(409, schema=ErrorResponseSchema)
    def delete(self, args, access_key_id):
        """Delete an access key for good, and end the console logins made with it. Deleting
        the key this request is signed with is allowed: this answer is the last it gets."""
        service().access_keys.delete(current_caller(), access_key_id, force=args["force"])
