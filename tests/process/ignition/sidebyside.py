"""Running Debian's ignition 2.14 and flotilla-ignition on the same config, then comparing.

Both tools get a fresh root seeded with the same minimal account databases. Debian's
binary is driven as its own blackbox tests drive it (``-platform file`` with
``IGNITION_CONFIG_FILE``, fetch stage then files stage); its SELinux relabel step is
satisfied with a no-op ``setfiles`` on PATH. The trees are then compared entry by entry:
type, mode, owner, file content, link target and hard-link counts. A case that Ignition
refuses is judged the same way: both tools must fail and both trees must still be the seed,
since a refused config must change nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

DEBIAN_IGNITION = "/usr/lib/dracut/modules.d/30ignition/ignition"
REPO = Path(__file__).resolve().parents[3]
SEED = {
    "etc/passwd": "root:x:0:0:root:/root:/bin/bash\n",
    "etc/group": "root:x:0:\nusers:x:100:\n",
    "etc/shadow": "root:*:19000:0:99999:7:::\n",
    "etc/gshadow": "root:*::\nusers:*::\n",
    "etc/selinux/config": "SELINUX=disabled\nSELINUXTYPE=targeted\n",
}
# Written by the tools with run-specific content: compared by presence and mode only.
VOLATILE = {"etc/.ignition-result.json"}


def available() -> bool:
    return os.access(DEBIAN_IGNITION, os.X_OK)


def seed_root(root: Path, extra: dict[str, str] | None = None,
              attrs: dict[str, dict[str, int]] | None = None) -> None:
    """Write the seed files, then give the paths in ``attrs`` their ``mode``/``uid``/``gid``.

    ``attrs`` exists because what Ignition does to an existing entry (replace it, keep it,
    take its owner) only shows when that entry differs from what a fresh one would be.
    """
    for rel, text in {**SEED, **(extra or {})}.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        os.chmod(path, 0o644)
    for rel, meta in (attrs or {}).items():
        path = root / rel
        os.lchown(path, meta.get("uid", -1), meta.get("gid", -1))
        if "mode" in meta:
            os.chmod(path, meta["mode"])


def stub_path(work: Path) -> str:
    bin_dir = work / "stubs"
    bin_dir.mkdir(exist_ok=True)
    setfiles = bin_dir / "setfiles"
    setfiles.write_text("#!/bin/sh\ncat >/dev/null\nexit 0\n")
    setfiles.chmod(0o755)
    return f"{bin_dir}:{os.environ.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}"


def run_debian(work: Path, root: Path, config: str) -> subprocess.CompletedProcess[str]:
    cfg = work / "debian.ign"
    cfg.write_text(config)
    env = {**os.environ, "IGNITION_CONFIG_FILE": str(cfg), "PATH": stub_path(work)}
    common = ["-platform", "file", "-root", str(root), "-config-cache",
              str(work / "debian-cache.json"), "-state-file", str(work / "debian-state"),
              "-log-to-stdout"]
    fetch = subprocess.run([DEBIAN_IGNITION, "-stage", "fetch", "-neednet",
                            str(work / "neednet"), *common], capture_output=True, text=True,
                           env=env, timeout=60, check=False)
    if fetch.returncode != 0:
        return fetch
    return subprocess.run([DEBIAN_IGNITION, "-stage", "files", *common], capture_output=True,
                          text=True, env=env, timeout=60, check=False)


def run_flotilla(work: Path, root: Path, config: str,
                 *extra: str) -> subprocess.CompletedProcess[str]:
    cfg = work / "flotilla.ign"
    cfg.write_text(config)
    return subprocess.run([sys.executable, "-m", "flotilla.ignition.main", "files", "--root",
                           str(root), "--config", str(cfg), "--system-dir",
                           str(work / "nosystem"), *extra], capture_output=True, text=True,
                          cwd=REPO, timeout=60, check=False)


# Ignition 2.14 writes preset lines in Go map iteration order, which is random from run to
# run; the set of lines is what both sides must agree on.
ORDER_FREE = frozenset({"etc/systemd/system-preset/20-ignition.preset"})


def snapshot(root: Path) -> dict[str, tuple]:
    """Everything a provisioned tree is judged by, keyed by path relative to the root."""
    found: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            if rel in ("etc/.pwd.lock",):
                continue
            info = os.lstat(path)
            mode = stat.S_IMODE(info.st_mode)
            owner = (info.st_uid, info.st_gid)
            if stat.S_ISLNK(info.st_mode):
                found[rel] = ("link", owner, os.readlink(path))
            elif stat.S_ISDIR(info.st_mode):
                found[rel] = ("dir", mode, owner)
            else:
                content = b"" if rel in VOLATILE else path.read_bytes()
                if rel in ORDER_FREE:
                    content = b"".join(sorted(content.splitlines(keepends=True)))
                found[rel] = ("file", mode, owner, info.st_nlink, content)
    return found


@dataclass
class Outcome:
    """Both runs of one config: the seeded tree before, each tree after, each process."""

    seeded: dict[str, tuple]
    debian: dict[str, tuple]
    ours: dict[str, tuple]
    debian_run: subprocess.CompletedProcess[str]
    ours_run: subprocess.CompletedProcess[str]


def apply_both(work: Path, config: dict | str, seed: dict[str, str] | None = None,
               attrs: dict[str, dict[str, int]] | None = None) -> Outcome:
    """Apply ``config`` with both tools to identically seeded roots, whatever the result."""
    text = config if isinstance(config, str) else json.dumps(config)
    debian_root, ours_root = work / "debian-root", work / "flotilla-root"
    for root in (debian_root, ours_root):
        if root.exists():
            shutil.rmtree(root)
        root.mkdir()
        seed_root(root, seed, attrs)
    seeded = snapshot(ours_root)
    debian = run_debian(work, debian_root, text)
    ours = run_flotilla(work, ours_root, text)
    return Outcome(seeded, snapshot(debian_root), snapshot(ours_root), debian, ours)


def compare(work: Path, config: dict | str, seed: dict[str, str] | None = None,
            attrs: dict[str, dict[str, int]] | None = None) -> tuple:
    """Apply ``config`` with both tools, both must succeed; return (debian tree, ours)."""
    outcome = apply_both(work, config, seed, attrs)
    debian = outcome.debian_run
    assert debian.returncode == 0, debian.stdout[-3000:] + debian.stderr[-2000:]
    assert outcome.ours_run.returncode == 0, outcome.ours_run.stderr
    return outcome.debian, outcome.ours
