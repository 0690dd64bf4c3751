"""Merge rules, Butane translation, data URLs, backoff, chroot-style path resolution."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest
from flotilla.ignition import butane, config, fetch, rootpath, storage, units, urls
from flotilla.ignition.merge import merge
from flotilla.ignition.passwd import plan_user

V = {"version": "3.6.0"}


def test_child_fields_override_and_keyed_lists_merge() -> None:
    parent = {"ignition": V, "storage": {"files": [
        {"path": "/a", "mode": 0o600, "contents": {"source": "data:,p"}},
        {"path": "/b", "contents": {"source": "data:,b"}}]},
        "systemd": {"units": [{"name": "x.service", "contents": "[Unit]"}]}}
    child = {"ignition": V, "storage": {"files": [
        {"path": "/a", "contents": {"source": "data:,c"}}, {"path": "/new"}]},
        "systemd": {"units": [{"name": "x.service", "enabled": True}]}}
    merged = merge(parent, child)
    files = merged["storage"]["files"]
    assert [f["path"] for f in files] == ["/a", "/b", "/new"]
    assert files[0] == {"path": "/a", "mode": 0o600, "contents": {"source": "data:,c"}}
    assert merged["systemd"]["units"] == [
        {"name": "x.service", "contents": "[Unit]", "enabled": True}]
    assert parent["storage"]["files"][0]["contents"]["source"] == "data:,p"


def test_directory_in_child_replaces_file_in_parent() -> None:
    parent = {"storage": {"files": [{"path": "/x"}], "links": [{"path": "/l", "target": "/t"}]}}
    child = {"storage": {"directories": [{"path": "/x"}]}}
    merged = merge(parent, child)
    assert merged["storage"]["files"] == []
    assert merged["storage"]["directories"] == [{"path": "/x"}]
    assert merged["storage"]["links"] == [{"path": "/l", "target": "/t"}]


def test_appends_concatenate_and_header_without_value_is_removed() -> None:
    parent = {"storage": {"files": [{"path": "/f", "append": [{"source": "data:,1"}],
                                     "contents": {"source": "http://h/x", "httpHeaders": [
                                         {"name": "A", "value": "1"},
                                         {"name": "B", "value": "2"}]}}]}}
    child = {"storage": {"files": [{"path": "/f", "append": [{"source": "data:,1"}],
                                    "contents": {"httpHeaders": [{"name": "A"}]}}]}}
    merged = merge(parent, child)["storage"]["files"][0]
    assert len(merged["append"]) == 2
    assert merged["contents"]["httpHeaders"] == [{"name": "B", "value": "2"}]


def test_users_by_name_keys_deduplicated_and_kargs_share_key_space() -> None:
    parent = {"passwd": {"users": [{"name": "core", "sshAuthorizedKeys": ["k1"]}]},
              "kernelArguments": {"shouldExist": ["quiet"]}}
    child = {"passwd": {"users": [{"name": "core", "sshAuthorizedKeys": ["k1", "k2"]}]},
             "kernelArguments": {"shouldNotExist": ["quiet"]}}
    merged = merge(parent, child)
    assert merged["passwd"]["users"][0]["sshAuthorizedKeys"] == ["k1", "k2"]
    assert merged["kernelArguments"] == {"shouldExist": [], "shouldNotExist": ["quiet"]}


@pytest.mark.parametrize(("version", "spec"), [("1.0.0", "3.0.0"), ("1.1.0", "3.1.0"),
                                                ("1.2.0", "3.2.0"), ("1.3.0", "3.2.0"),
                                                ("1.4.0", "3.3.0"), ("1.5.0", "3.4.0")])
def test_butane_fcos_versions_map_to_specs(version: str, spec: str) -> None:
    out = butane.translate({"variant": "fcos", "version": version})
    assert out["ignition"]["version"] == spec


def test_butane_inline_local_octal_mode_and_snake_case(tmp_path: Path) -> None:
    (tmp_path / "motd").write_bytes(b"\x00binary\xff")
    raw = b"""variant: fcos
version: 1.4.0
passwd:
  users:
    - name: core
      ssh_authorized_keys: [ssh-ed25519 AAA]
storage:
  files:
    - path: /etc/hello
      mode: 0640
      contents:
        inline: |
          hello world
    - path: /etc/motd
      contents:
        local: motd
  disks:
    - device: /dev/vdb
      wipe_table: true
      partitions: [{label: data, size_mib: 100}]
