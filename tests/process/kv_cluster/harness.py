"""Three kvd processes on 127.0.0.1-3 forming one Raft cluster, and the HTTP helpers."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from tests.conditions import free_port, wait_until

REPO = Path(__file__).resolve().parents[3]
HOSTS = ("127.0.0.1", "127.0.0.2", "127.0.0.3")


@dataclass
class Member:
    name: str
    host: str
    client_port: int
    peer_port: int
    data_dir: Path
    log_path: Path
    argv: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://{self.host}:{self.peer_port}"

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:] if self.log_path.exists() else ""

    def start(self) -> None:
        env = dict(os.environ, PYTHONPATH=str(REPO))
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT,
                                         cwd=REPO, env=env, start_new_session=True)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def get(self, path: str, timeout: float = 3.0, **params: Any) -> requests.Response:
        return requests.get(self.url + path, params=params, timeout=timeout)

    def put(self, key: str, value: str, timeout: float = 6.0, **params: Any
            ) -> requests.Response:
        return requests.put(f"{self.url}/v2/keys{key}", data={"value": value, **params},
                            timeout=timeout)

    def state(self) -> str | None:
        try:
            return self.get("/v2/stats/self", timeout=1.0).json().get("state")
        except (requests.RequestException, ValueError):
            return None


class Cluster:
    """Static three-member cluster; members keep their ports and data across restarts."""

    def __init__(self, workdir: Path, *extra: str) -> None:
        self.members = [
            Member(f"m{i}", host, free_port(host), free_port(host), workdir / f"m{i}",
                   workdir / f"m{i}.log")
            for i, host in enumerate(HOSTS)
        ]
        initial = ",".join(f"{m.name}={m.peer_url}" for m in self.members)
        for m in self.members:
            m.argv = [sys.executable, "-m", "flotilla.daemons.kv", "--name", m.name,
                      "--data-dir", str(m.data_dir),
                      "--listen-client-urls", m.url, "--advertise-client-urls", m.url,
                      "--listen-peer-urls", m.peer_url,
                      "--initial-advertise-peer-urls", m.peer_url,
                      "--initial-cluster", initial, *extra]

    def start(self) -> None:
        for m in self.members:
            m.start()
        for m in self.members:
            self.wait_serving(m)
        self.leader()

    def wait_serving(self, member: Member, timeout: float = 30.0) -> None:
        def up() -> bool:
            if not member.alive:
                raise AssertionError(f"{member.name} exited:\n{member.log()}")
            return member.state() is not None
        try:
            wait_until(up, timeout, f"{member.name} to answer HTTP")
        except AssertionError as error:  # what each member got to is in its log
            raise AssertionError(f"{error}\n{self.logs()}") from None

    def leader(self, timeout: float = 20.0) -> Member:
        def find() -> Member | None:
            leaders = [m for m in self.members if m.alive and m.state() == "StateLeader"]
            return leaders[0] if len(leaders) == 1 else None
        return wait_until(find, timeout, "exactly one leader", interval=0.1)

    def followers(self) -> list[Member]:
        lead = self.leader()
        return [m for m in self.members if m is not lead and m.alive]

    def stop(self) -> None:
        for m in self.members:
            m.stop()

    def logs(self) -> str:
        return "\n".join(f"--- {m.name}\n{m.log()}" for m in self.members)
