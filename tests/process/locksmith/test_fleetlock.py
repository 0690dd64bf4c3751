"""The FleetLock server against kvd: zincati's requests, bad headers and bodies, and the
semaphore it shares with locksmithctl."""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator

import pytest

from tests.conditions import free_port, wait_until
from tests.process.fleet.harness import Store

from .harness import PYTHON, ctl, env

HOST = "127.0.0.39"


@pytest.fixture(scope="module")
def server(kvd_store: Store) -> Iterator[str]:
    port = free_port(HOST)
    proc = subprocess.Popen([PYTHON, "-m", "flotilla.daemons.locksmith.fleetlock",
                             "-endpoint", kvd_store.url, "-listen", f"{HOST}:{port}"],
                            env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://{HOST}:{port}"
    try:
        wait_until(lambda: proc.poll() is not None or post(url, "/v1/steady-state", b"")[0],
                   30, "the FleetLock server to answer", tolerate=(OSError,))
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        yield url
    finally:
        proc.terminate()
        proc.wait(15)


def post(url: str, path: str, body: bytes, header: str | None = "true"
         ) -> tuple[int, dict | None]:
    request = urllib.request.Request(url + path, data=body, method="POST")
    if header is not None:
        request.add_header("fleet-lock-protocol", header)
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, None
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def params(ident: str, group: str) -> bytes:
    return json.dumps({"client_params": {"id": ident, "group": group}}).encode()


def test_pre_reboot_is_recursive_and_shares_locksmiths_semaphore(server: str,
                                                                 kvd_store: Store) -> None:
    group = f"fcos-{uuid.uuid4().hex[:6]}"
    assert post(server, "/v1/pre-reboot", params("node-a", group)) == (200, None)
    assert post(server, "/v1/pre-reboot", params("node-a", group)) == (200, None)
    status, error = post(server, "/v1/pre-reboot", params("node-b", group))
    assert (status, error) == (500, {"kind": "failed_lock", "value": "semaphore is at 0"})
    shown = ctl("-endpoint", kvd_store.url, "-group", group, "status").stdout
    assert shown == "Available: 0\nMax: 1\n\nMACHINE ID\nnode-a\n"
    assert post(server, "/v1/steady-state", params("node-a", group)) == (200, None)
    assert post(server, "/v1/steady-state", params("node-a", group)) == (200, None)
    assert post(server, "/v1/pre-reboot", params("node-b", group)) == (200, None)


def test_group_default_is_locksmiths_default_semaphore(server: str, kvd_store: Store) -> None:
    ident = f"node-{uuid.uuid4().hex[:6]}"
    assert ctl("-endpoint", kvd_store.url, "set-max", "5").returncode == 0
    assert post(server, "/v1/pre-reboot", params(ident, "default")) == (200, None)
    assert ident in ctl("-endpoint", kvd_store.url, "status").stdout
    assert post(server, "/v1/steady-state", params(ident, "default")) == (200, None)
    assert ident not in ctl("-endpoint", kvd_store.url, "status").stdout


@pytest.mark.parametrize(("header", "body", "why"), [
    (None, params("a", "g"), "wrong 'fleet-lock-protocol' header"),
    ("false", params("a", "g"), "wrong 'fleet-lock-protocol' header"),
    ("true", b"{not json", "body is not JSON"),
    ("true", b"[]", "missing 'client_params' object"),
    ("true", params("a", ""), "empty client group"),
    ("true", params("", "g"), "empty client ID"),
    ("true", params("a", "no/slash"), "invalid group"),
])
def test_bad_requests_get_the_protocols_json_error_and_change_nothing(
        server: str, kvd_store: Store, header: str | None, body: bytes, why: str) -> None:
    for path in ("/v1/pre-reboot", "/v1/steady-state"):
        status, error = post(server, path, body, header)
        assert status == 400
        assert error is not None and error["kind"] == "invalid_client_identity"
        assert error["value"].startswith(f"failed to validate client identity: {why}")
    assert kvd_store.get("/coreos.com/updateengine/rebootlock/groups/g/semaphore") is None
