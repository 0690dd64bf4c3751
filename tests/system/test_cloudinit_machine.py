"""flotilla-cloudinit inside a booted test machine with a real systemd, hostnamed and D-Bus.

The .deb is installed with apt; the command runs inside the machine as the units would run
it, and every effect is checked from outside: the machine's files, ``getent``, the
hostname, and unit states read over the machine's system bus from the host.
"""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
from pathlib import Path

import pytest
from flotilla.daemons.systemd import Systemd

from tests.conditions import wait_until
from tests.packages import built_packages

CORE_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFlotillaCoreKeyForTests core@test"
ALICE_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFlotillaAliceKeyForTests alice@test"
SECRET = "secret payload\nline two\n"

CLOUD_CONFIG = f"""#cloud-config
hostname: flt-ci-host
ssh_authorized_keys:
  - {CORE_KEY}
users:
  - name: alice
    gecos: Alice Tester
    groups: [adm, users]
    ssh_authorized_keys:
      - {ALICE_KEY}
write_files:
  - path: /etc/flt/plain.conf
    permissions: "0640"
    owner: alice:users
    content: |
      plain=yes
  - path: /etc/flt/secret.bin
    permissions: "0600"
    encoding: b64
    content: {base64.b64encode(SECRET.encode()).decode()}
coreos:
  etcd2:
    name: node1
    listen-client-urls: http://127.0.0.1:2379
  fleet:
    metadata: region=test
  locksmith:
    group: testgroup
  update:
    reboot-strategy: "off"
    group: stable
  units:
    - name: flt-hello.service
      enable: true
      command: start
      content: |
        [Service]
        Type=oneshot
        RemainAfterExit=yes
        ExecStart=/bin/sh -c 'echo "$GREETING" > /run/flt-hello.out'

        [Install]
        WantedBy=multi-user.target
      drop_ins:
        - name: 10-greeting.conf
          content: |
            [Service]
            Environment=GREETING=hello-from-dropin
    - name: flt-masked.service
      mask: true
"""

# Units a CoreOS machine ships and the config's update section commands; the Debian
# test root has none of them, so stand-ins are put where the OS ships units (under /usr,
# which a runtime mask in /run overrides) before the first run.
STAND_INS = {
    "locksmithd.service": "[Service]\nExecStart=/bin/sleep 600\n",
    "update-engine.service": "[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/true\n",
}


def _unit_states(machine, names: list[str]) -> dict[str, tuple[str, str, str]]:
    async def read():
        systemd = await Systemd.connect(machine.bus_address())
        try:
            out = {}
            for name in names:
                status = await systemd.unit_status(name)
                out[name] = (status.load_state, status.active_state, status.sub_state)
            return out
        finally:
            await systemd.close()

    return asyncio.run(asyncio.wait_for(read(), 60))


def _cloudinit(machine, *args: str) -> subprocess.CompletedProcess[str]:
    return machine.run(["flotilla-cloudinit", *args], check=False, timeout=120)


def _snapshot(machine) -> str:
    """A fingerprint of what a config could change: accounts, /etc, runtime units."""
    return machine.run(["sh", "-c",
                        "cat /etc/passwd /etc/group /etc/hostname; "
                        "find /etc /run/systemd/system /home /var/lib/flotilla-cloudinit "
                        "-xdev -newer /etc/flt-snapshot-mark 2>/dev/null | sort"],
                       check=False).stdout


@pytest.fixture(scope="module")
def installed(machine):
    machine.install_deb(built_packages()["deb"])
    machine.run(["useradd", "--create-home", "core"])
    for name, body in STAND_INS.items():
        machine.write_file(f"/usr/lib/systemd/system/{name}", body)
    machine.run(["systemctl", "daemon-reload"])
    machine.run(["systemctl", "start", "locksmithd.service"])
    return machine


@pytest.fixture(scope="module")
def applied(installed):
    installed.write_file("/root/user-data", CLOUD_CONFIG)
    result = _cloudinit(installed, "--from-file", "/root/user-data")
    assert result.returncode == 0, result.stdout + result.stderr
    return installed, result


def test_users_groups_and_keys_are_created(applied):
    machine, _ = applied
    passwd = machine.run(["getent", "passwd", "alice"]).stdout.strip().split(":")
    assert passwd[0] == "alice" and passwd[4] == "Alice Tester"
    home = passwd[5]
    for group in ("adm", "users"):
        members = machine.run(["getent", "group", group]).stdout.strip().split(":")[3]
        assert "alice" in members.split(","), f"alice not in {group}: {members!r}"
    alice_keys = machine.path(f"{home}/.ssh/authorized_keys").read_text()
    assert ALICE_KEY in alice_keys
    core_home = machine.run(["getent", "passwd", "core"]).stdout.strip().split(":")[5]
    core_keys = machine.path(f"{core_home}/.ssh/authorized_keys")
    assert CORE_KEY in core_keys.read_text()
    uid = int(machine.run(["id", "-u", "core"]).stdout)
    assert core_keys.stat().st_uid == uid


