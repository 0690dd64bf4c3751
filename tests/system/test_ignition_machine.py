"""The flotilla-ignition units on the first boot of a test machine, and not on the second.

The package's files are unpacked into the machine's root before its first boot (as an
image build would), the provisioning target is enabled by symlink and the config is put
where the fetch stage looks for it (``/usr/lib/flotilla-ignition/user.ign``). Everything
is then checked from outside the machine.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import urllib.parse

import pytest

from tests.conditions import wait_until
from tests.machines import Cluster
from tests.machines.machine import MachineError
from tests.packages import built_packages

STAGES = ("fetch", "disks", "mount", "files", "complete")
UNITS = [f"flotilla-ignition-{stage}.service" for stage in STAGES]
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFlotillaIgnitionKeyForTest ign@test"
HELLO = "hello ignition\n"

CONFIG = {
    "ignition": {"version": "3.3.0"},
    "passwd": {
        "groups": [{"name": "igngroup"}],
        "users": [{"name": "ignuser", "groups": ["adm", "igngroup"],
                   "sshAuthorizedKeys": [KEY]}],
    },
    "storage": {
        "directories": [{"path": "/etc/ign/dir", "mode": 0o750}],
        "files": [{"path": "/etc/ign/hello.txt", "mode": 0o640,
                   "contents": {"source": "data:," + urllib.parse.quote(HELLO)}}],
        "links": [{"path": "/etc/ign/link", "target": "/etc/ign/hello.txt"}],
    },
    "systemd": {"units": [{
        "name": "ign-hello.service",
        "enabled": True,
        "contents": "[Service]\nType=oneshot\nRemainAfterExit=yes\n"
                    "ExecStart=/bin/sh -c 'cat /etc/ign/hello.txt > /run/ign-hello.out'\n\n"
                    "[Install]\nWantedBy=multi-user.target\n",
    }]},
}


def _provisionable_machine(config: dict) -> Cluster:
    """A one-machine cluster whose root holds the package, the enabled provisioning target
    and ``config``, not yet booted."""
    cluster = Cluster(1)
    try:
        machine = cluster[0]
        machine.prepare()
        subprocess.run(["dpkg-deb", "-x", str(built_packages()["deb"]), str(machine.root)],
                       check=True)
        wants = machine.root / "etc/systemd/system/sysinit.target.wants"
        wants.mkdir(parents=True, exist_ok=True)
        os.symlink("/usr/lib/systemd/system/flotilla-ignition.target",
                   wants / "flotilla-ignition.target")
        system_dir = machine.root / "usr/lib/flotilla-ignition"
        system_dir.mkdir(parents=True, exist_ok=True)
        (system_dir / "user.ign").write_text(json.dumps(config))
        return cluster
    except BaseException:
        cluster.destroy()
        raise


def _show(machine, unit: str, *props: str) -> dict[str, str]:
    out = machine.run(["systemctl", "show", unit, *(f"--property={p}" for p in props)]).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


FIRST_BOOT: dict[str, str] = {}


@pytest.fixture(scope="module")
def provisioned():
    cluster = _provisionable_machine(CONFIG)
    try:
        machine = cluster[0]
        machine.start()
        FIRST_BOOT["state"] = machine.wait_running()
        # A Machine argument gets its journal attached to a failing test's report.
        yield machine
    finally:
        cluster.destroy()


@pytest.mark.timeout(180)
def test_first_boot_runs_every_stage(provisioned):
    machine, state = provisioned, FIRST_BOOT["state"]
    assert state == "running", machine.run(["systemctl", "--failed", "--no-legend"]).stdout
    for unit in UNITS:
        props = _show(machine, unit, "ActiveState", "Result", "ExecMainStartTimestampMonotonic")
        assert props["ActiveState"] == "active" and props["Result"] == "success", (unit, props)
        assert int(props["ExecMainStartTimestampMonotonic"]) > 0, f"{unit} never ran"
    result = json.loads(machine.path("/etc/.ignition-result.json").read_text())
    assert result["userConfigProvided"] is True
    boot_id = machine.path("/proc/sys/kernel/random/boot_id").read_text().strip()
    assert result["provisioningBootID"] == boot_id
    journal = machine.run(["journalctl", "-b", "--no-pager", "-o", "cat"]).stdout
    assert "ordering cycle" not in journal.lower()
    # The complete stage drops the cached config once done.
    assert not machine.path("/run/flotilla-ignition/config.json").exists()


@pytest.mark.timeout(60)
def test_first_boot_wrote_files_links_and_directories(provisioned):
    machine = provisioned
    hello = machine.path("/etc/ign/hello.txt")
    assert hello.read_text() == HELLO
    assert hello.stat().st_mode & 0o7777 == 0o640
    assert os.readlink(machine.path("/etc/ign/link")) == "/etc/ign/hello.txt"
    directory = machine.path("/etc/ign/dir")
    assert directory.is_dir() and directory.stat().st_mode & 0o7777 == 0o750


@pytest.mark.timeout(60)
def test_first_boot_created_users_groups_and_keys(provisioned):
    machine = provisioned
    user = machine.run(["getent", "passwd", "ignuser"]).stdout.strip().split(":")
    assert user[0] == "ignuser"
    assert machine.run(["getent", "group", "igngroup"]).stdout.startswith("igngroup:")
    groups = machine.run(["id", "-nG", "ignuser"]).stdout.split()
    assert {"adm", "igngroup"} <= set(groups)
    keys_dir = machine.path(f"{user[5]}/.ssh")
    found = "".join(p.read_text() for p in keys_dir.rglob("*") if p.is_file())
    assert KEY in found


@pytest.mark.timeout(60)
def test_first_boot_enabled_and_started_the_configs_unit(provisioned):
    machine = provisioned
    assert machine.run(["systemctl", "is-enabled", "ign-hello.service"]).stdout.strip() == \
        "enabled"
    # Enabled during this same boot and started by it, not only on the next one.
    out = wait_until(lambda: machine.path("/run/ign-hello.out").exists()
                and machine.path("/run/ign-hello.out").read_text(), 30, "ign-hello to run")
    assert out == HELLO


@pytest.mark.timeout(180)
def test_second_boot_does_not_run_the_units_again(provisioned):
    machine = provisioned
    before = machine.path("/etc/.ignition-result.json").read_bytes()
    machine.run(["sh", "-c", "echo changed-by-admin > /etc/ign/hello.txt"])
    state = machine.restart()
    assert state == "running", machine.run(["systemctl", "--failed", "--no-legend"]).stdout
    assert machine.path("/etc/.ignition-result.json").read_bytes() == before
    for unit in UNITS:
        props = _show(machine, unit, "ActiveState", "ExecMainStartTimestampMonotonic",
                      "ConditionResult")
        assert props["ExecMainStartTimestampMonotonic"] == "0", (unit, props)
        assert props["ActiveState"] == "inactive", (unit, props)
    logged = machine.run(["journalctl", "-b", "--no-pager", "-o", "cat",
                          *(f"--unit={u}" for u in UNITS)], check=False).stdout
    assert "Starting" not in logged and "Finished" not in logged, logged
    # What an admin changed after provisioning stays changed.
    assert machine.path("/etc/ign/hello.txt").read_text() == "changed-by-admin\n"
    # The config's unit stays enabled across boots.
    assert machine.path("/run/ign-hello.out").read_text() == "changed-by-admin\n"


@pytest.mark.timeout(180)
def test_hash_mismatch_fails_the_units_and_writes_nothing():
    bad = json.loads(json.dumps(CONFIG))
    wrong = hashlib.sha512(b"something else").hexdigest()
    bad["storage"]["files"][0]["contents"]["verification"] = {"hash": f"sha512-{wrong}"}
    cluster = _provisionable_machine(bad)
    try:
        machine = cluster[0]
        machine.start()
        # The failure isolates emergency.target, so the boot never reaches "running".
        with pytest.raises(MachineError) as caught:
            machine.wait_running(timeout=60)
        assert "maintenance" in str(caught.value) or "emergency" in str(caught.value), \
            caught.value
        failed = machine.run(["systemctl", "list-units", "--failed", "--no-legend",
                              "--plain"], check=False).stdout
        assert "flotilla-ignition-files.service" in failed, failed
        files_log = machine.run(["journalctl", "-b", "--no-pager", "-o", "cat",
                                 "--unit=flotilla-ignition-files.service"]).stdout
        assert "hash mismatch" in files_log, files_log
        assert machine.run(["systemctl", "is-active", "emergency.target"],
                           check=False).stdout.strip() == "active"
        assert not machine.path("/etc/.ignition-result.json").exists()
        assert not machine.path("/etc/ign/hello.txt").exists()
        assert machine.run(["getent", "passwd", "ignuser"], check=False).returncode != 0
    finally:
        cluster.destroy()
