"""The service's settings (database, libvirt, SSH ports, retention, API listener) and the
Service they assemble."""

from __future__ import annotations

import stat

import pytest

from api.app import create_app
from computed.service import Service
from computed.settings import Settings, SettingsError


def load(tmp_path, **env) -> Settings:
    return Settings.load({"COMPUTED_VAR_DIR": str(tmp_path), **env})


def test_defaults(tmp_path):
    s = load(tmp_path)
    assert s.database_url == f"sqlite:///{tmp_path / 'computed.db'}"
    assert s.libvirt_uri == "qemu:///system"
    assert s.domain_type == "auto"
    assert s.network_mode == "user"
    assert s.ssh_host == "127.0.0.1" and s.ssh_ports == (42200, 42999)
    assert s.instances_dir == tmp_path / "instances"
    assert s.terminated_retention == 3600
    assert s.sizes_file is None
    assert (s.api_host, s.api_port) == ("127.0.0.1", 8080)


def test_environment(tmp_path):
    s = load(tmp_path, COMPUTED_DATABASE_URL="postgresql://u@db/computed", COMPUTED_LIBVIRT_URI="qemu+ssh://h/system",
             COMPUTED_DOMAIN_TYPE="qemu", COMPUTED_SSH_PORTS="43000-43010", COMPUTED_TERMINATED_RETENTION="60",
             COMPUTED_API_HOST="0.0.0.0", COMPUTED_API_PORT="9000", COMPUTED_SSH_HOST="vmhost.example",
             COMPUTED_INSTANCES_DIR=str(tmp_path / "vms"), COMPUTED_SIZES_FILE=str(tmp_path / "sizes.toml"))
    assert s.database_url == "postgresql://u@db/computed"
    assert s.libvirt_uri == "qemu+ssh://h/system"
    assert s.domain_type == "qemu"
    assert s.ssh_ports == (43000, 43010)
    assert s.terminated_retention == 60
    assert (s.api_host, s.api_port) == ("0.0.0.0", 9000)
    assert s.ssh_host == "vmhost.example"
    assert s.instances_dir == tmp_path / "vms"
    assert s.sizes_file == tmp_path / "sizes.toml"


@pytest.mark.parametrize("value", ["auto", "kvm", "qemu"])
def test_domain_types(tmp_path, value):
    assert load(tmp_path, COMPUTED_DOMAIN_TYPE=value).domain_type == value


@pytest.mark.parametrize("env, value", [
    ("COMPUTED_DOMAIN_TYPE", "xen"), ("COMPUTED_DOMAIN_TYPE", "KVM"), ("COMPUTED_DOMAIN_TYPE", "test"),
    ("COMPUTED_SSH_PORTS", "2000-1000"), ("COMPUTED_SSH_PORTS", "80-90"), ("COMPUTED_SSH_PORTS", "1000-2000"),
    ("COMPUTED_SSH_PORTS", "60000-70000"), ("COMPUTED_SSH_PORTS", "42200"), ("COMPUTED_SSH_PORTS", "a-b"),
    ("COMPUTED_SSH_PORTS", "1-2-3"), ("COMPUTED_TERMINATED_RETENTION", "0"),
    ("COMPUTED_TERMINATED_RETENTION", "-5"), ("COMPUTED_TERMINATED_RETENTION", "1h"),
    ("COMPUTED_API_PORT", "0"), ("COMPUTED_API_PORT", "http"), ("COMPUTED_NETWORK_MODE", "bridge"),
])
def test_bad_values(tmp_path, env, value):
    with pytest.raises(SettingsError, match=env):
        load(tmp_path, **{env: value})


@pytest.mark.parametrize("value", ["65536", "70000"])
def test_api_port_above_65535(tmp_path, value):
    with pytest.raises(SettingsError):
        load(tmp_path, COMPUTED_API_PORT=value)


CONFIG = """
[database]
url = "sqlite:///{d}/elsewhere.db"
[libvirt]
uri = "test:///default"
domain_type = "kvm"
[network]
ssh_ports = "44000-44100"
[instances]
terminated_retention_seconds = 120
[api]
host = "::1"
port = 8181
"""


