"""Request validation (etcd's parseKeyRequest order and causes), rendering, flags."""

from __future__ import annotations

import pytest
from flotilla.daemons.kv import errors as E
from flotilla.daemons.kv.config import ConfigError, member_id, parse_config
from flotilla.daemons.kv.errors import EtcdError
from flotilla.daemons.kv.render import go_string, rfc3339nano
from flotilla.daemons.kv.request import (
    Form,
    go_clean_url_path,
    go_path_unescape,
    parse_form,
    parse_key_request,
)


def parse(method: str, query: str) -> object:
    pairs, error = parse_form(query)
    return parse_key_request(method, "/k", Form(pairs), error)


@pytest.mark.parametrize(("method", "query", "code", "cause"), [
    ("GET", "prevIndex=x", E.INDEX_NAN, 'invalid value for "prevIndex"'),
    ("GET", "waitIndex=-1", E.INDEX_NAN, 'invalid value for "waitIndex"'),
    ("GET", "recursive=yes", E.INVALID_FIELD, 'invalid value for "recursive"'),
    ("GET", "sorted=", E.INVALID_FIELD, 'invalid value for "sorted"'),
    ("PUT", "wait=true", E.INVALID_FIELD, '"wait" can only be used with GET requests'),
    ("PUT", "prevValue=", E.PREV_VALUE_REQUIRED, '"prevValue" cannot be empty'),
    ("PUT", "ttl=abc", E.TTL_NAN, 'invalid value for "ttl"'),
    ("PUT", "ttl=-5", E.TTL_NAN, 'invalid value for "ttl"'),
    ("PUT", "prevExist=maybe", E.INVALID_FIELD, "invalid value for prevExist"),
    ("PUT", "refresh=true&value=x&ttl=5", E.REFRESH_VALUE, "A value was provided on a refresh"),
    ("PUT", "refresh=true", E.REFRESH_TTL_REQUIRED, "No TTL value set"),
    ("PUT", "value=%zz", E.INVALID_FORM, 'invalid URL escape "%zz"'),
    ("PUT", "a=1;b=2", E.INVALID_FORM, "invalid semicolon separator in query"),
    ("GET", "prevIndex=x&recursive=bad", E.INDEX_NAN, 'invalid value for "prevIndex"'),
])
def test_malformed_parameters_get_etcds_errors(method: str, query: str, code: int,
                                               cause: str) -> None:
    with pytest.raises(EtcdError) as caught:
        parse(method, query)
    assert (caught.value.code, caught.value.cause, caught.value.index) == (code, cause, 0)


def test_go_booleans_and_first_value_wins() -> None:
    req = parse("PUT", "dir=T&recursive=0&value=a&value=b&ttl=&prevExist=False")
    assert req.dir is True and req.recursive is False  # type: ignore[attr-defined]
    assert req.value == "a" and req.ttl is None  # type: ignore[attr-defined]
    assert req.prev_exist is False  # type: ignore[attr-defined]


def test_command_carries_only_given_params_and_time() -> None:
    req = parse("PUT", "value=v&ttl=30&prevIndex=4")
    command = req.command(123)  # type: ignore[attr-defined]
    assert command == {"op": "put", "key": "/k", "now": 123,
                       "params": {"value": "v", "prevIndex": 4, "ttl": 30}}
    delete = parse("DELETE", "recursive=true").command(5)  # type: ignore[attr-defined]
    assert delete == {"op": "delete", "key": "/k", "now": 5, "params": {"recursive": True}}


def test_form_decoding_like_go() -> None:
    pairs, error = parse_form("a=1+2&b=%C3%BC&c=%e4%bd&&d")
    assert error is None
    assert pairs == [("a", "1 2"), ("b", "ü"), ("c", "\ufffd\ufffd"), ("d", "")]


def test_canonical_paths_like_go_servemux() -> None:
    assert go_clean_url_path("/v2/keys//a/../b/") == "/v2/keys/b/"
    assert go_clean_url_path("/v2/keys/a") == "/v2/keys/a"
    assert go_clean_url_path("/v2/keys/./c") == "/v2/keys/c"


def test_go_json_strings_and_times() -> None:
    assert go_string('<a&b>"\n\x01\u2028') == '"\\u003ca\\u0026b\\u003e\\"\\n\\u0001\\u2028"'
    assert rfc3339nano(1_800_000_000_123_400_000) == "2027-01-15T08:00:00.1234Z"
    assert rfc3339nano(1_800_000_000_000_000_000) == "2027-01-15T08:00:00Z"


def test_flags_one_or_two_dashes_and_environment() -> None:
    config = parse_config(["-name", "n1", "--data-dir=/tmp/x", "-enable-v2=true",
                           "--listen-client-urls", "http://127.0.0.5:4001"],
                          {"ETCD_INITIAL_CLUSTER_TOKEN": "tok", "ETCD_NAME": "ignored"})
    assert config.name == "n1" and config.data_dir == "/tmp/x"
    assert config.listen_client_urls == ["http://127.0.0.5:4001"]
    assert config.advertise_client_urls == ["http://127.0.0.5:4001"]
    assert config.initial_cluster_token == "tok" and config.ignored == ["enable-v2"]
    defaults = parse_config([], {})
    assert defaults.listen_client_urls == ["http://127.0.0.1:2379"]
    assert defaults.data_dir == "default.etcd"


def test_member_id_matches_etcd_for_known_flags() -> None:
    # etcd 3.4.23 reported id 3037bbcf8023a375 for this peer URL and the default token.
    assert f"{member_id(['http://127.0.0.50:23800'], 'etcd-cluster'):x}" == "3037bbcf8023a375"


@pytest.mark.parametrize("argv", [
    ["--listen-client-urls", "ftp://x"],
    ["--initial-cluster", "nourl"],
    ["--initial-cluster-state", "maybe"],
    ["--bogus-flag", "1"],
])
def test_bad_flags_name_the_flag(argv: list[str]) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(argv, {})
    assert argv[0].lstrip("-") in str(caught.value)


def test_path_unescaping_like_go() -> None:
    assert go_path_unescape("/v2/keys/a%20b+c") == "/v2/keys/a b+c"
    assert go_path_unescape("/v2/keys/a%2Fb") == "/v2/keys/a/b"
    assert go_path_unescape("/v2/keys/%ff%C3%BC") == "/v2/keys/\ufffdü"
    assert go_path_unescape("/v2/keys/a%zz") is None
    assert go_path_unescape("/v2/keys/a%4") is None
