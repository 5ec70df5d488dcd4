"""/openapi.json, /docs and /health: the API describes itself, offline."""

from __future__ import annotations

import re

import pytest

from computed import __version__

try:  # only if already installed; never required
    from openapi_spec_validator import validate as validate_spec
except ImportError:  # pragma: no cover - depends on the environment
    validate_spec = None

#: every /v1 operation the service has
OPERATIONS = {
    ("/v1/sizes", "get"), ("/v1/images", "get"),
    ("/v1/keypairs", "get"), ("/v1/keypairs", "post"),
    ("/v1/keypairs/{name}", "get"), ("/v1/keypairs/{name}", "delete"),
    ("/v1/instances", "get"), ("/v1/instances", "post"),
    ("/v1/instances/{instance_id}", "get"), ("/v1/instances/{instance_id}", "delete"),
    ("/v1/instances/{instance_id}/stop", "post"), ("/v1/instances/{instance_id}/start", "post"),
    ("/v1/instances/{instance_id}/reboot", "post"), ("/v1/instances/{instance_id}/console", "get"),
    ("/v1/instances/{instance_id}/ports", "get"), ("/v1/instances/{instance_id}/ports", "post"),
    ("/v1/instances/{instance_id}/ports/{host_port}", "delete"),
    ("/v1/billing/report", "get"),
    ("/v1/budget", "get"), ("/v1/budget", "put"), ("/v1/budget", "delete"), ("/v1/budget/events", "get"),
    ("/v1/account/access-keys", "get"), ("/v1/account/access-keys", "post"),
    ("/v1/account/access-keys/{access_key_id}", "get"), ("/v1/account/access-keys/{access_key_id}", "patch"),
    ("/v1/account/access-keys/{access_key_id}", "delete"),
    ("/v1/hosts", "get"), ("/v1/hosts", "post"), ("/v1/hosts/{name}", "get"), ("/v1/hosts/{name}", "delete"),
    ("/v1/hosts/{name}/disable", "post"), ("/v1/hosts/{name}/enable", "post"), ("/v1/hosts/{name}/rotate-key", "post"),
}
HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
ERROR_REF = "#/components/schemas/ErrorResponse"


@pytest.fixture
def spec(client) -> dict:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    return response.get_json()


def resolve(spec: dict, ref: str):
    assert ref.startswith("#/"), ref
    node = spec
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        assert isinstance(node, dict) and part in node, f"unresolvable $ref {ref}"
        node = node[part]
    return node


def walk(node):
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


def operations(spec: dict):
    for path, item in spec["paths"].items():
        for method, op in item.items():
            if method in HTTP_METHODS:
                yield path, method, op


def test_is_openapi_3(spec):
    if validate_spec is not None:
        validate_spec(spec)
    assert re.fullmatch(r"3\.\d+\.\d+", spec["openapi"])
    assert spec["info"]["title"] == "computed"
    assert spec["info"]["version"] == __version__
    assert isinstance(spec["paths"], dict) and spec["paths"]
    tags = {t["name"] for t in spec.get("tags", [])}
    operation_ids = []
    for path, item in spec["paths"].items():
        assert path.startswith("/")
        assert set(item) <= HTTP_METHODS | {"parameters", "summary", "description"}, item.keys()
        path_params = {p["name"]: p for p in item.get("parameters", [])}
        for method, op in ((m, o) for m, o in item.items() if m in HTTP_METHODS):
            params = path_params | {p["name"]: p for p in op.get("parameters", []) if "name" in p}
            for name in re.findall(r"{([^}]+)}", path):
                assert name in params, f"{method} {path}: {{{name}}} is not declared"
                assert params[name]["in"] == "path" and params[name]["required"] is True
            for p in params.values():
                assert p["in"] in ("path", "query", "header", "cookie")
                assert "schema" in p or "content" in p
            assert op["responses"], f"{method} {path} has no responses"
            for status in op["responses"]:
                assert status == "default" or re.fullmatch(r"[1-5]\d\d", status), status
            assert op.get("summary"), f"{method} {path} has no summary"
            assert set(op.get("tags", [])) <= tags
            if "operationId" in op:
                operation_ids.append(op["operationId"])
            if "requestBody" in op:
                assert "application/json" in op["requestBody"]["content"]
    assert len(operation_ids) == len(set(operation_ids))
    for node in walk(spec):  # every reference resolves
        if "$ref" in node:
            resolve(spec, node["$ref"])
    for name, schema in spec["components"]["schemas"].items():
        assert isinstance(schema, dict) and ("type" in schema or "properties" in schema or "$ref" in schema), name


