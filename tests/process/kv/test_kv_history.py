"""kvd's byte-bounded watch history: a watch from before it gets etcd's 401, and says where
the history now starts.

kvd alone: etcd keeps the last 1,000 events whatever their size, so its history cannot be
bounded the same way for a side-by-side run. The expected body is etcd's format for this
error (``the requested history has been cleared [oldest/asked]``, index = the store's);
``X-Kvd-Oldest-Index`` is kvd's own addition.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import pytest

from tests.process.kv.conformance import Op, Target, send
from tests.process.kv.harness import start_kvd


@pytest.mark.timeout(60)
def test_watch_older_than_the_byte_bounded_history_gets_401_naming_the_oldest_index(
        tmp_path: Path) -> None:
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
