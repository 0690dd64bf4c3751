"""Failures of one member: the other two keep serving and no acknowledged write is lost."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import requests

from .harness import Cluster, Member, wait_until

WRITERS = 3
MAX_WRITES_PER_WRITER = 400


def _keys_on(member: Member, prefix: str) -> set[str] | None:
    """Every key under ``prefix`` from the member's local copy (None while unreachable)."""
    try:
        resp = member.get(f"/v2/keys{prefix}", recursive="true", quorum="false")
    except requests.RequestException:
        return None
    if resp.status_code == 404:
        return set()
    if resp.status_code != 200:
        return None
    return {node["key"] for node in resp.json()["node"].get("nodes", [])}


class Writers:
    """Bounded concurrent writers spread over every member; they record acknowledged keys."""

    def __init__(self, cluster: Cluster, prefix: str) -> None:
        self.cluster = cluster
        self.prefix = prefix
        self.acked: set[str] = set()
        self.failed = 0
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, args=(w,)) for w in range(WRITERS)]

    def _run(self, writer: int) -> None:
        session = requests.Session()
        for i in range(MAX_WRITES_PER_WRITER):
            if self.stop.is_set():
                return
            member = self.cluster.members[(writer + i) % len(self.cluster.members)]
            key = f"{self.prefix}/w{writer}-{i}"
            try:
                resp = session.put(f"{member.url}/v2/keys{key}", data={"value": str(i)},
                                   timeout=6.0)
                ok = resp.status_code in (200, 201)
            except requests.RequestException:
                ok = False
            with self.lock:
                if ok:
                    self.acked.add(key)
                else:
                    self.failed += 1
            if not ok:
                time.sleep(0.05)  # the member is down or electing; move on to the next

    def count(self) -> int:
        with self.lock:
            return len(self.acked)

    def __enter__(self) -> Writers:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(30)


@pytest.mark.timeout(100)
def test_leader_sigkill_then_restart_loses_no_acknowledged_write(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, "--snapshot-count", "50")
    try:
        cluster.start()
        with Writers(cluster, "/acked") as writers:
            wait_until(lambda: writers.count() >= 30, 20.0, "writes before the fault")
            old_leader = cluster.leader()
            old_leader.kill()
            new_leader = cluster.leader(timeout=15.0)
            assert new_leader is not old_leader
            before = writers.count()
            wait_until(lambda: writers.count() >= before + 100, 30.0,
                       "writes acknowledged by the two survivors")
            # survivors answer linearizable reads and writes on their own
            for m in cluster.members:
                if m is not old_leader:
                    assert m.put("/faults/survivor", m.name).status_code in (200, 201)
                    assert m.get("/v2/keys/faults/survivor").status_code == 200
            old_leader.start()
            cluster.wait_serving(old_leader)
            after_restart = writers.count()
            wait_until(lambda: writers.count() >= after_restart + 30, 20.0,
                       "writes after the restart")
        acked = set(writers.acked)
        assert len(acked) >= 160

        def complete_everywhere() -> bool:
            return all((keys := _keys_on(m, "/acked")) is not None and acked <= keys
                       for m in cluster.members)

        wait_until(complete_everywhere, 30.0, "every acknowledged key on every member",
                   interval=0.2)
        # the restarted member also serves linearizable reads of the latest write
        last = cluster.members[0].put("/faults/last", "end")
        assert last.status_code in (200, 201)
        got = old_leader.get("/v2/keys/faults/last")
        assert got.status_code == 200 and got.json()["node"]["value"] == "end"
    except BaseException:
        print(cluster.logs())
        raise
    finally:
        cluster.stop()


@pytest.mark.timeout(60)
def test_without_quorum_only_local_reads_are_served(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path)
    try:
        cluster.start()
        assert cluster.members[0].put("/q/k", "v").status_code == 201
        survivor = cluster.members[2]
        wait_until(lambda: survivor.get("/v2/keys/q/k", quorum="false").status_code == 200,
                   5.0, "the write to reach the survivor")
        for m in cluster.members[:2]:
            m.kill()
        local = survivor.get("/v2/keys/q/k", quorum="false")
        assert local.status_code == 200 and local.json()["node"]["value"] == "v"
        linear = survivor.get("/v2/keys/q/k", timeout=15.0)
        assert linear.status_code == 500, linear.text
        assert linear.json()["errorCode"] == 300
    finally:
        cluster.stop()