def test_every_v1_operation_is_documented(spec, app):
    documented = {(path, method) for path, method, _ in operations(spec)}
    assert documented == OPERATIONS
    served = set()
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/v1"):
            path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
            served |= {(path, m.lower()) for m in rule.methods - {"HEAD", "OPTIONS"}}
    assert served == OPERATIONS


def test_error_responses_use_the_error_schema(spec):
    assert resolve(spec, ERROR_REF)["properties"]["error"]
    detail = resolve(spec, resolve(spec, ERROR_REF)["properties"]["error"]["$ref"])
    assert set(detail["required"]) == {"code", "message"}
    for path, method, op in operations(spec):
        errors = {s: r for s, r in op["responses"].items() if s == "default" or int(s) >= 400}
        assert "default" in errors
        for status, response in errors.items():
            if "$ref" in response:
                response = resolve(spec, response["$ref"])
            schema = response["content"]["application/json"]["schema"]
            assert schema == {"$ref": ERROR_REF}, f"{method} {path} {status}"


DOCUMENTED_ERRORS = [
    ("/v1/instances", "post", {"400", "413", "415", "503"}), ("/v1/instances", "get", {"400"}),
    ("/v1/keypairs", "post", {"400", "409", "413", "415"}),
    ("/v1/keypairs/{name}", "get", {"404"}), ("/v1/keypairs/{name}", "delete", {"404"}),
    ("/v1/instances/{instance_id}", "get", {"400", "404"}), ("/v1/instances/{instance_id}", "delete", {"400", "404"}),
    ("/v1/instances/{instance_id}/stop", "post", {"400", "404", "409"}),
    ("/v1/instances/{instance_id}/start", "post", {"400", "404", "409"}),
    ("/v1/instances/{instance_id}/reboot", "post", {"400", "404", "409"}),
    ("/v1/instances/{instance_id}/console", "get", {"400", "404"}),
    ("/v1/billing/report", "get", {"400"}),
    ("/v1/budget", "get", {"400", "403", "404"}), ("/v1/budget", "put", {"400", "403", "404", "413", "415"}),
    ("/v1/budget", "delete", {"400", "403", "404"}), ("/v1/budget/events", "get", {"400", "403", "404"}),
    ("/v1/account/access-keys", "get", {"400", "403", "404"}),
    ("/v1/account/access-keys", "post", {"400", "403", "404", "409"}),
    ("/v1/account/access-keys/{access_key_id}", "get", {"404"}),
    ("/v1/account/access-keys/{access_key_id}", "patch", {"400", "404", "409", "413", "415"}),
    ("/v1/account/access-keys/{access_key_id}", "delete", {"400", "404", "409"}),
    ("/v1/hosts", "get", {"403"}), ("/v1/hosts", "post", {"400", "403", "409", "413", "415"}),
    ("/v1/hosts/{name}", "get", {"403", "404"}), ("/v1/hosts/{name}", "delete", {"403", "404", "409"}),
    ("/v1/hosts/{name}/disable", "post", {"403", "404"}), ("/v1/hosts/{name}/enable", "post", {"403", "404"}),
    ("/v1/hosts/{name}/rotate-key", "post", {"403", "404"}),
]


def test_documented_error_statuses(spec, case):
    for path, method, statuses in DOCUMENTED_ERRORS:
        with case(f"{method} {path}"):
            assert statuses <= set(spec["paths"][path][method]["responses"])


def test_authentication_is_documented(spec):
    schemes = spec["components"]["securitySchemes"]
    assert schemes["basic"] == {"type": "http", "scheme": "basic", "description": schemes["basic"]["description"]}
    assert schemes["sigv4"]["type"] == "apiKey" and schemes["sigv4"]["name"] == "Authorization"
    assert spec["security"] == [{"basic": []}, {"sigv4": []}]  # either will do, for every operation


def test_path_parameters_have_their_patterns(spec):
    for path, method, op in operations(spec):
        params = {p["name"]: p for p in spec["paths"][path].get("parameters", []) + op.get("parameters", [])}
        if "instance_id" in params:
            assert re.fullmatch(params["instance_id"]["schema"]["pattern"], "i-0123456789abcdef0")
            assert not re.fullmatch(params["instance_id"]["schema"]["pattern"], "i-0123")
        if "access_key_id" in params:
            assert re.fullmatch(params["access_key_id"]["schema"]["pattern"], "AKCDABCDEFGHIJKLMNOP")
            for bad in ("AKCDabcdefghijklmnop", "AKCD1BCDEFGHIJKLMNOP", "AKCD", "../AKCDABCDEFGHIJKLMNOP"):
                assert not re.fullmatch(params["access_key_id"]["schema"]["pattern"], bad), bad
        if "name" in params and path.startswith("/v1/keypairs/"):
            assert re.fullmatch(params["name"]["schema"]["pattern"], "my-key.pem")
            assert not re.fullmatch(params["name"]["schema"]["pattern"], "../key")
        elif "name" in params:
            assert path.startswith("/v1/hosts/"), path
            assert re.fullmatch(params["name"]["schema"]["pattern"], "node-2")
            for bad in ("../node", "Node-2", "node.2", "-node", "n" * 64):
                assert not re.fullmatch(params["name"]["schema"]["pattern"], bad), bad


