"""One precedence rule: flag > environment > config file > default."""

from __future__ import annotations

import pytest
from flotilla.daemons.fleet.config import ConfigError, load_config
from flotilla.daemons.settings import (
    Option,
    SettingsError,
    collect,
    parse_bool,
    parse_duration,
    parse_go_bool,
    read_config_lines,
    resolve,
)

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
    with pytest.raises(SettingsError, match=r"FLEET_ENGINE_RECONCILE_INTERVAL: "
                                            r"engine_reconcile_interval: could not .*'x'"):
        resolve(OPTIONS, [], environ={"FLEET_ENGINE_RECONCILE_INTERVAL": "x"}, env_prefix="FLEET_")


def test_bad_file_value_names_file_and_line(tmp_path):
    conf = tmp_path / "fleet.conf"
    conf.write_text("\n\nengine_reconcile_interval = soon\n")
    with pytest.raises(SettingsError, match=r"fleet\.conf:3: engine_reconcile_interval: .*'soon'"):
        resolve(OPTIONS, [], environ={}, config_file=conf)


def test_malformed_file_line_is_reported(tmp_path):
    conf = tmp_path / "fleet.conf"
    conf.write_text("agent_ttl\n")
    with pytest.raises(SettingsError, match=r"fleet\.conf:1: expected key=value, got 'agent_ttl'"):
        resolve(OPTIONS, [], environ={}, config_file=conf)


def test_unknown_flag_and_missing_value():
    with pytest.raises(SettingsError, match="unknown flag '--nope'"):
        resolve(OPTIONS, ["--nope"], environ={})
    with pytest.raises(SettingsError, match="needs a value"):
        resolve(OPTIONS, ["--agent-ttl"], environ={})


@pytest.mark.parametrize("text,value", [("yes", True), ("0", False), ("On", True)])
def test_parse_bool(text, value):
    assert parse_bool(text) is value


@pytest.mark.parametrize("text,seconds", [
    ("1h30m", 5400.0), ("500ms", 0.5), ("2s", 2.0), ("1.5h", 5400.0), (".5s", 0.5),
    ("1.s", 1.0), ("1m30s", 90.0), ("300us", 300e-6), ("300µs", 300e-6), ("10ns", 1e-8),
    ("-2s", -2.0), ("+1m", 60.0), ("0", 0.0), ("2", 2.0), ("1.5", 1.5), (" 3s ", 3.0)])
def test_go_durations_and_plain_seconds(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", [
    "", "s", "10x", "5s10", "1d", "inf", "nan", "1e3", "1e3s", ".s", "-", "1 s", "1h-2m"])
def test_not_durations_name_the_text(text):
    with pytest.raises(ValueError, match=f"invalid duration {text!r}"):
        parse_duration(text)


@pytest.mark.parametrize("text,value", [
    ("1", True), ("t", True), ("T", True), ("TRUE", True), ("true", True), ("True", True),
    ("0", False), ("f", False), ("F", False), ("FALSE", False), ("false", False),
    ("False", False)])
def test_go_bool_takes_exactly_strconv_spellings(text, value):
    assert parse_go_bool(text) is value
    assert parse_bool(text) is value  # and the config parser agrees on every one


@pytest.mark.parametrize("text", ["yes", "no", "tRuE", " true", "", "2"])
def test_go_bool_refuses_what_go_refuses(text):
    with pytest.raises(ValueError, match=f"invalid boolean {text!r}"):
        parse_go_bool(text)


def test_config_bool_empty_value_and_refusals():
    assert parse_bool("") is False
    assert parse_bool("  OFF ") is False
    with pytest.raises(ValueError, match="invalid boolean ''"):
        parse_bool("", empty=None)
    with pytest.raises(ValueError, match="invalid boolean 'maybe'"):
        parse_bool("maybe")


def test_config_lines_keep_order_keys_and_quotes(tmp_path):
    conf = tmp_path / "fleet.conf"
    conf.write_text("[global]\n; note\nagent-ttl = '5s'\nmetadata=\"a=b\"\nx=\"half\n")
    assert read_config_lines(conf) == [("agent-ttl", "5s", 3), ("metadata", "a=b", 4),
                                      ("x", '"half', 5)]


