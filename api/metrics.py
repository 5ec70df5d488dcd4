"""``/metrics``: the service's metrics in Prometheus's text format (``computed/metrics.py``,
``computed/store_metrics.py``), for an admin's credentials (Prometheus's ``basic_auth``: an
access key id and its secret), or for anyone with the ``[metrics] public`` setting (a
Prometheus on the same machine). A plain Flask blueprint: it stays out of the OpenAPI
document, as the EC2 API does.

Every request's duration is recorded by endpoint (the route's name, never its path: ids
would make a series each), method and status; scrapes of /metrics are not."""

from __future__ import annotations

import time

from flask import Blueprint, Flask, Response, g, request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from computed.accounts.registry import require_admin

from .auth import METRICS_PATH, current_caller
from .service import service

blp = Blueprint("metrics", __name__)

ENDPOINT = "metrics.metrics"
#: a method not among these is counted as OTHER (a client may send any token)
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
#: requests no route took (404, 405)
UNMATCHED = "unmatched"


@blp.get(METRICS_PATH)
def metrics():
    if not service().settings.metrics_public:
        require_admin(current_caller(), "read the metrics")
    return Response(generate_latest(service().metrics.registry), content_type=CONTENT_TYPE_LATEST)


def _started() -> None:
    g.metrics_started = time.perf_counter()


def _finished(response: Response) -> Response:
    started = g.pop("metrics_started", None)
    if started is not None and request.endpoint != ENDPOINT:
        method = request.method if request.method in METHODS else "OTHER"
        service().metrics.request(request.endpoint or UNMATCHED, method, response.status_code,
                                  time.perf_counter() - started)
    return response


def register(app: Flask) -> None:
    """Time every request: the clock starts before any other hook (a request refused by one,
    401 or 413, is timed too) and stops once its response is made, an error's too."""
    if getattr(app.extensions["computed"], "metrics", None) is None:
        return  # an app made only to serve the OpenAPI document has no service behind it
    app.before_request_funcs.setdefault(None, []).insert(0, _started)
    app.after_request(_finished)
