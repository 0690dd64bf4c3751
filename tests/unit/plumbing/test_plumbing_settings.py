"""One precedence rule: flag > environment > config file > default."""

from __future__ import annotations

import pytest
from flotilla.daemons.settings import Option, SettingsError, parse_bool, resolve

OPTIONS = [
    Option("agent-ttl", "30s"),
    Option("engine-reconcile-interval", 2.0, float),
    Option("verbose", False, parse_bool, is_flag=True),
    Option("metadata", ""),
]


def test_defaults_when_nothing_given():
    assert resolve(OPTIONS, [], environ={}) == {
        "agent_ttl": "30s",
        "engine_reconcile_interval": 2.0,
        "verbose": False,
        "metadata": "",
    }


def test_precedence_flag_over_env_over_file(tmp_path):
    conf = tmp_path / "fleet.conf"
    conf.write_text(
        '# fleet\nagent_ttl = "10s"\nmetadata="region=eu"\nengine_reconcile_interval=5\n'
    )
    env = {"FLEET_AGENT_TTL": "20s", "FLEET_ENGINE_RECONCILE_INTERVAL": "7"}
    got = resolve(
        OPTIONS, ["--agent-ttl=3s", "-verbose"], environ=env, env_prefix="FLEET_",
        config_file=conf,
    )
    assert got["agent_ttl"] == "3s"  # flag
    assert got["engine_reconcile_interval"] == 7.0  # env beats file
    assert got["metadata"] == "region=eu"  # file beats default
    assert got["verbose"] is True


def test_single_and_double_dash_and_separate_value():
    assert resolve(OPTIONS, ["-agent-ttl", "9s"], environ={})["agent_ttl"] == "9s"
    assert resolve(OPTIONS, ["--agent-ttl", "8s"], environ={})["agent_ttl"] == "8s"


def test_bad_env_value_names_the_variable():
    with pytest.raises(SettingsError, match="FLEET_ENGINE_RECONCILE_INTERVAL: invalid value 'x'"):
        resolve(OPTIONS, [], environ={"FLEET_ENGINE_RECONCILE_INTERVAL": "x"}, env_prefix="FLEET_")


def test_bad_file_value_names_file_and_line(tmp_path):
    conf = tmp_path / "fleet.conf"
    conf.write_text("\n\nengine_reconcile_interval = soon\n")
    with pytest.raises(SettingsError, match=r"fleet.conf:3 engine_reconcile_interval"):
        resolve(OPTIONS, [], environ={}, config_file=conf)


def test_malformed_file_line_is_reported(tmp_path):
    conf = tmp_path / "fleet.conf"
    conf.write_text("agent_ttl\n")
    with pytest.raises(SettingsError, match=r"fleet\.conf:1: expected 'key = value'"):
        resolve(OPTIONS, [], environ={}, config_file=conf)


def test_unknown_flag_and_missing_value():
    with pytest.raises(SettingsError, match="unknown flag '--nope'"):
        resolve(OPTIONS, ["--nope"], environ={})
    with pytest.raises(SettingsError, match="needs a value"):
        resolve(OPTIONS, ["--agent-ttl"], environ={})


@pytest.mark.parametrize("text,value", [("yes", True), ("0", False), ("On", True)])
def test_parse_bool(text, value):
    assert parse_bool(text) is value
