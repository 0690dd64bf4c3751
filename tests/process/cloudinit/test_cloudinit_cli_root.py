"""The flotilla-cloudinit command applied to a temp root: files, users, keys, drop-ins,
update.conf; a second run changes nothing; bad input changes nothing and exits non-zero.

With ``--root`` there is no systemd or hostnamed to talk to (the command records what it
would ask them), so what only they can do is checked where they run: a script really
running as a transient unit after the config, and the hostnamed client refusing a
metadata hostname on a running machine, are in tests/system/test_cloudinit_script_machine.py.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from .roots import CMD, run_cloudinit, snapshot


@pytest.fixture
def as_root() -> None:
    """useradd --prefix needs root; the tests run as root and tests/setup.sh installs
    useradd, so a gap is a broken setup: fail and name it (a skip would hide it in CI)."""
    problems = [] if os.geteuid() == 0 else ["not running as root (useradd --prefix needs it)"]
    if shutil.which("useradd") is None:
        problems.append("useradd is missing (the passwd package)")
    if problems:
        pytest.fail("cannot create users in a root: " + "; ".join(problems))

CONFIG = """\
#cloud-config
hostname: node7
ssh_authorized_keys:
  - ssh-ed25519 AAAAC3Nza core@laptop
write_files:
  - path: /etc/motd
    permissions: "0640"
    content: "hello from $public_ipv4\\n"
  - path: /opt/data/todo
    encoding: gz+b64
    content: H4sIABMVh1QAA0tKLAIAqoz/dgMAAAA=
manage_etc_hosts: localhost
coreos:
  etcd2:
    name: node7
    advertise-client-urls: http://$public_ipv4:2379
  locksmith:
    group: g1
  update:
    reboot-strategy: etcd-lock
    group: beta
  units:
    - name: app.service
      enable: true
      command: start
      content: |
        [Service]
        ExecStart=/bin/true
        [Install]
        WantedBy=multi-user.target
      drop-ins:
        - name: 10-env.conf
          content: |
            [Service]
            Environment=A=1
