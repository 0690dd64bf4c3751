"""Leases in the store: flannel's etcd v2 layout through the shared :class:`KVClient`.

Acquisition follows flannel 0.10's ``local_manager.go``: reuse the lease that already
holds our PublicIP when it still fits the config (deleting ours that no longer fit);
otherwise try the subnet a previous run wrote into ``subnet.env`` if nobody holds it;
otherwise pick a free subnet at random. A new lease is created with ``prevExist=false``
so two hosts never take the same subnet; a lost race is retried (10 times, as flannel).

Unlike flannel, a reused or renewed lease is written with compare-and-swap on its
current value rather than an unconditional set, so a host coming back from the dead
cannot overwrite a subnet that meanwhile went to someone else (flannel-io/flannel#1289),
and the previous subnet from ``subnet.env`` is only taken when it is free.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from ipaddress import IPv4Address, IPv4Network

from ..kvclient import KeyNotFound, KVClient, Node, NodeExist, TestFailed
from .config import NetworkConfig, parse
from .lease import (
    SUBNET_TTL,
    Lease,
    LeaseError,
    allocate,
    decode_lease,
    lease_path,
    own_lease,
)

RACE_RETRIES = 10


class LeaseLost(Exception):
    """Our lease is gone from the store, or now holds someone else's value."""


def leases_from(nodes: list[Node]) -> tuple[list[Lease], list[str]]:
    """Leases from store leaves, and a message for each leaf that is not one."""
    leases: list[Lease] = []
    bad: list[str] = []
    for node in nodes:
        if node.dir or node.value is None:
            continue
        try:
            leases.append(decode_lease(node.key, node.value, node.ttl))
        except LeaseError as error:
            bad.append(str(error))
    return leases, bad


class LeaseStore:
    def __init__(self, client: KVClient, prefix: str = "/coreos.com/network") -> None:
        self.client = client
        self.prefix = "/" + prefix.strip("/")

    @property
    def subnets_dir(self) -> str:
        return f"{self.prefix}/subnets"

    async def config_text(self) -> str:
        """The raw config JSON (a quorum read, as flannel's); KeyNotFound if absent."""
        reply = await self.client.get(f"{self.prefix}/config", quorum=True)
        return reply.node.value or ""

    async def config(self) -> NetworkConfig:
        return parse(await self.config_text())

    async def leases(self) -> list[Lease]:
        try:
            reply = await self.client.get(self.subnets_dir, recursive=True, quorum=True)
        except KeyNotFound:
            return []
        return leases_from(reply.node.leaves() if reply.node.dir else [])[0]

    async def acquire(self, config: NetworkConfig, public_ip: IPv4Address, value: str,
                      randint: Callable[[int], int], previous: IPv4Network | None = None,
                      ) -> tuple[Lease, str]:
        """Our lease (reused or new), written with ``value`` and a 24 h TTL.

        Returns the lease and how it was obtained: ``reused``, ``previous`` or ``new``."""
        for _ in range(RACE_RETRIES):
            leases = await self.leases()
            reuse, stale = own_lease(config, leases, public_ip)
            for lease in stale:
                with contextlib.suppress(KeyNotFound):
                    await self.client.delete(lease_path(self.prefix, lease.subnet))
            if reuse is not None:
                try:
                    return await self._rewrite(reuse, value), "reused"
                except LeaseLost:
                    continue
            taken = [lease.subnet for lease in leases]
            how = "new"
            if (previous is not None and config.contains_subnet(previous)
                    and not any(previous.overlaps(other) for other in taken)):
                subnet, how = previous, "previous"
            else:
                subnet = allocate(config, taken, randint)
            try:
                await self.client.create(lease_path(self.prefix, subnet), value,
                                         ttl=SUBNET_TTL)
            except NodeExist:
                continue
            return Lease(subnet, public_ip, *_attrs(value), ttl=SUBNET_TTL), how
        raise TimeoutError(f"failed to acquire a subnet after {RACE_RETRIES} races")

    async def _rewrite(self, lease: Lease, value: str) -> Lease:
        """Writes our value over our own lease, only if it still holds what we read."""
        key = lease_path(self.prefix, lease.subnet)
        current = await self._value(key)
        if current is None or decode_lease(key, current).public_ip != lease.public_ip:
            raise LeaseLost(key)
        ttl = None if lease.ttl is None else SUBNET_TTL  # a reservation stays TTL-less
        try:
            await self.client.compare_and_swap(key, value, prev_value=current, ttl=ttl)
        except (TestFailed, KeyNotFound):
            raise LeaseLost(key) from None
        return Lease(lease.subnet, lease.public_ip, *_attrs(value), ttl=ttl)

    async def _value(self, key: str) -> str | None:
        try:
            return (await self.client.get(key, quorum=True)).node.value
        except KeyNotFound:
            return None

    async def renew(self, lease: Lease, value: str) -> Lease:
        """Pushes the lease out another 24 h; :class:`LeaseLost` if it is no longer ours."""
        return await self._rewrite(lease, value)


def _attrs(value: str) -> tuple[str, str]:
    lease = decode_lease("0.0.0.0-0", value)
    return lease.backend_type, lease.vtep_mac
