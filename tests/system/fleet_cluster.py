"""A fleet cluster on booted test machines, against either store fleet supports.

Two backends, so every scenario proves fleetd against both:

* ``kvd``: a three-member kvd cluster inside the three machines, from the .deb, set up
  the way cloud-config's ``coreos.etcd2`` section does it (ETCD_* variables in a
  drop-in); each fleetd talks to its own machine's member on loopback.
* ``etcd``: Debian's etcd (v2 API on) on the bridge's host address, as fleet's own
  functional tests share one etcd on the host.

Each fleetd runs under its machine's own systemd and drives it over D-Bus. Helpers here
answer "where does this unit really run" by asking each machine's systemd, never fleet,
so the tests check fleet against the ground truth.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

from tests.conditions import free_port, wait_until
from tests.machines import Cluster, Machine
from tests.machines.demo import CLIENT_PORT, kvd_dropin
from tests.packages import built_packages

BACKENDS = ("kvd", "etcd")
ETCD_PORT = 12379
AGENT_TTL = 3.0
RECONCILE_INTERVAL = 1.0
ETCD_REQUEST_TIMEOUT = 3.0
LEASE_TTL = 5 * RECONCILE_INTERVAL  # the engine lease outlives a dead leader this long
API_PORT = 49153
FLEET_PREFIX = "/_coreos.com/fleet"
UNITS_DIR = "/run/fleet/units"


def wait_for(condition: Callable[[], Any], timeout: float, what: str,
             interval: float = 0.2) -> Any:
    """:func:`tests.conditions.wait_until` that treats any exception as "not yet"."""
    return wait_until(condition, timeout, what, interval=interval, tolerate=(Exception,))


def _read_node(base_url: str, key: str) -> dict[str, Any] | None:
    """A key's node (value, ttl, expiration...) through the v2 keys API, quorum read;
    None when it does not exist."""
    url = f"{base_url}/v2/keys{key}?quorum=true"
    try:
        with urllib.request.urlopen(url, timeout=3) as reply:
            return json.load(reply)["node"]
    except urllib.error.HTTPError as error:
        if error.code == 404:
            return None
        raise


class Store(Protocol):
    """Where fleet keeps its state, as the harness needs to see it."""

    name: str

    def start(self) -> None: ...
    def servers_for(self, machine: Machine) -> list[str]: ...
    def read_node(self, key: str) -> dict[str, Any] | None: ...
    def stop(self) -> None: ...


class HostEtcd:
    """Debian's etcd (v2 API on) on the bridge's host address and loopback, temp data dir."""

    name = "etcd"

    def __init__(self, cluster: Cluster) -> None:
        assert cluster.bridge is not None
        self.bridge_address = str(cluster.bridge.host_address)
        self.dir = Path(tempfile.mkdtemp(prefix="fleet-sys-etcd-"))
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = None

    def start(self) -> None:
        port = free_port(self.bridge_address, ETCD_PORT)
        peer = f"http://127.0.0.1:{free_port('127.0.0.1', 0)}"
        self.url = f"http://{self.bridge_address}:{port}"
        self.local_url = f"http://127.0.0.1:{port}"
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

    def servers_for(self, machine: Machine) -> list[str]:
        return [self.url]

    def read_node(self, key: str) -> dict[str, Any] | None:
        return _read_node(self.local_url, key)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        if self.log is not None:
            self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class MachineKvd:
    """A kvd member in every machine; the host reads through any member still running."""

    name = "kvd"

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster

    def start(self) -> None:
        for machine in self.cluster:
            machine.write_file("/etc/systemd/system/kvd.service.d/20-cloudinit.conf",
                               kvd_dropin(machine, self.cluster))
            machine.run(["systemctl", "daemon-reload"])
            machine.run(["systemctl", "enable", "kvd.service"])
        # Members start together: each waits for a quorum before it reports ready.
        for machine in self.cluster:
            machine.run(["systemctl", "start", "--no-block", "kvd.service"])
        for machine in self.cluster:
            wait_for(lambda m=machine: m.run(["systemctl", "is-active", "kvd.service"],
                                             check=False).stdout.strip() == "active",
                     120, f"kvd on {machine.name}")

    def servers_for(self, machine: Machine) -> list[str]:
        return [f"http://127.0.0.1:{CLIENT_PORT}"]

    def read_node(self, key: str) -> dict[str, Any] | None:
        errors: list[Exception] = []
        for machine in self.cluster:
            if not machine.running:
                continue
            try:
                return _read_node(f"http://{machine.address}:{CLIENT_PORT}", key)
            except OSError as error:  # a member cut off or in the minority
                errors.append(error)
        raise OSError(f"no kvd member answered: {errors}")

    def stop(self) -> None:
        """The members die with their machines."""


def make_store(backend: str, cluster: Cluster) -> Store:
    if backend == "kvd":
        return MachineKvd(cluster)
    if backend == "etcd":
        return HostEtcd(cluster)
    raise ValueError(f"backend: unknown store {backend!r} (expected one of {BACKENDS})")


def fleet_conf(servers: list[str], machine: Machine, role: str) -> str:
    quoted = ",".join(f'"{url}"' for url in servers)
    return (
        f"etcd_servers=[{quoted}]\n"
        f'metadata="role={role}"\n'
        f'agent_ttl="{AGENT_TTL:g}s"\n'
        # fleet's 1 s default is for a store on a machine of its own; here two cores carry
        # every machine's systemd, store and fleetd, and a daemon-reload on all of them
        # can hold a store answer past a second.
        f"etcd_request_timeout={ETCD_REQUEST_TIMEOUT:g}\n"
        f"engine_reconcile_interval={RECONCILE_INTERVAL:g}\n"
        f'public_ip="{machine.address}"\n'
        f'api_tcp="{machine.address}:{API_PORT}"\n'
    )


class FleetCluster:
    """Machines running fleetd against one store; ``roles[i]`` is machine i's role."""

    def __init__(self, cluster: Cluster, roles: list[str], backend: str = "etcd") -> None:
        self.cluster = cluster
        self.backend = backend
        self.machines = list(cluster.machines)
        self.roles = dict(zip((m.name for m in self.machines), roles, strict=True))
        self.store = make_store(backend, cluster)

    def start(self) -> None:
        deb = built_packages()["deb"]
        with ThreadPoolExecutor(max_workers=len(self.machines)) as pool:
            list(pool.map(lambda m: m.install_deb(deb), self.machines))
        self.store.start()
        for machine in self.machines:
            machine.write_file("/etc/fleet/fleet.conf", fleet_conf(
                self.store.servers_for(machine), machine, self.roles[machine.name]))
            # Enabled, so a machine booted again after a kill or reboot rejoins by itself.
            machine.run(["systemctl", "enable", "fleetd.socket", "fleetd.service"])
            result = machine.run(["systemctl", "start", "fleetd.socket", "fleetd.service"],
                                 check=False)
            if result.returncode != 0:
                raise AssertionError(
                    f"{machine.name}: fleetd did not start: {result.stderr}\n"
                    + machine.journal(lines=60, unit="fleetd.service"))
        self.wait_all_listed()

    def stop(self) -> None:
        self.store.stop()

    # ------------------------------------------------------------ cluster state

    def wait_all_listed(self, timeout: float = 60.0) -> None:
        wait_for(lambda: len(self.listed_machines(self.alive()[0])) == len(self.machines),
                 timeout, "fleetctl list-machines to show every machine")

    def engine_leader(self) -> str:
        """Machine id held in the engine's leader lease, read straight from the store."""
        node = self.store.read_node(f"{FLEET_PREFIX}/lease/engine-leader")
        return json.loads(node["value"])["MachineID"] if node else ""

    def alive(self) -> list[Machine]:
        return [m for m in self.machines if m.running]

    def by_role(self, role: str) -> list[Machine]:
        return [m for m in self.machines if self.roles[m.name] == role]

    def machine(self, name: str) -> Machine:
        return next(m for m in self.machines if m.name == name)

    def by_id(self, machine_id: str) -> Machine:
        return next(m for m in self.machines if m.machine_id == machine_id)

    # ------------------------------------------------------------ fleetctl

    def fleetctl(self, machine: Machine, *args: str, check: bool = True,
                 timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        return machine.run(["fleetctl", *args], check=check, timeout=timeout)

    def listed_machines(self, machine: Machine) -> list[list[str]]:
        out = self.fleetctl(machine, "list-machines", "--no-legend", "--full").stdout
        return [line.split() for line in out.splitlines() if line.strip()]

    def unit_files(self, machine: Machine) -> list[str]:
        out = self.fleetctl(machine, "list-unit-files", "--no-legend", "--full",
                            "--fields", "unit").stdout
        return [line.strip() for line in out.splitlines() if line.strip()]

    def submit(self, machine: Machine, name: str, text: str) -> str:
        """Writes a unit file inside ``machine`` and returns its path there."""
        path = f"/root/units/{name}"
        machine.write_file(path, text)
        return path

    # ------------------------------------------------------------ ground truth (systemd)

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

    @staticmethod
    def show(machine: Machine, unit: str, prop: str) -> str:
        return machine.run(["systemctl", "show", "-P", prop, unit]).stdout.strip()

    @staticmethod
    def load_state(machine: Machine, unit: str) -> str:
        result = machine.run(["systemctl", "show", "-P", "LoadState", unit], check=False)
        return result.stdout.strip()

    @staticmethod
    def local_unit_files(machine: Machine) -> list[str]:
        result = machine.run(["ls", "-1", UNITS_DIR], check=False)
        return result.stdout.split() if result.returncode == 0 else []

    # ------------------------------------------------------------ between tests

    def revive(self, machine: Machine) -> None:
        """Boots a killed machine again; its store member and fleetd start by themselves."""
        machine.restart()
        wait_for(lambda: self.active_state(machine, "fleetd.service") == "active", 60,
                 f"fleetd on the revived {machine.name}")

    def reset(self) -> None:
        """Every machine up and connected, no unit left anywhere: a clean slate per test."""
        for machine in self.machines:
            if not machine.running:
                self.revive(machine)
            machine.heal_network()
        self.wait_all_listed()
        client = self.machines[0]
        units = self.unit_files(client)
        if units:
            self.fleetctl(client, "destroy", *units)
        wait_for(lambda: not self.unit_files(client), 20, "every unit destroyed")
        for machine in self.machines:
            wait_for(lambda m=machine: not self.local_unit_files(m), 30,
                     f"{machine.name} to unload every unit")

