"""kvd's Raft timing flags: etcd's names, units, defaults and validation messages."""

from __future__ import annotations

from pathlib import Path

import pytest
from flotilla.daemons.kv.config import ConfigError, parse_config
from flotilla.daemons.kv.replicated import raft_proposer_from_config


def test_defaults_are_etcds_100ms_heartbeat_and_1s_election() -> None:
    config = parse_config([], environ={})
    assert (config.heartbeat_ms, config.election_ms) == (100, 1000)


def test_flags_and_cloud_config_variables_set_the_timing() -> None:
    config = parse_config(["-heartbeat-interval", "50", "--election-timeout=500"], environ={})
    assert (config.heartbeat_ms, config.election_ms) == (50, 500)
    config = parse_config([], environ={"ETCD_HEARTBEAT_INTERVAL": "200",
                                       "ETCD_ELECTION_TIMEOUT": "2500"})
    assert (config.heartbeat_ms, config.election_ms) == (200, 2500)
    assert "heartbeat-interval" not in config.ignored


@pytest.mark.parametrize(("argv", "message"), [
    (["--heartbeat-interval", "0"], "--heartbeat-interval: '0' is not a positive number"),
    (["--heartbeat-interval", "fast"], "--heartbeat-interval: 'fast'"),
    (["--election-timeout", "-5"], "--election-timeout: '-5'"),
    (["--heartbeat-interval", "300"],
     "--election-timeout[1000ms] should be at least as 5 times as "
     "--heartbeat-interval[300ms]"),
    (["--heartbeat-interval", "1000", "--election-timeout", "60000"],
     "--election-timeout[60000ms] is too long, and should be set less than 50000ms"),
])
def test_bad_timing_is_refused_naming_the_flag(argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(argv, environ={})
    assert message in str(caught.value)


def test_the_raft_shell_ticks_at_the_heartbeat_and_campaigns_after_the_election_timeout(
        tmp_path: Path) -> None:
    config = parse_config(["--data-dir", str(tmp_path), "--heartbeat-interval", "50",
                           "--election-timeout", "725"], environ={})
    shell = raft_proposer_from_config(config).shell.cfg
    assert shell.tick_seconds == pytest.approx(0.05)
    assert shell.election_tick == 14  # whole ticks, rounded down
