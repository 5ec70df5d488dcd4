"""The HTTP client the CLI's service commands use: JSON requests to the REST API, and the
API's errors (``{"error": {"code", "message"}}``) as ``code: message`` on exit status 1."""

from __future__ import annotations

import errno
import functools
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import click
import requests

from computed.settings import Settings, SettingsError

from . import credentials

API_URL_ENV = "COMPUTED_API_URL"
#: seconds one request may take; the API answers at once and works in the background
REQUEST_TIMEOUT = 30.0


def default_api_url(settings: Settings) -> str:
    """Where ``computed serve`` listens with these settings (a wildcard address as loopback)."""
    host = settings.api_host
    if host in ("", "0.0.0.0", "::", "[::]"):
        host = "127.0.0.1"
    elif ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{settings.api_port}"


def part(value: str) -> str:
    """VALUE as one path segment of a URL."""
    return quote(value, safe="")


def _refused(exc: BaseException) -> bool:
    """Whether a requests connection error is, underneath, "connection refused"."""
    seen = set()
    stack: list[Any] = [exc]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, ConnectionRefusedError) or getattr(e, "errno", None) == errno.ECONNREFUSED:
            return True
        if isinstance(e, BaseException):
            stack.extend([e.__cause__, e.__context__, getattr(e, "reason", None)])
            stack.extend(a for a in e.args if isinstance(a, BaseException))
    return "Connection refused" in str(exc)


class ApiError(click.ClickException):
    """An error the API answered with: ``code: message``."""

    def __init__(self, code: str, message: str, status: int):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.status = status


class ApiClient:
    """JSON over HTTP to the computed API at BASE_URL."""

    def __init__(self, base_url: str, auth: tuple[str, str] | None = None, timeout: float = REQUEST_TIMEOUT):
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()
        self.session.headers["Accept"] = "application/json"
        self.session.auth = auth  # HTTP Basic: access key id and secret

    def close(self) -> None:
        self.session.close()

    def request(self, method: str, path: str, *, json: Any = None, params: Any = None) -> Any:
        """The decoded JSON answer (None for an empty one); a ClickException for an error."""
        return self._send(method, path, json=json, params=params, decode=True)

    def get_bytes(self, path: str, **params: Any) -> bytes:
        """A non-JSON answer (CSV, PNG) as bytes; errors as for ``request``."""
        return self._send("GET", path, params={k: v for k, v in params.items() if v not in (None, (), [])},
                          decode=False)

    def _send(self, method: str, path: str, *, json: Any = None, params: Any = None, decode: bool) -> Any:
        url = self.base_url + path
        try:
            response = self.session.request(method, url, json=json, params=params, timeout=self.timeout)
        except requests.ConnectionError as e:
            if _refused(e):
                raise click.ClickException(
                    f"the computed service is not running at {self.base_url} (connection refused).\n"
                    "Start it with `scripts/serve` (as root, from the repository) or `computed serve`, "
                    f"or point --api / {API_URL_ENV} at the URL it serves on.") from None
            raise click.ClickException(f"cannot reach the computed service at {self.base_url}: {e}") from None
        except requests.Timeout:
            raise click.ClickException(
                f"the computed service at {self.base_url} did not answer {method} {path} "
                f"within {self.timeout:g} s") from None
        except requests.RequestException as e:
            raise click.ClickException(f"request to {url} failed: {e}") from None
        if not decode and response.ok:
            return response.content
        if response.status_code == 204 or not response.content:
            if response.ok:
                return None
            raise click.ClickException(f"HTTP {response.status_code} from {method} {path} (no details)")
        try:
            body = response.json()
        except ValueError:
            body = None
        if not response.ok:
            error = body.get("error") if isinstance(body, dict) else None
            if isinstance(error, dict) and error.get("code"):
                raise ApiError(str(error["code"]), str(error.get("message", "")), response.status_code)
            text = response.text.strip().replace("\n", " ")[:200]
            raise click.ClickException(f"HTTP {response.status_code} from {method} {path}: {text}")
        if body is None:
            raise click.ClickException(f"{url} did not answer with JSON: is {self.base_url} the computed API?")
        return body

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params={k: v for k, v in params.items() if v not in (None, (), [])})

    def post(self, path: str, body: Any = None) -> Any:
        return self.request("POST", path, json=body)

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path)


def _settings(ctx: click.Context) -> Settings:
    settings = ctx.find_object(Settings)
    if settings is None:
        try:
            settings = Settings.load()
        except SettingsError as e:
            raise click.ClickException(str(e)) from None
    return settings


def with_client(f: Callable) -> Callable:
    """Give command F an ``--api URL`` option (env COMPUTED_API_URL) and pass it an
    ApiClient as its first argument."""

    @functools.wraps(f)
    def wrapper(*args, api_url: str | None, profile: str | None, **kwargs):
        ctx = click.get_current_context()
        settings = _settings(ctx)
        client = ApiClient(api_url or default_api_url(settings), auth=credentials.find(settings, profile))
        ctx.call_on_close(client.close)
        return f(client, *args, **kwargs)

    wrapper = click.option(
        "--profile", envvar=credentials.PROFILE_ENV, metavar="NAME", show_envvar=True,
        help=f"The credentials profile to use (in {credentials.FILE_ENV} or ~/.config/computed/credentials).",
    )(wrapper)
    return click.option(
        "--api", "api_url", envvar=API_URL_ENV, metavar="URL", show_envvar=True,
        help="The computed API (default: http://API_HOST:API_PORT from the settings, "
             "http://127.0.0.1:8080 unless changed).")(wrapper)
