"""kvd clusters that grow and shrink: members on 127.0.0.x added, joined and removed.

Builds on the three-member harness of ``kv_cluster`` (same Member, same waits) and adds
what membership tests need: members created after the cluster started, started with
``--initial-cluster-state existing``, optional https:// peer URLs, and kvctl runs.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from tests.conditions import free_port, wait_until
from tests.process.kv_cluster.harness import REPO
from tests.process.kv_cluster.harness import Member as BaseMember

# 127.0.0.1-3 belong to the first three members; added ones come after.
HOSTS = tuple(f"127.0.0.{i}" for i in range(21, 29))


@dataclass
class Member(BaseMember):
    peer_scheme: str = "http"
    env: dict[str, str] | None = None

    @property
    def peer_url(self) -> str:
        return f"{self.peer_scheme}://{self.host}:{self.peer_port}"

    def start(self) -> None:
        env = dict(os.environ, PYTHONPATH=str(REPO), **(self.env or {}))
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT,
                                         cwd=REPO, env=env, start_new_session=True)

    def member_id(self) -> str:
        return str(self.get("/v2/stats/self").json()["id"])

    def members(self) -> list[dict[str, Any]]:
        return list(self.get("/v2/members").json()["members"])

    def wait_exit(self, timeout: float) -> int:
        assert self.proc is not None
        wait_until(lambda: self.proc.poll() is not None, timeout, f"{self.name} to exit")
        return int(self.proc.returncode)


class Cluster:
    """A static cluster of ``size`` members that tests can add members to."""

    def __init__(self, workdir: Path, size: int = 3, *, peer_scheme: str = "http",
                 extra: list[str] | None = None) -> None:
        self.workdir = workdir
        self.peer_scheme = peer_scheme
        self.extra = list(extra or [])
        self.members: list[Member] = []
        for _ in range(size):
            self.new_member()
        initial = self.initial_cluster(self.members)
        for m in self.members:
            m.argv = self.argv(m, initial, "new")

    def new_member(self, extra: list[str] | None = None) -> Member:
        """A member with fresh ports and data dir; not started and not yet added."""
        index = len(self.members)
        host = HOSTS[index]
        m = Member(f"m{index}", host, free_port(host), free_port(host),
                   self.workdir / f"m{index}", self.workdir / f"m{index}.log",
                   peer_scheme=self.peer_scheme)
        m.argv = self.argv(m, "", "new", extra)
        self.members.append(m)
        return m

    @staticmethod
    def initial_cluster(members: list[Member]) -> str:
        return ",".join(f"{m.name}={m.peer_url}" for m in members)

    def argv(self, m: Member, initial: str, state: str,
             extra: list[str] | None = None) -> list[str]:
        argv = [sys.executable, "-m", "flotilla.daemons.kv", "--name", m.name,
                "--data-dir", str(m.data_dir),
                "--listen-client-urls", m.url, "--advertise-client-urls", m.url,
                "--listen-peer-urls", m.peer_url, "--initial-advertise-peer-urls", m.peer_url,
                "--initial-cluster-state", state, *self.extra, *(extra or [])]
        if initial:
            argv += ["--initial-cluster", initial]
        return argv

    def join_argv(self, m: Member, extra: list[str] | None = None) -> list[str]:
        """Flags to start ``m`` as a member joining the current (live) cluster."""
        alive = [x for x in self.members if x.alive or x is m]
        return self.argv(m, self.initial_cluster(alive), "existing", extra)

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
        wait_until(up, timeout, f"{member.name} to answer HTTP")

    def alive(self) -> list[Member]:
        return [m for m in self.members if m.alive]

    def leader(self, timeout: float = 20.0) -> Member:
        def find() -> Member | None:
            leaders = [m for m in self.alive() if m.state() == "StateLeader"]
            return leaders[0] if len(leaders) == 1 else None
        return wait_until(find, timeout, "exactly one leader", interval=0.1)

    def followers(self) -> list[Member]:
        lead = self.leader()
        return [m for m in self.alive() if m is not lead]

    def stop(self) -> None:
        for m in self.members:
            m.stop()

    def logs(self) -> str:
        return "\n".join(f"--- {m.name}\n{m.log()}" for m in self.members)


def add_member(via: Member, peer_url: str) -> requests.Response:
    return requests.post(f"{via.url}/v2/members", json={"peerURLs": [peer_url]}, timeout=15)


def put_until_ok(m: Member, key: str, value: str, timeout: float = 20.0) -> dict[str, Any]:
    """A write that may first meet an election (a leader was just removed)."""
    def attempt() -> dict[str, Any] | None:
        resp = m.put(key, value, timeout=8.0)
        return resp.json() if resp.status_code in (200, 201) else None
    return wait_until(attempt, timeout, f"write {key} through {m.name}",
                      tolerate=(requests.RequestException,))


def kvctl(*args: str, env: dict[str, str] | None = None,
          timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flotilla.daemons.kvctl", *args],
        capture_output=True, text=True, timeout=timeout, cwd=REPO,
        env=dict(os.environ, PYTHONPATH=str(REPO), **(env or {})))


def etcd_lines(stdout: str) -> dict[str, str]:
    """The ``ETCD_*="..."`` lines ``member add`` prints, as an environment."""
    env = {}
    for line in stdout.splitlines():
        if line.startswith("ETCD_") and "=" in line:
            key, _, value = line.partition("=")
            env[key] = value.strip('"')
    return env
