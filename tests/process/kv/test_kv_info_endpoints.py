"""Cluster-information endpoints answer with etcd's statuses, shapes and framing."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from tests.process.kv.harness import Server, require_tools

REQUESTS = [
    ("GET", "/v2/stats/self", None), ("GET", "/v2/stats/store", None),
    ("GET", "/v2/stats/leader", None), ("GET", "/v2/members", None),
    ("GET", "/v2/members/leader", None), ("GET", "/version", None), ("GET", "/health", None),
    ("GET", "/v2/machines", None), ("PUT", "/v2/stats/self", None),
    ("DELETE", "/v2/stats/store", None), ("PUT", "/version", None), ("POST", "/health", None),
    ("POST", "/v2/machines", None), ("PUT", "/v2/members", None),
    ("DELETE", "/v2/members/zz", None), ("POST", "/v2/members", ("text/plain", b"{}")),
    ("OPTIONS", "/v2/keys/a", None), ("GET", "/nonexistent", None), ("GET", "/v2/keysx", None),
    ("PATCH", "/v2/keys/a", None),
]


@pytest.fixture(autouse=True)
def _etcd_installed() -> None:
    require_tools("etcd")


def _call(base: str, method: str, path: str, body: tuple[str, bytes] | None
          ) -> tuple[int, dict[str, str], bytes]:
    data, headers = (body[1], {"Content-Type": body[0]}) if body else (None, {})
    request = urllib.request.Request(base + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def _shape(value: object) -> object:
    """Keys and value types, recursively: what a client's decoder depends on."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items() if k != "followers"}
    if isinstance(value, list):
        return [_shape(value[0])] if value else []
    return type(value).__name__


def _seen(status: int, headers: dict[str, str], body: bytes) -> dict[str, object]:
    ctype = headers.get("Content-Type", "")
    seen: dict[str, object] = {"status": status, "type": ctype,
                               "allow": headers.get("Allow"),
                               "cors": headers.get("Access-Control-Allow-Origin"),
                               "newline": body.endswith(b"\n")}
    if ctype.startswith("application/json") and body:
        seen["shape"] = _shape(json.loads(body))
    elif not ctype.startswith("application/json"):
        seen["text"] = body.decode() if status >= 400 else len(body.split(b", "))
    return seen


@pytest.mark.timeout(60)
def test_info_endpoints_match_etcd(pair: tuple[Server, Server]) -> None:
    etcd, kvd = pair
    differences = []
    for method, path, body in REQUESTS:
        want = _seen(*_call(etcd.url, method, path, body))
        got = _seen(*_call(kvd.url, method, path, body))
        if want != got:
            differences.append(f"{method} {path}\n  etcd: {want}\n  kvd:  {got}")
    assert not differences, "\n".join(differences)
