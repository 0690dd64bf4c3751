"""Three kvd members bootstrap through a discovery URL served by etcd or by kvd itself.

Also the ways discovery refuses to bootstrap (full cluster, bad or missing size,
duplicate id or name, unreachable service), each within a deadline, and a restarted
member that must not run discovery again.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from flotilla.daemons.kv.config import member_id

from tests.conditions import free_port, wait_until
from tests.process.kv.harness import Server, etcd_available, start_etcd, start_kvd

from .harness import (
    STORE_HOST,
    http,
    make_token,
    member,
    run_to_exit,
    stop_all,
    wait_agreement,
    wait_serving,
)


@pytest.fixture(scope="module")
def kvd_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A single kvd that serves /new and holds the registries of the failure tests."""
    server = start_kvd(Path(tmp_path_factory.mktemp("discovery-store")), STORE_HOST)
    try:
        yield server
    finally:
        server.stop()


def _write_and_read_back(members: list) -> None:
    first, *others = members
    resp = first.put("/discovered/greeting", "hello")
    assert resp.status_code == 201, resp.text
    for m in others:
        got = m.get("/v2/keys/discovered/greeting")
        assert got.status_code == 200 and got.json()["node"]["value"] == "hello", got.text


@pytest.mark.timeout(150)
def test_members_bootstrap_through_etcd_and_the_fourth_is_refused(tmp_path: Path) -> None:
    assert etcd_available(), "Debian's etcd is needed as the discovery store"
    etcd = start_etcd(tmp_path, STORE_HOST)
    members = []
    try:
        url = make_token(etcd.url, secrets.token_hex(16), "3")
        members = [member(tmp_path, i, url) for i in range(3)]
        for m in members:
            m.start()
        wait_serving(members)
        view = wait_agreement(members)
        assert sorted(name for _, name, _ in view) == ["d0", "d1", "d2"]
        # ids are etcd's: SHA-1 of the peer URLs with the discovery URL as the token
        assert {ident for ident, _, _ in view} == {
            f"{member_id([m.peer_url], url):x}" for m in members}
        _write_and_read_back(members)

        # etcd keeps the registrations: one per member, in the member's name=peerURL form
        status, body = http("GET", url)
        assert status == 200 and all(f"{m.name}={m.peer_url}" in body for m in members)

        late = member(tmp_path, 3, url)
        started = time.monotonic()
        result = run_to_exit(late)
        assert result.returncode == 1, result.stderr
        assert "failed to join discovery cluster (discovery: cluster is full)" in result.stderr
        assert "do not reuse discovery token" in result.stderr
        assert time.monotonic() - started < 20
        status, body = http("GET", url)
        assert late.peer_url not in body, "a refused member must not register"
    finally:
        stop_all(members)
        etcd.stop()


@pytest.mark.timeout(150)
def test_kvd_serves_new_and_a_restarted_member_does_not_rediscover(tmp_path: Path) -> None:
    store = start_kvd(tmp_path, STORE_HOST)
    members = []
    try:
        status, body = http("GET", f"{store.url}/new?size=abc")
        assert status == 400 and body == "size: 'abc' is not a whole number from 1 to 1000\n"
        status, url = http("GET", f"{store.url}/new")
        assert status == 200
        assert url.startswith(f"{store.url}/v2/keys/_etcd/registry/") and len(
            url.rsplit("/", 1)[1]) == 32, url
        status, body = http("GET", f"{url}/_config/size")
        assert status == 200 and '"value":"3"' in body, body

        members = [member(tmp_path, i, url) for i in range(3)]
        for m in members:
            m.start()
        wait_serving(members)
        view = wait_agreement(members)
        _write_and_read_back(members)

        # The discovery service goes away; a member restarted from its data dir must not
        # need it (nor register again): it rejoins with the cluster it saved.
        store.stop()
        victim = members[0]
        victim.kill()
        victim.start()
        wait_serving([victim])
        assert "discovery token is ignored since cluster already initialized" in victim.log()
        assert wait_agreement(members) == view
        got = wait_until(lambda: victim.get("/v2/keys/discovered/greeting").json()
                         .get("node", {}).get("value"), 30, "the restarted member to read",
                         tolerate=(Exception,))
        assert got == "hello"
    finally:
        stop_all(members)
        store.stop()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("size,reason", [
    ("abc", "discovery: size key is bad"),
    ("0", "discovery: size key is bad"),
    (None, "discovery: size key not found"),
])
def test_bad_or_missing_size_fails_clearly(kvd_store: Server, tmp_path: Path,
                                           size: str | None, reason: str) -> None:
    url = make_token(kvd_store.url, secrets.token_hex(16), size)
    started = time.monotonic()
    result = run_to_exit(member(tmp_path, 0, url))
    assert result.returncode == 1, result.stderr
    assert f"failed to join discovery cluster ({reason})" in result.stderr
    assert time.monotonic() - started < 20
    _status, body = http("GET", url)
    assert "d0=" not in body, "nothing is registered when the size is unusable"


@pytest.mark.timeout(60)
def test_unreachable_discovery_url_gives_up_within_its_timeout(tmp_path: Path) -> None:
    port = free_port(STORE_HOST)  # nothing listens there
    url = f"http://{STORE_HOST}:{port}/v2/keys/_etcd/registry/{secrets.token_hex(16)}"
    started = time.monotonic()
    result = run_to_exit(member(tmp_path, 0, url, "--discovery-timeout", "3"))
    elapsed = time.monotonic() - started
    assert result.returncode == 1, result.stderr
    assert "failed to join discovery cluster (discovery: too many retries)" in result.stderr
    assert "unreachable" in result.stderr and "retrying in" in result.stderr
    assert 3 <= elapsed < 20


@pytest.mark.timeout(60)
def test_duplicate_id_is_refused(kvd_store: Server, tmp_path: Path) -> None:
    url = make_token(kvd_store.url, secrets.token_hex(16), "2")
    m = member(tmp_path, 0, url)
    taken = f"{member_id([m.peer_url], url):x}"
    status, _ = http("PUT", f"{url}/{taken}?prevExist=false",
                     {"value": "someone=http://127.0.0.99:2380"})
    assert status == 201
    result = run_to_exit(m)
    assert result.returncode == 1, result.stderr
    assert "failed to join discovery cluster (discovery: found duplicate id)" in result.stderr


@pytest.mark.timeout(60)
def test_same_registration_again_is_this_members_own(kvd_store: Server, tmp_path: Path
                                                      ) -> None:
    """A member that died between registering and saving the result may try again."""
    url = make_token(kvd_store.url, secrets.token_hex(16), "1")
    m = member(tmp_path, 0, url)
    mine = f"{member_id([m.peer_url], url):x}"
    status, _ = http("PUT", f"{url}/{mine}?prevExist=false", {"value": f"d0={m.peer_url}"})
    assert status == 201
    m.start()
    try:
        wait_serving([m])
        assert "found this member's earlier registration" in m.log()
    finally:
        m.stop()


@pytest.mark.timeout(60)
def test_duplicate_name_is_refused(kvd_store: Server, tmp_path: Path) -> None:
    url = make_token(kvd_store.url, secrets.token_hex(16), "2")
    status, _ = http("PUT", f"{url}/abcdef?prevExist=false",
                     {"value": "twin=http://127.0.0.99:2380"})
    assert status == 201
    result = run_to_exit(member(tmp_path, 0, url, name="twin"))
    assert result.returncode == 1, result.stderr
    assert "failed to join discovery cluster (discovery: found duplicate name)" \
        in result.stderr
    assert "same name" in result.stderr
