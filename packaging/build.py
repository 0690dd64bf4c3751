"""Builds the flotilla .deb and .rpm from packaging/nfpm.yaml.

The package carries its own Python dependencies under /usr/lib/flotilla/python (installed
with pip for CPython 3.11, the version Debian bookworm ships) because several of them
(dbus-fast, current aiohttp) are not in Debian at the versions the daemons need. Console
scripts become small wrappers in /usr/bin that put that tree first on sys.path and run the
system python3, so nothing of the build host leaks into the package.

Usage: python packaging/build.py [--format deb|rpm|all] [--out DIR]
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PYTHON_TREE = "/usr/lib/flotilla/python"
UNIT_SUFFIXES = (".service", ".socket", ".target", ".path", ".timer", ".mount")

WRAPPER = """#!/usr/bin/python3
# {name}: installed by the flotilla package.
import sys

sys.path.insert(0, "{tree}")
from {module} import {function}

sys.exit({function}())
"""


def project() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def _source_files(*paths: str) -> list[str]:
    """The files under ``paths`` that git tracks or would track, as they are now on disk."""
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", *paths],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout.split()
    return sorted(rel for rel in listed if (REPO / rel).is_file())


# What pip builds the flotilla distribution from (pyproject names README.md as its readme).
PYTHON_SOURCES = ("pyproject.toml", "setup.py", "README.md", "daemons", "cloudinit", "ignition")


def source_digest() -> str:
    """A hash of everything that goes into the package, to reuse a build that is current."""
    h = hashlib.sha256()
    for rel in _source_files(*PYTHON_SOURCES, "units", "packaging"):
        h.update(rel.encode() + b"\0" + (REPO / rel).read_bytes())
    return h.hexdigest()[:16]


def _copy_sources(dest: Path) -> None:
    """A clean copy of the Python sources for pip. Building from the checkout itself let
    setuptools reuse its in-tree build/lib, so a module deleted from the sources was still
    shipped; the copy holds exactly the files the digest covers."""
    for rel in _source_files(*PYTHON_SOURCES):
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, target)


def stage(stage_dir: Path) -> None:
    shutil.rmtree(stage_dir, ignore_errors=True)
    tree = stage_dir / PYTHON_TREE.lstrip("/")
    tree.mkdir(parents=True)
    sources = stage_dir / "src"
    _copy_sources(sources)
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-compile",
         "--disable-pip-version-check", "--target", str(tree), str(sources)],
        check=True,
    )
    shutil.rmtree(sources)
    # pip's own console scripts point at the build host's interpreter: not shipped.
    shutil.rmtree(tree / "bin", ignore_errors=True)
    bindir = stage_dir / "usr/bin"
    bindir.mkdir(parents=True)
    for name, target in project().get("scripts", {}).items():
        module, function = target.split(":")
        script = bindir / name
        script.write_text(
            WRAPPER.format(name=name, tree=PYTHON_TREE, module=module, function=function)
        )
        script.chmod(0o755)
    units = stage_dir / "units"
    units.mkdir()
    for unit in sorted((REPO / "units").iterdir()):
        if unit.is_file() and unit.name.endswith(UNIT_SUFFIXES):
            shutil.copy2(unit, units / unit.name)
            (units / unit.name).chmod(0o644)
    dbus = stage_dir / "dbus"
    dbus.mkdir()
    for policy in sorted((REPO / "units").glob("dbus/*.conf")):
        shutil.copy2(policy, dbus / policy.name)
        (dbus / policy.name).chmod(0o644)
    sysusers = stage_dir / "sysusers"
    sysusers.mkdir()
    for users in sorted((REPO / "packaging/sysusers").glob("*.conf")):
        shutil.copy2(users, sysusers / users.name)
        (sysusers / users.name).chmod(0o644)


def nfpm(fmt: str, stage_dir: Path, out: Path) -> Path:
    version = project()["version"]
    ext = {"deb": "deb", "rpm": "rpm"}[fmt]
    target = out / f"flotilla_{version}_amd64.{ext}"
    exe = shutil.which("nfpm") or str(Path(sys.executable).with_name("nfpm"))
    # nfpm expands variables in only some fields, so the description is rendered here.
    template = (REPO / "packaging/nfpm.yaml").read_text()
    config = stage_dir / "nfpm.yaml"
    config.write_text(template.replace("${VERSION}", version).replace("${STAGE}", str(stage_dir)))
    # Written beside the target and renamed over it, so a reader never sees half a package.
    partial = target.with_name(target.name + ".partial")
    result = subprocess.run(
        [exe, "package", "--config", str(config), "--packager", fmt, "--target", str(partial)],
        cwd=REPO, capture_output=True, text=True,
    )
    if result.returncode != 0:
        partial.unlink(missing_ok=True)
        raise RuntimeError(f"nfpm {fmt} failed:\n{result.stdout}\n{result.stderr}")
    os.replace(partial, target)
    return target


def build(formats: list[str], out: Path) -> dict[str, Path]:
    """Builds the packages, reusing ones built from identical sources.

    Serialised by a lock file, so concurrent test runs never stage into the same folder.
    """
    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        digest = source_digest()
        stamp = out / "sources.digest"
        version = project()["version"]
        expected = {f: out / f"flotilla_{version}_amd64.{f}" for f in formats}
        if stamp.exists() and stamp.read_text() == digest and all(
            p.exists() for p in expected.values()
        ):
            return expected
        stamp.unlink(missing_ok=True)
        stage_dir = out / "stage"
        stage(stage_dir)
        built = {fmt: nfpm(fmt, stage_dir, out) for fmt in formats}
        stamp.write_text(digest)
        return built


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--format", choices=["deb", "rpm", "all"], default="all")
    parser.add_argument("--out", type=Path, default=REPO / "packaging/out")
    args = parser.parse_args()
    formats = ["deb", "rpm"] if args.format == "all" else [args.format]
    for fmt, path in build(formats, args.out).items():
        print(f"{fmt}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
