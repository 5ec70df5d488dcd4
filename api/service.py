"""The application's ``computed.service.Service``, set up by ``create_app``."""

from __future__ import annotations

from flask import current_app

from computed.service import Service


def service() -> Service:
    return current_app.extensions["computed"]
