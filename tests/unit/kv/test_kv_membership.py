"""Membership request checking, member ids and the identity file (no sockets).

The expected status codes and messages were recorded from Debian's etcd 3.4.23 started
with --enable-v2 as a 3-member cluster on 127.0.0.11-13 (curl, Content-Type as given):

    POST with a form body       415 Bad Content-Type application/x-www-form-urlencoded,
                                    accept application/json
    POST {bad                   400 invalid character 'b' looking for beginning of
                                    object key string
    POST {} or {"peerURLs":[]}  400 no valid URLs given
    POST {"peerURLs":"..."}     400 json: cannot unmarshal string into Go struct field
                                    .peerURLs of type []string
    POST {"peerURLs":[1]}       400 json: cannot unmarshal number into Go struct field
                                    .peerURLs of type string
    POST [1]                    400 json: cannot unmarshal array into Go value of type
                                    struct { PeerURLs ... }
    POST ["notaurl"]            400 URL scheme must be http, https, unix, or unixs: <url>
    POST ["http://127.0.0.14"]  400 URL address does not have the form "host:port": <url>
    POST [".../path"]           400 URL must not contain a path: <url>
    POST a member's peer URL    409 membership: peerURL exists
    POST a new peer URL         201 {"id":..,"name":"","peerURLs":[..],"clientURLs":[]}
    DELETE /v2/members/abc      404 No such member: abc (also for the unparsable "zz")
    DELETE a removed id         410 Member permanently removed: <id>
    PUT a removed id            500 Internal Server Error
    GET /v2/members/<id>        404 Not found
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from flotilla.daemons.kv.config import ConfigError, parse_config
from flotilla.daemons.kv.membership import (
    MEMBER_FILE,
    Identity,
    MemberError,
    cluster_id_of,
    find_self,
    load_identity,
    members_answer,
    new_member_id,
    parse_member_body,
    parse_member_id,
    save_identity,
    static_identity,
)

JSON = "application/json"


def refused(content_type: str, body: bytes) -> tuple[int, str]:
    with pytest.raises(MemberError) as info:
        parse_member_body(content_type, body)
    return info.value.status, info.value.message


@pytest.mark.parametrize("body, message", [
    (b"{bad", "invalid character 'b' looking for beginning of object key string"),
    (b"{}", "no valid URLs given"),
    (b'{"peerURLs":[]}', "no valid URLs given"),
    (b'{"peerURLs":null}', "no valid URLs given"),
    (b"null", "no valid URLs given"),
    (b'{"peerURLs":"http://x:1"}',
     "json: cannot unmarshal string into Go struct field .peerURLs of type []string"),
    (b'{"peerURLs":[1]}',
     "json: cannot unmarshal number into Go struct field .peerURLs of type string"),
    (b"[1]", 'json: cannot unmarshal array into Go value of type struct { PeerURLs '
             '[]string "json:\\"peerURLs\\"" }'),
    (b'{"peerURLs":["notaurl"]}', "URL scheme must be http, https, unix, or unixs: notaurl"),
    (b'{"peerURLs":["ftp://127.0.0.14:1"]}',
     "URL scheme must be http, https, unix, or unixs: ftp://127.0.0.14:1"),
    (b'{"peerURLs":["http://127.0.0.14"]}',
     'URL address does not have the form "host:port": http://127.0.0.14'),
    (b'{"peerURLs":["http://127.0.0.14:1/path"]}',
     "URL must not contain a path: http://127.0.0.14:1/path"),
    (b"", "unexpected end of JSON input"),
    (b'{"peerURLs":["http://a:1"]', "unexpected end of JSON input"),
])
def test_bad_bodies_get_etcds_400_messages(body: bytes, message: str) -> None:
    assert refused(JSON, body) == (400, message)


def test_a_body_that_is_not_json_typed_gets_415_naming_the_type() -> None:
    assert refused("application/x-www-form-urlencoded", b"{}") == (
        415, "Bad Content-Type application/x-www-form-urlencoded, accept application/json")
    assert refused("", b"{}") == (415, "Bad Content-Type , accept application/json")


def test_good_bodies_give_sorted_urls_and_accept_go_style_field_case() -> None:
    body = b'{"peerURLs":["https://b:2380","http://a:2380"]}'
    assert parse_member_body("application/json; charset=utf-8", body) == [
        "http://a:2380", "https://b:2380"]
    assert parse_member_body(JSON, b'{"peerurls":["http://a:1"]}') == ["http://a:1"]


@pytest.mark.parametrize("text, value", [("abc", 0xABC), ("5a81d3232d40949", 0x5A81D3232D40949),
                                         ("FFFFFFFFFFFFFFFF", 2**64 - 1)])
def test_member_ids_are_hex(text: str, value: int) -> None:
    assert parse_member_id(text) == value


@pytest.mark.parametrize("text", ["zz", "", "0x1f", "-1", "1" * 17, "a b"])
def test_unparsable_ids_are_404_naming_the_text(text: str) -> None:
    with pytest.raises(MemberError) as info:
        parse_member_id(text)
    assert (info.value.status, info.value.message) == (404, f"No such member: {text}")


def test_new_member_ids_depend_on_urls_and_time_not_url_order() -> None:
    a = new_member_id(["http://b:1", "http://a:1"], 1000)
    assert a == new_member_id(["http://a:1", "http://b:1"], 1000)
    assert a != new_member_id(["http://a:1", "http://b:1"], 1001)
    assert 0 < a < 2**64


def test_static_identity_matches_etcds_ids_for_the_initial_cluster() -> None:
    # Ids etcd 3.4.23 gave the 3-member cluster recorded above (token etcd-cluster).
    config = parse_config([
        "--name", "e1", "--initial-advertise-peer-urls", "http://127.0.0.11:23801",
        "--initial-cluster", "e1=http://127.0.0.11:23801,e2=http://127.0.0.12:23801,"
                             "e3=http://127.0.0.13:23801"], environ={})
    ident = static_identity(config)
    assert f"{ident.member_id:x}" == "28b05395bf906d8c"
    assert sorted(f"{k:x}" for k in ident.peers) == [
        "28b05395bf906d8c", "5a81d3232d40949", "a342442e50ca22e3"]
    assert f"{ident.cluster_id:x}" == "ad4221efec6d1b82"
    assert ident.cluster_id == cluster_id_of(list(ident.peers))
    assert not ident.joined


def members(*rows: tuple[int, list[str]], removed: set[int] | None = None) -> dict:
    return members_answer(77, [(i, f"n{i}", urls, []) for i, urls in rows], removed or set())


def test_find_self_matches_peer_urls_in_any_order() -> None:
    answer = members((1, ["http://a:1"]), (2, ["http://c:1", "http://b:1"]))
    ident, why = find_self(answer, ["http://b:1", "http://c:1"])
    assert why == "" and ident is not None
    assert (ident.member_id, ident.cluster_id, ident.joined) == (2, 77, True)
    assert ident.peers == {1: ["http://a:1"], 2: ["http://b:1", "http://c:1"]}


def test_find_self_says_why_it_found_nothing() -> None:
    assert find_self(members((1, ["http://a:1"])), ["http://z:1"]) == (
        None, "not in the member list")
    assert find_self({"members": "x"}, ["http://z:1"]) == (None, "malformed member list")
    gone = members((1, ["http://a:1"]), (2, ["http://z:1"]), removed={2})
    assert find_self(gone, ["http://z:1"]) == (None, "was removed from the cluster")


def test_identity_file_round_trip_is_atomic_and_checked(tmp_path: Path) -> None:
    assert load_identity(tmp_path) is None
    ident = Identity(0xABC, 0xDEF, {0xABC: ["http://a:1"], 5: ["http://b:1"]}, joined=True)
    save_identity(tmp_path / "data", ident)
    assert load_identity(tmp_path / "data") == ident
    assert [p.name for p in (tmp_path / "data").iterdir()] == [MEMBER_FILE]  # no temp left
    (tmp_path / "data" / MEMBER_FILE).write_text('{"version": 1,\n "id": "zz"}')
    with pytest.raises(ValueError, match="not a kvd member file"):
        load_identity(tmp_path / "data")
    (tmp_path / "data" / MEMBER_FILE).write_text('{"version": 1,\n oops}')
    with pytest.raises(ValueError, match="line 2"):
        load_identity(tmp_path / "data")


def test_identity_file_is_plain_json_with_hex_ids(tmp_path: Path) -> None:
    save_identity(tmp_path, Identity(255, 16, {255: ["http://a:1"]}, joined=False))
    obj = json.loads((tmp_path / MEMBER_FILE).read_text())
    assert obj == {"version": 1, "id": "ff", "clusterID": "10", "joined": False,
                   "peers": {"ff": ["http://a:1"]}}


def test_peer_tls_flags_and_environment(tmp_path: Path) -> None:
    for name in ("c.pem", "k.pem", "ca.pem"):
        (tmp_path / name).write_text("x")
    https = ["--listen-peer-urls", "https://127.0.0.1:2380"]
    config = parse_config([*https, "--peer-cert-file", str(tmp_path / "c.pem"),
                           "--peer-key-file", str(tmp_path / "k.pem")],
                          environ={"ETCD_PEER_TRUSTED_CA_FILE": str(tmp_path / "ca.pem"),
                                   "ETCD_PEER_CLIENT_CERT_AUTH": "true"})
    assert config.peer_tls is not None
    assert config.peer_tls.trusted_ca_file == str(tmp_path / "ca.pem")
    assert config.peer_tls.client_cert_auth
    assert parse_config([], environ={}).peer_tls is None


@pytest.mark.parametrize("argv, message", [
    (["--listen-peer-urls", "https://127.0.0.1:2380"],
     "--listen-peer-urls: https:// needs --peer-cert-file and --peer-key-file"),
    (["--peer-cert-file", "/x", "--peer-key-file", "/y"],
     "--peer-cert-file/--peer-key-file given but no https:// --listen-peer-urls"),
    (["--listen-peer-urls", "https://127.0.0.1:2380", "--peer-cert-file", "/nope/c",
      "--peer-key-file", "/nope/k"], "--peer-cert-file: '/nope/c' does not exist"),
])
def test_bad_peer_tls_flags_name_the_flag(argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(argv, environ={})
    assert str(info.value) == message


def test_client_cert_auth_for_peers_needs_a_ca(tmp_path: Path) -> None:
    for name in ("c.pem", "k.pem"):
        (tmp_path / name).write_text("x")
    with pytest.raises(ConfigError, match="--peer-client-cert-auth needs --peer-trusted-ca"):
        parse_config(["--listen-peer-urls", "https://127.0.0.1:2380",
                      "--peer-cert-file", str(tmp_path / "c.pem"),
                      "--peer-key-file", str(tmp_path / "k.pem"), "--peer-client-cert-auth"],
                     environ={})
