"""Cross-site request forgery in a real browser (headless Chromium, Playwright): while the
browser holds a login to the service -- HTTP Basic credentials it sends to the service's
origin (as it would after answering a Basic dialog once) and the console's session
cookie -- a page served from another origin fires each vector at the service: ``<img>``
GETs of EC2's RunInstances, TerminateInstances and StopInstances, auto-submitted form
POSTs to ``/v1/instances/{id}/stop`` and to the EC2 endpoint, and ``fetch()`` with
``credentials: 'include'`` and ``mode: 'no-cors'``. The page comes from another site
(``127.0.0.2``) and from the same site on another port (``127.0.0.1``, as a tenant's
forwarded port would serve it). Afterwards the API says nothing changed: no new instance,
every state as it was (api.csrf)."""

from __future__ import annotations

import base64
import html
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode

import pytest
import requests

try:
    from playwright.sync_api import expect
except ImportError:  # the browser fixture skips the tests (fails them in CI)
    expect = None

from tests.browser.test_console_browser import log_in

pytestmark = pytest.mark.browser

EC2_VERSION = "2016-11-15"
RUN = {"ImageId": "debian-12-podman", "InstanceType": "t3.micro", "MinCount": "1", "MaxCount": "1"}


class PageServer:
    """Serves PAGE(path, query) -> HTML or None on HOST and a free port, from a thread."""

    def __init__(self, host: str, page):
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                path, _, query = self.path.partition("?")
                body = page(path, parse_qs(query))
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.end_headers()
                self.wfile.write((body or "not here").encode())

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer((host, 0), Handler)
        self.url = f"http://{host}:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, name=f"pages-{host}", daemon=True)
        self._thread.start()

    def close(self):
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def ec2_url(api: str, action: str, **params) -> str:
    return f"{api}/?{urlencode({'Action': action, 'Version': EC2_VERSION, **params})}"


def img(url: str) -> str:
    return f"sent.push(new Promise(r => {{ const i = new Image(); i.onload = i.onerror = r; i.src = {url!r}; }}));"


def form(action: str, fields: dict[str, str]) -> str:
    """An auto-submitted form POST into an iframe of its own (the page stays to report)."""
    inputs = "".join(f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
                     for k, v in fields.items())
    return (f"sent.push(new Promise(r => {{ const name = 'f' + sent.length; const frame = document.createElement('iframe');"
            f" frame.name = name; document.body.appendChild(frame); frame.onload = r;"
            f" const form = document.createElement('form'); form.method = 'POST'; form.action = {action!r};"
            f" form.target = name; form.innerHTML = {inputs!r}; document.body.appendChild(form); form.submit(); }}));")


def fetch(url: str, method: str = "GET", body: str | None = None) -> str:
    js_body = f", body: new URLSearchParams({body!r})" if body is not None else ""
    return (f"sent.push(fetch({url!r}, {{method: {method!r}, credentials: 'include', mode: 'no-cors'{js_body}}})"
            f".catch(() => null));")


def vectors(api: str, target: str) -> dict[str, list[str]]:
    """Each vector's scripts, against the instance TARGET."""
    stop = {"Action": "StopInstances", "Version": EC2_VERSION, "InstanceId.1": target}
    terminate = {"Action": "TerminateInstances", "Version": EC2_VERSION, "InstanceId.1": target}
    return {
        "img-run-instances": [img(ec2_url(api, "RunInstances", **RUN))],
        "img-terminate-instances": [img(ec2_url(api, "TerminateInstances", **{"InstanceId.1": target}))],
        "img-stop-instances": [img(ec2_url(api, "StopInstances", **{"InstanceId.1": target}))],
        "form-rest-stop": [form(f"{api}/v1/instances/{target}/stop", {})],
        "form-ec2": [form(f"{api}/", stop), form(f"{api}/ec2/", terminate),
                     form(f"{api}/", {"Action": "RunInstances", "Version": EC2_VERSION, **RUN})],
        "fetch-no-cors": [fetch(f"{api}/v1/instances/{target}/stop", "POST"),
                          fetch(ec2_url(api, "StopInstances", **{"InstanceId.1": target})),
                          fetch(f"{api}/", "POST", urlencode(terminate)),
                          fetch(f"{api}/", "POST", urlencode({"Action": "RunInstances", "Version": EC2_VERSION,
                                                               **RUN}))],
    }


def page_of(scripts: list[str]) -> str:
    return ("<!doctype html><html><body><script>\nconst sent = [];\n" + "\n".join(scripts)
            + "\nPromise.all(sent).then(() => { window.__done = sent.length; });\n</script></body></html>")


