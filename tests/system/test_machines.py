"""The test-machine harness itself: boot, network, faults, teardown."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from tests.machines import Cluster, network
from tests.machines.machine import pid_alive


def _reachable(source, target) -> bool:
    result = source.run(["ping", "-c1", "-W1", str(target.address)], check=False)
    return result.returncode == 0


def test_three_machines_boot_and_reach_each_other(cluster_factory):
    cluster = cluster_factory(3)
    ids = set()
    for machine in cluster:
        state = machine.run(["systemctl", "is-system-running"], check=False).stdout.strip()
        assert state in ("running", "degraded")
        assert machine.run(["hostname"]).stdout.strip() == machine.name
        ids.add(machine.run(["cat", "/etc/machine-id"]).stdout.strip())
    assert len(ids) == 3, "every machine has its own machine-id"
    for source in cluster:
        for target in cluster:
            if source is not target:
                assert _reachable(source, target), f"{source.name} cannot reach {target.name}"
    host = subprocess.run(["ping", "-c1", "-W1", str(cluster[0].address)], capture_output=True)
    assert host.returncode == 0, "the host reaches the machines"


def test_files_in_and_journal_out(machine, tmp_path: Path):
    source = tmp_path / "greeting"
    source.write_text("hello from the host\n")
    machine.copy_in(source, "/root/greeting")
    assert machine.run(["cat", "/root/greeting"]).stdout == "hello from the host\n"
    machine.run(["systemd-cat", "-t", "harness-check", "echo", "marker-4711"])
    machine.run(["journalctl", "--sync"])
    assert "marker-4711" in machine.journal(lines=None)


def test_kill_and_restart_keeps_identity_and_disk(cluster_factory):
    victim = cluster_factory(1)[0]
    machine_id = victim.run(["cat", "/etc/machine-id"]).stdout.strip()
    victim.run(["sh", "-c", "echo durable > /var/tmp/marker && sync"])
    old_init = victim.init_pid
    victim.kill()
    assert not victim.running
    assert not pid_alive(old_init), "SIGKILL left the container's init alive"
    state = victim.restart()
    assert state in ("running", "degraded")
    assert victim.init_pid != old_init
    assert victim.run(["cat", "/etc/machine-id"]).stdout.strip() == machine_id
    assert victim.run(["cat", "/var/tmp/marker"]).stdout.strip() == "durable"


def test_cut_and_heal_network(cluster_factory):
    a, b = cluster_factory(2)
    assert _reachable(a, b)
    b.cut_network()
    assert not _reachable(a, b), "a cut machine must be unreachable"
    b.heal_network()
    # Bringing a bridge port up takes a moment (forwarding state); wait with a deadline.
    deadline = time.monotonic() + 20
    while not _reachable(a, b):
        assert time.monotonic() < deadline, "healed machine did not become reachable"
    assert _reachable(b, a)


def test_teardown_leaves_nothing_behind(rootfs_template):
    cluster = Cluster(2)
    cluster.boot()
    bridge = cluster.bridge.name
    veths = [m.veth for m in cluster]
    run_dir = cluster.run_dir
    inits = [m.init_pid for m in cluster]
    cluster.destroy()
    assert not network.link_exists(bridge)
    assert not any(network.link_exists(v) for v in veths)
    assert not run_dir.exists()
    assert not any(pid_alive(pid) for pid in inits)
