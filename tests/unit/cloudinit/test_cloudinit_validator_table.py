"""The validator on the original's own rule cases and observed outputs, as our table."""

from __future__ import annotations

import pytest
from flotilla.cloudinit.main import validate_command
from flotilla.cloudinit.validate import validate_text

H = "#cloud-config\n"

# (user-data, expected entries). Lines count the "#cloud-config" header as line 1.
CASES: list[tuple[str, list[str]]] = [
    ("", []),
    (H, []),
    ("#!/bin/bash\necho hi\n", []),
    ('{"ignition": {"version": "3.4.0"}}', []),
    ("hello\n", ['line 1: error: must be "#cloud-config" or begin with "#!"']),
    ("#cloud-config foo\nhostname: a\n",
     ['line 1: error: must be "#cloud-config" or begin with "#!"']),
    ("#cloud-config \nhostname: a\n", []),
    # discovery URL (etcd only). The original also warned that etcd, etcd2 and fleet are
    # "no longer shipped"; here they configure kvd and fleetd, so that warning is gone.
    (H + "coreos:\n  etcd:\n    discovery: https://discovery.etcd.io/0000\n", []),
    (H + "coreos:\n  locksmith:\n    endpoint: disco\n", []),
    (H + "coreos:\n  etcd:\n    discovery: disco\n", [
        "line 4: warning: discovery URL is not valid"]),
    # encodings
    (H + "write_files:\n  - path: /a\n    encoding: base64\n    content: aGVsbG8K\n", []),
    (H + "write_files:\n  - path: /a\n    content: !!binary aGVsbG8K\n", []),
    (H + "write_files:\n  - path: /a\n    encoding: base64\n    content: !!binary aGVsbG8K\n",
     ['line 5: error: content cannot be decoded as "base64"']),
    (H + "write_files:\n  - path: /a\n    encoding: base64\n    content: !!binary "
         "YUdWc2JHOEsK\n", []),
    (H + "write_files:\n  - path: /a\n    encoding: gzip\n    content: !!binary "
         "H4sIAOC3tVQAA8tIzcnJ5wIAIDA6NgYAAAA=\n", []),
    (H + "write_files:\n  - path: /a\n    encoding: gzip+base64\n    content: "
         "H4sIAOC3tVQAA8tIzcnJ5wIAIDA6NgYAAAA=\n", []),
    (H + "write_files:\n  - path: /a\n    encoding: custom\n    content: hello\n", [
        'line 5: error: content cannot be decoded as "custom"',
        "line 4: error: invalid value custom"]),
    # structure: unknown keys
    (H + "test:\n", ['line 2: warning: unrecognized key "test"']),
    (H + "hostnme: foo\n", ['line 2: warning: unrecognized key "hostnme"']),
    (H + "coreos:\n  locksmith:\n    bad:\n", ['line 4: warning: unrecognized key "bad"']),
    (H + "coreos:\n  units:\n    - hello\n    - goodbye\n", [
        'line 4: warning: incorrect type for "units[0]" (want struct)',
        'line 5: warning: incorrect type for "units[1]" (want struct)']),
    # want bool
    (H + "coreos:\n  units:\n    - name: a.service\n      enable: true\n", []),
    (H + "coreos:\n  units:\n    - name: a.service\n      enable: yes\n", []),
    (H + "coreos:\n  units:\n    - name: a.service\n      enable: 4\n",
     ['line 5: warning: incorrect type for "enable" (want bool)']),
    (H + "coreos:\n  units:\n    - name: a.service\n      enable: bad\n",
     ['line 5: warning: incorrect type for "enable" (want bool)']),
    (H + "coreos:\n  units:\n    - name: a.service\n      enable:\n        bad:\n",
     ['line 5: warning: incorrect type for "enable" (want bool)']),
    # want string
    (H + "hostname: true\n", []),
    (H + "hostname: 4\n", []),
    (H + "hostname:\n  name:\n", ['line 2: warning: incorrect type for "hostname" (want string)']),
    (H + "hostname:\n  - name\n",
     ['line 2: warning: incorrect type for "hostname" (want string)']),
    # want struct
    (H + "coreos: true\n", ['line 2: warning: incorrect type for "coreos" (want struct)']),
    (H + "coreos: hello\n", ['line 2: warning: incorrect type for "coreos" (want struct)']),
    (H + "coreos:\n  - hello\n", ['line 2: warning: incorrect type for "coreos" (want struct)']),
    # want []string
    (H + "ssh_authorized_keys: ssh-rsa AAAA\n",
     ['line 2: warning: incorrect type for "ssh_authorized_keys" (want []string)']),
    (H + "ssh_authorized_keys:\n  key: value\n",
     ['line 2: warning: incorrect type for "ssh_authorized_keys" (want []string)']),
    (H + "ssh_authorized_keys:\n  - key\n", []),
    (H + "ssh_authorized_keys:\n  - key: value\n",
     ['line 3: warning: incorrect type for "ssh_authorized_keys[0]" (want string)']),
    # want []struct
    (H + "users:\n  bad\n", ['line 2: warning: incorrect type for "users" (want []struct)']),
    (H + "users:\n  - name: good\n", []),
    (H + "users:\n  - name: hi\n  - true\n",
     ['line 4: warning: incorrect type for "users[1]" (want struct)']),
    (H + "users:\n  - - bad\n", ['line 3: warning: incorrect type for "users[0]" (want struct)']),
    # int and float fields
    (H + "coreos:\n  fleet:\n    verbosity: 2\n    etcd_request_timeout: 1\n", []),
    (H + "coreos:\n  etcd2:\n    snapshot-count: lots\n", [
        'line 4: warning: incorrect type for "snapshot_count" (want int)']),
    # allowed values
    (H + "coreos:\n  units:\n    - name: a.service\n      command: launch\n",
     ["line 5: error: invalid value launch"]),
    (H + "coreos:\n  update:\n    reboot-strategy: off\n", []),
    (H + "coreos:\n  update:\n    reboot-strategy: sometimes\n",
     ["line 4: error: invalid value sometimes"]),
    (H + "coreos:\n  update:\n    reboot-strategy: false\n",
     ["line 4: error: invalid value false"]),
    (H + "coreos:\n  locksmith:\n    window-start: Thu 25:00\n",
     ["line 4: error: invalid value Thu 25:00"]),
    (H + "write_files:\n  - path: /a\n    permissions: 0744\n", []),
    (H + "write_files:\n  - path: /a\n    permissions: '0744'\n", []),
    (H + "write_files:\n  - path: /a\n    permissions: 744\n", []),
    (H + "write_files:\n  - path: /a\n    permissions: 0999\n",
     ["line 4: error: invalid value 0999"]),
    (H + "unknown: hi\n", ['line 2: warning: unrecognized key "unknown"']),
    # read-only paths and write_files under coreos
    (H + "write_files:\n  - path: /usr/invalid\n",
     ["line 3: error: file cannot be written to a read-only filesystem"]),
    (H + "write_files:\n  - path: /tmp/usr/valid\n", []),
    (H + "coreos:\n  write-files:\n    - path: /hyphen\n", [
        'line 3: warning: unrecognized key "write_files"',
        "line 3: info: write_files doesn't belong under coreos"]),
    # YAML syntax errors: the exact line, and no spurious "line 0" entry
    (H + "\t", ["line 2: error: found character that cannot start any token"]),
    (H + "a:\na", ["line 3: error: could not find expected ':'"]),
    (H + "write_files:\n  - path: /a\n    content: !!binary aGVsbG8\n",
     ["line 4: error: !!binary value contains invalid base64 data"]),
    # our own checks for what the executor will touch
    (H + "write_files:\n  - path: /etc/../tmp/x\n",
     ['line 3: error: path "/etc/../tmp/x" must be absolute and must not contain ".."']),
    (H + "write_files:\n  - path: etc/x\n",
     ['line 3: error: path "etc/x" must be absolute and must not contain ".."']),
    (H + "coreos:\n  units:\n    - name: ../x.service\n",
     ['line 4: error: invalid unit name "../x.service"']),
    (H + "manage_etc_hosts: yes\n", ["line 2: error: invalid value yes"]),
    (H + "write_files:\n  - path: /\n    content: x\n",
     ['line 3: error: path "/" names a directory, not a file']),
    (H + "write_files:\n  - path: /etc/dir/\n",
     ['line 3: error: path "/etc/dir/" names a directory, not a file']),
    # Go's path.Dir cleans "//usr" to "/usr"; so must we
    (H + "write_files:\n  - path: //usr/x\n",
     ["line 3: error: file cannot be written to a read-only filesystem"]),
    # a user name useradd would read as options, or that cannot live in /etc/passwd
    (H + "users:\n  - name: -rf\n", ['line 3: error: invalid user name "-rf"']),
    (H + "users:\n  - name: 'a:b'\n", ['line 3: error: invalid user name "a:b"']),
    (H + "users:\n  - name: 'a b'\n", ['line 3: error: invalid user name "a b"']),
    (H + "users:\n  - name: svc.user$\n    homedir: /srv/svc\n", []),
    (H + "users:\n  - name: bob\n    homedir: ../bob\n",
     ['line 4: error: homedir "../bob" must be absolute and must not contain ".."']),
    # hostnamed would refuse these in the middle of a run
    (H + "hostname: 'bad host!'\n", ['line 2: error: invalid hostname "bad host!"']),
    (H + "hostname: -lead\n", ['line 2: error: invalid hostname "-lead"']),
    (H + "hostname: " + "a" * 65 + "\n", [f'line 2: error: invalid hostname "{"a" * 65}"']),
    (H + "hostname: node-1.example.com\n", []),
    # a key given twice (also as a-b and a_b): the last one counts, and we say so
    (H + "hostname: a\nhostname: b\n",
     ['line 2: warning: duplicate key "hostname" (the one on line 3 is used)']),
    (H + "coreos:\n  update:\n    reboot-strategy: 'off'\n    reboot_strategy: reboot\n",
     ['line 4: warning: duplicate key "reboot_strategy" (the one on line 5 is used)']),
]