def test_write_files_mode_owner_and_b64(applied):
    machine, _ = applied
    plain = machine.path("/etc/flt/plain.conf")
    assert plain.read_text() == "plain=yes\n"
    assert plain.stat().st_mode & 0o7777 == 0o640
    owner = machine.run(["stat", "-c", "%U:%G", "/etc/flt/plain.conf"]).stdout.strip()
    assert owner == "alice:users"
    secret = machine.path("/etc/flt/secret.bin")
    assert secret.read_text() == SECRET
    assert secret.stat().st_mode & 0o7777 == 0o600


def test_hostname_is_set(applied):
    machine, _ = applied
    assert machine.path("/etc/hostname").read_text().strip() == "flt-ci-host"
    static = machine.run(["hostnamectl", "--static"], check=False).stdout.strip()
    if not static:  # older hostnamectl: parse the status output
        status = machine.run(["hostnamectl", "status"]).stdout
        static = next(line.split(":", 1)[1].strip() for line in status.splitlines()
                      if "Static hostname" in line)
    assert static == "flt-ci-host"


def test_units_with_drop_ins_enable_mask_and_start(applied):
    machine, _ = applied
    states = _unit_states(machine, ["flt-hello.service", "flt-masked.service"])
    assert states["flt-hello.service"] == ("loaded", "active", "exited")
    assert states["flt-masked.service"][0] == "masked"
    assert machine.path("/run/flt-hello.out").read_text() == "hello-from-dropin\n"
    enabled = machine.run(["systemctl", "is-enabled", "flt-hello.service"], check=False)
    assert enabled.stdout.strip() == "enabled"
    assert machine.path("/etc/systemd/system/flt-hello.service.d/10-greeting.conf").exists()


def test_etcd2_fleet_locksmith_update_sections(applied):
    machine, _ = applied
    etcd2 = machine.path("/run/systemd/system/etcd2.service.d/20-cloudinit.conf").read_text()
    assert 'ETCD_NAME=node1' in etcd2
    assert "ETCD_LISTEN_CLIENT_URLS=http://127.0.0.1:2379" in etcd2
    fleet = machine.path("/run/systemd/system/fleet.service.d/20-cloudinit.conf").read_text()
    assert "FLEET_METADATA=region=test" in fleet
    lock = machine.path("/run/systemd/system/locksmithd.service.d/20-cloudinit.conf").read_text()
    assert "LOCKSMITHD_GROUP=testgroup" in lock
    update = machine.path("/etc/coreos/update.conf").read_text()
    assert "REBOOT_STRATEGY=off" in update and "GROUP=stable" in update
    states = _unit_states(machine, ["locksmithd.service"])
    assert states["locksmithd.service"][:2] == ("masked", "inactive")


def test_second_run_changes_nothing_and_says_so(applied):
    machine, _ = applied
    machine.run(["touch", "-d", "now", "/etc/flt-snapshot-mark"])
    before = _snapshot(machine)
    again = _cloudinit(machine, "--from-file", "/root/user-data")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "no changes" in again.stdout
    assert "[change]" not in again.stdout
    assert _snapshot(machine) == before


# -- a config drive --------------------------------------------------------------------

def _make_config_drive(image: Path, user_data: str) -> None:
    """A filesystem image labelled config-2 holding openstack/latest/user_data.

    ext4 rather than vfat/iso9660: the test kernel has neither of those, and the datasource
    finds the drive by its label, whatever the filesystem."""
    tree = image.parent / "drive-tree"
    (tree / "openstack/latest").mkdir(parents=True)
    (tree / "openstack/latest/user_data").write_text(user_data)
    subprocess.run(["truncate", "-s", "8M", str(image)], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-L", "config-2", "-d", str(tree), str(image)],
                   check=True, capture_output=True)


def test_config_drive_from_loop_image_is_applied(applied, tmp_path):
    machine, _ = applied
    image = tmp_path / "config-2.img"
    _make_config_drive(image, "#cloud-config\nwrite_files:\n  - path: /etc/flt/from-drive\n"
                              "    content: drive-ok\n")
    label = subprocess.run(["blkid", "-o", "value", "-s", "LABEL", str(image)],
                           capture_output=True, text=True, check=True).stdout.strip()
    assert label == "config-2"
    mnt = tmp_path / "ro"
    mnt.mkdir()
    subprocess.run(["mount", "-o", "loop,ro", str(image), str(mnt)], check=True)
    try:
        machine.copy_in(mnt, "/media/configdrive")
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
    result = _cloudinit(machine, "--from-configdrive=/media/configdrive")
    assert result.returncode == 0, result.stdout + result.stderr
    assert machine.path("/etc/flt/from-drive").read_text() == "drive-ok"


# -- a script --------------------------------------------------------------------------

