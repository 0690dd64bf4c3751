"""Builds and caches the Debian root filesystem that every test machine boots from.

The root is made once with debootstrap and kept under ``.cache/rootfs/<recipe-hash>``. The
hash covers everything that shapes the tree (suite, package list, the setup steps, and this
file), so editing the recipe builds a fresh root on the next run and stale roots are never
booted. A build happens in a temporary folder that is renamed into place only when complete:
an interrupted build leaves nothing that could be mistaken for a finished root.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
CACHE_DIR = Path(os.environ.get("FLOTILLA_CACHE", REPO_ROOT / ".cache"))
DEFAULT_MIRROR = "http://deb.debian.org/debian"


@dataclass(frozen=True)
class Recipe:
    """What goes into a test machine's root filesystem."""

    suite: str = "bookworm"
    packages: tuple[str, ...] = (
        "systemd",
        "systemd-sysv",
        "dbus",
        "python3",
        "iproute2",
        "iputils-ping",
        "procps",
        "udev",
        "passwd",
        "ca-certificates",
    )
    # Units enabled in the image: networkd gives each machine its static test address.
    enable_units: tuple[str, ...] = ("systemd-networkd.service",)
    # Units masked because a test machine has no console user and no time to wait for them.
    mask_units: tuple[str, ...] = (
        "console-getty.service",
        "getty@tty1.service",
        "systemd-networkd-wait-online.service",
    )
    extra: tuple[tuple[str, str], ...] = field(default_factory=tuple)

    def digest(self) -> str:
        """A short hash of the recipe and of the code that applies it."""
        h = hashlib.sha256()
        h.update(repr(self).encode())
        h.update(Path(__file__).read_bytes())
        return h.hexdigest()[:16]


def _configure(root: Path, recipe: Recipe) -> None:
    """Applies the recipe's setup steps to a freshly bootstrapped tree."""
    # Every machine gets its own machine-id at boot time; the image must carry none.
    (root / "etc/machine-id").write_text("")
    dbus_id = root / "var/lib/dbus/machine-id"
    if dbus_id.exists() or dbus_id.is_symlink():
        dbus_id.unlink()
    (root / "etc/hostname").write_text("flotilla\n")
    # Root logs in without a password only through nsenter; no password is set.
    systemd_dir = root / "etc/systemd/system"
    for unit in recipe.mask_units:
        link = systemd_dir / unit
        link.unlink(missing_ok=True)
        link.symlink_to("/dev/null")
    wants = systemd_dir / "multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    for unit in recipe.enable_units:
        link = wants / unit
        link.unlink(missing_ok=True)
        link.symlink_to(f"/lib/systemd/system/{unit}")
    # Journal kept on disk so a machine's log survives a kill and can be read afterwards.
    (root / "var/log/journal").mkdir(parents=True, exist_ok=True)
    # No apt lists are shipped: installs inside a test machine are of local .deb files only.
    for rel, text in recipe.extra:
        target = root / rel.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)


def ensure_rootfs(recipe: Recipe | None = None, *, log=sys.stderr) -> Path:
    """Returns the cached root for ``recipe``, building it first when it is missing.

    Concurrent callers are serialised by a lock file, so two test runs never build the
    same root at once.
    """
    recipe = recipe or Recipe()
    base = CACHE_DIR / "rootfs"
    base.mkdir(parents=True, exist_ok=True)
    final = base / recipe.digest()
    with open(base / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (final / ".complete").exists():
            return final
        building = base / f"{recipe.digest()}.building"
        shutil.rmtree(building, ignore_errors=True)
        mirror = os.environ.get("FLOTILLA_DEBIAN_MIRROR", DEFAULT_MIRROR)
        cmd = [
            "debootstrap",
            "--variant=minbase",
            f"--include={','.join(recipe.packages)}",
            recipe.suite,
            str(building),
            mirror,
        ]
        print(f"building test root filesystem: {' '.join(cmd)}", file=log, flush=True)
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            shutil.rmtree(building, ignore_errors=True)
            raise RuntimeError(
                f"debootstrap failed (exit {result.returncode}):\n{result.stdout[-3000:]}"
                f"\n{result.stderr[-3000:]}"
            )
        _configure(building, recipe)
        (building / ".complete").write_text(recipe.digest() + "\n")
        shutil.rmtree(final, ignore_errors=True)
        building.rename(final)
        for stale in base.iterdir():
            if stale.is_dir() and stale != final:
                shutil.rmtree(stale, ignore_errors=True)
        return final
