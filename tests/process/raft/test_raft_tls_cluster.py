"""Three members talking mutual TLS: the cluster elects, commits and converges."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from flotilla.daemons.raft.transport import encode_hello

from .harness import Cluster, Load, check_history, make_ca_and_cert


@pytest.mark.timeout(60)
def test_cluster_commits_over_mutual_tls(tmp_path: Path) -> None:
    make_ca_and_cert(tmp_path, "peer")
    tls_args = [
        "--peer-cert", str(tmp_path / "peer.pem"),
        "--peer-key", str(tmp_path / "peer.key"),
        "--peer-ca", str(tmp_path / "peer-ca.pem"),
    ]
    c = Cluster(tmp_path, [1, 2, 3], extra=tls_args)
    load = Load(c, clients=2)
    try:
        for i in (1, 2, 3):
            c.start(i)
        c.wait_leader()
        load.start()
        load.wait_progress(100, 20)
        load.stop()
        check_history(c.wait_converged([1, 2, 3]), load)
        # A plaintext peer with a well-formed hello gets nowhere.
        with socket.create_connection(c.members[1].peer, timeout=5) as s:
            s.sendall(encode_hello("test", 2, 1))
            assert s.recv(100) == b""
        assert all(c.members[i].alive for i in (1, 2, 3))
    finally:
        load.stop()
        c.close()
