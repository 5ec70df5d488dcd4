"""Cross-site request forgery: no page of another site may make a visitor's browser change
anything here with the login it holds (HTTP Basic it cached, or the console's cookie).

- A request that may change something (``changes``: a REST method but GET, HEAD and
  OPTIONS; an EC2 action but the read-only ``Describe*`` and ``Get*``, whatever the method)
  is refused with 403 ``CrossSiteRequest`` when the browser says it comes from another page:
  ``Sec-Fetch-Site: cross-site`` or ``same-site``, or an ``Origin`` that is not the
  service's own (``null`` included). ``same-site`` is refused too: a site is a scheme and a
  host, whatever the port, so a page a tenant's guest serves on a forwarded port of the same
  host (``http://127.0.0.1:43000``) is "same-site" with the API. ``same-origin`` and ``none``
  (the user's own typing or bookmark) are fine, as are clients that send neither header
  (boto3, the AWS CLI, curl, the project's CLI).
- HTTP Basic does not authenticate an EC2 action that changes something: a browser sends
  Basic it cached with an ``<img>``'s GET, and old browsers send no ``Sec-Fetch-Site``; EC2
  clients sign with SigV4. Read-only actions may still use Basic (``curl -u``).
- No answer invites the browser's Basic dialog (``api.errors`` sends no ``WWW-Authenticate:
  Basic``), so a browser never learns, caches and replays the credentials on its own.

The console's own calls are same-origin, and its cookie's CSRF defence (the
``X-Computed-Console`` header, ``SameSite=Strict``: ``api.console_session``) stays as it is."""

from __future__ import annotations

from flask import Flask, request

from computed.errors import AuthFailure, ComputedError

from .ec2.context import request_pairs

#: methods that change nothing on the REST API
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: EC2's read-only actions by name; any other (unknown ones too) may change something
READ_ONLY_PREFIXES = ("Describe", "Get")
#: what Sec-Fetch-Site says of a request another page made
FOREIGN_SITES = frozenset({"cross-site", "same-site"})
EC2_BLUEPRINT = "ec2"
FORM = "application/x-www-form-urlencoded"


class CrossSiteRequest(ComputedError):
    """A request that could change something, sent by a browser from another site's page."""
    code, status = "CrossSiteRequest", 403


BASIC_ON_EC2 = ("HTTP Basic is accepted on the EC2 API for read-only actions (Describe*, Get*) only: "
                "sign actions that change something with AWS Signature Version 4")


def ec2_actions() -> list[str]:
    """The Action parameters of an EC2 request, from its query and form body (parsed as the
    EC2 API parses them: at most its number of parameters, else MalformedQueryString)."""
    return [value for name, value in request_pairs() if name == "Action"]


def ec2_read_only() -> bool:
    actions = ec2_actions()
    return bool(actions) and all(a.startswith(READ_ONLY_PREFIXES) for a in actions)


def changes() -> bool:
    """Whether this request may change something (an EC2 request without an Action is
    refused by the EC2 API anyway; it counts as one that may)."""
    if request.blueprint == EC2_BLUEPRINT:
        return not ec2_read_only()
    return request.method not in SAFE_METHODS


DEFAULT_PORTS = {"http": "80", "https": "443"}


def own_origin() -> str:
    return f"{request.scheme}://{request.host}"


def _normal(origin: str) -> str:
    """ORIGIN lower-cased, without its scheme's default port (browsers leave it out)."""
    scheme, _, host = origin.strip().lower().partition("://")
    port = DEFAULT_PORTS.get(scheme)
    if port and host.endswith(f":{port}"):
        host = host.removesuffix(f":{port}")
    return f"{scheme}://{host}"


def foreign() -> str | None:
    """Why the browser's own headers say another page sent this request, or None."""
    site = request.headers.get("Sec-Fetch-Site", "").strip().lower()
    if site in FOREIGN_SITES:
        return f"Sec-Fetch-Site: {site}"
    origin = request.headers.get("Origin")
    if origin is not None and _normal(origin) != _normal(own_origin()):
        return f"Origin: {origin.strip()[:200]}"
    return None


def refuse_cross_site() -> None:
    """Before authentication: what another site's page sends changes nothing."""
    if (why := foreign()) is not None and changes():
        raise CrossSiteRequest(f"a request that may change something is refused from another site's page ({why}); "
                               f"send it from {own_origin()} or from a client that is not a browser")


def refuse_basic_for_ec2_changes() -> None:
    """For api.auth, before it checks Basic credentials."""
    if request.blueprint == EC2_BLUEPRINT and not ec2_read_only():
        raise AuthFailure(BASIC_ON_EC2)


def register(app: Flask) -> None:
    app.before_request(refuse_cross_site)
