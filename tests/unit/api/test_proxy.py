"""Behind a TLS proxy (the ``[api] trusted_proxies`` setting, werkzeug's ProxyFix): with a
trusted hop, ``X-Forwarded-Proto: https`` makes the console's cookie ``Secure`` and
``__Host-computed_console`` (Path=/, no Domain), which alone counts over HTTPS; the
forwarded host is the service's own origin for api.csrf. Without the setting, the
forwarded headers change nothing."""

from __future__ import annotations

from http.cookies import SimpleCookie

import pytest

from api import console_session
from computed.settings import Settings, SettingsError

HEADER = {console_session.HEADER: "1"}
HTTPS = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "computed.example", "X-Forwarded-For": "203.0.113.7"}


def login(client, app, headers=None, **kwargs):
    key_id, secret = app.config["TEST_AUTH"]
    return client.post("/console/session", json={"access_key_id": key_id, "secret_access_key": secret},
                       headers={**HEADER, **(headers or {})}, auth=None, **kwargs)


def the_cookie(response) -> tuple[str, str, dict]:
    """(name, value, attributes in lower case) of the one Set-Cookie of RESPONSE."""
    headers = response.headers.getlist("Set-Cookie")
    assert len(headers) == 1, headers
    jar = SimpleCookie()
    jar.load(headers[0])
    (name, morsel), = jar.items()
    attributes = {k: v for k, v in morsel.items() if v}
    return name, morsel.value, attributes


def test_a_trusted_proxys_https_makes_the_cookie_secure_and_host_prefixed(make_app, expect_error):
    app = make_app(trusted_proxies=1)
    client = app.test_client(use_cookies=False)
    response = login(client, app, HTTPS)
    assert response.status_code == 200, response.get_data(as_text=True)
    name, token, attributes = the_cookie(response)
    assert name == "__Host-computed_console"
    assert attributes.get("secure") is True and attributes.get("path") == "/" and "domain" not in attributes
    assert attributes.get("httponly") is True and attributes.get("samesite") == "Strict"

    assert client.get("/console/session", auth=None, headers={**HTTPS, "Cookie": f"{name}={token}"}).status_code == 200
    # over HTTPS only the __Host- cookie counts; over plain HTTP only the plain one
    plain = {"Cookie": f"computed_console={token}"}
    expect_error(client.get("/console/session", auth=None, headers={**HTTPS, **plain}), 401, "AuthFailure")
    expect_error(client.get("/console/session", auth=None, headers={"Cookie": f"{name}={token}"}), 401, "AuthFailure")
    # the proxy's public origin is the service's own (api.csrf): the console's calls work
    origin = {**HTTPS, "Origin": "https://computed.example", "Cookie": f"{name}={token}", **HEADER}
    assert client.post("/v1/keypairs", json={"name": "via-proxy"}, auth=None, headers=origin).status_code == 201
    refused = client.post("/v1/keypairs", json={"name": "other"}, auth=None,
                          headers={**origin, "Origin": "http://127.0.0.1:8080"})
    expect_error(refused, 403, "CrossSiteRequest")

    logout = client.delete("/console/session", auth=None, headers={**HTTPS, "Cookie": f"{name}={token}", **HEADER})
    assert logout.status_code == 204
    assert the_cookie(logout)[0] == "__Host-computed_console"


def test_https_itself_makes_the_cookie_secure(app):
    client = app.test_client(use_cookies=False)
    response = login(client, app, base_url="https://localhost")
    name, _, attributes = the_cookie(response)
    assert name == "__Host-computed_console" and attributes.get("secure") is True


def test_forwarded_headers_are_ignored_without_the_setting(app, expect_error):
    client = app.test_client(use_cookies=False)
    response = login(client, app, HTTPS)
    assert response.status_code == 200
    name, token, attributes = the_cookie(response)
    assert name == "computed_console" and "secure" not in attributes
    # the forwarded host is nobody's origin here
    refused = client.post("/v1/keypairs", json={"name": "x"}, auth=app.config["TEST_AUTH"],
                          headers={**HTTPS, "Origin": "https://computed.example"})
    expect_error(refused, 403, "CrossSiteRequest")


def test_only_as_many_hops_as_trusted(make_app):
    """With one trusted hop, the client's own X-Forwarded-Proto in front of the proxy's is not
    believed: werkzeug takes the last value."""
    app = make_app(trusted_proxies=1)
    client = app.test_client(use_cookies=False)
    response = login(client, app, {"X-Forwarded-Proto": "https, http", "X-Forwarded-For": "198.51.100.1, 203.0.113.7"})
    assert the_cookie(response)[0] == "computed_console"


@pytest.mark.parametrize("value", ["-1", "one", "1.5"])
def test_the_setting_is_a_count_of_hops(tmp_path, value):
    assert Settings.load({"COMPUTED_VAR_DIR": str(tmp_path)}).trusted_proxies == 0
    assert Settings.load({"COMPUTED_VAR_DIR": str(tmp_path), "COMPUTED_TRUSTED_PROXIES": "2"}).trusted_proxies == 2
    with pytest.raises(SettingsError, match="COMPUTED_TRUSTED_PROXIES"):
        Settings.load({"COMPUTED_VAR_DIR": str(tmp_path), "COMPUTED_TRUSTED_PROXIES": value})
