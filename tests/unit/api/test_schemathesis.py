"""Property-based tests of the REST API against its own OpenAPI document (schemathesis):
every operation and method of the served ``/openapi.json``, with valid and invalid
requests, signed in with HTTP Basic (as an admin for the operations only admins may call,
which list 403; a host to add never gets a URI that could connect: ``_harmless_uri``).
Checked for each answer:

- no 5xx, and no exception out of the app;
- its status is one the operation lists itself (its ``default`` error response aside),
  its content type and body match what the document says for that status;
- invalid requests are refused with a 4xx;
- valid requests are accepted, or refused only for a reason the document cannot express
  (a size or image that does not exist, an end before the start...: ``REFUSALS``).

Examples are few and derandomized, so a run takes about the same time and finds the same
things on every machine. Each operation's test has its own app (``make_app``): launches go
to libvirt's test driver and are torn down with it."""

from __future__ import annotations

import base64
import re
import types
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.specs.openapi.checks import positive_data_acceptance

from api.app import create_app
from api.host_schemas import HOST_URI_PATTERN
from computed.compute.tags import RESERVED_TAG_PREFIXES, TAG_KEY
from computed.settings import Settings

MAX_EXAMPLES = 30

# The document is taken from an app made only to serve it (no service behind: the document
# is public and built from the code alone), because pytest needs the operations when it
# collects the tests; test_the_document_is_the_one_served checks the test apps serve this
# very document. (schemathesis.pytest.from_fixture would take it from a fixture, but its
# lazy loader fails with pytest 9.2: "'Function' object has no attribute '_nodeid'".)
_DOC_APP = create_app(service=types.SimpleNamespace(settings=Settings(Path("/nonexistent"), Path(), Path())))
schema = schemathesis.openapi.from_wsgi("/openapi.json", _DOC_APP)
schema.config.generation.update(max_examples=MAX_EXAMPLES, deterministic=True, database="none")

#: (method, path) -> what may refuse a valid request there: (status, error code, message
#: regex); every part of a message listing several problems ("; ") must be one of these
REFUSALS: dict[tuple[str, str], list[tuple[int, str, str]]] = {
    ("POST", "/v1/instances"): [
        (400, "InvalidInstanceType", ""), (400, "InvalidAMIID.NotFound", ""), (400, "InvalidKeyPair.NotFound", ""),
        (400, "InvalidParameterValue", r"^user_data: (give user_data or user_data_base64, not both|at most \d+ bytes)"),
        # OpenAPI 3.0 cannot say what a dict's keys must look like (3.1's propertyNames)
        (400, "InvalidParameterValue", r"^tags\..*\.key: 1 to 128 characters, no control characters$"),
        (400, "InvalidParameterValue", r"^tag key .*reserved"),
        (400, "IdempotentParameterMismatch", ""), (400, "InstanceLimitExceeded", ""),
        # forwarded ports: taken, in the SSH range or outside the forward range (settings), more
        # than one instance's, or past the account's cap (a setting)
        (409, "InvalidPort.InUse", ""), (400, "PortLimitExceeded", ""),
        (400, "InvalidParameterValue", r"(kept for the instances' SSH|can be named only when launching one|"
                                       r"is asked for twice|outside the service's forward range)"),
    ],
    ("GET", "/v1/instances"): [(400, "InvalidParameterValue", r"^next_token is not one this service gave out$")],
    ("POST", "/v1/keypairs"): [(400, "InvalidKey.Format", ""), (409, "InvalidKeyPair.Duplicate", "")],
    ("GET", "/v1/billing/report"): [
        (400, "InvalidParameterValue", (r"^(end must be after start|a report covers at most a year|"
                                        r"only an admin reports on other accounts)")),
    ],
    # a well-formed id or name that names nothing, or an instance in the wrong state
    **{(m, p): [(404, "", ""), (409, "IncorrectInstanceState", "")] for m, p in (
        ("GET", "/v1/instances/{instance_id}"), ("DELETE", "/v1/instances/{instance_id}"),
        ("POST", "/v1/instances/{instance_id}/stop"), ("POST", "/v1/instances/{instance_id}/start"),
        ("POST", "/v1/instances/{instance_id}/reboot"), ("GET", "/v1/instances/{instance_id}/console"),
        ("GET", "/v1/keypairs/{name}"), ("DELETE", "/v1/keypairs/{name}"))},
    ("POST", "/v1/hosts"): [
        (400, "InvalidParameterValue", r"^the host \S+ cannot be added: the libvirt host .* cannot be reached"),
        (409, "InvalidHost.Duplicate", ""),
        # which fields go together (OpenAPI 3.0 cannot say it without oneOf)
        (400, "InvalidParameterValue", r"^storage_dir: (a host in copy mode needs|only a host in copy mode has)"),
    ],
    # a budget: none set yet, an account id that names no account, a currency not the catalog's
    **{(m, "/v1/budget"): [(404, "InvalidBudget.NotFound", ""), (404, "InvalidAccountID.NotFound", "")]
       for m in ("GET", "DELETE")},
    ("PUT", "/v1/budget"): [(404, "InvalidAccountID.NotFound", ""),
                            (400, "InvalidParameterValue", r"^(amount: must be more than 0|currency: the price catalog)")],
    ("GET", "/v1/budget/events"): [(404, "InvalidAccountID.NotFound", "")],
    # access keys: an account id that names no account, a third key, a generated key id that names none
    ("GET", "/v1/account/access-keys"): [(404, "InvalidAccountID.NotFound", "")],
    ("POST", "/v1/account/access-keys"): [(404, "InvalidAccountID.NotFound", ""), (409, "LimitExceeded", "")],
    **{(m, "/v1/account/access-keys/{access_key_id}"): [(404, "InvalidAccessKeyId.NotFound", "")]
       for m in ("GET", "PATCH", "DELETE")},
    # an instance that does not exist or is in transition; a port taken, in the SSH range or
    # outside the forward range (settings); past the account's cap
    **{(m, p): [(404, "", ""), (409, "IncorrectInstanceState", ""), (409, "InvalidPort.InUse", ""),
                (400, "PortLimitExceeded", ""),
                (400, "InvalidParameterValue", r"(kept for the instances' SSH|outside the service's forward range)")]
       for m, p in (
        ("GET", "/v1/instances/{instance_id}/ports"), ("POST", "/v1/instances/{instance_id}/ports"),
        ("DELETE", "/v1/instances/{instance_id}/ports/{host_port}"))},
    # a well-formed host name that names nothing, or the host of the known instance
    **{(m, p): [(404, "InvalidHostID.NotFound", ""), (409, "InvalidHost.InUse", "")] for m, p in (
        ("GET", "/v1/hosts/{name}"), ("DELETE", "/v1/hosts/{name}"), ("POST", "/v1/hosts/{name}/disable"),
        ("POST", "/v1/hosts/{name}/enable"), ("POST", "/v1/hosts/{name}/rotate-key"))},
}
#: statuses any operation may answer without listing them: 413 (a body over the limit; the
#: operations that take a body list it). 401 is the security schemes' (and the requests
#: here carry good credentials; schemathesis's ignored_auth check sends them without).
UNLISTED = {413}


