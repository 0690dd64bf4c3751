"""Fetching over HTTP on loopback: retries, headers, hashes, and nothing written on failure."""

from __future__ import annotations

import gzip
import hashlib
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from flotilla.ignition import engine
from flotilla.ignition.fetch import FetchError, HttpPolicy

from tests.process.ignition.sidebyside import REPO, seed_root, snapshot

BODY = b"served over http\n"


class Server:
    def __init__(self) -> None:
        self.hits: dict[str, int] = {}
        self.headers: dict[str, dict[str, str]] = {}
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                owner.hits[self.path] = owner.hits.get(self.path, 0) + 1
                owner.headers[self.path] = dict(self.headers)
                status, body = owner.answer(self.path, owner.hits[self.path], dict(self.headers))
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.configs: dict[str, bytes] = {}

    def answer(self, path: str, hit: int, headers: dict[str, str]) -> tuple[int, bytes]:
        if path == "/ok":
            return 200, BODY
        if path == "/gz":
            return 200, gzip.compress(BODY)
        if path == "/always500":
            return 500, b"broken"
        if path == "/flaky":
            return (503, b"") if hit < 3 else (200, BODY)
        if path == "/missing":
            return 404, b""
        if path == "/needs-header":
            return (200, BODY) if headers.get("X-Token") == "s3cret" else (403, b"")
        if path in self.configs:
            return 200, self.configs[path]
        return 404, b""


@pytest.fixture
def server() -> Iterator[Server]:
    srv = Server()
    srv.thread.start()
    try:
        yield srv
    finally:
        srv.httpd.shutdown()
        srv.httpd.server_close()


def _policy(sleeps: list[float], attempts: int = 5) -> HttpPolicy:
    return HttpPolicy(response_headers=5, max_attempts=attempts, sleep=sleeps.append)


def _config(*files: dict, users: list | None = None) -> dict:
    return {"ignition": {"version": "3.6.0"}, "storage": {"files": list(files)},
            "passwd": {"users": users or []}}


@pytest.mark.timeout(30)
def test_hash_mismatch_leaves_root_untouched(server: Server, tmp_path: Path) -> None:
    seed_root(tmp_path)
    before = snapshot(tmp_path)
    config = _config({"path": "/etc/good", "contents": {"source": server.url + "/ok"}},
                     {"path": "/etc/bad", "contents": {"source": server.url + "/ok",
                      "verification": {"hash": "sha512-" + "0" * 128}}},
                     users=[{"name": "core"}])
    with pytest.raises(FetchError, match="hash mismatch"):
        engine.files_stage(str(tmp_path), config, policy=_policy([]))
    assert snapshot(tmp_path) == before


@pytest.mark.timeout(30)
def test_server_errors_retry_with_doubling_backoff_then_fail(server: Server,
                                                             tmp_path: Path) -> None:
    seed_root(tmp_path)
    before = snapshot(tmp_path)
    sleeps: list[float] = []
    config = _config({"path": "/etc/x", "contents": {"source": server.url + "/always500"}})
    with pytest.raises(FetchError, match="giving up after 4 attempts"):
        engine.files_stage(str(tmp_path), config, policy=_policy(sleeps, attempts=4))
    assert server.hits["/always500"] == 4
    assert sleeps == [0.1, 0.2, 0.4]
    assert snapshot(tmp_path) == before


@pytest.mark.timeout(30)
def test_flaky_server_succeeds_after_retries(server: Server, tmp_path: Path) -> None:
    seed_root(tmp_path)
    sleeps: list[float] = []
    config = _config({"path": "/etc/flaky", "contents": {"source": server.url + "/flaky"}})
    engine.files_stage(str(tmp_path), config, policy=_policy(sleeps))
    assert (tmp_path / "etc/flaky").read_bytes() == BODY
    assert server.hits["/flaky"] == 3 and sleeps == [0.1, 0.2]


