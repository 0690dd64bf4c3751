"""A real store (kvd or etcd, v2 API) and real fleetd processes on loopback, for process tests.

The store is kvd by default and Debian's etcd 3.4 as the second backend: fleet speaks to
the store only through the etcd v2 API, so the tests that depend on the store's
behaviour (TTL expiry, watch streams, conditional writes) run on both (see
``conftest.py``).

Each fleetd runs with the in-memory systemd stand-in (``--systemd=standin``), which
records every call the agent makes in a JSON state file. Tests read that record to see
what the agent decided (which units it linked, started and stopped, on which machine);
the load/active/sub states the stand-in reports are its own invention and are never
asserted here. What systemd itself does is checked where real systemd runs, in the
system tier (``tests/system/test_fleet_machines.py``).
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

import pytest

from tests.conditions import free_port, wait_until

PYTHON = sys.executable
REPO = Path(__file__).resolve().parents[3]
#: every store fleet supports; the first is the default for tests that need only one
BACKENDS = ("kvd", "etcd")
#: runs the marked test once per backend (the ``store`` fixture is in conftest.py)
on_every_store = pytest.mark.parametrize("store", BACKENDS, indirect=True)


def wait_for(condition: Callable[[], Any], timeout: float, what: str,
             interval: float = 0.1) -> Any:
    """:func:`tests.conditions.wait_until` that treats any exception as "not yet"."""
    return wait_until(condition, timeout, what, interval=interval, tolerate=(Exception,))


def store_command(backend: str) -> list[str]:
    """The command that runs ``backend``; both take etcd's flags."""
    if backend == "kvd":
        return [PYTHON, "-m", "flotilla.daemons.kv"]
    if backend == "etcd":
        return ["etcd"]
    raise ValueError(f"backend: unknown store {backend!r} (expected one of {BACKENDS})")


class Store:
    """A single-member kvd or etcd with the v2 API enabled, in a temp data dir."""

    def __init__(self, backend: str = BACKENDS[0], host: str = "127.0.0.31") -> None:
        self.backend = backend
        self.host = host
        self.dir = Path(tempfile.mkdtemp(prefix=f"fleet-{backend}-"))
        self.client_port = free_port(host)
        self.peer_port = free_port(host)
        self.url = f"http://{host}:{self.client_port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> Store:
        peer = f"http://{self.host}:{self.peer_port}"
        with open(self.dir / "store.log", "wb") as log:
            self.proc = subprocess.Popen(
                [*store_command(self.backend), "--enable-v2", "--name", "t",
                 "--data-dir", str(self.dir / "data"),
                 "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
                 "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                 "--initial-cluster", f"t={peer}"],
                stdout=log, stderr=subprocess.STDOUT)
        wait_for(lambda: urllib.request.urlopen(f"{self.url}/v2/keys/", timeout=1).status == 200,
                 20, f"{self.backend} to answer")
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


#: the name this class had while the tests ran on etcd only
Etcd = Store


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

    def _standin_record(self) -> dict[str, Any]:
        try:
            return json.loads(self.state_file.read_text())
        except (FileNotFoundError, ValueError):
            return {}

    def active_units(self) -> list[str]:
        """Units this machine's agent has started and not stopped since.

        The stand-in adds a unit to this list on the agent's start call and removes it
        on the stop call, so the list is a record of the agent's decisions, nothing more.
        """
        return list(self._standin_record().get("active", []))

    def calls(self) -> list[tuple[str, str]]:
        """Every (call, unit) the agent made on its systemd, oldest first (last 500)."""
        return [(kind, name) for kind, name in self._standin_record().get("calls", [])]

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

    def alive(self) -> list[Fleetd]:
        return [node for node in self.nodes if node.proc is not None and node.proc.poll() is None]

    def running(self) -> dict[str, str]:
        """unit → machine id of a live machine whose agent started it (see `active_units`).

        A unit started on two machines appears once here; :meth:`placements` shows both.
        """
        return {unit: machines[0] for unit, machines in self.placements().items()}

    def placements(self) -> dict[str, list[str]]:
        """unit → ids of every live machine whose agent has it started."""
        result: dict[str, list[str]] = {}
        for node in self.alive():
            for unit in node.active_units():
                result.setdefault(unit, []).append(node.machine_id)
        return result

    def list_units(self) -> list[list[str]]:
        """``fleetctl list-units`` rows of unit, active state, machine.

        The active state there is the stand-in's invention: see :meth:`published_states`.
        """
        out = self.fleetctl("list-units", "--no-legend", "--full",
                            "--fields", "unit,active,machine").stdout
        return [line.split() for line in out.splitlines() if line.strip()]

    def published_states(self) -> dict[str, list[tuple[str, str]]]:
        """unit → (machine id, unit hash) of every state an agent published, from the API.

        Which machine publishes a state for which file is the agent's doing; the
        systemd states inside come from the stand-in and are left out on purpose.
        """
        result: dict[str, list[tuple[str, str]]] = {}
        for state in self.api("GET", "/state")[1]["states"]:
            result.setdefault(state["name"], []).append((state["machineID"], state["hash"]))
        return result

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
