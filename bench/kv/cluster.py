"""Three-member etcd and kvd clusters on loopback for the benchmark, fsync on in both.

kvd's cluster is the process-test harness's (members on 127.0.0.1-3, free ports, data in
a temp dir). etcd's is started here the same way: three ``etcd --enable-v2`` members on
their own loopback addresses with a static ``--initial-cluster``. Both expose the same
small interface, so one measuring function drives either.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tests.conditions import free_port, wait_until
from tests.process.kv_cluster.harness import Cluster

ETCD_HOSTS = ("127.0.0.81", "127.0.0.82", "127.0.0.83")


def _state(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url + "/v2/stats/self", timeout=1.0) as resp:
            return json.loads(resp.read()).get("state")
    except (OSError, ValueError):
        return None


@dataclass
class EtcdMember:
    name: str
    url: str
    peer_url: str
    proc: subprocess.Popen[bytes] | None = None


class EtcdCluster:
    """Debian's etcd 3.4, three members, v2 API enabled."""

    kind = "etcd"

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.members = [EtcdMember(f"e{i}", f"http://{h}:{free_port(h)}",
                                   f"http://{h}:{free_port(h)}")
                        for i, h in enumerate(ETCD_HOSTS)]

    def start(self) -> None:
        initial = ",".join(f"{m.name}={m.peer_url}" for m in self.members)
        for m in self.members:
            argv = ["etcd", "--name", m.name, "--data-dir", str(self.workdir / m.name),
                    "--listen-client-urls", m.url, "--advertise-client-urls", m.url,
                    "--listen-peer-urls", m.peer_url, "--initial-advertise-peer-urls",
                    m.peer_url, "--initial-cluster", initial, "--enable-v2"]
            with open(self.workdir / f"{m.name}.log", "ab") as log:
                m.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                          start_new_session=True)
        self.leader()

    def leader(self) -> tuple[str, int]:
        """(client URL, pid) of the one leader."""
        def find() -> tuple[str, int] | None:
            leaders = [m for m in self.members if _state(m.url) == "StateLeader"]
            if len(leaders) != 1 or leaders[0].proc is None:
                return None
            return leaders[0].url, leaders[0].proc.pid
        return wait_until(find, 30.0, "one etcd leader", interval=0.2)

    def pids(self) -> list[int]:
        return [m.proc.pid for m in self.members if m.proc is not None]

    def stop(self) -> None:
        for m in self.members:
            if m.proc is not None and m.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    m.proc.send_signal(signal.SIGTERM)
                try:
                    m.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    m.proc.kill()
                    m.proc.wait(timeout=10)


class KvdCluster:
    """kvd's three-member cluster from the process-test harness."""

    kind = "kvd"

    def __init__(self, workdir: Path) -> None:
        self.cluster = Cluster(workdir)

    def start(self) -> None:
        self.cluster.start()

    def leader(self) -> tuple[str, int]:
        member = self.cluster.leader(timeout=30.0)
        assert member.proc is not None
        return member.url, member.proc.pid

    def pids(self) -> list[int]:
        return [m.proc.pid for m in self.cluster.members if m.proc is not None]

    def stop(self) -> None:
        self.cluster.stop()
