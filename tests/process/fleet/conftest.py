"""One real etcd per test module; each test gets its own key prefix and fleetd cluster."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .harness import Etcd


@pytest.fixture(scope="module")
def etcd() -> Iterator[Etcd]:
    server = Etcd().start()
    try:
        yield server
    finally:
        server.stop()
