"""Real etcd (v2 API) and real fleetd processes on loopback addresses, for process tests.

Each fleetd runs with the in-memory systemd stand-in and writes what it was asked to
do to a JSON state file, so tests can check from outside which units run where.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tests.conditions import free_port, wait_until

PYTHON = sys.executable
REPO = Path(__file__).resolve().parents[3]


def wait_for(condition: Callable[[], Any], timeout: float, what: str,
             interval: float = 0.1) -> Any:
    """:func:`tests.conditions.wait_until` that treats any exception as "not yet"."""
    return wait_until(condition, timeout, what, interval=interval, tolerate=(Exception,))


def store_command() -> list[str]:
    """Debian's etcd by default; ``FLEET_TEST_STORE=kvd`` runs the same tests on our kvd,
    which takes etcd's flags."""
    if os.environ.get("FLEET_TEST_STORE") == "kvd":
        return [PYTHON, "-m", "flotilla.daemons.kv"]
    return ["etcd"]


class Etcd:
    """A single-member etcd (or kvd) with the v2 API enabled, in a temp data dir."""

    def __init__(self, host: str = "127.0.0.31") -> None:
        self.host = host
        self.dir = Path(tempfile.mkdtemp(prefix="fleet-etcd-"))
        self.client_port = free_port(host)
        self.peer_port = free_port(host)
        self.url = f"http://{host}:{self.client_port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> Etcd:
        peer = f"http://{self.host}:{self.peer_port}"
        with open(self.dir / "etcd.log", "wb") as log:
            self.proc = subprocess.Popen(
                [*store_command(), "--enable-v2", "--name", "t",
                 "--data-dir", str(self.dir / "data"),
                 "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
                 "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                 "--initial-cluster", f"t={peer}"],
                stdout=log, stderr=subprocess.STDOUT)
        wait_for(lambda: urllib.request.urlopen(f"{self.url}/v2/keys/", timeout=1).status == 200,
                 20, "etcd to answer")
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)

    def get(self, key: str, recursive: bool = False) -> dict | None:
        url = f"{self.url}/v2/keys{key}" + ("?recursive=true" if recursive else "")
        try:
            with urllib.request.urlopen(url, timeout=3) as reply:
                return json.load(reply)
        except urllib.error.HTTPError as error:
            if error.code == 404:
                return None
            raise


class Fleetd:
    def __init__(self, cluster: Cluster, index: int, metadata: str = "") -> None:
        self.cluster = cluster
        self.index = index
        self.host = f"127.0.0.{40 + index}"
        self.machine_id = f"{index:02d}" + uuid.uuid4().hex[:30]
        self.dir = cluster.dir / f"m{index}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port(self.host)
        self.endpoint = f"http://{self.host}:{self.port}"
        self.socket = self.dir / "fleet.sock"
        self.state_file = self.dir / "standin.json"
        self.metadata = metadata
        self.proc: subprocess.Popen | None = None

    def start(self) -> Fleetd:
        args = [
            PYTHON, "-m", "flotilla.daemons.fleet",
            "--config", str(self.cluster.config_file),
            f"--machine_id={self.machine_id}", "--systemd=standin",
            f"--units_directory={self.dir / 'units'}", f"--api_socket={self.socket}",
            f"--api_tcp={self.host}:{self.port}", f"--public_ip={self.host}",
            f"--standin_state_file={self.state_file}",
        ]
        env = dict(os.environ, FLEET_METADATA=self.metadata) if self.metadata else dict(
            os.environ)
        env.pop("NOTIFY_SOCKET", None)
        with open(self.dir / "fleetd.out", "ab") as out, \
                open(self.dir / "fleetd.log", "ab") as log:
            self.proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=out, stderr=log)
        return self

    def wait_ready(self) -> None:
        def answering() -> bool:
            with urllib.request.urlopen(f"{self.endpoint}/fleet/v1/machines", timeout=1) as r:
                return self.machine_id in r.read().decode()

        wait_for(answering, 20, f"fleetd {self.index} to register")

    def active_units(self) -> list[str]:
        try:
            return json.loads(self.state_file.read_text())["active"]
        except (FileNotFoundError, ValueError):
            return []

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def log(self) -> str:
        with contextlib.suppress(FileNotFoundError):
            return (self.dir / "fleetd.log").read_text()[-4000:]
        return ""


class Cluster:
    def __init__(self, etcd: Etcd, *, metadata: list[str] | None = None,
                 agent_ttl: str = "2s", interval: float = 0.5, token_limit: int = 100) -> None:
        self.etcd = etcd
        self.dir = Path(tempfile.mkdtemp(prefix="fleet-cluster-"))
        self.prefix = f"/fleet_test/{uuid.uuid4().hex[:8]}/"
        self.config_file = self.dir / "fleet.conf"
        self.config_file.write_text(
            f"etcd_servers={etcd.url}\netcd_key_prefix={self.prefix}\n"
            f"agent_ttl={agent_ttl}\nengine_reconcile_interval={interval}\n"
            f"token_limit={token_limit}\nverbosity=0\n")
        self.nodes = [Fleetd(self, i, (metadata or [])[i] if metadata else "")
                      for i in range(len(metadata or [""] * 3))]

    def start(self) -> Cluster:
        for node in self.nodes:
            node.start()
        for node in self.nodes:
            node.wait_ready()
        return self

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def fleetctl(self, *args: str, node: int = 0, check: bool = True,
                 timeout: float = 60) -> subprocess.CompletedProcess:
        command = [PYTHON, "-m", "flotilla.daemons.fleetctl.main",
                   f"--endpoint={self.nodes[node].endpoint}", *args]
        result = subprocess.run(command, cwd=self.dir, capture_output=True, text=True,
                                timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"fleetctl {' '.join(args)} failed ({result.returncode}):\n"
                                 f"{result.stdout}\n{result.stderr}")
        return result

    def write_unit(self, name: str, text: str) -> str:
        (self.dir / name).write_text(text)
        return name

    def running(self) -> dict[str, str]:
        """unit → machine id, from every stand-in systemd's active list."""
        result: dict[str, str] = {}
        for node in self.nodes:
            if node.proc is not None and node.proc.poll() is None:
                for unit in node.active_units():
                    result.setdefault(unit, node.machine_id)
        return result

    def list_units(self) -> list[list[str]]:
        out = self.fleetctl("list-units", "--no-legend", "--full",
                            "--fields", "unit,active,machine").stdout
        return [line.split() for line in out.splitlines() if line.strip()]

    def api(self, method: str, path: str, body: bytes | None = None,
            content_type: str | None = "application/json", node: int = 0
            ) -> tuple[int, Any]:
        request = urllib.request.Request(f"{self.nodes[node].endpoint}/fleet/v1{path}",
                                         data=body, method=method)
        if content_type:
            request.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(request, timeout=5) as reply:
                raw = reply.read()
                return reply.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as error:
            raw = error.read()
            return error.code, json.loads(raw) if raw else None


@contextlib.contextmanager
def running_cluster(etcd: Etcd, **kwargs: Any) -> Iterator[Cluster]:
    cluster = Cluster(etcd, **kwargs)
    try:
        cluster.start()
        yield cluster
    except BaseException:
        for node in cluster.nodes:
            sys.stderr.write(f"--- fleetd {node.index} log ---\n{node.log()}\n")
        raise
    finally:
        cluster.stop()


def kill(node: Fleetd) -> None:
    node.signal(signal.SIGKILL)
    assert node.proc is not None
    node.proc.wait(10)