"""


def make_root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/bash\n"
                                     "core:x:500:500:Core:/home/core:/bin/bash\n")
    (root / "etc/group").write_text("root:x:0:\ncore:x:500:\nsudo:x:27:\n")
    (root / "etc/shadow").write_text("root:*:19000:0:99999:7:::\ncore:*:19000:0:99999:7:::\n")
    (root / "etc/gshadow").write_text("root:*::\ncore:!::\nsudo:*::\n")
    (root / "etc/login.defs").write_text("")
    (root / "home/core").mkdir(parents=True)
    units = root / "usr/lib/systemd/system"
    units.mkdir(parents=True)
    for name in ("locksmithd.service", "update-engine.service"):
        (units / name).write_text("[Service]\nExecStart=/bin/true\n")
    return root


def run(root: Path, config: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return run_cloudinit(root, config, *extra, addresses={"COREOS_PUBLIC_IPV4": "203.0.113.7"})


@pytest.mark.timeout(60)
def test_apply_to_root_then_second_run_changes_nothing(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    config = tmp_path / "user_data"
    config.write_text(CONFIG)
    first = run(root, config)
    assert first.returncode == 0, first.stderr
    assert "applied" in first.stdout
    motd = root / "etc/motd"
    assert motd.read_text() == "hello from 203.0.113.7\n"
    assert (motd.stat().st_mode & 0o777) == 0o640
    assert (root / "opt/data/todo").read_bytes() == b"bar"
    assert (root / "etc/hostname").read_text() == "node7\n"
    assert (root / "etc/hosts").read_text() == "127.0.0.1 node7\n"
    assert (root / "etc/coreos/update.conf").read_text() == (
        "GROUP=beta\nREBOOT_STRATEGY=etcd-lock\n")
    assert (root / "etc/environment").read_text() == "COREOS_PUBLIC_IPV4=203.0.113.7\n"
    etcd = ('[Service]\nEnvironment="ETCD_ADVERTISE_CLIENT_URLS=http://203.0.113.7:2379"\n'
            'Environment="ETCD_NAME=node7"\n')
    for unit in ("etcd2.service", "kvd.service"):
        assert (root / f"run/systemd/system/{unit}.d/20-cloudinit.conf").read_text() == etcd
    assert (root / "run/systemd/system/locksmithd.service.d/20-cloudinit.conf").read_text() == (
        '[Service]\nEnvironment="LOCKSMITHD_GROUP=g1"\n')
    assert (root / "etc/systemd/system/app.service.d/10-env.conf").read_text() == (
        "[Service]\nEnvironment=A=1\n")
    assert (root / "etc/systemd/system/multi-user.target.wants/app.service").is_symlink()
    keys = root / "home/core/.ssh"
    assert (keys / "authorized_keys.d/coreos-cloudinit").read_text() == (
        "ssh-ed25519 AAAAC3Nza core@laptop\n")
    assert "ssh-ed25519 AAAAC3Nza core@laptop" in (keys / "authorized_keys").read_text()
    assert (keys.stat().st_uid, keys.stat().st_mode & 0o777) == (500, 0o700)
    lines = first.stdout.splitlines()
    assert lines.index("[change] daemon-reload") < lines.index("[change] start app.service")
    # The closing line splits the run's time the way the benchmark reads it.
    assert re.search(r"^applied \d+ change\(s\) \(own \d+ ms, systemd \d+ ms, "
                     r"useradd/usermod \d+ ms, cpu \d+ ms, file sync \d+ ms\)$",
                     lines[-1]), lines[-1]

    before = snapshot(root)
    second = run(root, config)
    assert second.returncode == 0, second.stderr
    assert "no changes: the machine already matches the config" in second.stdout
    assert not [line for line in second.stdout.splitlines() if line.startswith("[change]")]
    assert snapshot(root) == before


@pytest.mark.timeout(60)
@pytest.mark.usefixtures("as_root")
def test_users_are_created_with_useradd_once(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    config = tmp_path / "user_data"
    config.write_text("#cloud-config\nusers:\n  - name: elroy\n    passwd: $6$s$h\n"
                      "    groups: [sudo]\n    gecos: Elroy Jetson\n"
                      "    ssh-authorized-keys: [ssh-rsa AAAAB elroy@x]\n")
    first = run(root, config)
    assert first.returncode == 0, first.stderr
    passwd = (root / "etc/passwd").read_text()
    assert "elroy:x:" in passwd and "Elroy Jetson" in passwd
    assert "elroy:$6$s$h:" in (root / "etc/shadow").read_text()
    assert "sudo:x:27:elroy" in (root / "etc/group").read_text()
    key = root / "home/elroy/.ssh/authorized_keys.d/coreos-cloudinit"
    assert key.read_text() == "ssh-rsa AAAAB elroy@x\n"
    second = run(root, config)
    assert "no changes" in second.stdout, second.stdout + second.stderr


BAD = {
    "malformed yaml": "#cloud-config\nwrite_files:\n  - path: /etc/a\n   content: [x\n",
    "wrong type": "#cloud-config\nhostname: h\nusers: elroy\n",
    "dotdot path": "#cloud-config\nwrite_files:\n  - path: /etc/../root/x\n    content: x\n",
    "unknown encoding": ("#cloud-config\nwrite_files:\n  - path: /etc/a\n    encoding: rot13\n"
                         "    content: x\n"),
    "missing unit": ("#cloud-config\nhostname: h\nwrite_files:\n  - path: /etc/a\n"
                     "    content: x\ncoreos:\n  units:\n    - name: nope.service\n"
                     "      command: start\n"),
    "bad value": "#cloud-config\nhostname: h\ncoreos:\n  update:\n    reboot-strategy: sometimes\n",
    "user name like an option": ("#cloud-config\nwrite_files:\n  - path: /etc/a\n"
                                 "    content: x\nusers:\n  - name: --badname\n"),
    # Refused by the validator, which applies hostnamed's rule before anything is asked;
    # a metadata hostname skips the validator (test_metadata_hostname_... below).
    "hostname outside hostnamed's rule": ("#cloud-config\nhostname: 'no spaces allowed'\n"
                                          "write_files:\n  - path: /etc/a\n    content: x\n"),
    "a directory as a file": "#cloud-config\nwrite_files:\n  - path: /etc/\n    content: x\n",
}


# What each refusal names, so the operator finds the problem (and the test knows that the
# refusal came from the check it is about, not from an earlier one).
BAD_NAMES = {
    "malformed yaml": "line",
    "wrong type": "users",
    "dotdot path": "/etc/../root/x",
    "unknown encoding": "rot13",
    "missing unit": "nope.service",
    "bad value": "sometimes",
    "user name like an option": "--badname",
    "hostname outside hostnamed's rule": 'invalid hostname "no spaces allowed"',
    "a directory as a file": "/etc/",
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_changes_nothing_and_fails(tmp_path: Path, case: str) -> None:
    root = make_root(tmp_path)
    config = tmp_path / "user_data"
    config.write_text(BAD[case])
    before = snapshot(root)
    result = run(root, config)
    assert result.returncode == 1
    assert "nothing was changed" in result.stderr
    assert BAD_NAMES[case] in result.stderr, result.stderr
    assert not [line for line in result.stdout.splitlines() if line.startswith("[change]")]
    assert snapshot(root) == before


@pytest.mark.timeout(60)
def test_dry_run_prints_steps_and_applies_nothing(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    config = tmp_path / "user_data"
    config.write_text(CONFIG)
    before = snapshot(root)
    result = run(root, config, "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "[change] write /etc/motd mode 0640 (23 bytes)" in result.stdout
    assert result.stdout.rstrip().endswith("change(s) planned")
    assert snapshot(root) == before


@pytest.mark.timeout(60)
def test_ignition_config_is_left_alone(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    config = tmp_path / "user_data"
    config.write_text('{"ignition": {"version": "3.4.0"}}')
    result = run(root, config)
    assert result.returncode == 0
    assert "Detected an Ignition config. Exiting..." in result.stdout


@pytest.mark.timeout(60)
def test_script_is_saved_and_handed_to_systemd_after_the_metadata_is_applied(
        tmp_path: Path) -> None:
    """A script from a config drive: the drive's hostname and key are applied first, then
    the script, with its tokens substituted, is saved 0744 and handed to systemd as a
    transient unit; nothing of the script runs in the command itself."""
    root = make_root(tmp_path)
    latest = tmp_path / "drive/openstack/latest"
    latest.mkdir(parents=True)
    (latest / "user_data").write_text("#!/bin/bash\necho $public_ipv4 > /tmp/x\n")
    (latest / "meta_data.json").write_text(
        '{"hostname": "scripted", "public_keys": {"k": "ssh-rsa AAAAscript k"}}')
    env = {**os.environ, "COREOS_PUBLIC_IPV4": "203.0.113.7"}
    result = subprocess.run([*CMD, "--from-configdrive", str(tmp_path / "drive"), "--root",
                             str(root), "--workspace", "/var/lib/fc"],
                            capture_output=True, text=True, timeout=60, env=env, check=False)
    assert result.returncode == 0, result.stderr
    unit = (root / "var/lib/fc/scripts/unit-name").read_text().strip()
    assert re.fullmatch(r"flotilla-cloudinit-[0-9a-f]{12}\.service", unit), unit
    script = root / "var/lib/fc/scripts" / unit.removeprefix("flotilla-cloudinit-").removesuffix(
        ".service")
    assert script.read_text() == "#!/bin/bash\necho 203.0.113.7 > /tmp/x\n"
    assert (script.stat().st_mode & 0o777) == 0o744
    assert sorted(p.name for p in script.parent.iterdir()) == sorted([script.name, "unit-name"])
    changes = [line for line in result.stdout.splitlines() if line.startswith("[change]")]
    assert changes[-1] == f"[change] run script as {unit}", changes
    assert "[change] set hostname scripted" in changes[:-1], changes
    assert "[change] ssh keys for core as coreos-cloudinit (1 keys)" in changes[:-1], changes
    assert (root / "etc/hostname").read_text() == "scripted\n"
    assert (root / "home/core/.ssh/authorized_keys.d/coreos-cloudinit").read_text() == (
        "ssh-rsa AAAAscript k\n")
    assert not (root / "tmp/x").exists() and not Path("/tmp/x").exists()
    assert result.stdout.splitlines()[-1].startswith("applied ")


@pytest.mark.timeout(60)
def test_metadata_hostname_outside_hostnameds_rule_is_refused_for_a_root_too(
        tmp_path: Path) -> None:
    """The metadata's hostname skips the cloud-config validator; on a running machine the
    hostnamed client refuses it, and a --root run must refuse it the same way instead of
    writing it to the image's /etc/hostname."""
    root = make_root(tmp_path)
    latest = tmp_path / "drive/openstack/latest"
    latest.mkdir(parents=True)
    (latest / "user_data").write_text("#cloud-config\nwrite_files:\n  - path: /etc/a\n"
                                      "    content: x\n")
    (latest / "meta_data.json").write_text('{"hostname": "no spaces allowed"}')
    before = snapshot(root)
    result = subprocess.run([*CMD, "--from-configdrive", str(tmp_path / "drive"), "--root",
                             str(root)], capture_output=True, text=True, timeout=60,
                            check=False)
    assert result.returncode == 1, result.stdout + result.stderr
    assert ("failed: set hostname no spaces allowed: hostname no spaces allowed: "
            "invalid hostname 'no spaces allowed'") in result.stderr, result.stderr
    assert snapshot(root) == before