@pytest.fixture(scope="module")
def servers(console_server):
    """The page servers of another site and of the same site on another port:
    ``/VECTOR.html?target=INSTANCE_ID`` is the page of that vector against that instance."""
    api = console_server.url

    def page(path: str, query: dict) -> str | None:
        scripts = vectors(api, query.get("target", ["i-0123456789abcdef0"])[0]).get(path.strip("/").removesuffix(".html"))
        return page_of(scripts) if scripts else None

    found = {"cross-site": PageServer("127.0.0.2", page), "same-site": PageServer("127.0.0.1", page)}
    try:
        yield found
    finally:
        for server in found.values():
            server.close()


@pytest.fixture
def target(console_server) -> str:
    """A running instance of alice's, launched with HTTP Basic on REST (as the project's CLI does)."""
    api, user = console_server.url, console_server.user
    launched = requests.post(f"{api}/v1/instances", json={"size": "t3.micro", "image": "debian-12-podman"},
                             auth=(user.access_key_id, user.secret_access_key), timeout=30)
    assert launched.status_code == 202, launched.text
    assert console_server.service.worker.idle(60)
    return launched.json()["instances"][0]["id"]


def snapshot(console_server) -> dict[str, str]:
    """Every instance of alice's and its state, through the API (SigV4 would do as well)."""
    user = console_server.user
    answer = requests.get(f"{console_server.url}/v1/instances", auth=(user.access_key_id, user.secret_access_key),
                          timeout=30)
    assert answer.status_code == 200, answer.text
    return {i["id"]: i["state"]["name"] for i in answer.json()["instances"]}


def basic_login(context, api: str, user) -> None:
    """Make CONTEXT send USER's HTTP Basic credentials with every request to the service's
    origin, whoever's page makes it: what a browser does once it has cached a Basic login
    (Playwright's http_credentials alone would only answer a challenge, which the service no
    longer sends: test_the_browser_is_never_asked_for_a_basic_login)."""
    header = "Basic " + base64.b64encode(f"{user.access_key_id}:{user.secret_access_key}".encode()).decode()
    context.route(f"{api}/**", lambda route: route.continue_(headers={**route.request.headers,
                                                                      "authorization": header}))


@pytest.mark.parametrize("site", ["cross-site", "same-site"])
@pytest.mark.parametrize("vector", list(vectors("http://x", "i-0")))
def test_another_sites_page_changes_nothing(browser, console_server, servers, target, site, vector):
    api, user = console_server.url, console_server.user
    before = snapshot(console_server)
    assert before[target] == "running"
    context = browser.new_context(http_credentials={"username": user.access_key_id,
                                                    "password": user.secret_access_key, "origin": api})
    try:
        context.set_default_timeout(15_000)
        page = context.new_page()
        page.goto(f"{api}/console/")
        log_in(page, user)  # the console's cookie
        assert any(c["name"].endswith("computed_console") for c in context.cookies(api))
        basic_login(context, api, user)  # and a Basic login
        assert page.goto(f"{api}/v1/instances").status == 200
        answers = []
        page.on("request", lambda r: answers.append(r) if r.url.startswith(api + "/") else None)
        page.goto(f"{servers[site].url}/{vector}.html?target={target}")
        page.wait_for_function("window.__done > 0")
        assert answers, "the page sent nothing to the service"
    finally:
        context.close()
    assert console_server.service.worker.idle(60)
    assert snapshot(console_server) == before


def test_the_browser_is_never_asked_for_a_basic_login(browser, console_server, servers):
    """Given the credentials to answer a Basic challenge with (as a user would type them in
    the dialog), the browser is never asked: an API path answers 401 with no challenge, and
    another site's page then sends no Authorization to the service."""
    api, user = console_server.url, console_server.user
    context = browser.new_context(http_credentials={"username": user.access_key_id,
                                                    "password": user.secret_access_key, "origin": api})
    try:
        context.set_default_timeout(15_000)
        page = context.new_page()
        for path in ("/v1/instances", "/metrics", "/"):
            answer = page.goto(f"{api}{path}")
            assert answer.status == 401, (path, answer.status)
            assert "basic" not in (answer.headers.get("www-authenticate") or "").lower()
        sent = []
        page.on("request", lambda r: sent.append(r) if r.url.startswith(api + "/") else None)
        page.goto(f"{servers['cross-site'].url}/img-run-instances.html")
        page.wait_for_function("window.__done > 0")
        assert sent and all("authorization" not in r.all_headers() for r in sent)
    finally:
        context.close()