def _is_positive(case) -> bool:
    return case.meta is not None and case.meta.generation.mode.is_positive


def _same_method(case) -> bool:
    """Not a probe with a method the operation does not have (answered 405)."""
    return case.method.upper() == case.operation.method.upper()


def valid_requests_are_accepted(ctx, response, case):
    """positive_data_acceptance, less the refusals the document cannot foresee (REFUSALS)."""
    if not _is_positive(case) or not _same_method(case) or response.status_code < 400:
        return
    key = (case.operation.method.upper(), case.operation.path)
    try:
        body = response.json()
    except ValueError:
        body = None
    error = body.get("error", {}) if isinstance(body, dict) else {}
    reasons = [regex for status, code, regex in REFUSALS.get(key, [])
               if response.status_code == status and (not code or error.get("code") == code)]
    parts = str(error.get("message", "")).split("; ")
    if reasons and all(any(re.search(regex, part) for regex in reasons) for part in parts):
        return
    raise AssertionError(f"{key[0]} {key[1]}: a request valid by the document was refused "
                         f"({response.status_code} {error or response.text[:300]})")


def statuses_are_listed(ctx, response, case):
    """Every status answered is listed by the operation itself, not left to ``default``."""
    if not _same_method(case):
        return
    listed = {int(s) for s in case.operation.definition.raw["responses"] if s.isdigit()}
    if response.status_code not in listed | UNLISTED:
        raise AssertionError(f"{case.operation.method.upper()} {case.operation.path} answered "
                             f"{response.status_code}, which it does not list (it lists {sorted(listed)}): "
                             f"{response.text[:300]}")


#: what exists in the app under test (set by the ``known`` fixture): path parameters name it
#: half the time, so that operations on a real instance and key pair are exercised too
KNOWN: dict = {}
#: a billing window the service reports on
WINDOW = {"start": "2026-03-01T00:00:00Z", "end": "2026-03-01T06:00:00Z"}


