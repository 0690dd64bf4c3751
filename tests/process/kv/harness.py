"""Start and stop kvd and Debian's etcd on loopback addresses for process tests."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conditions import free_port

REPO = Path(__file__).resolve().parents[3]


@dataclass
class Server:
    kind: str
    url: str
    proc: subprocess.Popen[bytes]
    data_dir: Path
    log_path: Path
    argv: list[str]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def kill(self) -> None:
        self.stop(signal.SIGKILL)


def http_get(url: str, timeout: float = 2.0, context: ssl.SSLContext | None = None
             ) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def wait_ready(server: Server, deadline_s: float = 20.0, etcd_cluster: bool = False,
               context: ssl.SSLContext | None = None) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"{server.kind} exited early:\n{server.log()}")
        try:
            status, body = http_get(server.url + "/version", timeout=1.0, context=context)
            if status == 200 and (not etcd_cluster
                                  or json.loads(body).get("etcdcluster") == "3.4.0"):
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{server.kind} not ready within {deadline_s}s:\n{server.log()}")


def kvd_command() -> list[str]:
    return [sys.executable, "-m", "flotilla.daemons.kv"]


def start_kvd(workdir: Path, host: str, *extra: str, port: int | None = None,
              data_dir: Path | None = None, scheme: str = "http", ready_url: str = "",
              ready_verify: str = "", ready_cert: tuple[str, str] | None = None) -> Server:
    port = port or free_port(host)
    url = ready_url or f"{scheme}://{host}:{port}"
    context = None
    if scheme == "https":
        context = ssl.create_default_context(cafile=ready_verify or None)
        if ready_cert:
            context.load_cert_chain(*ready_cert)
    data_dir = data_dir or workdir / "kvd-data"
    log_path = workdir / f"kvd-{port}.log"
    argv = [*kvd_command(), "--name", "kvd0", "--data-dir", str(data_dir),
            "--listen-client-urls", url, "--advertise-client-urls", url, *extra]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(argv, stdout=open(log_path, "ab"), stderr=subprocess.STDOUT,  # noqa: SIM115
                            cwd=REPO, env=env, start_new_session=True)
    server = Server("kvd", url, proc, data_dir, log_path, argv)
    try:
        wait_ready(server, context=context)
    except Exception:
        server.kill()
        raise
    return server


def etcd_available() -> bool:
    return shutil.which("etcd") is not None


def require_tools(*tools: str) -> None:
    """Fail (never skip) when a reference tool is missing: tests/setup.sh installs Debian's
    etcd-server and etcd-client, so a missing one means a broken setup, and a skip would
    hide it in CI."""
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"{', '.join(missing)} not installed (Debian's etcd-server/etcd-client); "
                    "tests/setup.sh installs them")


def start_etcd(workdir: Path, host: str) -> Server:
    port, peer = free_port(host), free_port(host)
    url, peer_url = f"http://{host}:{port}", f"http://{host}:{peer}"
    data_dir = workdir / "etcd-data"
    log_path = workdir / "etcd.log"
    argv = ["etcd", "--name", "e0", "--data-dir", str(data_dir), "--listen-client-urls", url,
            "--advertise-client-urls", url, "--listen-peer-urls", peer_url,
            "--initial-advertise-peer-urls", peer_url, "--initial-cluster", f"e0={peer_url}",
            "--enable-v2"]
    proc = subprocess.Popen(argv, stdout=open(log_path, "ab"), stderr=subprocess.STDOUT,  # noqa: SIM115
                            start_new_session=True)
    server = Server("etcd", url, proc, data_dir, log_path, argv)
    try:
        wait_ready(server, etcd_cluster=True)
    except Exception:
        server.kill()
        raise
    return server


def run_cli(argv: list[str], timeout: float = 10) -> tuple[int, str, str]:
    """Run kvctl or etcdctl (v2 API) to completion: exit code, stdout, stderr."""
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, ETCDCTL_API="2", PYTHONPATH=str(REPO)))
    return proc.returncode, proc.stdout, proc.stderr


def store_index(url: str, key: str = "/_kvctl_base") -> int:
    """Write ``key`` and return the store index it got: where later output is rebased."""
    request = urllib.request.Request(f"{url}/v2/keys{key}", data=b"value=b", method="PUT")
    with urllib.request.urlopen(request, timeout=5) as resp:
        return int(resp.headers["X-Etcd-Index"])