def test_collect_says_where_each_winner_came_from(tmp_path):
    conf = tmp_path / "fleet.conf"
    conf.write_text("metadata=a=b\nagent_ttl=1s\n")
    got = collect(OPTIONS, ["-verbose"], environ={"FLEET_AGENT_TTL": "2s"},
                  env_prefix="FLEET_", config_file=conf)
    assert got == {"verbose": ("true", "--verbose"), "agent_ttl": ("2s", "FLEET_AGENT_TTL"),
                   "metadata": ("a=b", f"{conf}:1")}


def test_unknown_file_key_is_an_error_unless_ignored(tmp_path):
    conf = tmp_path / "fleet.conf"
    conf.write_text("agent_ttl=1s\n\nold_thing=1\n")
    with pytest.raises(SettingsError, match=r"fleet\.conf:3: unknown setting 'old_thing'"):
        resolve(OPTIONS, [], environ={}, config_file=conf)
    got = resolve(OPTIONS, [], environ={}, config_file=conf,
                  ignored_file_keys=frozenset({"old_thing"}))
    assert got["agent_ttl"] == "1s"


def test_config_flag_names_the_file_and_flag_only_options_ignore_env_and_file(tmp_path):
    options = [*OPTIONS, Option("config", flag_only=True)]
    conf = tmp_path / "other.conf"
    conf.write_text("agent_ttl=4s\n")
    got = resolve(options, ["--config", str(conf)], environ={"FLEET_CONFIG": "/nope"},
                  env_prefix="FLEET_", config_flag="config")
    assert got["agent_ttl"] == "4s" and got["config"] == str(conf)
    assert resolve(options, [], environ={"FLEET_CONFIG": "/nope"}, env_prefix="FLEET_",
                   config_flag="config")["config"] is None
    with pytest.raises(SettingsError, match=r"missing\.conf: config file not found"):
        resolve(options, ["-config=" + str(tmp_path / "missing.conf")], environ={},
                config_flag="config")


def test_fleetd_goes_through_the_one_rule(tmp_path):
    conf = tmp_path / "fleet.conf"
    conf.write_text('agent_ttl="10s"\ndisable_engine=false\nverify_units=true\n')
    config, args = load_config(["-config", str(conf), "-disable_engine", "--agent_ttl=3s"],
                               environ={"FLEET_AGENT_TTL": "20s"})
    assert config.agent_ttl == 3.0 and config.disable_engine is True  # bare bool flag
    assert args.config == str(conf) and args.version is False
    _, args = load_config(["-config", str(conf), "-version"], environ={})
    assert args.version is True
    with pytest.raises(ConfigError, match="unknown flag '--agent-ttl=1s'"):
        load_config(["-config", str(conf), "--agent-ttl=1s"], environ={})
    with pytest.raises(ConfigError, match="unexpected argument 'stray'"):
        load_config(["-config", str(conf), "stray"], environ={})


def test_kvd_boolean_flags_use_the_shared_parser_and_refuse_an_empty_value():
    from flotilla.daemons.kv.config import ConfigError as KvConfigError
    from flotilla.daemons.kv.config import parse_config

    assert parse_config(["--strict-reconfig-check=no"], environ={}).strict_reconfig_check is False
    assert parse_config(["--force-new-cluster"], environ={}).force_new_cluster is True
    assert parse_config([], environ={"ETCD_FORCE_NEW_CLUSTER": "T"}).force_new_cluster is True
    with pytest.raises(KvConfigError, match="--force-new-cluster: 'maybe' is not a boolean"):
        parse_config(["--force-new-cluster=maybe"], environ={})
    with pytest.raises(KvConfigError, match="--no-fsync: '' is not a boolean"):
        parse_config([], environ={"ETCD_NO_FSYNC": ""})


@pytest.mark.parametrize("text,seconds", [("500ms", 0.5), ("2", 2.0), ("1m", 60.0)])
def test_kvctl_timeouts_are_go_durations(text, seconds):
    from flotilla.daemons.kvctl.main import go_duration

    assert go_duration(text) == seconds


@pytest.mark.parametrize("text,message", [
    ("inf", "invalid duration 'inf'"), ("soon", "invalid duration 'soon'"),
    ("0s", "invalid duration '0s': must be positive"),
    ("-1s", "invalid duration '-1s': must be positive")])
def test_kvctl_refuses_what_is_not_a_positive_duration(text, message):
    import argparse

    from flotilla.daemons.kvctl.main import go_duration

    with pytest.raises(argparse.ArgumentTypeError, match=message):
        go_duration(text)
