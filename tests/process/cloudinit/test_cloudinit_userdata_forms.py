"""User-data in its other forms, through the command: gzip'd cloud-config and scripts,
Ignition configs (left alone) and unrecognised text (refused, nothing changed)."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from pathlib import Path

import pytest

CMD = [sys.executable, "-m", "flotilla.cloudinit.main"]


def _root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    return root


def _run(root: Path, data: bytes, *extra: str) -> subprocess.CompletedProcess[str]:
    user_data = root.parent / "user_data"
    user_data.write_bytes(data)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("COREOS_")},
           "COREOS_PRIVATE_IPV4": "10.9.8.7"}
    return subprocess.run([*CMD, "--from-file", str(user_data), "--root", str(root), *extra],
                          capture_output=True, text=True, timeout=60, env=env, check=False)


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() if p.is_file() else b""
            for p in sorted(root.rglob("*"))}


@pytest.mark.timeout(60)
def test_gzip_cloud_config_is_unpacked_substituted_and_applied(tmp_path: Path) -> None:
    root = _root(tmp_path)
    config = (b"#cloud-config\nwrite_files:\n  - path: /etc/gz\n"
              b"    content: 'addr=$private_ipv4'\n")
    result = _run(root, gzip.compress(config))
    assert result.returncode == 0, result.stderr
    assert (root / "etc/gz").read_text() == "addr=10.9.8.7"
    again = _run(root, gzip.compress(config))
    assert "no changes" in again.stdout, again.stdout + again.stderr


@pytest.mark.timeout(60)
def test_gzip_script_is_saved_substituted_and_run_as_a_unit(tmp_path: Path) -> None:
    root = _root(tmp_path)
    result = _run(root, gzip.compress(b"#!/bin/bash\necho $private_ipv4\n"),
                  "--workspace", "/var/lib/fc")
    assert result.returncode == 0, result.stderr
    unit = (root / "var/lib/fc/scripts/unit-name").read_text().strip()
    script = root / "var/lib/fc/scripts" / unit.removeprefix("flotilla-cloudinit-").removesuffix(
        ".service")
    assert script.read_text() == "#!/bin/bash\necho 10.9.8.7\n"
    assert f"run script as {unit}" in result.stdout


@pytest.mark.timeout(60)
def test_broken_gzip_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    root = _root(tmp_path)
    before = _tree(root)
    result = _run(root, b"\x1f\x8b\x08\x00not gzip at all")
    assert result.returncode == 1
    assert "gzip" in result.stderr
    assert _tree(root) == before


@pytest.mark.timeout(60)
@pytest.mark.parametrize("data", [
    b'{"ignition": {"version": "3.4.0"}, "storage": {"files": [{"path": "/etc/x"}]}}',
    b'{"ignitionVersion": 1}',
    gzip.compress(b'{"ignition": {"version": "2.3.0"}}'),
], ids=["v3", "v1", "gzip"])
def test_ignition_config_is_recognised_and_nothing_is_touched(tmp_path: Path,
                                                              data: bytes) -> None:
    root = _root(tmp_path)
    before = _tree(root)
    result = _run(root, data)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "Detected an Ignition config. Exiting..."
    assert _tree(root) == before


@pytest.mark.timeout(60)
def test_unrecognised_user_data_changes_nothing_and_fails(tmp_path: Path) -> None:
    root = _root(tmp_path)
    before = _tree(root)
    result = _run(root, b"hostname: not-a-cloud-config\n")
    assert result.returncode == 1
    assert "unrecognized user-data format" in result.stderr
    assert _tree(root) == before
    ignored = _run(root, b"hostname: not-a-cloud-config\n", "--ignore-failure")
    assert ignored.returncode == 0


@pytest.mark.timeout(60)
def test_without_a_system_bus_the_error_says_so_and_nothing_changes(tmp_path: Path) -> None:
    target = tmp_path / "never-written"
    user_data = tmp_path / "user_data"
    user_data.write_text(f"#cloud-config\nwrite_files:\n  - path: {target}\n    content: x\n")
    env = {**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": f"unix:path={tmp_path}/no-bus-here"}
    env.pop("FLOTILLA_CLOUDINIT_OFFLINE", None)
    result = subprocess.run([*CMD, "--from-file", str(user_data)], capture_output=True,
                            text=True, timeout=60, env=env, check=False)
    assert result.returncode == 1
    assert "cannot reach systemd over D-Bus" in result.stderr
    assert "nothing was changed" in result.stderr
    assert "Traceback" not in result.stderr
    assert not target.exists()
