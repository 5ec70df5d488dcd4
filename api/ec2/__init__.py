"""The EC2 Query API (``Action=...&Version=2016-11-15``, answered in EC2's XML) at ``/``
and ``/ec2/``, for boto3, the AWS CLI and other EC2 clients: a translation of parameters
in and of objects and errors out over the core the REST API uses.

A plain Flask blueprint, so it stays out of the OpenAPI document. Its error handlers
answer every error raised while serving its routes -- authentication's in the app's
``before_request`` hooks too -- in EC2's XML, with EC2's statuses."""

from __future__ import annotations

import logging

from flask import Blueprint, request
from werkzeug.exceptions import HTTPException

from computed.errors import ComputedError, InvalidParameterValue, MissingParameter

from ..errors import too_large_message
from ..ratelimit import TooManyFailures
from . import catalog, instances, keypairs, tags, xml  # noqa: F401  (the action modules register their actions)
from .context import ACTIONS, FORM, request_id, request_pairs
from .errors import InvalidAction, MissingAction, NoSuchVersion, UnsupportedHttpVerb, wire_status
from .params import Params

log = logging.getLogger(__name__)

VERSION = "2016-11-15"
#: every method is routed here, so that even a wrong one is answered in EC2's XML
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]
HTTP_CODES = {400: "InvalidParameterValue", 401: "AuthFailure", 403: "UnauthorizedOperation",
              404: "InvalidAction", 405: "UnsupportedHttpVerb", 413: "RequestEntityTooLarge",
              415: "InvalidParameterValue", 429: "RequestLimitExceeded"}

blp = Blueprint("ec2", __name__)


def read_params() -> Params:
    if request.mimetype != FORM and request.get_data(cache=True):
        raise InvalidParameterValue(f"the body must be {FORM} (got {request.mimetype or 'no type'})")
    return Params(request_pairs())


@blp.route("/", methods=METHODS)
@blp.route("/ec2/", methods=METHODS)
def query_api():
    if request.method not in ("GET", "POST"):
        raise UnsupportedHttpVerb(f"the EC2 API takes GET and POST, not {request.method}")
    p = read_params()
    name = p.raw("Action")
    if not name:
        raise MissingAction("The request must contain the parameter Action")
    version = p.raw("Version")
    if not version:
        raise MissingParameter("The request must contain the parameter Version")
    if version != VERSION:
        raise NoSuchVersion(f"The requested version ({version}) of service AmazonEC2 does not exist "
                            f"(this service speaks {VERSION})")
    handler = ACTIONS.get(name)
    if handler is None:
        raise InvalidAction(f"The action {name} is not valid for this web service.")
    p.dry_run = p.boolean("DryRun")
    body = handler(p)
    if not p.finished:  # every action checks its parameters (and DryRun) before acting
        raise RuntimeError(f"{name} never called Params.finish()")
    return xml.response(name, request_id(), body)


@blp.errorhandler(ComputedError)
def _computed_error(e: ComputedError):
    return xml.error(e.code, e.message, request_id(), wire_status(e.status))


@blp.errorhandler(TooManyFailures)
def _too_many_failures(e: TooManyFailures):
    # 429 with Retry-After (api.ratelimit), not the 503 of EC2's own RequestLimitExceeded:
    # the client is to wait that long, not to retry at once
    return xml.error(e.code, e.message, request_id(), 429)


@blp.errorhandler(HTTPException)
def _http_error(e: HTTPException):
    status = e.code or 500
    if status >= 500:
        log.error("HTTP %s while serving the EC2 API: %s", status, e)
        return xml.error("InternalError", "An internal error has occurred.", request_id(), 500)
    code = HTTP_CODES.get(status, "InvalidRequest")
    message = too_large_message() if status == 413 else e.description or e.name
    return xml.error(code, message, request_id(), wire_status(status))


@blp.errorhandler(Exception)
def _unexpected_error(e: Exception):
    log.exception("unexpected error in the EC2 API")
    return xml.error("InternalError", "An internal error has occurred.", request_id(), 500)