def test_config_file(tmp_path):
    (tmp_path / "computed.toml").write_text(CONFIG.format(d=tmp_path))
    s = load(tmp_path)
    assert s.database_url == f"sqlite:///{tmp_path}/elsewhere.db"
    assert (s.libvirt_uri, s.domain_type) == ("test:///default", "kvm")
    assert s.ssh_ports == (44000, 44100)
    assert s.terminated_retention == 120
    assert (s.api_host, s.api_port) == ("::1", 8181)
    # the environment wins over the file
    assert load(tmp_path, COMPUTED_API_PORT="8282").api_port == 8282


@pytest.mark.parametrize("table, line", [
    ("network", "ssh_ports = 42200"), ("api", "port = true"), ("libvirt", "uri = 5"),
    ("instances", "terminated_retention_seconds = 0"), ("libvirt", "domain_type = 'vmware'")])
def test_bad_config_values(tmp_path, table, line):
    (tmp_path / "computed.toml").write_text(f"[{table}]\n{line}\n")
    with pytest.raises(SettingsError, match="computed.toml"):
        load(tmp_path)


def test_fractional_numbers_in_the_config_file_are_refused(tmp_path):
    (tmp_path / "computed.toml").write_text("[instances]\nworkers = 2.5\n")
    with pytest.raises(SettingsError):
        load(tmp_path)


# -- the Service ---------------------------------------------------------------------------

def test_service_from_settings(tmp_path):
    settings = Settings.load({"COMPUTED_VAR_DIR": str(tmp_path),
                              "COMPUTED_DATABASE_URL": f"sqlite:///{tmp_path / 'db' / 'other.db'}",
                              "COMPUTED_LIBVIRT_URI": "test:///default"})
    service = Service(settings)
    try:
        assert (tmp_path / "db" / "other.db").is_file()
        assert not (tmp_path / "computed.db").exists()
        assert settings.instances_dir.is_dir()
        local = service.management_keys.current("local")
        key = tmp_path / "management" / local.id
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
        assert stat.S_IMODE(key.parent.stat().st_mode) == 0o700
        assert local.public_openssh.startswith("ssh-ed25519 ")
        assert service.default_driver.uri == "test:///default"
        assert service.instances.count() == 0
        assert service.sizes.all()[0].name == "t3.nano"
    finally:
        service.close()
    # a second service on the same state keeps the management key
    again = Service(settings)
    try:
        assert again.management_keys.current("local") == local
    finally:
        again.close()


def test_create_app_with_overrides(tmp_path, monkeypatch):
    for name in ("COMPUTED_VAR_DIR", "COMPUTED_CONFIG", "COMPUTED_DATABASE_URL", "COMPUTED_LIBVIRT_URI",
                 "COMPUTED_IMAGE_STORE", "COMPUTED_INSTANCES_DIR"):
        monkeypatch.delenv(name, raising=False)
    app = create_app({"var_dir": tmp_path, "libvirt_uri": "test:///default"})
    try:
        service = app.extensions["computed"]
        assert service.settings.var_dir == tmp_path
        assert service.settings.database_url == f"sqlite:///{tmp_path / 'computed.db'}"
        assert app.test_client().get("/health").status_code == 200
    finally:
        app.extensions["computed"].close()


def test_unreachable_libvirt_is_503_and_creates_nothing(settings, image):
    app = create_app(settings.replace(libvirt_uri="test:///no/such/file.xml"))
    try:
        client, svc = app.test_client(), app.extensions["computed"]
        creds = svc.accounts.create("tester")
        auth = (creds.access_key_id, creds.secret_access_key)
        response = client.post("/v1/instances", json={"size": "t3.micro"}, auth=auth)
        assert response.status_code == 503, response.get_json()
        assert response.get_json()["error"]["code"] == "ServiceUnavailable"
        assert "cannot be reached" in response.get_json()["error"]["message"]
        assert client.get("/v1/instances", auth=auth).get_json()["instances"] == []  # reads still work
        assert svc.instances.count() == 0
        assert list(settings.instances_dir.iterdir()) == []
    finally:
        app.extensions["computed"].close()
