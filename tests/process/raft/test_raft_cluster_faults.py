"""Three real members under SIGKILL: acknowledged writes survive, nodes recover from disk."""

from __future__ import annotations

import random
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .harness import REPO, Cluster, Load, check_history, request, wait_until

IDS = [1, 2, 3]


@pytest.fixture
def cluster(tmp_path: Path):
    c = Cluster(tmp_path, IDS, snapshot_every=300, extra=["--segment-bytes", "65536"])
    try:
        for i in IDS:
            c.start(i)
        c.wait_leader()
        yield c
    finally:
        c.close()


@pytest.mark.timeout(90)
def test_killing_leader_and_follower_repeatedly_loses_no_acknowledged_write(cluster: Cluster):
    load = Load(cluster, clients=4).start()
    try:
        load.wait_progress(50, 20)
        for _ in range(3):
            for victim_role in ("leader", "follower"):
                lead = cluster.wait_leader()
                victim = lead if victim_role == "leader" else next(i for i in IDS if i != lead)
                cluster.kill(victim)
                # The survivors keep committing without the victim.
                load.wait_progress(20, 20)
                cluster.start(victim)
                load.wait_progress(20, 20)
    finally:
        load.stop()
    values = cluster.wait_converged(IDS)
    check_history(values, load)
    assert load.total_acked >= 290
    assert sum(m.starts for m in cluster.members.values()) == 3 + 6


@pytest.mark.timeout(90)
def test_node_killed_mid_write_restarts_from_disk_and_rejoins(cluster: Cluster):
    rng = random.Random(1234)
    load = Load(cluster, clients=8).start()
    try:
        load.wait_progress(100, 20)
        for round_ in range(6):
            victim = rng.choice(IDS)
            time.sleep(rng.uniform(0.05, 0.6))  # a random moment inside the write stream
            cluster.kill(victim)
            if round_ == 2:
                # Small appends are single write() calls, so SIGKILL rarely tears one; a
                # power cut can. Leave half a record at the end of the newest segment.
                newest = sorted((cluster.members[victim].data_dir / "wal").glob("*.wal"))[-1]
                with open(newest, "ab") as f:
                    f.write((500).to_bytes(4, "big") + b"\x00\x01\x02half a record")
                torn = victim
            cluster.start(victim)  # no repair step: straight back from its data dir
            load.wait_progress(30, 20)
        # Enough entries that every member has snapshotted and released WAL segments.
        load.wait_progress(max(1, 700 - load.total_acked), 40)
    finally:
        load.stop()
    values = cluster.wait_converged(IDS)
    check_history(values, load)
    assert "torn tail" in cluster.log_text(torn)
    for i in IDS:
        snaps = sorted((cluster.members[i].data_dir / "snap").glob("*.snap"))
        assert snaps and int(snaps[-1].name[:16], 16) > 300, f"node {i} never snapshotted"
    segments = [len(list((cluster.members[i].data_dir / "wal").glob("*.wal"))) for i in IDS]
    assert len(values) > 600 and max(segments) < 20, segments  # old segments were released
    for i in IDS:
        st = cluster.status(i)
        assert st is not None and st["applied"] >= len(values)
    text = "".join(cluster.log_text(i) for i in IDS)
    assert "Traceback" not in text


@pytest.mark.timeout(60)
def test_garbage_peer_is_dropped_and_the_cluster_keeps_committing(cluster: Cluster):
    load = Load(cluster, clients=2).start()
    try:
        load.wait_progress(20, 20)
        for i in IDS:
            for payload in (b"\x00\x00\x00\x08garbage!", b"\xff" * 4, b"GET / HTTP/1.0\r\n"):
                with socket.create_connection(cluster.members[i].peer, timeout=5) as s:
                    s.sendall(payload + bytes(range(256)))
                    s.settimeout(5)
                    assert s.recv(100) == b""  # dropped by the node
        load.wait_progress(50, 20)
    finally:
        load.stop()
    assert all(cluster.members[i].alive for i in IDS)
    check_history(cluster.wait_converged(IDS), load)
    dropped = [i for i in IDS if "peer connection from" in cluster.log_text(i)]
    assert dropped == IDS
    wait_until(lambda: cluster.leader() is not None, 10, "leader")


@pytest.mark.timeout(60)
def test_linearizable_read_on_a_follower_sees_every_acknowledged_write(cluster: Cluster):
    lead = cluster.wait_leader()
    followers = [i for i in IDS if i != lead]
    wait_until(lambda: all((cluster.status(i) or {}).get("leader") == lead for i in followers),
               10, "followers to know the leader")
    for n in range(30):
        value = f"lin-{n}"
        r = request(cluster.members[lead].client, {"op": "put", "value": value})
        assert r["ok"], r
        _, values = cluster.values(followers[n % 2], linearizable=True)
        assert value in values, f"follower {followers[n % 2]} read a stale state"


@pytest.mark.timeout(60)
def test_corrupt_middle_of_the_log_refuses_to_start_naming_file_and_offset(cluster: Cluster):
    lead = cluster.wait_leader()
    for n in range(20):
        assert request(cluster.members[lead].client, {"op": "put", "value": f"v{n}"})["ok"]
    victim = next(i for i in IDS if i != lead)
    cluster.kill(victim)
    segment = sorted((cluster.members[victim].data_dir / "wal").glob("*.wal"))[-1]
    data = bytearray(segment.read_bytes())
    data[len(data) // 2] ^= 0xFF
    segment.write_bytes(bytes(data))
    m = cluster.members[victim]
    proc = subprocess.run(
        [sys.executable, "-m", "flotilla.daemons.raft.node", "--id", str(victim),
         "--peers", cluster.peers_arg(IDS), "--data-dir", str(m.data_dir),
         "--client", f"{m.client[0]}:{m.client[1]}", "--cluster", "test"],
        capture_output=True, text=True, timeout=30, cwd=REPO,
    )
    assert proc.returncode == 2, proc.stderr
    assert "refusing to start" in proc.stderr
    assert str(segment) in proc.stderr and "byte offset" in proc.stderr
    assert segment.read_bytes() == bytes(data)  # left as found for the operator
