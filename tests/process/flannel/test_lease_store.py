"""The lease store shell against a real store on loopback: acquire, reuse, renew, races.

Each test runs on kvd and on etcd 3.4 (``--enable-v2``).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv4Network

import pytest
from flotilla.daemons.flannel.config import parse
from flotilla.daemons.flannel.lease import SUBNET_TTL, OutOfSubnets, encode_attrs
from flotilla.daemons.flannel.store import LeaseLost, LeaseStore
from flotilla.daemons.kvclient import KVClient

from tests.process.fleet.harness import BACKENDS, Store

ME, OTHER = IPv4Address("192.0.2.1"), IPv4Address("192.0.2.2")
CONFIG = parse('{"Network": "10.5.0.0/16", "Backend": {"Type": "vxlan"}}')
SMALL = parse('{"Network": "10.6.0.0/16", "SubnetMin": "10.6.1.0", "SubnetMax": "10.6.2.0",'
              ' "Backend": {"Type": "vxlan"}}')


@pytest.fixture(scope="module", params=BACKENDS)
def kvd(request: pytest.FixtureRequest) -> Iterator[Store]:
    """kvd, and Debian's etcd with the v2 API: flannel must work against both."""
    server = Store(request.param, host="127.0.0.57").start()
    try:
        yield server
    finally:
        server.stop()


def value(ip: IPv4Address, mac: str = "aa:bb:cc:00:00:01") -> str:
    return encode_attrs(ip, "vxlan", mac)


def run(kvd: Store, prefix: str, body) -> object:
    async def go() -> object:
        async with KVClient(kvd.url) as client:
            return await body(LeaseStore(client, prefix))
    return asyncio.run(go())


def test_a_new_lease_is_created_with_flannels_bytes_and_ttl(kvd: Store) -> None:
    async def body(store: LeaseStore):
        return await store.acquire(CONFIG, ME, value(ME), lambda n: 0)
    got, how = run(kvd, "/t1/network", body)
    assert how == "new" and got.subnet == IPv4Network("10.5.1.0/24")
    node = kvd.get("/t1/network/subnets/10.5.1.0-24")["node"]
    assert node["value"] == ('{"PublicIP":"192.0.2.1","BackendType":"vxlan",'
                             '"BackendData":{"VtepMAC":"aa:bb:cc:00:00:01"}}')
    assert SUBNET_TTL - 5 <= node["ttl"] <= SUBNET_TTL


def test_the_lease_holding_our_public_ip_is_reused_with_the_new_mac(kvd: Store) -> None:
    async def body(store: LeaseStore):
        first, _ = await store.acquire(CONFIG, ME, value(ME), lambda n: 7)
        again, how = await store.acquire(CONFIG, ME, value(ME, "aa:bb:cc:00:00:02"),
                                         lambda n: 0)
        return first, again, how
    first, again, how = run(kvd, "/t2/network", body)
    assert how == "reused" and again.subnet == first.subnet
    node = kvd.get(f"/t2/network/subnets/{first.subnet.network_address}-24")["node"]
    assert json.loads(node["value"])["BackendData"]["VtepMAC"] == "aa:bb:cc:00:00:02"


def test_previous_subnet_is_taken_only_when_free(kvd: Store) -> None:
    held = IPv4Network("10.5.9.0/24")

    async def body(store: LeaseStore):
        free, how_free = await store.acquire(CONFIG, ME, value(ME), lambda n: 0,
                                             previous=IPv4Network("10.5.8.0/24"))
        await store.acquire(CONFIG, OTHER, value(OTHER), lambda n: 0, previous=held)
        third = IPv4Address("192.0.2.3")
        taken, how_taken = await store.acquire(CONFIG, third, value(third), lambda n: 0,
                                               previous=held)
        return free, how_free, taken, how_taken
    free, how_free, taken, how_taken = run(kvd, "/t3/network", body)
    assert (free.subnet, how_free) == (IPv4Network("10.5.8.0/24"), "previous")
    assert how_taken == "new" and taken.subnet != held  # unlike flannel-io/flannel#1289
    node = kvd.get("/t3/network/subnets/10.5.9.0-24")["node"]
    assert json.loads(node["value"])["PublicIP"] == str(OTHER)


