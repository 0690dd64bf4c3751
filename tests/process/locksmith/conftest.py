"""One store per module, on kvd and on Debian's etcd 3.4 (``--enable-v2``): locksmith
speaks only the etcd v2 API, and its compare-and-swap must hold on both."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.process.fleet.harness import BACKENDS, Store

from .harness import PrivateBus, start_bus


@pytest.fixture(scope="module", params=BACKENDS)
def store(request: pytest.FixtureRequest) -> Iterator[Store]:
    server = Store(request.param, host="127.0.0.37").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def kvd_store() -> Iterator[Store]:
    server = Store("kvd", host="127.0.0.38").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def bus() -> Iterator[PrivateBus]:
    private = start_bus()
    try:
        yield private
    finally:
        private.stop()
