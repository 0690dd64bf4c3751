"""The discovery protocol's pure decisions, the saved outcome, and the retry policy."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from flotilla.daemons.kv import discovery as d
from flotilla.daemons.kv.config import member_id, parse_config
from flotilla.daemons.kv.discovery_service import (
    DEFAULT_SIZE,
    BadSize,
    discovery_url,
    new_token,
    parse_new_size,
    size_key,
)
from hypothesis import given
from hypothesis import strategies as st

URL = "http://127.0.0.1:2379/v2/keys/_etcd/registry/abc"


def reg(key: str, name: str, created: int, host: str = "") -> d.Registration:
    return d.Registration(key, f"{name}=http://{host or name}:2380", created)


# ----------------------------------------------------------------- size and URL


@pytest.mark.parametrize("text,size", [("1", 1), ("3", 3), ("0005", 5)])
def test_size_accepts_positive_integers(text: str, size: int) -> None:
    assert d.parse_size(text) == size


@pytest.mark.parametrize("text", ["", "0", "-1", "abc", "3.0", " 3", "٣", None, 3])
def test_bad_size_is_etcds_bad_size_key(text: Any) -> None:
    with pytest.raises(d.DiscoveryError) as err:
        d.parse_size(text)
    assert err.value.reason == "discovery: size key is bad"
    assert "_config/size" in str(err.value)


@pytest.mark.parametrize("url", ["ftp://h/x", "http:///x", "http://h", "http://h/",
                                 "http://h:99999/x", "http://h/x?y=1", "not a url"])
def test_bad_discovery_url_names_the_flag(url: str) -> None:
    with pytest.raises(d.DiscoveryError) as err:
        d.discovery_endpoint(url)
    assert err.value.reason == "discovery: invalid URL"
    assert "--discovery" in str(err.value)


def test_discovery_url_loses_only_its_trailing_slash() -> None:
    assert d.discovery_endpoint(URL + "/") == URL


def test_registration_value_is_sorted_pairs_joined_by_commas() -> None:
    assert d.registration_value("m1", ["http://b:2380", "http://a:2380"]) == \
        "m1=http://a:2380,m1=http://b:2380"


def test_member_key_is_unpadded_lowercase_hex() -> None:
    assert d.member_key(0x0A0B) == "a0b"


# -------------------------------------------------------------------- listing


def test_listing_skips_config_and_reads_created_index() -> None:
    body = {"action": "get", "node": {"key": "/_etcd/registry/abc", "dir": True, "nodes": [
        {"key": "/_etcd/registry/abc/_config", "dir": True, "createdIndex": 1},
        {"key": "/_etcd/registry/abc/ff01", "value": "a=http://a:2380", "createdIndex": 7},
    ]}}
    assert d.parse_listing(body) == [d.Registration("ff01", "a=http://a:2380", 7)]


def test_empty_directory_lists_nothing() -> None:
    assert d.parse_listing({"node": {"key": "/x", "dir": True}}) == []


@pytest.mark.parametrize("body", [
    {}, {"node": {"nodes": "x"}}, {"node": {"nodes": [{"key": 1, "createdIndex": 1}]}},
    {"node": {"nodes": [{"key": "/x/a", "value": "v"}]}}, [],
])
def test_malformed_listing_is_a_bad_endpoint(body: Any) -> None:
    with pytest.raises(d.DiscoveryError) as err:
        d.parse_listing(body)
    assert err.value.reason == "discovery: bad discovery endpoint"


# --------------------------------------------------------------------- assess


def test_waits_until_size_members_registered() -> None:
    outcome = d.assess([reg("1", "a", 5)], 3, "1")
    assert outcome == d.Waiting(found=1, size=3)


def test_unregistered_member_waits_while_there_is_room() -> None:
    assert d.assess([reg("1", "a", 5)], 3, "9") == d.Waiting(found=1, size=3)


def test_complete_cluster_is_the_first_size_by_creation_order() -> None:
    regs = [reg("3", "c", 30), reg("1", "a", 10), reg("4", "d", 40), reg("2", "b", 20)]
    outcome = d.assess(regs, 3, "2")
    assert isinstance(outcome, d.Complete)
    assert outcome.cluster == {"a": ["http://a:2380"], "b": ["http://b:2380"],
                               "c": ["http://c:2380"]}
    assert [r.key for r in outcome.registrations] == ["1", "2", "3"]


def test_member_past_the_first_size_is_told_the_cluster_is_full() -> None:
    regs = [reg("1", "a", 10), reg("2", "b", 20), reg("3", "c", 30), reg("4", "d", 40)]
    with pytest.raises(d.DiscoveryError) as err:
        d.assess(regs, 3, "4")
    assert err.value.reason == "discovery: cluster is full"
    assert str(err.value).startswith("failed to join discovery cluster "
                                     "(discovery: cluster is full)")


def test_latecomer_is_refused_before_it_registers() -> None:
    regs = [reg("1", "a", 10), reg("2", "b", 20)]
    with pytest.raises(d.DiscoveryError, match="cluster is full"):
        d.assess(regs, 2, "9")


def test_last_seat_is_still_in() -> None:
    regs = [reg("1", "a", 10), reg("2", "b", 20), reg("3", "c", 30)]
    assert isinstance(d.assess(regs, 3, "3"), d.Complete)


def test_two_members_with_one_name_are_a_duplicate_name() -> None:
    regs = [reg("1", "a", 10), reg("2", "a", 20, host="other")]
    with pytest.raises(d.DiscoveryError) as err:
        d.assess(regs, 2, "1")
    assert err.value.reason == "discovery: found duplicate name"
    assert "same name" in err.value.advice


def test_a_registration_without_a_url_is_an_invalid_url() -> None:
    regs = [reg("1", "a", 10), d.Registration("2", "b=not-a-url", 20)]
    with pytest.raises(d.DiscoveryError) as err:
        d.assess(regs, 2, "1")
    assert err.value.reason == "discovery: invalid URL"
    assert "b=not-a-url" in str(err.value)


def test_a_member_may_register_several_peer_urls() -> None:
    regs = [d.Registration("1", "a=http://a1:2380,a=http://a2:2380", 1), reg("2", "b", 2)]
    outcome = d.assess(regs, 2, "2")
    assert isinstance(outcome, d.Complete)
    assert outcome.cluster["a"] == ["http://a1:2380", "http://a2:2380"]


@given(st.permutations(range(6)), st.integers(1, 6))
def test_every_admitted_member_computes_the_same_cluster(order: list[int], size: int) -> None:
    regs = [reg(str(i), f"m{i}", 100 + pos) for pos, i in enumerate(order)]
    clusters = []
    for r in regs:
        try:
            outcome = d.assess(list(reversed(regs)), size, r.key)
        except d.DiscoveryError as err:
            assert err.reason == "discovery: cluster is full"
            assert r.created_index >= 100 + size  # only latecomers are refused
            continue
        assert isinstance(outcome, d.Complete)
        clusters.append(outcome.cluster)
    assert len(clusters) == size
    assert all(c == clusters[0] for c in clusters)
    assert sorted(clusters[0]) == sorted(f"m{i}" for i in order[:size])


# ---------------------------------------------------------------- error advice


def test_duplicate_id_advice_points_at_the_data_dir() -> None:
    err = d.DiscoveryError(d.ERR_DUPLICATE_ID, "x")
    assert "data directory" in err.advice
    assert str(err) == "failed to join discovery cluster (discovery: found duplicate id): x"


def test_other_failures_say_not_to_reuse_the_token() -> None:
    assert "do not reuse discovery token" in d.DiscoveryError(d.ERR_FULL_CLUSTER).advice


def test_backoff_doubles_then_stays_capped() -> None:
    delays = [d.retry_delay(n) for n in range(10)]
    assert delays[:4] == [0.5, 1.0, 2.0, 4.0]
    assert delays[-1] == d.MAX_RETRY_SECONDS
    assert all(a <= b for a, b in itertools.pairwise(delays))
    assert d.retry_delay(10_000) == d.MAX_RETRY_SECONDS


# ------------------------------------------------------- saved outcome, restart


def _config(tmp_path: Path, *extra: str) -> Any:
    return parse_config(["--name", "m1", "--data-dir", str(tmp_path / "m1"),
                         "--initial-advertise-peer-urls", "http://10.0.0.1:2380",
                         "--discovery", URL, *extra], environ={})


def test_saved_discovery_round_trips(tmp_path: Path) -> None:
    saved = d.SavedDiscovery(URL, {"m1": ["http://10.0.0.1:2380"], "m2": ["http://b:2380"]})
    d.save(tmp_path, saved)
    assert d.load_saved(tmp_path) == saved
    assert [p.name for p in tmp_path.iterdir()] == [d.STATE_FILE]  # no temp file left


def test_corrupt_saved_discovery_names_the_file(tmp_path: Path) -> None:
    (tmp_path / d.STATE_FILE).write_text('{"discovery": 3}')
    with pytest.raises(ValueError, match=d.STATE_FILE):
        d.load_saved(tmp_path)


def test_restart_uses_the_saved_cluster_without_the_service(tmp_path: Path) -> None:
    config = _config(tmp_path)
    cluster = {"m1": ["http://10.0.0.1:2380"], "m2": ["http://10.0.0.2:2380"]}
    d.save(Path(config.data_dir), d.SavedDiscovery(URL, cluster))
    logged: list[str] = []
    restarted = d.discovered_config(config, log=logged.append)  # URL is never contacted
    assert restarted.initial_cluster == cluster
    assert restarted.initial_cluster_token == URL
    assert restarted.member_id == member_id(["http://10.0.0.1:2380"], URL)
    assert "discovery token is ignored" in logged[0]


def test_member_with_data_but_no_saved_result_skips_discovery(tmp_path: Path) -> None:
    config = _config(tmp_path)
    (Path(config.data_dir) / "raft").mkdir(parents=True)
    logged: list[str] = []
    assert d.discovered_config(config, log=logged.append) is config
    assert "valid logs are found" in logged[0]


def test_discovery_timeout_flag(tmp_path: Path) -> None:
    assert _config(tmp_path).discovery_timeout == 120.0
    assert _config(tmp_path, "--discovery-timeout", "2.5").discovery_timeout == 2.5
    for bad in ("0", "-1", "x", "inf"):
        with pytest.raises(ValueError, match="--discovery-timeout"):
            _config(tmp_path, "--discovery-timeout", bad)


# ------------------------------------------------------ bounded retries (shell)


class _RefusingSession:
    """Stands in for aiohttp's session: every connection attempt is refused."""

    def __init__(self) -> None:
        self.calls = 0

    def request(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        raise aiohttp.ClientConnectionError("connection refused")


def test_unreachable_service_is_retried_with_backoff_then_given_up() -> None:
    now = [0.0]
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    session = _RefusingSession()
    client = d.DiscoveryClient(URL, session, give_up_after=10.0,  # type: ignore[arg-type]
                               log=lambda _: None, sleep=sleep, clock=lambda: now[0])
    with pytest.raises(d.DiscoveryError) as err:
        asyncio.run(client.size())
    assert err.value.reason == "discovery: too many retries"
    assert "connection refused" in str(err.value)
    assert slept[:4] == [0.5, 1.0, 2.0, 4.0]
    assert sum(slept) == pytest.approx(10.0)  # never sleeps past the deadline
    assert session.calls == len(slept) + 1


# ------------------------------------------------------ the /new service parts


def test_new_size_defaults_to_three() -> None:
    assert parse_new_size(None) == parse_new_size("") == DEFAULT_SIZE == 3
    assert parse_new_size("5") == 5


@pytest.mark.parametrize("text", ["0", "-3", "abc", "1001", "2.5"])
def test_bad_new_size_says_what_is_allowed(text: str) -> None:
    with pytest.raises(BadSize, match=r"size: .* is not a whole number from 1 to 1000"):
        parse_new_size(text)


def test_new_token_is_32_random_hex_digits() -> None:
    tokens = {new_token() for _ in range(50)}
    assert len(tokens) == 50
    assert all(len(t) == 32 and int(t, 16) >= 0 for t in tokens)


def test_discovery_url_points_into_the_registry() -> None:
    assert discovery_url("http://10.0.0.1:2379/", "ab") == \
        "http://10.0.0.1:2379/v2/keys/_etcd/registry/ab"
    assert size_key("ab") == "/_etcd/registry/ab/_config/size"


def test_unreadable_saved_cluster_stops_the_member_naming_the_file(tmp_path: Path) -> None:
    config = _config(tmp_path)
    Path(config.data_dir).mkdir(parents=True)
    (Path(config.data_dir) / d.STATE_FILE).write_text("{not json")
    with pytest.raises(d.DiscoveryError) as err:
        d.discovered_config(config, log=lambda _: None)
    assert err.value.reason == d.ERR_BAD_SAVED
    assert d.STATE_FILE in str(err.value)
