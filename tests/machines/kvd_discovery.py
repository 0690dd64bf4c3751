"""A kvd cluster on test machines that bootstraps by discovery, not by a static list.

A kvd on the host, listening on the bridge's host address, plays discovery.etcd.io: it
answers ``/new?size=N`` with a fresh discovery URL. Each machine gets only that URL in an
``ETCD_DISCOVERY`` drop-in for kvd.service (what cloud-config's ``coreos.etcd2.discovery``
writes), so the members find each other through the protocol alone.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.conditions import free_port, wait_until

from .cluster import Cluster
from .machine import Machine

REPO = Path(__file__).resolve().parents[2]
CLIENT_PORT = 2379
PEER_PORT = 2380
HOST_PORT = 12479


class HostDiscoveryKvd:
    """A single kvd from this checkout on ``address``, in a temporary data dir."""

    def __init__(self, address: str) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="kvd-discovery-"))
        port = free_port(address, HOST_PORT)
        self.url = f"http://{address}:{port}"
        self.log_path = self.dir / "kvd.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "flotilla.daemons.kv", "--name", "discovery",
                 "--data-dir", str(self.dir / "data"), "--listen-client-urls", self.url,
                 "--advertise-client-urls", self.url],
                stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
                env=dict(os.environ, PYTHONPATH=str(REPO)), start_new_session=True)
        try:
            wait_until(self._answers, 30, "the discovery kvd on the host to answer",
                       tolerate=(OSError,))
        except BaseException:
            self.stop()
            raise

    def _answers(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"discovery kvd exited:\n{self.log()}")
        with urllib.request.urlopen(f"{self.url}/version", timeout=1) as reply:
            return reply.status == 200

    def new(self, size: int) -> str:
        with urllib.request.urlopen(f"{self.url}/new?size={size}", timeout=10) as reply:
            return reply.read().decode()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


def discovery_dropin(machine: Machine, discovery_url: str) -> str:
    settings = {
        "ETCD_NAME": machine.name,
        "ETCD_DISCOVERY": discovery_url,
        "ETCD_LISTEN_PEER_URLS": f"http://{machine.address}:{PEER_PORT}",
        "ETCD_INITIAL_ADVERTISE_PEER_URLS": f"http://{machine.address}:{PEER_PORT}",
        "ETCD_LISTEN_CLIENT_URLS": (
            f"http://{machine.address}:{CLIENT_PORT},http://127.0.0.1:{CLIENT_PORT}"
        ),
        "ETCD_ADVERTISE_CLIENT_URLS": f"http://{machine.address}:{CLIENT_PORT}",
    }
    return "[Service]\n" + "".join(f'Environment="{k}={v}"\n' for k, v in settings.items())


def form_cluster_by_discovery(cluster: Cluster, package: Path, discovery_url: str,
                              timeout: float = 90.0) -> None:
    """Installs the package everywhere and starts kvd with only the discovery URL."""
    with ThreadPoolExecutor(max_workers=len(cluster)) as pool:
        list(pool.map(lambda m: m.install_deb(package), cluster))
    for machine in cluster:
        machine.write_file("/etc/systemd/system/kvd.service.d/20-cloudinit.conf",
                           discovery_dropin(machine, discovery_url))
        machine.run(["systemctl", "daemon-reload"])
    # Type=notify: a member is active only once discovery completed and it serves.
    for machine in cluster:
        machine.run(["systemctl", "start", "--no-block", "kvd.service"])
    for machine in cluster:
        wait_until(lambda m=machine: m.run(["systemctl", "is-active", "kvd.service"],
                                           check=False).stdout.strip() == "active",
                   timeout, f"kvd on {machine.name} to bootstrap by discovery")
