"""GET /v1/sizes and /v1/images: the catalog an API user launches from."""

from __future__ import annotations

import shutil
from decimal import Decimal

import pytest

from api.app import create_app
from computed.compute.sizes import DEFAULT_SIZES, SizeCatalogError

IMAGE = "debian-12-podman"  # the image conftest publishes

SIZE_FIELDS = {"name", "vcpus", "memory_mib", "disk_gib", "price_per_hour", "currency"}

OPERATOR_SIZES = """
currency = "EUR"

[[size]]
name = "small"
vcpus = 1
memory_mib = 1024
disk_gib = 10
price_per_hour = "0.01"

[[size]]
name = "big.2x"
vcpus = 4
memory_mib = 8192
disk_gib = 40
price_per_hour = 0.25
currency = "CHF"
"""


def test_default_catalog(client):
    response = client.get("/v1/sizes")
    assert response.status_code == 200
    sizes = response.get_json()["sizes"]
    assert [s["name"] for s in sizes] == [s.name for s in DEFAULT_SIZES]
    for got, want in zip(sizes, DEFAULT_SIZES):
        assert set(got) == SIZE_FIELDS
        assert got == {"name": want.name, "vcpus": want.vcpus, "memory_mib": want.memory_mib,
                       "disk_gib": want.disk_gib, "price_per_hour": str(want.price_per_hour), "currency": "USD"}
        assert isinstance(got["price_per_hour"], str)  # a decimal, never a float


def test_operator_sizes_file_replaces_the_catalog(make_app, tmp_path, expect_error):
    path = tmp_path / "sizes.toml"
    path.write_text(OPERATOR_SIZES)
    client = make_app(sizes_file=path).test_client()
    sizes = client.get("/v1/sizes").get_json()["sizes"]
    assert sizes == [
        {"name": "small", "vcpus": 1, "memory_mib": 1024, "disk_gib": 10, "price_per_hour": "0.01", "currency": "EUR"},
        {"name": "big.2x", "vcpus": 4, "memory_mib": 8192, "disk_gib": 40, "price_per_hour": "0.25",
         "currency": "CHF"},
    ]
    # the built-in sizes are gone, the operator's are launchable
    message = expect_error(client.post("/v1/instances", json={"size": "t3.micro"}), 400, "InvalidInstanceType")
    assert "small" in message and "big.2x" in message
    launched = client.post("/v1/instances", json={"size": "big.2x"})
    assert launched.status_code == 202
    inst = launched.get_json()["instances"][0]
    assert (inst["vcpus"], inst["memory_mib"], inst["disk_gib"]) == (4, 8192, 40)
    assert (inst["price_per_hour"], inst["currency"]) == ("0.25", "CHF")
    assert Decimal(inst["price_per_hour"]) == Decimal("0.25")


BAD_SIZES = {
    "empty file": "",
    "no sizes": 'currency = "USD"\n',
    "not TOML": "[[size]\nname = 'x'\n",
    "size is not a list of tables": 'size = "small"\n',
    "missing name": "[[size]]\nvcpus = 1\nmemory_mib = 1\ndisk_gib = 1\nprice_per_hour = '1'\n",
    "upper-case name": "[[size]]\nname = 'Small'\nvcpus = 1\nmemory_mib = 1\ndisk_gib = 1\nprice_per_hour = '1'\n",
    "name with a slash": "[[size]]\nname = 'a/b'\nvcpus = 1\nmemory_mib = 1\ndisk_gib = 1\nprice_per_hour = '1'\n",
    "duplicate name": ("[[size]]\nname = 'a'\nvcpus = 1\nmemory_mib = 1\ndisk_gib = 1\nprice_per_hour = '1'\n" * 2),
    "zero vcpus": "[[size]]\nname = 'a'\nvcpus = 0\nmemory_mib = 1\ndisk_gib = 1\nprice_per_hour = '1'\n",
    "fractional memory": "[[size]]\nname = 'a'\nvcpus = 1\nmemory_mib = 1.5\ndisk_gib = 1\nprice_per_hour = '1'\n",
    "boolean disk": "[[size]]\nname = 'a'\nvcpus = 1\nmemory_mib = 1\ndisk_gib = true\nprice_per_hour = '1'\n",
    "missing price": "[[size]]\nname = 'a'\nvcpus = 1\nmemory_mib = 1\ndisk_gib = 1\n",
    "negative price": "[[size]]\nname = 'a'\nvcpus = 1\nmemory_mib = 1\ndisk_gib = 1\nprice_per_hour = '-1'\n",
    "price not a number": "[[size]]\nname = 'a'\nvcpus = 1\nmemory_mib = 1\ndisk_gib = 1\nprice_per_hour = 'cheap'\n",
    "infinite price": "[[size]]\nname = 'a'\nvcpus = 1\nmemory_mib = 1\ndisk_gib = 1\nprice_per_hour = 'Infinity'\n",
    "NaN price": "[[size]]\nname = 'a'\nvcpus = 1\nmemory_mib = 1\ndisk_gib = 1\nprice_per_hour = 'NaN'\n",
}


def test_invalid_sizes_file_fails_at_startup(settings, image, tmp_path, case):
    for label, content in BAD_SIZES.items():
        with case(label):
            path = tmp_path / "sizes.toml"
            path.write_text(content)
            with pytest.raises(SizeCatalogError) as excinfo:
                create_app(settings.replace(sizes_file=path))
            assert str(path) in str(excinfo.value)


def test_missing_sizes_file_fails_at_startup(settings, image, tmp_path):
    path = tmp_path / "no-such-sizes.toml"
    with pytest.raises(SizeCatalogError, match="no-such-sizes.toml"):
        create_app(settings.replace(sizes_file=path))


@pytest.mark.parametrize("content", ['size = ["small"]\n', "size = [1, 2]\n"], ids=["strings", "numbers"])
def test_sizes_file_entries_that_are_not_tables_fail_clearly(settings, image, tmp_path, content):
    path = tmp_path / "sizes.toml"
    path.write_text(content)
    with pytest.raises(SizeCatalogError):
        create_app(settings.replace(sizes_file=path))


def test_images_lists_the_published_image(client, image):
    response = client.get("/v1/images")
    assert response.status_code == 200
    images = response.get_json()["images"]
    assert len(images) == 1
    got = images[0]
    assert got["name"] == IMAGE
    assert got["version"] == "1.0.0"
    assert got["default_user"] == "debian"
    assert got["container_engine"] == {"name": "podman", "version": "4.3.1+ds1-8+deb12u1"}
    assert got["container_image"] == "computed/busybox:latest"
    assert got["kernel_version"] == image.manifest.kernel_version
    assert got["recipe_hash"] == image.manifest.recipe_hash
    assert got["disk_size"] == image.artifact_path("disk").stat().st_size
    assert "path" not in got and "artifacts" not in got  # host paths stay on the host


def test_images_lists_every_published_image_by_name(client, publish_image):
    publish_image("alpha-image", version="2.0.0")
    images = client.get("/v1/images").get_json()["images"]
    assert [(i["name"], i["version"]) for i in images] == [("alpha-image", "2.0.0"), (IMAGE, "1.0.0")]


def test_no_images(make_app, settings, image):
    shutil.rmtree(settings.image_library / IMAGE)
    client = make_app().test_client()
    assert client.get("/v1/images").get_json() == {"images": []}
