"""Fixtures for the core's tests: the whole service of ``tests/unit/api/conftest.py``
(libvirt's ``test:///default`` driver, a published fake image), shared with the REST API's tests."""

from __future__ import annotations

# the service's fixtures, imported as the EC2 tests do (pytest_plugins is for the root conftest only)
from tests.unit.api.conftest import (app, base_qcow2, client, image, launch, make_app, publish_image,  # noqa: F401
                                     service, settings, wait)
