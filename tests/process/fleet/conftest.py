"""One real store per test module; each test gets its own key prefix and fleetd cluster.

The store is kvd unless a test asks for both backends with ``harness.on_every_store``:
fleet needs only the etcd v2 API, so the tests whose outcome depends on how the store
behaves (TTL expiry, watch streams, conditional writes, TLS) run on kvd and on Debian's
etcd alike, and the rest on kvd alone to keep the tier's time down. The test id names
the backend (``[kvd]``, ``[etcd]``).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .harness import BACKENDS, Store


@pytest.fixture(scope="module", params=BACKENDS[:1])
def store(request: pytest.FixtureRequest) -> Iterator[Store]:
    server = Store(request.param).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def etcd(store: Store) -> Store:
    """The name `store` had while the tests ran on etcd only."""
    return store
