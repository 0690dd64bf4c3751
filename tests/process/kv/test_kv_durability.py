"""kvd keeps every acknowledged write across SIGKILL, and survives hostile input."""

from __future__ import annotations

import asyncio
import json
import random
import socket
from pathlib import Path

import aiohttp
import pytest

from tests.process.kv.harness import Server, free_port, http_get, start_kvd

HOST = "127.0.0.64"


async def _writer(session: aiohttp.ClientSession, url: str, client: int,
                  acked: dict[str, int], posted: list[str], stop: asyncio.Event) -> None:
    seq = 0
    while not stop.is_set():
        seq += 1
        try:
            if seq % 5 == 0:
                async with session.post(f"{url}/v2/keys/queue/c{client}",
                                        data={"value": str(seq)}) as resp:
                    if resp.status == 201:
                        posted.append((await resp.json())["node"]["key"])
                continue
            async with session.put(f"{url}/v2/keys/dur/c{client}",
                                   data={"value": str(seq)}) as resp:
                if resp.status in (200, 201):
                    await resp.read()
                    acked[f"/dur/c{client}"] = seq
        except (TimeoutError, aiohttp.ClientError):
            return


async def _load_then_kill(server: Server, seconds: float) -> tuple[dict[str, int], list[str]]:
    acked: dict[str, int] = {}
    posted: list[str] = []
    stop = asyncio.Event()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        tasks = [asyncio.ensure_future(_writer(session, server.url, c, acked, posted, stop))
                 for c in range(16)]
        await asyncio.sleep(seconds)
        server.kill()  # SIGKILL while writes are in flight
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
    return acked, posted


def _get(url: str) -> tuple[int, dict]:
    status, body = http_get(url)
    return status, json.loads(body)


@pytest.mark.timeout(90)
def test_no_acknowledged_write_is_lost_across_sigkill(tmp_path: Path) -> None:
    port = free_port(HOST)
    data_dir = tmp_path / "data"
    all_posted: list[str] = []
    latest: dict[str, int] = {}
    for _round in range(3):
        server = start_kvd(tmp_path, HOST, port=port, data_dir=data_dir)
        try:
            for key, seq in latest.items():  # what survived earlier rounds is still there
                _, body = _get(f"{server.url}/v2/keys{key}")
                assert int(body["node"]["value"]) >= seq
            acked, posted = asyncio.run(_load_then_kill(server, 1.0))
        finally:
            server.kill()
        assert sum(acked.values()) > 50, "the load did not make progress"
        latest.update(acked)
        all_posted.extend(posted)
        server = start_kvd(tmp_path, HOST, port=port, data_dir=data_dir)
        try:
            for key, seq in acked.items():
                status, body = _get(f"{server.url}/v2/keys{key}")
                assert status == 200, (key, body)
                value = int(body["node"]["value"])
                assert value in (seq, seq + 1, seq + 2), (key, value, seq)
            for key in all_posted:
                status, _ = _get(f"{server.url}/v2/keys{key}")
                assert status == 200, key
        finally:
            server.kill()


def _fuzz_request(rng: random.Random) -> bytes:
    methods = ["GET", "PUT", "POST", "DELETE", "HEAD", "PATCH", "OPTIONS", "BREW", "G\x00T"]
    paths = ["/v2/keys/", "/v2/keys/a", "/v2/keys/a/../../b", "/v2/keys/%zz", "/v2/keys/%00",
             "/v2/members", "/v2/members/zzz", "/v2/stats/self", "/v2/keys//x", "/metrics",
             "/v2/keys/" + "x" * 3000, "/v2/keys/\u00e9", "/version", "/v2/keys/_h/.", "*"]
    params = ["value", "ttl", "dir", "prevExist", "prevValue", "prevIndex", "wait",
              "waitIndex", "recursive", "sorted", "refresh", "quorum", "stream",
              "noValueOnSuccess", "%", "&&", ";"]
    values = ["", "true", "false", "-1", "99999999999999999999999", "%", "%zz", "x" * 50,
              "1", "0", "\u00fc", "a;b", "+", "t"]
    query = "&".join(f"{rng.choice(params)}={rng.choice(values)}"
                     for _ in range(rng.randint(0, 5)))
    body = "&".join(f"{rng.choice(params)}={rng.choice(values)}"
                    for _ in range(rng.randint(0, 5))).encode()
    if rng.random() < 0.1:
        body = bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 200)))
    ctype = rng.choice(["application/x-www-form-urlencoded", "application/json", "",
                        "text/plain; charset=utf-8", ";;", "multipart/form-data"])
    method = rng.choice(methods)
    path = rng.choice(paths).encode("utf-8", "replace").decode("latin-1")
    lines = [f"{method} {path}{'?' + query if query else ''} HTTP/1.1", "Host: x",
             "Connection: close", f"Content-Length: {len(body)}"]
    if ctype:
        lines.append(f"Content-Type: {ctype}")
    if rng.random() < 0.05:
        lines.append("Content-Length: 3")  # conflicting lengths
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace")
    if rng.random() < 0.05:
        return bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 300)))
    return head + body


def _send_raw(host: str, port: int, data: bytes) -> bytes:
    with socket.create_connection((host, port), timeout=3) as sock:
        sock.sendall(data)
        chunks = []
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
        except (TimeoutError, ConnectionResetError):
            pass
        return b"".join(chunks)


@pytest.mark.timeout(90)
def test_fuzzed_requests_leave_daemon_up_and_store_consistent(tmp_path: Path) -> None:
    server = start_kvd(tmp_path, HOST)
    port = int(server.url.rsplit(":", 1)[1])
    rng = random.Random(4242)
    try:
        for _ in range(20):
            _send_raw(HOST, port, b"PUT /v2/keys/seed/" + str(rng.randint(0, 9)).encode()
                      + b"?value=v HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answered = 0
        server_errors = 0
        for _ in range(1500):
            reply = _send_raw(HOST, port, _fuzz_request(rng))
            if reply.startswith((b"HTTP/1.1 ", b"HTTP/1.0 ")):
                answered += 1
                if reply[9:10] == b"5" and b"runs as a single node" not in reply:
                    server_errors += 1
        assert server.proc.poll() is None, server.log()
        assert answered > 1000
        assert server_errors == 0
        status, _ = http_get(server.url + "/health")
        assert status == 200
        status, before = http_get(server.url + "/v2/keys/?recursive=true&sorted=true")
        assert status == 200
        server.stop()
        server = start_kvd(tmp_path, HOST, port=port, data_dir=server.data_dir)
        status, after = http_get(server.url + "/v2/keys/?recursive=true&sorted=true")
        assert status == 200 and json.loads(after) == json.loads(before)
    finally:
        server.kill()
