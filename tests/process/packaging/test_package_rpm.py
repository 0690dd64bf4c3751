"""The .rpm is built from the same description as the .deb; its file list holds in both
directions (everything shipped is in it, and nothing else is), its contents are the .deb's
byte for byte, and its dependencies and scriptlets are the ones packaging/ declares."""

from __future__ import annotations

import base64
import csv
import functools
import hashlib
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from tests.packages import REPO, built_packages, console_scripts, shipped_units

TREE = "/usr/lib/flotilla/python"
PACKAGE_DATA = (".py", ".json", ".conf", ".xml")  # setup.py's package_data, plus modules


def _rpm(*args: str) -> str:
    if shutil.which("rpm") is None:
        pytest.fail("rpm is not installed; the README's test command installs it")
    path = built_packages()["rpm"]
    return subprocess.run(["rpm", "-qp", *args, str(path)], capture_output=True, text=True,
                          check=True).stdout


def _rpm_files() -> dict[str, tuple[int, str]]:
    """Every regular file in the .rpm: path -> (mode, sha256 hex), from ``rpm --dump``
    (path size mtime digest mode owner group isconfig isdoc rdev symlink)."""
    files: dict[str, tuple[int, str]] = {}
    for line in _rpm("--dump").splitlines():
        path, _size, _mtime, digest, mode, *_rest = line.split()
        if stat.S_ISREG(int(mode, 8)):
            files[path] = (int(mode, 8), digest)
        else:
            assert stat.S_ISDIR(int(mode, 8)), f"{path} is neither a file nor a directory"
    return files


@functools.cache
def _deb_tree(out: Path) -> Path:
    """The .deb unpacked with dpkg-deb (cached per destination)."""
    shutil.rmtree(out, ignore_errors=True)
    subprocess.run(["dpkg-deb", "-x", str(built_packages()["deb"]), str(out)], check=True)
    return out


def _deb_files(tmp_root: Path) -> dict[str, tuple[int, str]]:
    root = _deb_tree(tmp_root / "deb")
    files: dict[str, tuple[int, str]] = {}
    for path in root.rglob("*"):
        st = path.lstat()
        assert not stat.S_ISLNK(st.st_mode), f"{path} is a symlink; the .rpm has none"
        if stat.S_ISREG(st.st_mode):
            files["/" + str(path.relative_to(root))] = (
                st.st_mode, hashlib.sha256(path.read_bytes()).hexdigest())
    return files


def _units() -> list[str]:
    """Every file directly in units/ is a unit to ship (taken from the folder, not from the
    builder's suffix list, so a suffix the builder forgets shows up as missing)."""
    return sorted(p.name for p in (REPO / "units").iterdir() if p.is_file())


def _expected_outside_tree() -> set[str]:
    """What packaging/ says goes outside the Python tree, and nothing more."""
    return ({f"/usr/bin/{script}" for script in console_scripts()}
            | {f"/usr/lib/systemd/system/{unit}" for unit in _units()}
            | {f"/usr/share/dbus-1/system.d/{p.name}" for p in (REPO / "units/dbus").glob("*.conf")}
            | {f"/usr/lib/sysusers.d/{p.name}"
               for p in (REPO / "packaging/sysusers").glob("*.conf")})


def test_rpm_names_and_version() -> None:
    assert _rpm("--queryformat", "%{NAME} %{VERSION} %{ARCH}") == "flotilla 0.1.0 x86_64"


def test_rpm_outside_the_python_tree_holds_exactly_the_scripts_units_and_policies() -> None:
    files = _rpm_files()
    outside = {path for path in files if not path.startswith(TREE + "/")}
    expected = _expected_outside_tree()
    assert len(console_scripts()) >= 6 and len(_units()) >= 10  # the lists are real
    assert _units() == shipped_units()
    assert sorted(expected - outside) == [], "shipped but missing from the .rpm"
    assert sorted(outside - expected) == [], "in the .rpm but not shipped by packaging/"
    for path in outside:
        want = 0o755 if path.startswith("/usr/bin/") else 0o644
        assert stat.S_IMODE(files[path][0]) == want, path
    for unit in _units():  # the unit files are the ones in units/, unchanged
        data = (REPO / "units" / unit).read_bytes()
        assert files[f"/usr/lib/systemd/system/{unit}"][1] == hashlib.sha256(data).hexdigest()