def test_a_lease_that_no_longer_fits_the_config_is_deleted(kvd: Store) -> None:
    async def body(store: LeaseStore):
        await store.client.set("/t4/network/subnets/10.5.200.0-24", value(ME), ttl=600)
        return await store.acquire(SMALL_T4, ME, value(ME), lambda n: 0)
    SMALL_T4 = parse('{"Network": "10.5.0.0/16", "SubnetMax": "10.5.100.0",'
                     ' "Backend": {"Type": "vxlan"}}')
    got, how = run(kvd, "/t4/network", body)
    assert how == "new" and got.subnet == IPv4Network("10.5.1.0/24")
    assert kvd.get("/t4/network/subnets/10.5.200.0-24") is None


def test_renewal_is_a_compare_and_swap_and_a_taken_lease_is_lost(kvd: Store) -> None:
    async def body(store: LeaseStore):
        mine, _ = await store.acquire(CONFIG, ME, value(ME), lambda n: 0)
        key = f"/t5/network/subnets/{mine.subnet.network_address}-24"
        await store.client.set(key, value(ME), ttl=30)
        renewed = await store.renew(mine, value(ME))
        ttl = (await store.client.get(key)).node.ttl
        await store.client.set(key, value(OTHER), ttl=600)  # someone else's now
        with pytest.raises(LeaseLost):
            await store.renew(renewed, value(ME))
        await store.client.delete(key)
        with pytest.raises(LeaseLost):
            await store.renew(renewed, value(ME))
        return ttl, (await store.client.get("/t5/network/subnets", recursive=True)).node.nodes
    ttl, left = run(kvd, "/t5/network", body)
    assert SUBNET_TTL - 5 <= ttl <= SUBNET_TTL
    assert left == []  # a lost lease is never written back


def test_concurrent_hosts_get_distinct_subnets_and_then_run_out(kvd: Store) -> None:
    hosts = [IPv4Address(f"192.0.2.{10 + i}") for i in range(3)]

    async def body(store: LeaseStore):
        # Every host picks the same first candidate: prevExist=false settles the race.
        return await asyncio.gather(
            *(store.acquire(SMALL, ip, value(ip), lambda n: 0) for ip in hosts),
            return_exceptions=True)
    results = run(kvd, "/t6/network", body)
    subnets = sorted(str(r[0].subnet) for r in results if isinstance(r, tuple))
    assert subnets == ["10.6.1.0/24", "10.6.2.0/24"]
    assert [type(r) for r in results if not isinstance(r, tuple)] == [OutOfSubnets]


def flannelctl(kvd: Store, prefix: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flotilla.daemons.flannel.ctl",
                           "-etcd-endpoints", kvd.url, "-etcd-prefix", prefix, *args],
                          capture_output=True, text=True, timeout=30, check=False)


def test_flannelctl_shows_leases_with_their_holders_and_the_config(kvd: Store) -> None:
    async def body(store: LeaseStore):
        await store.client.set("/t7/network/config",
                               '{"Network": "10.5.0.0/16", "Backend": {"Type": "vxlan"}}')
        await store.acquire(CONFIG, ME, value(ME), lambda n: 2)
        await store.client.set("/t7/network/subnets/10.5.9.0-24",
                               encode_attrs(OTHER, "host-gw"))  # a reservation: no TTL
    run(kvd, "/t7/network", body)
    done = flannelctl(kvd, "/t7/network", "leases")
    assert done.returncode == 0, done.stderr
    lines = [line.split() for line in done.stdout.splitlines()]
    assert lines[0] == ["SUBNET", "PUBLIC_IP", "BACKEND", "VTEP_MAC", "TTL"]
    assert lines[1][:4] == ["10.5.3.0/24", "192.0.2.1", "vxlan", "aa:bb:cc:00:00:01"]
    assert SUBNET_TTL - 10 <= int(lines[1][4]) <= SUBNET_TTL
    assert lines[2] == ["10.5.9.0/24", "192.0.2.2", "host-gw", "-", "reserved"]

    shown = flannelctl(kvd, "/t7/network", "config")
    assert shown.returncode == 0 and "SubnetMin: 10.5.1.0\n" in shown.stdout
    empty = flannelctl(kvd, "/t8/network", "leases")
    assert empty.returncode == 0 and len(empty.stdout.splitlines()) == 1
    missing = flannelctl(kvd, "/t8/network", "config")
    assert missing.returncode == 1 and "Key not found" in missing.stderr
