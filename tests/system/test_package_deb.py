"""The .deb installs with apt into a clean test machine, and what it ships works there."""

from __future__ import annotations

import pytest

from tests.packages import built_packages, console_scripts, shipped_units


@pytest.fixture(scope="module")
def installed(machine):
    machine.install_deb(built_packages()["deb"])
    return machine


def test_package_is_installed(installed):
    status = installed.run(["dpkg-query", "-W", "-f=${Status} ${Version}", "flotilla"]).stdout
    assert status.startswith("install ok installed 0.1.0")


@pytest.mark.parametrize("script", console_scripts())
def test_every_executable_runs(installed, script):
    path = installed.run(["sh", "-c", f"command -v {script}"]).stdout.strip()
    assert path == f"/usr/bin/{script}"
    result = installed.run([script, "--help"], check=False)
    assert result.returncode == 0, f"{script} --help: {result.stderr[-1500:]}"
    assert result.stdout.strip(), f"{script} --help printed nothing"


def test_executables_use_the_machines_own_python(installed):
    for script in console_scripts():
        first = installed.run(["head", "-1", f"/usr/bin/{script}"]).stdout.strip()
        assert first == "#!/usr/bin/python3"


@pytest.mark.parametrize("unit", shipped_units())
def test_every_unit_is_known_to_systemd(installed, unit):
    listed = installed.run(
        ["systemctl", "list-unit-files", "--no-legend", "--no-pager", unit], check=False
    ).stdout
    assert listed.split()[:1] == [unit], f"systemd does not list {unit}: {listed!r}"
    if "@." not in unit:
        load = installed.run(["systemctl", "show", "-P", "LoadState", unit]).stdout.strip()
        assert load == "loaded", f"{unit}: LoadState={load}"


def test_units_pass_systemd_analyze_verify(installed):
    units = [f"/usr/lib/systemd/system/{u}" for u in shipped_units() if "@." not in u]
    result = installed.run(["systemd-analyze", "verify", *units], check=False)
    problems = [
        line for line in result.stderr.splitlines()
        if "flotilla" in line or any(u.split("/")[-1] in line for u in units)
    ]
    assert result.returncode == 0 and not problems, result.stderr


def test_remove_leaves_no_files(installed):
    installed.run(
        ["apt-get", "remove", "-y", "-q", "flotilla"], env={"DEBIAN_FRONTEND": "noninteractive"}
    )
    leftover = installed.run(["sh", "-c", "ls /usr/lib/flotilla 2>/dev/null | wc -l"]).stdout
    assert leftover.strip() == "0"
    # Put it back for any later test in this module.
    installed.install_deb(built_packages()["deb"])