def test_the_last_of_a_duplicated_key_is_applied() -> None:
    from flotilla.cloudinit.config import from_tree
    from flotilla.cloudinit.rawyaml import load

    cfg = from_tree(load(H + "hostname: a\ncoreos:\n  update:\n    reboot-strategy: 'off'\n"
                             "    reboot_strategy: reboot\nhostname: b\n"))
    assert (cfg.hostname, cfg.coreos.update.reboot_strategy) == ("b", "reboot")


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_validator_case(text: str, expected: list[str]) -> None:
    assert [str(e) for e in validate_text(text)] == expected


def test_validate_command_prints_and_exits_1_on_any_entry(tmp_path, capsys) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text(H + "coreos:\n  update:\n    reboot-strategy: sometimes\n")
    assert validate_command(str(bad)) == 1
    assert capsys.readouterr().out == "line 4: error: invalid value sometimes\n"
    warn = tmp_path / "warn.yml"
    warn.write_text(H + "hostnme: x\n")
    assert validate_command(str(warn)) == 1
    good = tmp_path / "good.yml"
    good.write_text(H + "hostname: x\n")
    assert validate_command(str(good)) == 0
    assert capsys.readouterr().out == 'line 2: warning: unrecognized key "hostnme"\n'


def test_blocking_entries_are_errors_and_wrong_types_only() -> None:
    entries = validate_text(H + "hostnme: x\nusers: bad\n")
    assert [e.blocking for e in entries] == [False, True]
