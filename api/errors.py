"""Every error is JSON ``{"error": {"code", "message"}}``: the core's errors with their
status, HTTP errors (unknown route, wrong method, bad JSON, failed validation) as 4xx with
EC2-style codes, and anything unexpected as a logged 500 that reveals nothing."""

from __future__ import annotations

import logging

from urllib.parse import parse_qsl

from flask import Flask, current_app, jsonify, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from computed.errors import ComputedError, InvalidParameterValue

log = logging.getLogger(__name__)

HTTP_CODES = {400: "InvalidParameterValue", 401: "AuthFailure", 403: "UnauthorizedOperation",
              404: "NotFound", 405: "MethodNotAllowed", 409: "Conflict", 413: "RequestTooLarge",
              415: "UnsupportedMediaType", 422: "InvalidParameterValue", 429: "RequestLimitExceeded"}


#: marshmallow's messages that do not say what is wrong where
CLEARER = {"Invalid input type.": "the body must be a JSON object"}


def _flatten(messages, prefix: str = "") -> list[str]:
    if isinstance(messages, (list, tuple)):
        out = []
        for m in messages:
            out.extend(_flatten(m, prefix) if isinstance(m, (dict, list)) else [f"{prefix}: {m}" if prefix else str(m)])
        return out
    if isinstance(messages, dict):
        out = []
        for key, value in messages.items():
            if key in ("json", "query", "form", "querystring", "_schema"):
                out.extend(_flatten(value, prefix))
            else:
                out.extend(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return [f"{prefix}: {messages}" if prefix else str(messages)]


def too_large_message() -> str:
    return (f"the request body is larger than the service takes "
            f"({current_app.config['MAX_CONTENT_LENGTH']} bytes at most)")


def refuse_large_bodies() -> None:
    """A body declared larger than the limit is refused before anything reads it (werkzeug
    refuses one that turns out larger as it is read, the same way)."""
    limit = current_app.config.get("MAX_CONTENT_LENGTH")
    if limit is not None and (request.content_length or 0) > limit:
        raise RequestEntityTooLarge(too_large_message())


def refuse_non_utf8_query() -> None:
    """The REST API's query strings are UTF-8 once percent-decoded (werkzeug would quietly
    make other bytes U+FFFD); the EC2 API answers MalformedQueryString itself."""
    if request.blueprint == "ec2" or not request.query_string:
        return
    try:
        parse_qsl(request.query_string.decode("utf-8"), keep_blank_values=True, encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        raise InvalidParameterValue("the query string is not UTF-8 (once percent-decoded)") from None


def error_response(code: str, message: str, status: int):
    response = jsonify({"error": {"code": code, "message": message}})
    response.status_code = status
    return response


def register(app: Flask) -> None:
    """The error handlers, and the checks of every request that come before authentication."""
    app.before_request(refuse_large_bodies)
    app.before_request(refuse_non_utf8_query)

    @app.errorhandler(ComputedError)
    def _computed(e: ComputedError):
        # a 401 never carries a Basic challenge: a browser would prompt for the credentials,
        # cache them and send them with every request another site's page makes (api.csrf)
        return error_response(e.code, e.message, e.status)

    @app.errorhandler(HTTPException)
    def _http(e: HTTPException):
        status = e.code or 500
        messages = (getattr(e, "data", None) or {}).get("messages")
        if messages:
            code = "MissingParameter" if "Missing data for required field." in str(messages) else "InvalidParameterValue"
            return error_response(code, "; ".join(CLEARER.get(m, m) for m in _flatten(messages)), 400)
        code = HTTP_CODES.get(status, "InternalError" if status >= 500 else "InvalidRequest")
        message = too_large_message() if status == 413 else e.description or e.name
        response = error_response(code, message, status)
        if getattr(e, "valid_methods", None):
            response.headers["Allow"] = ", ".join(e.valid_methods)
        return response

    @app.errorhandler(Exception)
    def _unexpected(e: Exception):
        log.exception("unexpected error")
        return error_response("InternalError", "the service failed to handle the request", 500)
