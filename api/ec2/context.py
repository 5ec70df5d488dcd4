"""What an action works with: the service, the authenticated caller, the request id; and
the table of actions by name."""

from __future__ import annotations

import uuid
from collections.abc import Callable

from flask import g, request

from computed.service import Service
from computed.settings import Settings

from .. import service as _service
from .params import parse_request

FORM = "application/x-www-form-urlencoded"

#: action name -> handler(Params) -> the response's elements after requestId
ACTIONS: dict[str, Callable] = {}


def action(name: str):
    def register(handler: Callable) -> Callable:
        assert name not in ACTIONS, name
        ACTIONS[name] = handler
        return handler
    return register


def service() -> Service:
    return _service.service()


def settings() -> Settings:
    return service().settings


def caller():
    """The authenticated caller (``computed.accounts.registry.Caller``), set before the view runs."""
    from .. import auth
    return auth.current_caller()


def request_id() -> str:
    if "ec2_request_id" not in g:
        g.ec2_request_id = str(uuid.uuid4())
    return g.ec2_request_id


def request_pairs() -> list[tuple[str, str]]:
    """The request's parameters: its query string's, then its form body's (another body is
    not parameters), at most MAX_FIELDS in all; parsed once per request (the cross-site
    check reads the Action before the EC2 API reads the rest)."""
    if "ec2_pairs" not in g:
        # the raw body: authentication verified its signature over these same bytes, and
        # request.form must never consume the stream
        body = request.get_data(cache=True) if request.mimetype == FORM else b""
        g.ec2_pairs = parse_request(request.query_string, body)
    return g.ec2_pairs
