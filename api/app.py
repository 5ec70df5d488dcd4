"""The Flask application factory: ``create_app(config)`` builds the app around one
``computed.service.Service``; nothing happens at import time."""

from __future__ import annotations

import logging

from flask import Flask
from flask_smorest import Api
from werkzeug.middleware.proxy_fix import ProxyFix

from computed import __version__
from computed.clock import Clock
from computed.service import Service
from computed.settings import Settings

from . import (access_keys, auth, billing, budgets, catalog, console, csrf, docs, ec2, errors, hosts, instances, keypairs,
               metrics, ports, ratelimit)
from .schemas import ErrorResponseSchema

#: the default of the api_max_body setting (the limit of a request's body)
MAX_BODY = Settings.api_max_body


#: how a caller authenticates (api.auth): either will do
SECURITY_SCHEMES = {
    "basic": {"type": "http", "scheme": "basic",
              "description": "an access key id as the user name and its secret as the password "
                             "(on the EC2 API for its read-only actions only)"},
    "sigv4": {"type": "apiKey", "in": "header", "name": "Authorization",
              "description": "AWS Signature Version 4 (service 'computed' or 'ec2', the service's region), "
                             "in this header or as a presigned URL's X-Amz-* query parameters"},
}


class ComputedApi(Api):
    ERROR_SCHEMA = ErrorResponseSchema  # what errors.register really sends


def create_app(config: Settings | dict | None = None, service: Service | None = None,
               clock: Clock | None = None) -> Flask:
    """CONFIG: Settings, or a dict of Settings fields overriding those loaded from the
    environment and config file, or None for those alone."""
    if service is None:
        settings = config if isinstance(config, Settings) else Settings.load(**(config or {}))
        service = Service(settings, clock)
    app = Flask(__name__)
    app.config.update(
        API_TITLE="computed", API_VERSION=__version__, OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/", OPENAPI_JSON_PATH="openapi.json",
        MAX_CONTENT_LENGTH=service.settings.api_max_body, JSON_SORT_KEYS=False,
    )
    app.extensions["computed"] = service
    api = ComputedApi(app, spec_kwargs={"info": {"description": "Self-hosted, EC2-style virtual machines."},
                                        "security": [{name: []} for name in SECURITY_SCHEMES]})
    for name, scheme in SECURITY_SCHEMES.items():
        api.spec.components.security_scheme(name, scheme)
    for module in (catalog, keypairs, instances, ports, billing, budgets, access_keys, hosts):
        api.register_blueprint(module.blp)
    app.register_blueprint(docs.blp)
    app.register_blueprint(ec2.blp)  # the EC2 Query API at / and /ec2/
    app.register_blueprint(metrics.blp)  # /metrics, for Prometheus
    metrics.register(app)
    console.register(app)  # /console/: the web console
    errors.register(app)
    csrf.register(app)  # before authentication: another site's page changes nothing
    auth.register(app)
    ratelimit.register(app)

    @app.get("/health")
    def health():
        # reconciled: the service has squared its store with libvirt and the disk since it started
        return {"status": "ok", "version": __version__, "reconciled": service.reconciled.is_set()}

    hops = service.settings.trusted_proxies
    if hops:  # believe X-Forwarded-For, -Proto and -Host from that many proxies, no more
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)
    logging.getLogger("computed").setLevel(logging.INFO)
    return app