@schema.hook
def flatmap_case(context, case):
    """Valid requests generated at random (the fuzzing phase; the coverage phase tries the
    edge cases) are made to name what exists, so that they get past the lookups: every
    launch names a size that exists, the default image and no key, gives user data as text
    only, tag keys the core takes and a count of at most 3; every billing report a window
    of a few hours of the caller's own account; half the paths an instance, key pair or
    host of the app (the ``known`` fixture)."""
    op, key = context.operation, (context.operation.method.upper(), context.operation.path)
    if not _is_positive(case):
        return st.just(case)
    if key == ("POST", "/v1/instances") and isinstance(case.body, dict):
        body = {k: v for k, v in case.body.items() if k not in ("image", "key_name", "user_data_base64")}
        body.update(size="t3.micro", count=min(body.get("count", 1), 3))
        if isinstance(body.get("tags"), dict):  # OpenAPI 3.0 cannot say which keys
            body["tags"] = {k: v for k, v in body["tags"].items()
                            if TAG_KEY.fullmatch(k) and not k.lower().startswith(RESERVED_TAG_PREFIXES)}
        case.body = body
    elif key == ("GET", "/v1/billing/report") and isinstance(case.query, dict):
        case.query = {k: v for k, v in case.query.items() if k != "account"} | WINDOW
    elif op.path.startswith("/v1/instances/{instance_id}") and "instance_id" in KNOWN:
        return st.sampled_from([case.path_parameters, case.path_parameters | {"instance_id": KNOWN["instance_id"]}]).map(
            lambda params: _with(case, path_parameters=_limit_reboots(op.path, params, case.path_parameters)))
    elif op.path == "/v1/keypairs/{name}" and "name" in KNOWN:
        return st.sampled_from([case.path_parameters, {"name": KNOWN["name"]}]).map(
            lambda params: _with(case, path_parameters=params))
    elif op.path.startswith("/v1/hosts/{name}") and "host" in KNOWN:
        return st.sampled_from([case.path_parameters, {"name": KNOWN["host"]}]).map(
            lambda params: _with(case, path_parameters=params))
    return st.just(case)


def _limit_reboots(path: str, params: dict, generated: dict) -> dict:
    """PARAMS, but the generated ones after the known instance's second reboot: each keeps
    a worker 2 s (the test driver's guests never answer, so there is no more to see)."""
    if path.endswith("/reboot") and params.get("instance_id") == KNOWN.get("instance_id"):
        KNOWN["reboots"] = KNOWN.get("reboots", 0) + 1
        if KNOWN["reboots"] > 2:
            return generated
    return params


def _with(case, **changes):
    for name, value in changes.items():
        setattr(case, name, value)
    return case


#: what a host's URI becomes when the document takes it (see ``_harmless_uri``)
NOWHERE = "test:///nonexistent/computed-schemathesis/node.xml"


def _harmless_uri(case) -> None:
    """A host to add whose URI the document takes gets one that fails at once instead: a
    generated URI may name a machine that never answers (ssh waits minutes for TCP to give
    up) or this machine's own libvirtd (qemu:///system would be added, and launched on).
    Every phase's cases come through here, the coverage phase's too; a URI the document
    refuses is left as it is (the API refuses it before connecting anywhere)."""
    if ((case.method.upper(), case.operation.path) == ("POST", "/v1/hosts") and isinstance(case.body, dict)
            and isinstance(case.body.get("uri"), str) and len(case.body["uri"]) <= 255
            and re.fullmatch(HOST_URI_PATTERN, case.body["uri"])):
        case.body = case.body | {"uri": NOWHERE}


def _admins_only(case) -> bool:
    """The operation is one only admins may call (it lists 403)."""
    return "403" in case.operation.definition.raw["responses"]


@pytest.fixture
def known(app, wait):
    """An instance (running, on the host ``local``) and a key pair in APP, and an admin's
    credentials, named in KNOWN while the test runs."""
    client = app.test_client()
    created = client.post("/v1/keypairs", json={"name": "known"})
    assert created.status_code == 201, created.get_data(as_text=True)
    launched = client.post("/v1/instances", json={"size": "t3.micro", "key_name": "known",
                                                  "tags": {"Name": "<known> & 'quoted' \"too\""}})
    assert launched.status_code == 202, launched.get_data(as_text=True)
    wait()
    admin = app.extensions["computed"].accounts.create("schemathesis-admin", admin=True)
    KNOWN.update(instance_id=launched.get_json()["instances"][0]["id"], name="known", host="local",
                 admin_auth=(admin.access_key_id, admin.secret_access_key))
    yield KNOWN
    KNOWN.clear()


def test_the_document_is_the_one_served(client):
    assert client.get("/openapi.json").get_json() == schema.raw_schema


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, derandomize=True, database=None, deadline=None,
          suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_document(case, app, known):
    _harmless_uri(case)
    auth = known["admin_auth"] if _admins_only(case) else app.config["TEST_AUTH"]
    case.call_and_validate(app=app, headers=_basic(auth),
                           excluded_checks=[positive_data_acceptance],
                           additional_checks=[valid_requests_are_accepted, statuses_are_listed])


def _basic(creds: tuple[str, str]) -> dict[str, str]:
    token = base64.b64encode(f"{creds[0]}:{creds[1]}".encode()).decode()
    return {"Authorization": f"Basic {token}"}
