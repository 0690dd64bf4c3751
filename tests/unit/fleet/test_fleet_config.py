"""fleetd configuration: fleet's names and defaults, precedence, and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from flotilla.daemons.fleet.config import ConfigError, FleetConfig, load_config, parse_duration


def test_defaults_match_fleet(tmp_path: Path) -> None:
    config, _ = load_config(["--config", str(_write(tmp_path, ""))], environ={})
    assert config.etcd_servers == ["http://127.0.0.1:2379", "http://127.0.0.1:4001"]
    assert config.etcd_key_prefix == "/_coreos.com/fleet/"
    assert config.agent_ttl == 30.0 and config.engine_reconcile_interval == 2.0
    assert config.units_directory == "/run/fleet/units/"
    assert config.token_limit == 100 and config.verbosity == 0 and config.metadata == {}
    assert config.api_socket == "/var/run/fleet.sock" and config.api_socket_mode == 0o600


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "fleet.conf"
    path.write_text(text)
    return path


def test_file_then_env_then_flags(tmp_path: Path) -> None:
    path = _write(tmp_path, '# comment\nmetadata="region=us-east,disk=ssd"\n'
                            'etcd_servers=["http://a:1","http://b:2"]\nagent_ttl=10s\n'
                            'public_ip=10.0.0.1\nverbosity=1\n')
    config, _ = load_config(
        ["--config", str(path), "-public_ip=10.0.0.3"],
        environ={"FLEET_PUBLIC_IP": "10.0.0.2", "FLEET_ENGINE_RECONCILE_INTERVAL": "5",
                 "FLEET_ETCD_CAFILE": "/ca.pem"})
    assert config.metadata == {"region": "us-east", "disk": "ssd"}
    assert config.etcd_servers == ["http://a:1", "http://b:2"]
    assert config.agent_ttl == 10.0 and config.verbosity == 1
    assert config.public_ip == "10.0.0.3"  # flag beats env beats file
    assert config.engine_reconcile_interval == 5.0 and config.etcd_cafile == "/ca.pem"


@pytest.mark.parametrize(("text", "message"), [
    ("agent_ttl=soon\n", "fleet.conf:1: agent_ttl: invalid duration"),
    ("\nbogus_key=1\n", "fleet.conf:2: unknown setting 'bogus_key'"),
    ("metadata=novalue\n", "fleet.conf:1: metadata"),
    ("engine_reconcile_interval=0\n", "must be positive"),
    ("just words\n", "fleet.conf:1: expected key=value"),
    ("verbosity=x\n", "verbosity"),
    ("disable_engine=perhaps\n", "disable_engine: invalid boolean"),
    ("systemd=upstart\n", "systemd: must be dbus or standin"),
])
def test_bad_values_name_key_and_line(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(["--config", str(_write(tmp_path, text))], environ={})


def test_bad_env_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="FLEET_AGENT_TTL: agent_ttl"):
        load_config(["--config", str(_write(tmp_path, ""))], environ={"FLEET_AGENT_TTL": "x"})


def test_missing_explicit_config_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(["--config", str(tmp_path / "nope.conf")], environ={})


def test_deprecated_keys_are_accepted_and_ignored() -> None:
    config = FleetConfig()
    config.apply("verify_units", "true", "x")
    config.apply("authorized_keys_file", "/k", "x")
    assert config == FleetConfig()


@pytest.mark.parametrize(("text", "seconds"), [
    ("30s", 30.0), ("1m30s", 90.0), ("500ms", 0.5), ("2", 2.0), ("1.5", 1.5), ("1h", 3600.0)])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "s", "10x", "5s10"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)