def test_the_report_formats_are_documented(spec):
    content = spec["paths"]["/v1/billing/report"]["get"]["responses"]["200"]["content"]
    assert set(content) == {"application/json", "text/csv", "image/png"}


def test_documented_statuses_are_ones_the_api_answers(spec):
    documented = {s for _, _, op in operations(spec) for s in op["responses"]}
    assert "422" not in documented


def test_request_bodies_are_described(spec):
    launch = spec["paths"]["/v1/instances"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    fields = resolve(spec, launch["$ref"])["properties"]
    assert {"size", "image", "key_name", "user_data", "user_data_base64", "count", "tags",
            "client_token"} <= set(fields)
    query = {p["name"] for p in spec["paths"]["/v1/instances"]["get"]["parameters"] if p["in"] == "query"}
    assert {"state", "size", "image", "key_name", "tag", "limit", "next_token"} <= query
    add = spec["paths"]["/v1/hosts"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    host = resolve(spec, add["$ref"])
    assert set(host["properties"]) == {"name", "uri", "address", "image_mode", "storage_dir", "enabled"}
    assert set(host["required"]) == {"name", "uri"}
    assert host["properties"]["image_mode"]["enum"] == ["shared", "copy"]
    assert host["properties"]["enabled"]["type"] == "boolean"
    uri = host["properties"]["uri"]
    assert uri["maxLength"] == 255
    for good in ("qemu+ssh://root@node-2/system", "qemu:///system", "qemu+tls://node-2.example/system", "test:///default"):
        assert re.fullmatch(uri["pattern"], good), good
    for bad in ("qemu+ext:///system?command=/bin/sh", "node-2", "qemu+ssh://node 2/system", "QEMU:///system"):
        assert not re.fullmatch(uri["pattern"], bad), bad


def test_responses_are_described(spec):
    instance = resolve(spec, "#/components/schemas/Instance")["properties"]
    placement = nested(spec, instance["placement"])
    assert set(placement["properties"]) == {"host", "availability_zone", "host_reachable"}
    listed = spec["paths"]["/v1/hosts"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    host = resolve(spec, resolve(spec, listed["$ref"])["properties"]["hosts"]["items"]["$ref"])["properties"]
    assert {"name", "uri", "address", "enabled", "image_mode", "storage_dir", "reachable", "last_error",
            "checked_at", "capacity", "room", "allocated", "created_at", "management_keys"} == set(host)
    assert set(nested(spec, host["allocated"])["properties"]) == {"instances", "vcpus", "memory_mib"}
    for part in ("capacity", "room"):
        assert set(nested(spec, host[part])["properties"]) == {"vcpus", "memory_mib"}


def nested(spec: dict, prop: dict) -> dict:
    """The schema a nested property refers to (one with a description of its own is an allOf)."""
    return resolve(spec, prop["$ref"] if "$ref" in prop else prop["allOf"][0]["$ref"])


def test_docs_page(client, spec):
    response = client.get("/docs")
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    html = response.get_data(as_text=True)
    assert html.lower().startswith("<!doctype html>")
    for path, method, op in operations(spec):
        assert f"<code>{path}</code>" in html, path
        assert re.search(rf"<span class=m>{method.upper()}</span> <code>{re.escape(path)}</code>", html), (method, path)
    # works offline: nothing loaded from elsewhere
    assert "<script" not in html.lower()
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", html, re.IGNORECASE)
    assert not re.search(r"""url\(\s*["']?\s*(?:https?:)?//""", html, re.IGNORECASE)
    assert not re.search(r"@import", html, re.IGNORECASE)
    assert not re.search(r"<link\b", html, re.IGNORECASE)


def test_health(client):
    response = client.get("/health")
    assert response.status_code == 200
    body = response.get_json()
    assert body.pop("reconciled") in (True, False)  # the first reconciliation runs in the background
    assert body == {"status": "ok", "version": __version__}
