"""Fixtures for the web console's browser tests: the real app served over HTTP on a
loopback port (waitress in a thread, libvirt's ``test:///default``, a fake published
image), and headless Chromium from Debian's ``chromium`` package driven by Playwright's
Python package (never a browser Playwright downloads).

Where Playwright or Chromium is missing (``scripts/setup`` installs both) the tests are
skipped, except with ``CI`` set, where that fails the run."""

from __future__ import annotations

import os
from dataclasses import dataclass

import pytest

from api.app import create_app
from computed.accounts.registry import Credentials
from computed.settings import Settings
from images.library import ImageLibrary
from tests.cleanup import terminate_all
from tests.fakes import publish_with_disk
from tests.http_server import ThreadedServer
from tests.unit.conftest import find_free_ports

CHROMIUM = "/usr/bin/chromium"
IMAGE = "debian-12-podman"
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}


def unavailable(reason: str):
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set: the browser tests must run; scripts/setup installs it)")
    pytest.skip(reason)


@dataclass
class Console:
    url: str
    service: object
    settings: Settings
    user: Credentials
    key_name: str


@pytest.fixture(scope="module")
def console_server(tmp_path_factory):
    """The API and console served from a background thread; the account "alice" with a key
    pair "laptop"."""
    var = tmp_path_factory.mktemp("var")
    low, high = find_free_ports(40)  # SSH ports, then forwarded ones
    settings = Settings.load(environ={}, var_dir=var, libvirt_uri="test:///default", ssh_ports=(low, low + 19),
                             forward_ports=(low + 20, high), memory_overcommit=8.0, workers=2)
    publish_with_disk(ImageLibrary(settings.image_library), IMAGE)
    app = create_app(settings)
    server = ThreadedServer(app)
    service = app.extensions["computed"]
    alice = service.accounts.create("alice")
    service.keypairs.create(alice.caller, "laptop")
    try:
        yield Console(server.url, service, settings, alice, "laptop")
    finally:
        terminate_all(service)  # no domains left in the process-wide test:///default host
        server.close()
        service.close()


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("Playwright's Python package is not installed")
    if not os.access(CHROMIUM, os.X_OK):
        unavailable(f"{CHROMIUM} is not installed (Debian's chromium package)")
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def open_console(browser, console_server):
    """open_console(viewport=DESKTOP, mobile=False) -> a new page at /console/, in a context
    of its own (no cookies). Uncaught script errors and CSP violations fail the test."""
    contexts, problems = [], []

    def open_(viewport: dict = DESKTOP, mobile: bool = False):
        context = browser.new_context(viewport=viewport, is_mobile=mobile, has_touch=mobile, accept_downloads=True,
                                      device_scale_factor=1)
        context.set_default_timeout(15_000)
        contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda e: problems.append(f"uncaught: {e}"))
        page.on("console", lambda m: problems.append(f"console: {m.text}")
                if m.type == "error" and "Content Security Policy" in m.text else None)
        page.goto(f"{console_server.url}/console/")
        return page

    yield open_
    for context in contexts:
        context.close()
    assert problems == []
