"""SIGHUP makes fleetd read its configuration again, as fleet does, without a restart."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import signal
import subprocess
from pathlib import Path

import pytest

from .harness import PYTHON, REPO, Cluster, Fleetd, Store, running_cluster, wait_for

UNIT = "[Unit]\nDescription=steady\n\n[Service]\nExecStart=/bin/sleep 1000\n"


def listed_metadata(cluster: Cluster) -> str:
    rows = cluster.fleetctl("list-machines", "--no-legend", "--full").stdout.split()
    return rows[2] if len(rows) >= 3 else ""


def over_unix_socket(cluster: Cluster) -> str:
    node = cluster.nodes[0]
    result = subprocess.run(
        [PYTHON, "-m", "flotilla.daemons.fleetctl.main", f"--endpoint=unix://{node.socket}",
         "list-machines", "--no-legend", "--full"],
        cwd=REPO, capture_output=True, text=True, timeout=30, check=True)
    return result.stdout


def listeners(node: Fleetd) -> dict[str, int]:
    """The kernel inode of each socket ``node`` listens on: its unix socket and its TCP
    port, each checked to be open in the fleetd process.

    A socket closed and made again on the same path or port gets a new inode, so equal
    inodes before and after a reload mean the very same listening sockets.
    """
    assert node.proc is not None
    proc = Path(f"/proc/{node.proc.pid}")
    held = set()
    for fd in (proc / "fd").iterdir():
        with contextlib.suppress(FileNotFoundError):  # closed since the listing
            held.add(os.readlink(fd))
    found: dict[str, int] = {}
    for line in (proc / "net/unix").read_text().splitlines()[1:]:
        fields = line.split()
        listening = int(fields[3], 16) & 0x10000  # __SO_ACCEPTCON
        if len(fields) == 8 and fields[7] == str(node.socket) and listening:
            found["unix"] = int(fields[6])
    ip = ipaddress.IPv4Address(node.host).packed[::-1].hex().upper()  # little-endian
    for line in (proc / "net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == f"{ip}:{node.port:04X}" and fields[3] == "0A":  # LISTEN
            found["tcp"] = int(fields[9])
    assert found.keys() == {"unix", "tcp"}, found
    for kind, inode in found.items():
        assert f"socket:[{inode}]" in held, f"fleetd does not hold its {kind} listener"
    return found


@pytest.mark.timeout(60)
def test_sighup_applies_new_settings_keeping_listeners_process_and_units(store: Store) -> None:
    with running_cluster(store, metadata=[""], agent_ttl="2s") as cluster:
        node = cluster.nodes[0]
        assert node.proc is not None
        cluster.fleetctl("start", "--block-attempts=15", cluster.write_unit("steady.service",
                                                                            UNIT))
        wait_for(lambda: "steady.service" in node.active_units(), 15, "steady.service running")
        assert listed_metadata(cluster) == "-"
        pid = node.proc.pid
        sockets = listeners(node)
        calls_before = len(node.calls())
        cluster.config_file.write_text(cluster.config_file.read_text()
                                       + 'metadata="role=reloaded"\n')
        node.signal(signal.SIGHUP)
        wait_for(lambda: listed_metadata(cluster) == "role=reloaded", 20,
                 "the machine to be listed with the reloaded metadata")
        assert node.proc.poll() is None and node.proc.pid == pid
        assert listeners(node) == sockets  # the same sockets, not new ones on the same path
        assert "role=reloaded" in over_unix_socket(cluster)
        # The new agent adopted the unit: it kept running and no call touched it, and the
        # machine never left the cluster, so the engine never moved it.
        assert "steady.service" in node.active_units()
        assert [c for c in node.calls()[calls_before:] if c[1] == "steady.service"] == []
        assert [machine for machine, _ in cluster.published_states()["steady.service"]] == [
            node.machine_id]
        # The reloaded fleetd still drives its units: a stop reaches the stand-in systemd.
        cluster.fleetctl("stop", "--block-attempts=15", "steady.service")
        wait_for(lambda: "steady.service" not in node.active_units(), 15,
                 "steady.service stopped by the reloaded fleetd")


@pytest.mark.timeout(60)
def test_sighup_with_a_bad_configuration_keeps_the_running_one(store: Store) -> None:
    with running_cluster(store, metadata=[""]) as cluster:
        node = cluster.nodes[0]
        assert node.proc is not None
        good = cluster.config_file.read_text() + 'metadata="role=first"\n'
        cluster.config_file.write_text(good)
        node.signal(signal.SIGHUP)
        wait_for(lambda: listed_metadata(cluster) == "role=first", 20, "first reload")
        cluster.config_file.write_text(good.replace('role=first"', 'role=second"')
                                       + "agent_ttl=soon\n")
        node.signal(signal.SIGHUP)
        wait_for(lambda: "configuration not reloaded" in node.log(), 20,
                 "fleetd to log the rejected configuration")
        rejected = next(line for line in node.log().splitlines()
                        if "configuration not reloaded" in line)
        assert "agent_ttl" in rejected and "fleet.conf:" in rejected
        assert node.proc.poll() is None
        assert listed_metadata(cluster) == "role=first"
