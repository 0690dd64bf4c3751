"""Leases: allocation, key and JSON bytes, renewal timing, subnet.env."""

from __future__ import annotations

import json
from ipaddress import IPv4Address, IPv4Network

import pytest
from flotilla.daemons.flannel.config import parse
from flotilla.daemons.flannel.lease import (
    RENEW_MARGIN,
    SUBNET_TTL,
    Lease,
    LeaseError,
    OutOfSubnets,
    allocate,
    candidates,
    decode_lease,
    encode_attrs,
    lease_path,
    own_lease,
    parse_subnet_key,
    previous_subnet,
    renew_delay,
    subnet_env,
    subnet_key,
)

NET = IPv4Network


def config(network: str = "10.5.0.0/16", **extra: object):
    return parse(json.dumps({"Network": network, "Backend": {"Type": "vxlan"}, **extra}))


def test_key_layout_is_flannels() -> None:
    assert subnet_key(NET("10.5.34.0/24")) == "10.5.34.0-24"
    assert lease_path("/coreos.com/network/", NET("10.5.34.0/24")) == \
        "/coreos.com/network/subnets/10.5.34.0-24"
    assert parse_subnet_key("/coreos.com/network/subnets/10.5.34.0-24") == NET("10.5.34.0/24")
    assert parse_subnet_key("10.5.34.0-24&2001:cafe:42::-64") is None
    assert parse_subnet_key("config") is None
    assert parse_subnet_key("10.5.34.1-24") is None  # host bits: not a lease


def test_lease_json_is_byte_compatible_with_flannel_0_10() -> None:
    value = encode_attrs(IPv4Address("10.37.7.195"), "vxlan", "82:4b:b6:2f:54:4e")
    assert value == ('{"PublicIP":"10.37.7.195","BackendType":"vxlan",'
                     '"BackendData":{"VtepMAC":"82:4b:b6:2f:54:4e"}}')
    assert encode_attrs(IPv4Address("10.0.0.2"), "host-gw") == \
        '{"PublicIP":"10.0.0.2","BackendType":"host-gw"}'
    assert encode_attrs(IPv4Address("10.0.0.2"), "") == '{"PublicIP":"10.0.0.2"}'


def test_decode_reads_flannels_leases_including_newer_fields() -> None:
    lease = decode_lease("/coreos.com/network/subnets/10.5.72.0-24",
                         '{"PublicIP":"10.0.0.7","PublicIPv6":null,"BackendType":"vxlan",'
                         '"BackendData":{"VNI":1,"VtepMAC":"AA:BB:CC:DD:EE:FF"}}', ttl=300)
    assert lease == Lease(NET("10.5.72.0/24"), IPv4Address("10.0.0.7"), "vxlan",
                          "aa:bb:cc:dd:ee:ff", ttl=300)


@pytest.mark.parametrize(("key", "value", "message"), [
    ("subnets/nope", '{"PublicIP":"10.0.0.1"}', "not a subnet lease key"),
    ("10.5.1.0-24", "{", "invalid lease JSON"),
    ("10.5.1.0-24", "[]", "not an object"),
    ("10.5.1.0-24", '{"PublicIP":"x"}', "PublicIP: invalid"),
    ("10.5.1.0-24", '{"PublicIP":"10.0.0.1","BackendType":5}', "must be strings"),
])
def test_unreadable_leases_are_errors(key: str, value: str, message: str) -> None:
    with pytest.raises(LeaseError, match=message):
        decode_lease(key, value)


def test_candidates_skip_the_first_subnet_and_leased_ones_and_stop_at_100() -> None:
    found = candidates(config(), [NET("10.5.1.0/24"), NET("10.5.3.0/24")])
    assert len(found) == 100
    assert found[:3] == [NET("10.5.2.0/24"), NET("10.5.4.0/24"), NET("10.5.5.0/24")]
    assert NET("10.5.0.0/24") not in found


def test_a_wider_lease_blocks_every_subnet_it_overlaps() -> None:
    small = config("10.5.0.0/22", SubnetLen=26)
    found = candidates(small, [NET("10.5.1.0/24")])
    assert all(not subnet.overlaps(NET("10.5.1.0/24")) for subnet in found)
    assert found[0] == NET("10.5.0.64/26")


def test_allocation_is_random_among_the_free_ones_using_the_given_randomness() -> None:
    cfg = config(SubnetMin="10.5.10.0", SubnetMax="10.5.13.0")
    picks = []
    assert allocate(cfg, [], lambda n: picks.append(n) or 0) == NET("10.5.10.0/24")
    assert picks == [4]
    assert allocate(cfg, [NET("10.5.11.0/24")], lambda n: n - 1) == NET("10.5.13.0/24")


def test_exhaustion_is_out_of_subnets() -> None:
    cfg = config(SubnetMin="10.5.10.0", SubnetMax="10.5.11.0")
    with pytest.raises(OutOfSubnets, match=r"^out of subnets$"):
        allocate(cfg, [NET("10.5.10.0/24"), NET("10.5.11.0/24")], lambda n: 0)


def test_own_lease_is_matched_by_public_ip_and_misfits_are_stale() -> None:
    cfg = config(SubnetMin="10.5.10.0", SubnetMax="10.5.20.0")
    me, other = IPv4Address("10.0.0.1"), IPv4Address("10.0.0.2")
    leases = [Lease(NET("10.5.12.0/24"), other), Lease(NET("10.5.30.0/24"), me),
              Lease(NET("10.5.15.0/24"), me)]
    reuse, stale = own_lease(cfg, leases, me)
    assert reuse == Lease(NET("10.5.15.0/24"), me)
    assert stale == [Lease(NET("10.5.30.0/24"), me)]
    assert own_lease(cfg, leases[:1], me) == (None, [])


def test_renewal_one_hour_before_expiry() -> None:
    assert SUBNET_TTL == 86400 and RENEW_MARGIN == 3600
    assert renew_delay(SUBNET_TTL) == 82800
    assert renew_delay(85925) == 85925 - 3600
    assert renew_delay(100) == 0  # inside the margin: at once
    assert renew_delay(None) is None  # a reservation is never renewed
    assert renew_delay(SUBNET_TTL, margin=60) == 86340


def test_subnet_env_is_flannels() -> None:
    text = subnet_env(NET("10.5.0.0/16"), NET("10.5.72.0/24"), 1450, False)
    assert text == ("FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=10.5.72.1/24\n"
                    "FLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n")
    assert "FLANNEL_IPMASQ=true\n" in subnet_env(NET("10.5.0.0/16"), NET("10.5.72.0/24"),
                                                 1450, True)
    assert previous_subnet(text) == NET("10.5.72.0/24")
    assert previous_subnet("FLANNEL_SUBNET=junk\n") is None
    assert previous_subnet("") is None