@pytest.mark.timeout(30)
def test_client_error_is_final_and_headers_are_sent(server: Server, tmp_path: Path) -> None:
    seed_root(tmp_path)
    with pytest.raises(FetchError, match="404"):
        engine.files_stage(str(tmp_path), _config(
            {"path": "/etc/m", "contents": {"source": server.url + "/missing"}}),
            policy=_policy([]))
    assert server.hits["/missing"] == 1
    config = _config({"path": "/etc/h", "contents": {
        "source": server.url + "/needs-header",
        "httpHeaders": [{"name": "X-Token", "value": "s3cret"},
                        {"name": "User-Agent", "value": "custom-agent"}]}})
    engine.files_stage(str(tmp_path), config, policy=_policy([]))
    assert (tmp_path / "etc/h").read_bytes() == BODY
    assert server.headers["/needs-header"]["User-Agent"] == "custom-agent"


@pytest.mark.timeout(30)
def test_gzip_and_sha256_over_http(server: Server, tmp_path: Path) -> None:
    seed_root(tmp_path)
    digest = hashlib.sha256(BODY).hexdigest()
    config = _config({"path": "/etc/z", "mode": 0o600, "contents": {
        "source": server.url + "/gz", "compression": "gzip",
        "verification": {"hash": "sha256-" + digest}}})
    engine.files_stage(str(tmp_path), config, policy=_policy([]))
    assert (tmp_path / "etc/z").read_bytes() == BODY
    assert (tmp_path / "etc/z").stat().st_mode & 0o777 == 0o600


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "flotilla.ignition.main", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.timeout(60)
def test_cmdline_url_fetch_merge_then_files_runs_once(server: Server, tmp_path: Path) -> None:
    child = {"ignition": {"version": "3.2.0"},
             "storage": {"files": [{"path": "/etc/child", "overwrite": True,
                                   "contents": {"source": "data:,c"}}]}}
    server.configs["/child.ign"] = json.dumps(child).encode()
    parent = {"ignition": {"version": "3.3.0", "config": {"merge": [
        {"source": server.url + "/child.ign"}]}},
        "storage": {"files": [{"path": "/etc/parent", "overwrite": True,
                               "contents": {"source": "data:,p"}}]}}
    server.configs["/user.ign"] = json.dumps(parent).encode()
    cmdline = tmp_path / "cmdline"
    cmdline.write_text(f"quiet ignition.config.url={server.url}/user.ign root=/dev/sda\n")
    cache = tmp_path / "cache.json"
    fetched = _cli("fetch", "--cmdline", str(cmdline), "--config-cache", str(cache),
                   "--system-dir", str(tmp_path / "none"), "--http-attempts", "2")
    assert fetched.returncode == 0, fetched.stderr
    assert cache.stat().st_mode & 0o777 == 0o640
    root = tmp_path / "root"
    seed_root(root)
    first = _cli("files", "--root", str(root), "--config-cache", str(cache))
    assert first.returncode == 0, first.stderr
    assert (root / "etc/child").read_text() == "c" and (root / "etc/parent").read_text() == "p"
    result = json.loads((root / "etc/.ignition-result.json").read_text())
    assert result["userConfigProvided"] is True
    second = _cli("files", "--root", str(root), "--config-cache", str(cache))
    assert second.returncode == 1 and "already provisioned" in second.stderr
    forced = _cli("files", "--root", str(root), "--config-cache", str(cache), "--force")
    assert forced.returncode == 0, forced.stderr


@pytest.mark.timeout(60)
def test_cli_hash_mismatch_exit_1_and_untouched(tmp_path: Path) -> None:
    root = tmp_path / "root"
    seed_root(root)
    before = snapshot(root)
    config = tmp_path / "c.ign"
    config.write_text(json.dumps(_config(
        {"path": "/etc/a", "contents": {"source": "data:,fine"}},
        {"path": "/etc/b", "contents": {"source": "data:,tampered", "verification": {
            "hash": "sha256-" + hashlib.sha256(b"original").hexdigest()}}},
        users=[{"name": "core", "sshAuthorizedKeys": ["k"]}])))
    run = _cli("files", "--root", str(root), "--config", str(config))
    assert run.returncode == 1 and "hash mismatch" in run.stderr
    assert snapshot(root) == before
