"""Mapping config paths onto the target root without ever leaving it.

Config paths name places inside the provisioned system, so they are resolved the way a
chroot would resolve them: symlinks met on the way (every component but the last) are
followed, an absolute link target restarts at the target root, and ``..`` stops at it. A
link that points outside the root therefore lands inside it, never on the host.
"""

from __future__ import annotations

import os

from flotilla.daemons.durable import EscapeError

__all__ = ["EscapeError", "resolve"]

MAX_LINKS = 40


def resolve(root: str, path: str, follow_last: bool = False) -> str:
    """Host path for config ``path`` under ``root`` (links followed chroot-style)."""
    root = os.path.abspath(root)
    pending = [part for part in path.split("/") if part]
    done: list[str] = []
    hops = 0
    while pending:
        part = pending.pop(0)
        if part == ".":
            continue
        if part == "..":
            if done:
                done.pop()
            continue
        candidate = os.path.join(root, *done, part)
        is_last = not pending
        if (not is_last or follow_last) and os.path.islink(candidate):
            hops += 1
            if hops > MAX_LINKS:
                raise EscapeError(f"too many levels of symbolic links at {path}")
            target = os.readlink(candidate)
            if target.startswith("/"):
                done = []
            pending = [p for p in target.split("/") if p] + pending
            continue
        done.append(part)
    resolved = os.path.join(root, *done)
    if os.path.commonpath([root, resolved]) != root:
        raise EscapeError(f"{path} escapes the target root")
    return resolved