"""
    out = butane.translate_bytes(raw, files_dir=str(tmp_path))
    files = out["storage"]["files"]
    assert files[0]["mode"] == 0o640
    assert urls.decode_data_url(files[0]["contents"]["source"]) == b"hello world\n"
    assert urls.decode_data_url(files[1]["contents"]["source"]) == b"\x00binary\xff"
    assert out["passwd"]["users"][0]["sshAuthorizedKeys"] == ["ssh-ed25519 AAA"]
    assert out["storage"]["disks"][0]["partitions"][0]["sizeMiB"] == 100
    assert out["storage"]["disks"][0]["wipeTable"] is True
    parsed = config.parse(__import__("json").dumps(out))
    assert not parsed.report.fatal


def test_butane_local_cannot_escape_files_dir(tmp_path: Path) -> None:
    raw = b"variant: fcos\nversion: 1.4.0\nstorage:\n  files:\n    - path: /x\n" \
          b"      contents:\n        local: ../../etc/passwd\n"
    with pytest.raises(butane.ButaneError, match="outside the files directory"):
        butane.translate_bytes(raw, files_dir=str(tmp_path))


def test_butane_strict_flags_decimal_looking_mode() -> None:
    doc = {"variant": "fcos", "version": "1.4.0",
           "storage": {"files": [{"path": "/x", "mode": 644}]}}
    with pytest.raises(butane.ButaneError, match="remember to add a leading zero"):
        butane.translate(doc, strict=True)


def test_data_urls_base64_and_percent() -> None:
    assert urls.decode_data_url("data:,a%20b%0A") == b"a b\n"
    assert urls.decode_data_url("data:text/plain;base64," +
                                base64.b64encode(b"xyz").decode()) == b"xyz"
    with pytest.raises(urls.URLError, match="invalid data character"):
        urls.decode_data_url("data:,a b")


def test_backoff_doubles_from_100ms_to_5s() -> None:
    assert fetch.backoff_delays(8) == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]


def test_verify_detects_mismatch() -> None:
    with pytest.raises(fetch.FetchError, match="hash mismatch"):
        fetch.verify(b"x", "sha256-" + "0" * 64)


def test_symlink_pointing_outside_stays_inside_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    os.symlink("/../../../../tmp", root / "etc" / "out")
    os.symlink("../../../..", root / "up")
    assert rootpath.resolve(str(root), "/etc/out/x") == str(root / "tmp" / "x")
    assert rootpath.resolve(str(root), "/up/etc/f") == str(root / "etc" / "f")


def test_preset_lines_and_instances() -> None:
    lines = units.preset_lines([{"name": "a.service", "enabled": True},
                                {"name": "b.service", "enabled": False},
                                {"name": "c.service"},
                                {"name": "getty@tty1.service", "enabled": True}])
    assert lines == ["enable a.service", "disable b.service", "enable getty@.service tty1"]


def test_useradd_arguments_cover_every_field() -> None:
    args = plan_user("/r", {"name": "u", "uid": 5, "gecos": "G", "homeDir": "/h",
                            "noCreateHome": True, "primaryGroup": "g", "groups": ["a", "b"],
                            "noUserGroup": True, "system": True, "noLogInit": True,
                            "shell": "/bin/sh", "passwordHash": "$6$x"}, existing=False)
    assert args == ["useradd", "--root", "/r", "--home-dir", "/h", "--no-create-home",
                    "--password", "$6$x", "--uid", "5", "--comment", "G", "--gid", "g",
                    "--groups", "a,b", "--no-user-group", "--system", "--no-log-init",
                    "--shell", "/bin/sh", "u"]


def test_sgdisk_plan_for_labels_sizes_and_types() -> None:
    plan = storage.plan_partitions({"device": "/dev/x", "wipeTable": True, "partitions": [
        {"number": 1, "label": "root", "sizeMiB": 100, "startMiB": 1,
         "typeGuid": "0FC63DAF-8483-4772-8E79-3D69D8477DE4"},
        {"number": 3, "shouldExist": False}]})
    assert plan == [["sgdisk", "--zap-all", "/dev/x"],
                    ["sgdisk", "--delete=3", "/dev/x"],
                    ["sgdisk", "--new=1:1M:+100M", "--change-name=1:root",
                     "--typecode=1:0FC63DAF-8483-4772-8E79-3D69D8477DE4", "/dev/x"]]
