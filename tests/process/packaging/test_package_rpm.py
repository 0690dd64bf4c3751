"""The .rpm is built from the same description; its file list and dependencies hold."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.packages import built_packages, console_scripts, shipped_units


def _rpm(*args: str) -> str:
    if shutil.which("rpm") is None:
        pytest.fail("rpm is not installed; the README's test command installs it")
    path = built_packages()["rpm"]
    return subprocess.run(["rpm", "-qp", *args, str(path)], capture_output=True, text=True,
                          check=True).stdout


def test_rpm_names_and_version():
    assert _rpm("--queryformat", "%{NAME} %{VERSION} %{ARCH}") == "flotilla 0.1.0 x86_64"


def test_rpm_ships_scripts_units_and_python_tree():
    files = set(_rpm("-l").split())
    for script in console_scripts():
        assert f"/usr/bin/{script}" in files
    for unit in shipped_units():
        assert f"/usr/lib/systemd/system/{unit}" in files
    assert "/usr/lib/flotilla/python/flotilla/daemons/__init__.py" in files
    assert not any(f.startswith("/usr/lib/flotilla/python/bin/") for f in files)


def test_rpm_dependencies():
    requires = {line.strip() for line in _rpm("--requires").splitlines()}
    assert "python(abi) = 3.11" in requires
    assert "systemd" in requires
    assert "dbus" in requires


def test_deb_and_rpm_carry_the_same_files():
    deb = built_packages()["deb"]
    listing = subprocess.run(["dpkg-deb", "-c", str(deb)], capture_output=True, text=True,
                             check=True).stdout
    deb_files = {
        line.split()[-1].lstrip(".") for line in listing.splitlines() if not line.startswith("d")
    }
    rpm_files = {f for f in _rpm("-l").split() if not f.endswith("/")}
    only_deb = {f for f in deb_files - rpm_files if "->" not in f}
    assert not only_deb, sorted(only_deb)[:10]
