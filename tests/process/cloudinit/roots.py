"""Running flotilla-cloudinit on a test root, and what a root looks like byte for byte.

Shared by the process tests that apply configs with ``--root``: each builds its own root
(the units and accounts its case needs) and compares snapshots to prove a second run, a
dry run or a refused config changed nothing.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

CMD = [sys.executable, "-m", "flotilla.cloudinit.main"]


def run_cloudinit(root: Path, config: Path, *extra: str, addresses: Mapping[str, str]
                  ) -> subprocess.CompletedProcess[str]:
    """``flotilla-cloudinit --from-file CONFIG --root ROOT``, with exactly ``addresses``
    as the machine's COREOS_* addresses (none inherited from the test's environment)."""
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("COREOS_")},
           **addresses}
    return subprocess.run([*CMD, "--from-file", str(config), "--root", str(root), *extra],
                          capture_output=True, text=True, timeout=60, env=env, check=False)


def snapshot(root: Path) -> dict[str, tuple[int, bytes]]:
    """Every path under ``root``: its mode and its bytes (a link's target for a link)."""
    out: dict[str, tuple[int, bytes]] = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        data = os.readlink(path).encode() if path.is_symlink() else (
            path.read_bytes() if path.is_file() else b"")
        out[str(path.relative_to(root))] = (st.st_mode, data)
    return out