def test_rpm_flotilla_modules_are_exactly_the_source_tree() -> None:
    """Every module and data file of daemons/, cloudinit/ and ignition/ is in the package
    under flotilla/, and the package has no flotilla file the sources lack (stale modules,
    tests, caches). The package is (re)built from the sources as they are now, so the
    bytes match too."""
    built_packages.cache_clear()  # rebuilt if a source changed since the session's build
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "daemons",
                             "cloudinit", "ignition"], cwd=REPO, capture_output=True,
                            text=True, check=True).stdout.split()
    source = {rel: hashlib.sha256((REPO / rel).read_bytes()).hexdigest() for rel in listed
              if rel.endswith(PACKAGE_DATA) and (REPO / rel).is_file()}
    prefix = f"{TREE}/flotilla/"
    packaged = {path.removeprefix(prefix): digest for path, (_mode, digest)
                in _rpm_files().items() if path.startswith(prefix)}
    assert len(source) > 100
    assert sorted(set(source) - set(packaged)) == [], "source files missing from the .rpm"
    assert sorted(set(packaged) - set(source)) == [], "files in the .rpm with no source"
    differ = sorted(rel for rel in source if source[rel] != packaged[rel])
    assert differ == [], "packaged modules differ from the sources"


def test_rpm_python_tree_is_exactly_what_pip_recorded(tmp_path: Path) -> None:
    """Each file under the tree belongs to an installed distribution's RECORD with the
    recorded sha256, and every recorded file is present, except the pip console scripts
    in bin/ that the build drops on purpose."""
    deb = _deb_tree(tmp_path / "deb")
    recorded: dict[str, str] = {}
    for record in (deb / TREE.lstrip("/")).glob("*.dist-info/RECORD"):
        with record.open(newline="") as handle:
            for row in csv.reader(handle):
                rel, digest = row[0], row[1]
                if rel.startswith(("bin/", "../")) or "__pycache__" in rel:
                    continue
                path = f"{TREE}/{rel}"
                if digest:
                    algorithm, _, value = digest.partition("=")
                    assert algorithm == "sha256", row
                    recorded[path] = base64.urlsafe_b64decode(value + "==").hex()
                else:
                    recorded[path] = ""  # RECORD itself carries no digest
    packaged = {path: digest for path, (_mode, digest) in _rpm_files().items()
                if path.startswith(TREE + "/")}
    dists = {p.parent.name.split("-")[0].lower().replace("_", "-")
             for p in (deb / TREE.lstrip("/")).glob("*.dist-info/RECORD")}
    for dependency in ("dbus-fast", "aiohttp", "msgpack", "pyyaml", "requests",
                       "cryptography", "defusedxml", "protobuf", "flotilla"):
        assert dependency in dists, f"{dependency} is not installed in the tree"
    assert sorted(set(recorded) - set(packaged)) == [], "recorded by pip, missing from the .rpm"
    assert sorted(set(packaged) - set(recorded)) == [], "in the .rpm, installed by nobody"
    wrong = sorted(p for p, digest in recorded.items() if digest and packaged[p] != digest)
    assert wrong == [], "files whose bytes are not the ones pip installed"


def test_deb_and_rpm_carry_the_same_files_with_the_same_bytes(tmp_path: Path) -> None:
    deb = _deb_files(tmp_path)
    rpm = _rpm_files()
    assert len(rpm) > 500
    assert sorted(set(deb) - set(rpm)) == [], "only in the .deb"
    assert sorted(set(rpm) - set(deb)) == [], "only in the .rpm"
    differ = sorted(path for path in rpm if rpm[path] != deb[path])
    assert differ == [], "mode or bytes differ between the .deb and the .rpm"


def test_rpm_dependencies() -> None:
    requires = {line.strip() for line in _rpm("--requires").splitlines()}
    assert "python(abi) = 3.11" in requires
    assert "systemd" in requires
    assert "dbus" in requires


def test_rpm_scriptlets_are_packagings_scripts() -> None:
    """nfpm maps postinstall to %post and preremove to %preun; each is our script, whole."""
    post = _rpm("--queryformat", "%{POSTIN}")
    preun = _rpm("--queryformat", "%{PREUN}")
    assert post.strip() == (REPO / "packaging/scripts/postinstall.sh").read_text().strip()
    assert preun.strip() == (REPO / "packaging/scripts/preremove.sh").read_text().strip()
