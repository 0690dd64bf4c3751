"""A fleet cluster on booted test machines: etcd on the host, fleetd from the .deb in each.

etcd listens on the bridge's host address so every machine reaches it the way a real
cluster reaches its store; each fleetd runs under the machine's own systemd and drives
that systemd over D-Bus. Helpers here answer "where does this unit really run" by asking
each machine's systemd, never fleet, so the tests check fleet against the ground truth.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.conditions import free_port, wait_until
from tests.machines import Cluster, Machine
from tests.packages import built_packages

ETCD_PORT = 12379
AGENT_TTL = 3.0
RECONCILE_INTERVAL = 1.0
API_PORT = 49153


def wait_for(condition: Callable[[], Any], timeout: float, what: str,
             interval: float = 0.2) -> Any:
    """:func:`tests.conditions.wait_until` that treats any exception as "not yet"."""
    return wait_until(condition, timeout, what, interval=interval, tolerate=(Exception,))


class HostEtcd:
    """Debian's etcd (v2 API on) on the bridge's host address and loopback, temp data dir."""

    def __init__(self, bridge_address: str) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="fleet-sys-etcd-"))
        self.port = free_port(bridge_address, ETCD_PORT)
        peer_port = free_port("127.0.0.1", 0)
        self.url = f"http://{bridge_address}:{self.port}"
        self.local_url = f"http://127.0.0.1:{self.port}"
        peer = f"http://127.0.0.1:{peer_port}"
        self.log = open(self.dir / "etcd.log", "wb")  # noqa: SIM115 - lives as long as etcd
        self.proc = subprocess.Popen(
            ["etcd", "--enable-v2", "--name", "fleet-sys",
             "--data-dir", str(self.dir / "data"),
             "--listen-client-urls", f"{self.url},{self.local_url}",
             "--advertise-client-urls", self.url,
             "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
             "--initial-cluster", f"fleet-sys={peer}"],
            stdout=self.log, stderr=subprocess.STDOUT)
        wait_for(lambda: urllib.request.urlopen(f"{self.local_url}/v2/keys/", timeout=1)
                 .status == 200, 20, "etcd on the host to answer")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def fleet_conf(etcd_url: str, machine: Machine, role: str) -> str:
    return (
        f'etcd_servers=["{etcd_url}"]\n'
        f'metadata="role={role}"\n'
        f'agent_ttl="{AGENT_TTL:g}s"\n'
        f"engine_reconcile_interval={RECONCILE_INTERVAL:g}\n"
        f'public_ip="{machine.address}"\n'
        f'api_tcp="{machine.address}:{API_PORT}"\n'
    )


class FleetCluster:
    """Machines running fleetd against one etcd; ``roles[i]`` is machine i's role."""

    def __init__(self, cluster: Cluster, roles: list[str]) -> None:
        self.cluster = cluster
        self.machines = list(cluster.machines)
        self.roles = dict(zip((m.name for m in self.machines), roles, strict=True))
        assert cluster.bridge is not None
        self.etcd = HostEtcd(str(cluster.bridge.host_address))

    def start(self) -> None:
        deb = built_packages()["deb"]
        for machine in self.machines:
            machine.install_deb(deb)
            machine.write_file("/etc/fleet/fleet.conf",
                               fleet_conf(self.etcd.url, machine, self.roles[machine.name]))
            result = machine.run(["systemctl", "start", "fleetd.socket", "fleetd.service"],
                                 check=False)
            if result.returncode != 0:
                raise AssertionError(
                    f"{machine.name}: fleetd did not start: {result.stderr}\n"
                    + machine.journal(lines=60, unit="fleetd.service"))
        wait_for(lambda: len(self.listed_machines(self.machines[0])) == len(self.machines),
                 30, "fleetctl list-machines to show every machine")

    def stop(self) -> None:
        self.etcd.stop()

    def engine_leader(self) -> str:
        """Machine id held in the engine's leader lease, read straight from etcd."""
        url = f"{self.etcd.local_url}/v2/keys/_coreos.com/fleet/lease/engine-leader"
        with urllib.request.urlopen(url, timeout=3) as reply:
            return json.loads(json.load(reply)["node"]["value"])["MachineID"]

    def alive(self) -> list[Machine]:
        return [m for m in self.machines if m.running]

    def by_role(self, role: str) -> list[Machine]:
        return [m for m in self.machines if self.roles[m.name] == role]

    def fleetctl(self, machine: Machine, *args: str, check: bool = True,
                 timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        return machine.run(["fleetctl", *args], check=check, timeout=timeout)

    def listed_machines(self, machine: Machine) -> list[list[str]]:
        out = self.fleetctl(machine, "list-machines", "--no-legend", "--full").stdout
        return [line.split() for line in out.splitlines() if line.strip()]

    def submit(self, machine: Machine, name: str, text: str) -> str:
        """Writes a unit file inside ``machine`` and returns its path there."""
        path = f"/root/units/{name}"
        machine.write_file(path, text)
        return path

    @staticmethod
    def active_state(machine: Machine, unit: str) -> str:
        result = machine.run(["systemctl", "is-active", unit], check=False)
        return result.stdout.strip()

    def hosts_of(self, unit: str) -> list[str]:
        """Names of the running machines whose systemd reports ``unit`` active."""
        return [m.name for m in self.alive() if self.active_state(m, unit) == "active"]

    def wait_hosts(self, unit: str, check: Callable[[list[str]], bool], timeout: float,
                   what: str) -> list[str]:
        def hosts() -> tuple[list[str]] | None:
            found = self.hosts_of(unit)
            return (found,) if check(found) else None  # a tuple: [] is a valid answer
        return wait_for(hosts, timeout, f"{unit}: {what}", interval=0.3)[0]

    def machine(self, name: str) -> Machine:
        return next(m for m in self.machines if m.name == name)

    @staticmethod
    def show(machine: Machine, unit: str, prop: str) -> str:
        return machine.run(["systemctl", "show", "-P", prop, unit]).stdout.strip()

    @staticmethod
    def load_state(machine: Machine, unit: str) -> str:
        result = machine.run(["systemctl", "show", "-P", "LoadState", unit], check=False)
        return result.stdout.strip()
