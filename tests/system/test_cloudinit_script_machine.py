"""What only a real systemd and hostnamed can show about flotilla-cloudinit, in a booted
machine: a user-data script really runs, once, as the transient unit the command names,
after the metadata's hostname and key are in place; and a metadata hostname outside
hostnamed's rule fails the run and leaves the machine as it was.

The process tier (tests/process/cloudinit/test_cloudinit_cli_root.py) covers the same
command against a plain root directory, where these calls are only recorded.
"""

from __future__ import annotations

import json

import pytest

from tests.conditions import wait_until
from tests.packages import built_packages

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFlotillaScriptKeyForTests script@test"
# Appends, so a second run of the script would show as a second line.
SCRIPT = """#!/bin/bash
{
  echo "unit=$(sed -n 's#^0::.*/##p' /proc/self/cgroup)"
  echo "invocation=$INVOCATION_ID"
  echo "hostname=$(cat /etc/hostname)"
  echo "key=$(cat /home/core/.ssh/authorized_keys.d/coreos-cloudinit 2>/dev/null)"
  echo "ip=$public_ipv4"
} >> /run/flt-script.out
echo script-says-hello
"""


def _drive(machine, where: str, user_data: str, meta: dict) -> str:
    """A config drive folder inside the machine (what a mounted drive looks like)."""
    machine.write_file(f"{where}/openstack/latest/user_data", user_data)
    machine.write_file(f"{where}/openstack/latest/meta_data.json", json.dumps(meta))
    return where


def _cloudinit(machine, *args: str):
    return machine.run(["flotilla-cloudinit", *args], check=False, timeout=120,
                       env={"COREOS_PUBLIC_IPV4": "198.51.100.9"})


@pytest.fixture(scope="module")
def installed(machine):
    machine.install_deb(built_packages()["deb"])
    machine.run(["useradd", "--create-home", "core"])
    return machine


def test_script_runs_once_as_its_transient_unit_after_the_metadata(installed):
    machine = installed
    drive = _drive(machine, "/media/script-drive", SCRIPT,
                   {"hostname": "flt-scripted", "public_keys": {"k": KEY}})
    result = _cloudinit(machine, f"--from-configdrive={drive}")
    assert result.returncode == 0, result.stdout + result.stderr
    unit = machine.path("/var/lib/flotilla-cloudinit/scripts/unit-name").read_text().strip()
    changes = [line for line in result.stdout.splitlines() if line.startswith("[change]")]
    assert changes[-1] == f"[change] run script as {unit}", changes
    # The unit logs its end; a transient unit is unloaded once it stops, so the journal,
    # not `systemctl show`, is what remains to read.
    wait_until(lambda: "Deactivated successfully" in machine.journal(lines=None, unit=unit),
               30, f"{unit} to finish successfully")
    out = machine.path("/run/flt-script.out").read_text()
    lines = out.splitlines()
    assert len(lines) == 5, out  # ran once
    fields = dict(line.split("=", 1) for line in lines)
    assert fields["unit"] == unit  # its own cgroup is the unit the command named
    assert fields["hostname"] == "flt-scripted"  # the metadata was applied before it ran
    assert fields["key"] == KEY
    assert fields["ip"] == "198.51.100.9"  # $public_ipv4 substituted in the saved script
    assert fields["invocation"], out  # systemd gave it an invocation: it ran as a service
    assert "script-says-hello" in machine.journal(lines=None, unit=unit)


def test_metadata_hostname_outside_hostnameds_rule_fails_the_run_and_changes_nothing(
        installed):
    """A metadata hostname skips the cloud-config validator; the hostnamed client applies
    hostnamed's rule (the same one, so hostnamed itself is never sent a name it would
    refuse) and the run stops there. The hostname comes first in the run, so the files
    after it are never written, and the machine keeps its hostname."""
    machine = installed
    before = machine.path("/etc/hostname").read_text()
    config = "#cloud-config\nwrite_files:\n  - path: /etc/flt/after-hostname\n    content: x\n"
    drive = _drive(machine, "/media/refused-drive", config, {"hostname": "no spaces allowed"})
    result = _cloudinit(machine, f"--from-configdrive={drive}")
    assert result.returncode == 1, result.stdout + result.stderr
    assert ("failed: set hostname no spaces allowed: hostname no spaces allowed: "
            "invalid hostname 'no spaces allowed'") in result.stderr, result.stderr
    assert machine.path("/etc/hostname").read_text() == before
    assert not machine.path("/etc/flt/after-hostname").exists()
    static = machine.run(["hostnamectl", "--static"], check=False).stdout.strip()
    assert static == before.strip()