def test_script_user_data_runs_as_transient_unit(applied):
    machine, _ = applied
    machine.write_file("/root/script-data",
                       "#!/bin/bash\necho \"ran as $INVOCATION_ID\" > /run/flt-script.out\n")
    result = _cloudinit(machine, "--from-file", "/root/script-data")
    assert result.returncode == 0, result.stdout + result.stderr
    unit = machine.path("/var/lib/flotilla-cloudinit/scripts/unit-name").read_text().strip()
    assert unit.startswith("flotilla-cloudinit-") and unit in result.stdout
    output = wait_until(lambda: machine.path("/run/flt-script.out").exists()
                   and machine.path("/run/flt-script.out").read_text(), 30, "script output")
    assert output.startswith("ran as ") and len(output.strip()) > len("ran as ")
    # It ran under systemd as that unit: the journal knows the unit.
    logged = wait_until(lambda: machine.run(["journalctl", "--no-pager", "-u", unit],
                                       check=False).stdout.count(unit.removesuffix(".service")),
                   20, f"journal entries of {unit}")
    assert logged


# -- bad input -------------------------------------------------------------------------

BAD_INPUTS = {
    "malformed-yaml": "#cloud-config\nwrite_files:\n  - path: /etc/flt/bad1\n   content: [\n",
    "dotdot-path": "#cloud-config\nwrite_files:\n  - path: /etc/flt/../flt-bad2\n"
                   "    content: x\n",
    "unknown-encoding": "#cloud-config\nwrite_files:\n  - path: /etc/flt/bad3\n"
                        "    encoding: rot13\n    content: x\n",
    "command-on-missing-unit": "#cloud-config\nwrite_files:\n  - path: /etc/flt/bad4\n"
                               "    content: x\ncoreos:\n  units:\n"
                               "    - name: flt-does-not-exist.service\n      command: start\n",
    "wrong-type": "#cloud-config\nhostname: [not, a, string]\nwrite_files:\n"
                  "  - path: /etc/flt/bad5\n    content: x\n",
}


# What each refusal must name, so an operator can find the problem.
BAD_INPUT_NAMES = {
    "malformed-yaml": "line",
    "dotdot-path": "..",
    "unknown-encoding": "rot13",
    "command-on-missing-unit": "flt-does-not-exist.service",
    "wrong-type": "hostname",
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_fails_and_changes_nothing(applied, case):
    machine, _ = applied
    machine.run(["touch", "-d", "now", "/etc/flt-snapshot-mark"])
    before = _snapshot(machine)
    machine.write_file(f"/root/bad-{case}", BAD_INPUTS[case])
    result = _cloudinit(machine, "--from-file", f"/root/bad-{case}")
    assert result.returncode != 0, result.stdout + result.stderr
    assert BAD_INPUT_NAMES[case] in result.stderr, result.stderr
    assert _snapshot(machine) == before
    assert not any(machine.path(f"/etc/flt/bad{i}").exists() for i in range(1, 6))
    assert not machine.path("/etc/flt-bad2").exists()
    assert machine.path("/etc/hostname").read_text().strip() == "flt-ci-host"


# -- the units -------------------------------------------------------------------------

def test_path_unit_applies_user_data_through_systemd(applied):
    machine, _ = applied
    machine.run(["systemctl", "start", "flotilla-cloudinit-user-config.target"], check=False)
    path_unit = "flotilla-cloudinit@var-lib-flotilla-user_data.path"
    wait_until(lambda: _unit_states(machine, [path_unit])[path_unit][1] == "active", 30,
          f"{path_unit} active")
    machine.write_file("/var/lib/flotilla/user_data.tmp",
                       "#cloud-config\nwrite_files:\n  - path: /etc/flt/from-path-unit\n"
                       "    content: by-systemd\n")
    os.rename(machine.path("/var/lib/flotilla/user_data.tmp"),
              machine.path("/var/lib/flotilla/user_data"))
    target = machine.path("/etc/flt/from-path-unit")
    wait_until(target.exists, 60, "the path unit's service to apply the config")
    assert target.read_text() == "by-systemd"
    service = "flotilla-cloudinit@var-lib-flotilla-user_data.service"
    state = wait_until(lambda: _unit_states(machine, [service])[service][1] in ("active", "failed")
                  and _unit_states(machine, [service])[service], 30, f"{service} finished")
    assert state[:3] == ("loaded", "active", "exited")



def test_enabled_target_applies_user_data_on_boot(applied):
    """Last in this module: reboots the shared machine."""
    machine, _ = applied
    machine.run(["systemctl", "enable", "flotilla-cloudinit-user-config.target"])
    machine.write_file("/var/lib/flotilla/user_data",
                       "#cloud-config\nwrite_files:\n  - path: /etc/flt/from-boot\n"
                       "    content: applied-at-boot\n")
    machine.restart()
    service = "flotilla-cloudinit@var-lib-flotilla-user_data.service"
    state = wait_until(lambda: _unit_states(machine, [service])[service][1] in ("active", "failed")
                  and _unit_states(machine, [service])[service], 30, f"{service} at boot")
    assert state == ("loaded", "active", "exited")
    assert machine.path("/etc/flt/from-boot").read_text() == "applied-at-boot"
    # The earlier runs' state survived the reboot; the boot run only added the new file.
    assert machine.path("/etc/hostname").read_text().strip() == "flt-ci-host"
