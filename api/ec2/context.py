"""What an action works with: the service, the authenticated caller, the request id; and
the table of actions by name."""

from __future__ import annotations

import uuid
from collections.abc import Callable

from flask import g

from computed.service import Service
from computed.settings import Settings

from .. import service as _service

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
