"""Side-by-side conformance of kvd with Debian's etcd 3.4 (v2 API enabled)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import aiohttp
import pytest

from tests.process.kv.conformance import Op, Target, baseline, run_sequence, send, view
from tests.process.kv.harness import Server, etcd_available, start_kvd

pytestmark = pytest.mark.skipif(not etcd_available(), reason="Debian etcd-server not installed")


def _report(mismatches: list) -> str:
    lines = []
    for m in mismatches[:6]:
        lines.append(f"step {m.step}: {m.op}\n  etcd: {json.dumps(m.etcd)}\n  kvd:  "
                     f"{json.dumps(m.kvd)}")
    return f"{len(mismatches)} mismatches\n" + "\n".join(lines)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("seed", [7, 20261122])
def test_random_sequences_answer_like_etcd(pair: tuple[Server, Server], seed: int) -> None:
    etcd, kvd = pair
    mismatches, counts = asyncio.run(run_sequence(etcd.url, kvd.url, seed, steps=1000))
    assert sum(counts.values()) == 1000
    assert counts.get("write", 0) > 400 and counts.get("bad", 0) > 40
    assert not mismatches, _report(mismatches)
    assert kvd.proc.poll() is None


async def _expiry_scenario(etcd_url: str, kvd_url: str) -> list[tuple[dict, dict]]:
    etcd, kvd = Target("etcd", etcd_url), Target("kvd", kvd_url)
    compared: list[tuple[dict, dict]] = []
    async with aiohttp.ClientSession() as session:
        for target in (etcd, kvd):
            await baseline(session, target)

        async def both(op: Op, sort: bool = True) -> None:
            (s1, h1, b1), (s2, h2, b2) = await asyncio.gather(send(session, etcd, op),
                                                              send(session, kvd, op))
            compared.append((view(etcd, s1, h1, b1, sort), view(kvd, s2, h2, b2, sort)))

        await both(Op("PUT", "/v2/keys/tdir", [("dir", "true"), ("ttl", "1")]))
        await both(Op("PUT", "/v2/keys/tdir/inner", [("value", "v")]))
        watch = Op("GET", "/v2/keys/tdir/inner", [("wait", "true")])
        watches = [asyncio.ensure_future(send(session, t, watch, timeout=10))
                   for t in (etcd, kvd)]
        await asyncio.sleep(0.05)
        await both(Op("PUT", "/v2/keys/tkey", [("value", "x"), ("ttl", "2")]))
        await both(Op("PUT", "/v2/keys/tkey", [("ttl", "2"), ("refresh", "true"),
                                               ("prevExist", "true")]))
        await both(Op("PUT", "/v2/keys/zero", [("value", "z"), ("ttl", "0")]))
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            gone = []
            for target in (etcd, kvd):
                status, _, _ = await send(session, target, Op("GET", "/v2/keys/tkey"))
                gone.append(status == 404)
            if all(gone):
                break
            await asyncio.sleep(0.1)
        seen = []
        for target, task in zip((etcd, kvd), watches, strict=True):
            status, headers, body = await task
            seen.append(view(target, status, headers, body, True))
        compared.append((seen[0], seen[1]))
        await both(Op("GET", "/v2/keys/tdir/inner", [("wait", "true"), ("waitIndex", "1"),
                                                     ]))
        for since in range(1, 9):
            await both(Op("GET", "/v2/keys/", [("wait", "true"), ("recursive", "true"),
                                               ("waitIndex", str(since))]))
        await both(Op("GET", "/v2/keys/", [("recursive", "true")]))
    return compared


@pytest.mark.timeout(60)
def test_ttl_expiry_and_refresh_match_etcd(pair: tuple[Server, Server]) -> None:
    etcd, kvd = pair
    compared = asyncio.run(_expiry_scenario(etcd.url, kvd.url))
    expire_events = 0
    for etcd_view, kvd_view in compared:
        assert etcd_view == kvd_view or _ttl_only(etcd_view, kvd_view), (etcd_view, kvd_view)
        for line in etcd_view.get("body", []) if isinstance(etcd_view.get("body"), list) \
                else []:
            if isinstance(line, dict) and line.get("action") == "expire":
                expire_events += 1
    assert expire_events >= 3


def _ttl_only(a: dict, b: dict) -> bool:
    from tests.process.kv.conformance import ttl_close
    return ttl_close(a, b)


@pytest.mark.timeout(60)
def test_cleared_history_error_has_etcd_shape(tmp_path: Path) -> None:
    """A watch older than the (byte-bounded) history gets etcd's 401 and its cause format."""
    kvd = start_kvd(tmp_path, "127.0.0.63", "--history-bytes", "20000")
    try:
        async def go() -> tuple[int, dict, dict]:
            async with aiohttp.ClientSession() as session:
                target = Target("kvd", kvd.url)
                for i in range(300):
                    await send(session, target, Op("PUT", f"/v2/keys/k{i % 7}",
                                                   [("value", "v" * 20)]))
                status, headers, body = await send(session, target, Op(
                    "GET", "/v2/keys/k1", [("wait", "true"), ("waitIndex", "2")]))
                _, _, metrics = await send(session, target, Op("GET", "/metrics"))
                oldest = next(int(line.split()[1]) for line in metrics.decode().splitlines()
                              if line.startswith("kvd_history_oldest_index "))
                return status, dict(headers), {"body": json.loads(body), "oldest": oldest}
        status, headers, result = asyncio.run(go())
    finally:
        kvd.stop()
    body, oldest = result["body"], result["oldest"]
    assert status == 400
    assert body == {"errorCode": 401,
                    "message": "The event in requested index is outdated and cleared",
                    "cause": f"the requested history has been cleared [{oldest}/2]",
                    "index": 300}
    assert headers["X-Etcd-Index"] == "300"
    assert headers["X-Kvd-Oldest-Index"] == str(oldest)
    assert 2 < oldest <= 300
