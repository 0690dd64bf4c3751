"""Fixtures for kvd process tests: a kvd and a Debian etcd side by side."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.process.kv.harness import Server, start_etcd, start_kvd


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[Server, Server]]:
    etcd = start_etcd(tmp_path, "127.0.0.61")
    try:
        kvd = start_kvd(tmp_path, "127.0.0.62")
    except Exception:
        etcd.kill()
        raise
    try:
        yield etcd, kvd
    finally:
        kvd.stop()
        etcd.stop()
