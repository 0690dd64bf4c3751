"""Thousands of concurrent long-poll watchers: all notified, none leaked when clients go."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import pytest

from tests.process.kv.harness import start_kvd

WATCHERS = 2000


async def _registered(session: aiohttp.ClientSession, url: str, count: int,
                      deadline_s: float = 30) -> int:
    deadline = time.monotonic() + deadline_s
    seen = -1
    while time.monotonic() < deadline:
        async with session.get(f"{url}/v2/stats/store") as resp:
            seen = (await resp.json())["watchers"]
        if seen == count:
            return seen
        await asyncio.sleep(0.05)
    return seen


async def _scenario(url: str) -> dict[str, object]:
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=60)) as session:
        async def watch(i: int) -> dict:
            params = {"wait": "true", "recursive": "true"} if i % 2 else {"wait": "true"}
            async with session.get(f"{url}/v2/keys/w{'' if i % 2 else '/k'}",
                                   params=params) as resp:
                return await resp.json()

        tasks = [asyncio.ensure_future(watch(i)) for i in range(WATCHERS)]
        registered = await _registered(session, url, WATCHERS)
        async with session.put(f"{url}/v2/keys/w/k", data={"value": "fire"}) as resp:
            assert resp.status == 201
        results = await asyncio.wait_for(asyncio.gather(*tasks), timeout=30)
        after_fire = await _registered(session, url, 0)

        # Clients that give up must not leave watchers behind on the server.
        abandoned = [asyncio.ensure_future(watch(i)) for i in range(500)]
        parked = await _registered(session, url, 500)
        for task in abandoned:
            task.cancel()
        await asyncio.gather(*abandoned, return_exceptions=True)
    async with aiohttp.ClientSession() as session:
        after_cancel = await _registered(session, url, 0)
    return {"registered": registered, "results": results, "after_fire": after_fire,
            "parked": parked, "after_cancel": after_cancel}


@pytest.mark.timeout(120)
def test_thousands_of_watchers_are_notified_and_cleaned_up(tmp_path: Path) -> None:
    server = start_kvd(tmp_path, "127.0.0.65")
    try:
        outcome = asyncio.run(_scenario(server.url))
        assert server.proc.poll() is None
    finally:
        server.stop()
    assert outcome["registered"] == WATCHERS
    results = outcome["results"]
    assert len(results) == WATCHERS  # type: ignore[arg-type]
    assert all(r["action"] == "set" and r["node"]["value"] == "fire"  # type: ignore
               for r in results)  # type: ignore[union-attr]
    assert outcome["after_fire"] == 0
    assert outcome["parked"] == 500
    assert outcome["after_cancel"] == 0
