"""Test machines: real systemd booted in systemd-nspawn containers on a private bridge.

Shared by the system tests (through the fixtures in ``tests/system/conftest.py``) and by
the README's run command (``python -m tests.machines``).
"""

from .cluster import Cluster, sweep_stale_runs
from .machine import Machine, MachineError
from .rootfs import Recipe, ensure_rootfs

__all__ = ["Cluster", "Machine", "MachineError", "Recipe", "ensure_rootfs", "sweep_stale_runs"]
