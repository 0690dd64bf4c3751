"""The README's run command: three test machines become a Flotilla cluster.

Each machine gets the package installed with apt, joins a three-member kvd cluster
(configured the way cloud-config's ``coreos.etcd2`` section does it: ETCD_* variables in a
drop-in), and runs fleetd against it. A sample service is then launched three times, kept on
separate machines by ``Conflicts``, and the cluster's view is printed.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.conditions import wait_until

from .cluster import Cluster
from .machine import Machine

CLIENT_PORT = 2379
PEER_PORT = 2380

SAMPLE_UNIT = """[Unit]
Description=Sample web server %i

[Service]
ExecStart=/usr/bin/python3 -m http.server 80%i

[X-Fleet]
Conflicts=hello@*.service
"""


def kvd_dropin(machine: Machine, cluster: Cluster) -> str:
    members = ",".join(f"{m.name}=http://{m.address}:{PEER_PORT}" for m in cluster)
    settings = {
        "ETCD_NAME": machine.name,
        "ETCD_INITIAL_CLUSTER": members,
        "ETCD_INITIAL_CLUSTER_STATE": "new",
        "ETCD_INITIAL_CLUSTER_TOKEN": f"flotilla-{cluster.run_id}",
        "ETCD_LISTEN_PEER_URLS": f"http://{machine.address}:{PEER_PORT}",
        "ETCD_INITIAL_ADVERTISE_PEER_URLS": f"http://{machine.address}:{PEER_PORT}",
        "ETCD_LISTEN_CLIENT_URLS": (
            f"http://{machine.address}:{CLIENT_PORT},http://127.0.0.1:{CLIENT_PORT}"
        ),
        "ETCD_ADVERTISE_CLIENT_URLS": f"http://{machine.address}:{CLIENT_PORT}",
    }
    lines = "".join(f'Environment="{key}={value}"\n' for key, value in settings.items())
    return "[Service]\n" + lines


def fleet_conf(machine: Machine, index: int) -> str:
    return (
        'etcd_servers=["http://127.0.0.1:2379"]\n'
        f'public_ip="{machine.address}"\n'
        f'metadata="machine={index}"\n'
    )


def form_cluster(cluster: Cluster, package: Path) -> None:
    """Installs the package, starts kvd everywhere, then fleetd everywhere."""
    with ThreadPoolExecutor(max_workers=len(cluster)) as pool:
        list(pool.map(lambda m: m.install_deb(package), cluster))
    for machine in cluster:
        machine.write_file(
            "/etc/systemd/system/kvd.service.d/20-cloudinit.conf", kvd_dropin(machine, cluster)
        )
        machine.run(["systemctl", "daemon-reload"])
    # Members start together: each waits for a quorum before it reports ready.
    for machine in cluster:
        machine.run(["systemctl", "start", "--no-block", "kvd.service"])
    for machine in cluster:
        wait_until(
            lambda m=machine: m.run(["systemctl", "is-active", "kvd.service"], check=False)
            .stdout.strip() == "active",
            120,
            f"kvd on {machine.name}",
        )
    for index, machine in enumerate(cluster, start=1):
        machine.write_file("/etc/fleet/fleet.conf", fleet_conf(machine, index))
        machine.run(["systemctl", "start", "fleetd.socket", "fleetd.service"])


def show(cluster: Cluster) -> None:
    first, last = cluster[0], cluster[-1]
    print("$ kvctl cluster-health")
    print(first.run(["kvctl", "cluster-health"], check=False).stdout.rstrip())
    first.run(["kvctl", "set", "/demo/message", f"written on {first.name}"])
    read = last.run(["kvctl", "get", "/demo/message"]).stdout.strip()
    print(f"$ kvctl get /demo/message   (on {last.name})\n{read}")

    first.write_file("/root/hello@.service", SAMPLE_UNIT)
    wait_until(
        lambda: len(first.run(["fleetctl", "list-machines", "--no-legend"], check=False)
                    .stdout.splitlines()) == len(cluster),
        60,
        "every machine to join fleet",
    )
    first.run(["sh", "-c", "cd /root && fleetctl start hello@1.service hello@2.service "
               "hello@3.service"], timeout=180)
    print("$ fleetctl list-machines")
    print(first.run(["fleetctl", "list-machines"]).stdout.rstrip())
    print("$ fleetctl list-units")
    print(first.run(["fleetctl", "list-units"]).stdout.rstrip())
