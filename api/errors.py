"""Every error is JSON ``{"error": {"code", "message"}}``: the core's errors with their
status, HTTP errors (unknown route, wrong method, bad JSON, failed validation) as 4xx with
EC2-style codes, and anything unexpected as a logged 500 that reveals nothing."""

from __future__ import annotations

import logging

from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

from computed.errors import ComputedError

log = logging.getLogger(__name__)

HTTP_CODES = {400: "InvalidParameterValue", 401: "AuthFailure", 403: "UnauthorizedOperation",
              404: "NotFound", 405: "MethodNotAllowed", 409: "Conflict", 413: "RequestTooLarge",
              415: "UnsupportedMediaType", 422: "InvalidParameterValue", 429: "RequestLimitExceeded"}


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


def error_response(code: str, message: str, status: int):
    response = jsonify({"error": {"code": code, "message": message}})
    response.status_code = status
    return response


def register(app: Flask) -> None:
    @app.errorhandler(ComputedError)
    def _computed(e: ComputedError):
        response = error_response(e.code, e.message, e.status)
        if e.status == 401:
            response.headers["WWW-Authenticate"] = 'Basic realm="computed", charset="UTF-8"'
        return response

    @app.errorhandler(HTTPException)
    def _http(e: HTTPException):
        status = e.code or 500
        messages = (getattr(e, "data", None) or {}).get("messages")
        if messages:
            code = "MissingParameter" if "Missing data for required field." in str(messages) else "InvalidParameterValue"
            return error_response(code, "; ".join(_flatten(messages)), 400)
        code = HTTP_CODES.get(status, "InternalError" if status >= 500 else "InvalidRequest")
        response = error_response(code, e.description or e.name, status)
        if getattr(e, "valid_methods", None):
            response.headers["Allow"] = ", ".join(e.valid_methods)
        return response

    @app.errorhandler(Exception)
    def _unexpected(e: Exception):
        log.exception("unexpected error")
        return error_response("InternalError", "the service failed to handle the request", 500)
