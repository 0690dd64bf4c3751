"""Side-by-side conformance of kvd with Debian's etcd 3.4 (v2 API enabled)."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest

from tests.conditions import async_wait_until
from tests.process.kv.conformance import (
    Op,
    Target,
    baseline,
    finish,
    open_request,
    run_sequence,
    send,
    ttl_close,
    view,
)
from tests.process.kv.harness import Server, require_tools

# Every action, with a parameter in a spelling that a second percent-decoding misreads,
# in the query and (for PUT and POST) the body: what the run must have exercised.
ODD_FAMILIES = {
    "PUT value query", "PUT value body", "POST value query", "POST value body",
    "PUT prevValue query", "PUT prevValue body", "DELETE prevValue query",
    "PUT ttl query", "PUT ttl body", "PUT prevIndex query", "DELETE prevIndex query",
    "GET waitIndex query", "GET wait query", "GET recursive query", "PUT prevExist query",
    "PUT dir body", "DELETE recursive query",
}


@pytest.fixture(autouse=True)
def _etcd_installed() -> None:
    require_tools("etcd")


def _report(mismatches: list) -> str:
    lines = []
    for m in mismatches[:6]:
        lines.append(f"step {m.step}: {m.op}\n  etcd: {json.dumps(m.etcd)}\n  kvd:  "
                     f"{json.dumps(m.kvd)}")
    return f"{len(mismatches)} mismatches\n" + "\n".join(lines)


@pytest.mark.timeout(180)
@pytest.mark.parametrize("seed", [7, 20261122])
def test_random_sequences_answer_like_etcd(pair: tuple[Server, Server], seed: int) -> None:
    etcd, kvd = pair
    mismatches, counts = asyncio.run(run_sequence(etcd.url, kvd.url, seed, steps=1000))
    assert sum(counts[k] for k in ("write", "read", "history-watch", "bad", "live-watch")
               ) == 1000
    assert counts.get("write", 0) > 400 and counts.get("bad", 0) > 40
    assert not mismatches, _report(mismatches)
    # A live watch that fires on neither server compares equal too: most must have fired.
    assert counts.get("live-watch fired", 0) >= counts.get("live-watch", 0) // 3 > 0, counts
    exercised = {k.removeprefix("odd ") for k in counts if k.startswith("odd ")}
    assert exercised >= ODD_FAMILIES, sorted(ODD_FAMILIES - exercised)
    assert counts.get("odd answered 2xx", 0) > 100, counts
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
        # Registered before the writes below: both send a watch's headers only after
        # registering its watcher.
        watch = Op("GET", "/v2/keys/tdir/inner", [("wait", "true")])
        watches = await asyncio.gather(*(open_request(session, t, watch) for t in (etcd, kvd)))
        await both(Op("PUT", "/v2/keys/tkey", [("value", "x"), ("ttl", "2")]))
        await both(Op("PUT", "/v2/keys/tkey", [("ttl", "2"), ("refresh", "true"),
                                               ("prevExist", "true")]))
        await both(Op("PUT", "/v2/keys/zero", [("value", "z"), ("ttl", "0")]))

        async def tkey_gone() -> bool:
            answers = [await send(session, t, Op("GET", "/v2/keys/tkey")) for t in (etcd, kvd)]
            return all(status == 404 for status, _, _ in answers)

        await async_wait_until(tkey_gone, 8, "/tkey (ttl 2 s) to expire on etcd and kvd")
        seen = []
        for target, resp in zip((etcd, kvd), watches, strict=True):
            seen.append(view(target, *await finish(resp, 10), True))
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
        assert ttl_close(etcd_view, kvd_view), (etcd_view, kvd_view)
        for line in etcd_view.get("body", []) if isinstance(etcd_view.get("body"), list) \
                else []:
            if isinstance(line, dict) and line.get("action") == "expire":
                expire_events += 1
    assert expire_events >= 3
