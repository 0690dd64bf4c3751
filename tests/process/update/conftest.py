"""Fixtures of the D-Bus tests: a private bus with update-engine's policy and the fake
engine on it (tests/process/update/harness.py). test_update_daemon.py has a ``bus`` of
its own: the address string, for the real daemon."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.process.kv_dbus.bus import PrivateBus

from .harness import Engine, start_bus, start_engine


@pytest.fixture
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="update-proc-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def bus() -> Iterator[PrivateBus]:
    private = start_bus()
    yield private
    private.stop()


@pytest.fixture
def engine(bus: PrivateBus, workdir: Path) -> Iterator[Engine]:
    fake = start_engine(bus.address, workdir)
    yield fake
    fake.stop()
