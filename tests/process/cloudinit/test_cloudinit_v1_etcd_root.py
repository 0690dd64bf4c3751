"""Issue #20 through the command, on a temp root that has Flotilla's real unit files: the
classic 2014 CoreOS cloud-config configures kvd from coreos.etcd (with info lines), makes
etcd.service and fleet.service start kvd and fleetd, and a second run changes nothing; with
Debian's etcd.service installed it is left alone; a value kvd cannot take changes nothing;
etcd2 and fleet sections validate with exit 0."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.unit.cloudinit.classic_config import CLASSIC

from .roots import CMD, run_cloudinit, snapshot

UNITS = Path(__file__).resolve().parents[3] / "units"
ADDRESSES = {"COREOS_PUBLIC_IPV4": "203.0.113.10", "COREOS_PRIVATE_IPV4": "10.0.0.10"}

DROP_IN = (
    "[Service]\n"
    'Environment="ETCD_ADVERTISE_CLIENT_URLS=http://203.0.113.10:4001"\n'
    'Environment="ETCD_DISCOVERY=https://discovery.etcd.io/5ea3b1e1b3ba4a4b8e0c0f5d0a3f5e2c"\n'
    'Environment="ETCD_INITIAL_ADVERTISE_PEER_URLS=http://10.0.0.10:7001"\n'
    'Environment="ETCD_LISTEN_CLIENT_URLS=http://0.0.0.0:4001,http://127.0.0.1:2379"\n'
    'Environment="ETCD_LISTEN_PEER_URLS=http://0.0.0.0:7001"\n'
)
# The unit Debian's etcd-server ships, in the parts that matter here.
DEBIAN_ETCD = ("[Unit]\nDescription=etcd - highly-available key value store\n"
               "[Service]\nExecStart=/usr/bin/etcd $DAEMON_ARGS\n"
               "[Install]\nWantedBy=multi-user.target\nAlias=etcd2.service\n")


def make_root(tmp_path: Path, debian_etcd: bool = False) -> Path:
    """A machine with the package's kvd, fleetd and fleetd.socket units, the accounts
    useradd needs (sudo and docker groups), and Debian's etcd.service if asked."""
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/bash\n"
                                     "core:x:500:500:Core:/home/core:/bin/bash\n")
    (root / "etc/group").write_text("root:x:0:\ncore:x:500:\nsudo:x:27:\ndocker:x:998:\n")
    (root / "etc/shadow").write_text("root:*:19000:0:99999:7:::\ncore:*:19000:0:99999:7:::\n")
    (root / "etc/gshadow").write_text("root:*::\ncore:!::\nsudo:*::\ndocker:!::\n")
    (root / "etc/login.defs").write_text("")
    (root / "home/core").mkdir(parents=True)
    units = root / "usr/lib/systemd/system"
    units.mkdir(parents=True)
    for name in ("kvd.service", "fleetd.service", "fleetd.socket"):
        (units / name).write_bytes((UNITS / name).read_bytes())
    if debian_etcd:
        (root / "lib/systemd/system").mkdir(parents=True)
        (root / "lib/systemd/system/etcd.service").write_text(DEBIAN_ETCD)
    return root


def run(root: Path, text: str, *extra: str) -> subprocess.CompletedProcess[str]:
    config = root.parent / "user_data"
    config.write_text(text)
    return run_cloudinit(root, config, *extra, addresses=ADDRESSES)


@pytest.mark.timeout(60)
def test_the_classic_config_configures_kvd_and_starts_it_as_etcd_service(tmp_path: Path
                                                                          ) -> None:
    root = make_root(tmp_path)
    first = run(root, CLASSIC)
    assert first.returncode == 0, first.stdout + first.stderr
    lines = first.stdout.splitlines()
    assert "[info] coreos.etcd.addr is etcd 0.4's advertise-client-urls; configuring kvd" \
        in lines
    assert "[info] coreos.etcd.peer-addr is etcd 0.4's initial-advertise-peer-urls; " \
           "configuring kvd" in lines
    run_units = root / "run/systemd/system"
    assert (run_units / "kvd.service.d/20-cloudinit-etcd.conf").read_text() == DROP_IN
    # systemd's own runtime enable links (what `systemctl enable --runtime` makes).
    assert os.readlink(run_units / "etcd.service") == "/usr/lib/systemd/system/kvd.service"
    assert os.readlink(run_units / "etcd2.service") == "/usr/lib/systemd/system/kvd.service"
    assert os.readlink(run_units / "fleet.service") == "/usr/lib/systemd/system/fleetd.service"
    assert os.readlink(run_units / "multi-user.target.wants/kvd.service") == \
        "/usr/lib/systemd/system/kvd.service"
    assert not (root / "etc/systemd/system/etcd.service").exists()
    order = [line for line in lines if line.startswith("[change] ")]
    assert order[-3:] == ["[change] daemon-reload", "[change] start etcd.service",
                          "[change] start fleet.service"]
    assert "elroy:x:" in (root / "etc/passwd").read_text()

    before = snapshot(root)
    second = run(root, CLASSIC)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "no changes: the machine already matches the config" in second.stdout
    assert "[ok] enable kvd.service (runtime) so etcd.service starts it: etcd.service " \
           "exists here; left as it is" in second.stdout.splitlines()
    assert not [line for line in second.stdout.splitlines() if line.startswith("[change]")]
    assert snapshot(root) == before


@pytest.mark.timeout(60)
def test_debians_etcd_service_is_left_alone(tmp_path: Path) -> None:
    root = make_root(tmp_path, debian_etcd=True)
    result = run(root, CLASSIC)
    assert result.returncode == 0, result.stdout + result.stderr
    run_units = root / "run/systemd/system"
    assert not (run_units / "etcd.service").is_symlink()
    assert not (root / "etc/systemd/system/etcd.service").is_symlink()
    assert (root / "lib/systemd/system/etcd.service").read_text() == DEBIAN_ETCD
    assert not (run_units / "etcd.service.d").exists()
    assert "[ok] enable kvd.service (runtime) so etcd.service starts it: etcd.service " \
           "exists here; left as it is" in result.stdout.splitlines()
    # kvd is still configured from coreos.etcd; fleet.service still becomes fleetd.
    assert (run_units / "kvd.service.d/20-cloudinit-etcd.conf").read_text() == DROP_IN
    assert os.readlink(run_units / "fleet.service") == "/usr/lib/systemd/system/fleetd.service"


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("value", "message"), [
    ("addr: $public_ipv4", "coreos.etcd.addr: '203.0.113.10' has no port"),
    ("peers: 10.0.0.6:7001", "coreos.etcd.peers: etcd 0.4 joins the peers it is given by "
                             "address alone"),
])
def test_a_value_kvd_cannot_take_changes_nothing_and_names_the_field(
        tmp_path: Path, value: str, message: str) -> None:
    root = make_root(tmp_path)
    before = snapshot(root)
    result = run(root, CLASSIC.replace("addr: $public_ipv4:4001", value))
    assert result.returncode == 1
    assert message in result.stderr and "nothing was changed" in result.stderr
    assert snapshot(root) == before


@pytest.mark.timeout(60)
def test_etcd2_and_fleet_sections_validate_with_exit_0(tmp_path: Path) -> None:
    config = tmp_path / "user_data"
    config.write_text("#cloud-config\ncoreos:\n  etcd2:\n    name: node1\n"
                      "    discovery: https://discovery.etcd.io/t\n"
                      "  fleet:\n    public-ip: $public_ipv4\n")
    result = subprocess.run([*CMD, "--validate", str(config)], capture_output=True,
                            text=True, timeout=60, check=False)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
