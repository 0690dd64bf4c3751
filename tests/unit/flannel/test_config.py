"""Network config parsing: flannel 0.10's defaults and its field-named errors."""

from __future__ import annotations

import json
from ipaddress import IPv4Address, IPv4Network

import pytest
from flotilla.daemons.flannel.config import ConfigError, parse


def cfg(**fields: object) -> str:
    fields.setdefault("Backend", {"Type": "vxlan"})
    return json.dumps(fields)


def test_defaults_for_a_slash_16_skip_the_first_subnet() -> None:
    config = parse(cfg(Network="10.5.0.0/16"))
    assert config.network == IPv4Network("10.5.0.0/16")
    assert config.subnet_len == 24
    assert config.subnet_min == IPv4Address("10.5.1.0")
    assert config.subnet_max == IPv4Address("10.5.255.0")
    backend = config.backend
    assert (backend.type, backend.vni, backend.port, backend.direct_routing) == (
        "vxlan", 1, 8472, False)


@pytest.mark.parametrize(("network", "subnet_len"), [
    ("10.0.0.0/8", 24), ("10.5.0.0/22", 24), ("10.5.0.0/23", 25), ("10.5.0.0/26", 28),
    ("10.5.0.0/28", 30)])
def test_default_subnet_len_follows_the_network_size(network: str, subnet_len: int) -> None:
    assert parse(cfg(Network=network)).subnet_len == subnet_len


def test_keys_match_case_insensitively_as_go_decodes_them() -> None:
    config = parse('{"network": "10.5.0.0/16", "SUBNETLEN": 26, '
                   '"backend": {"type": "vxlan", "vni": 7, "port": 4789, "directrouting": true}}')
    assert config.subnet_len == 26
    assert (config.backend.vni, config.backend.port, config.backend.direct_routing) == (
        7, 4789, True)


def test_host_bits_in_network_are_masked_as_flannel_does() -> None:
    assert parse(cfg(Network="10.5.3.4/16")).network == IPv4Network("10.5.0.0/16")


def test_explicit_range_and_port_zero_means_the_kernel_default() -> None:
    config = parse(cfg(Network="10.5.0.0/16", SubnetMin="10.5.10.0", SubnetMax="10.5.20.0",
                       Backend={"Type": "vxlan", "Port": 0}))
    assert (config.subnet_min, config.subnet_max) == (IPv4Address("10.5.10.0"),
                                                      IPv4Address("10.5.20.0"))
    assert config.backend.port == 8472


def test_keys_of_newer_flannel_releases_are_accepted_when_they_ask_for_ipv4() -> None:
    config = parse(cfg(Network="10.5.0.0/16", EnableIPv4=True, EnableIPv6=False,
                       IPv6Network="2001:cafe:42::/56", IPv6SubnetLen=64,
                       EnableNFTables=False, Backend={"Type": "vxlan", "Learning": False}))
    assert config.network == IPv4Network("10.5.0.0/16")


def test_host_gw_backend() -> None:
    assert parse(cfg(Network="10.5.0.0/16", Backend={"Type": "host-gw"})).backend.type == \
        "host-gw"


@pytest.mark.parametrize(("text", "message"), [
    ("{", "config: invalid JSON"),
    ("[]", "config: must be a JSON object"),
    (cfg(), "Network: required"),
    (cfg(Network=""), "Network: required"),
    (cfg(Network="10.5.0.0"), "Network: must be a CIDR string"),
    (cfg(Network="10.5.0.300/16"), "Network: invalid IPv4 CIDR"),
    (cfg(Network=5), "Network: must be a CIDR string"),
    (cfg(Network="10.5.0.0/16", SubnetLen=31), "SubnetLen must be less than /31"),
    (cfg(Network="10.5.0.0/16", SubnetLen=17),
     "Network must be able to accommodate at least four subnets"),
    (cfg(Network="10.5.0.0/16", SubnetLen="24"), "SubnetLen: must be a number"),
    (cfg(Network="10.5.0.0/29"), "Network is too small. Minimum useful network prefix is /28"),
    (cfg(Network="10.5.0.0/16", SubnetMin="10.6.0.0"),
     "SubnetMin is not in the range of the Network"),
    (cfg(Network="10.5.0.0/16", SubnetMax="10.6.0.0"),
     "SubnetMax is not in the range of the Network"),
    (cfg(Network="10.5.0.0/16", SubnetMin="10.5.1.1"),
     "SubnetMin is not on a SubnetLen boundary: 10.5.1.1"),
    (cfg(Network="10.5.0.0/16", SubnetMax="10.5.9.128"),
     "SubnetMax is not on a SubnetLen boundary: 10.5.9.128"),
    (cfg(Network="10.5.0.0/16", SubnetMin="10.5.9.0", SubnetMax="10.5.3.0"),
     "SubnetMin 10.5.9.0 is above SubnetMax 10.5.3.0"),
    (cfg(Network="10.5.0.0/16", SubnetMin="nope"), "SubnetMin: invalid IPv4 address"),
    (cfg(Network="10.5.0.0/16", Subnets=3), "Subnets: unknown field"),
    (json.dumps({"Network": "10.5.0.0/16"}), "Backend: required"),
    (cfg(Network="10.5.0.0/16", Backend="vxlan"), "Backend: must be an object"),
    (cfg(Network="10.5.0.0/16", Backend={}), "Backend.Type: required"),
    (cfg(Network="10.5.0.0/16", Backend={"Type": "udp"}),
     "Backend.Type: unsupported backend 'udp'"),
    (cfg(Network="10.5.0.0/16", Backend={"Type": "vxlan", "VNI": 0}),
     "Backend.VNI: must be between 1 and 16777215"),
    (cfg(Network="10.5.0.0/16", Backend={"Type": "vxlan", "VNI": 1 << 24}),
     "Backend.VNI: must be between 1 and 16777215"),
    (cfg(Network="10.5.0.0/16", Backend={"Type": "vxlan", "Port": 70000}),
     "Backend.Port: must be between 1 and 65535"),
    (cfg(Network="10.5.0.0/16", Backend={"Type": "vxlan", "Port": "8472"}),
     "Backend.Port: must be a number"),
    (cfg(Network="10.5.0.0/16", Backend={"Type": "vxlan", "DirectRouting": "yes"}),
     "Backend.DirectRouting: must be true or false"),
    (cfg(Network="10.5.0.0/16", Backend={"Type": "vxlan", "GBP": True}),
     "Backend.GBP: group-based policy is not supported"),
    (cfg(Network="10.5.0.0/16", EnableIPv4=False), "EnableIPv4: an IPv6-only network"),
    (cfg(Network="10.5.0.0/16", EnableIPv6=True), "EnableIPv6: IPv6 networks are not"),
    (cfg(Network="10.5.0.0/16", EnableNFTables=True), "EnableNFTables: only iptables"),
    (cfg(Network="10.5.0.0/16", EnableIPv6="no"), "EnableIPv6: must be true or false"),
    (cfg(Network="10.5.0.0/16", Backend={"Type": "vxlan", "Learning": True}),
     "Backend.Learning: learning VXLAN devices are not supported"),
    (cfg(Network="10.5.0.0/16", Backend={"Type": "vxlan", "Mtu": 1400}),
     "Backend.Mtu: unknown field"),
    (cfg(Network="10.5.0.0/16", Backend={"Type": "host-gw", "VNI": 1}),
     "Backend.VNI: unknown field"),
])
def test_bad_configs_are_refused_naming_the_field(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse(text)
    assert str(caught.value).startswith(message)


def test_contains_subnet_checks_length_and_range() -> None:
    config = parse(cfg(Network="10.5.0.0/16", SubnetMin="10.5.10.0", SubnetMax="10.5.20.0"))
    assert config.contains_subnet(IPv4Network("10.5.10.0/24"))
    assert config.contains_subnet(IPv4Network("10.5.20.0/24"))
    assert not config.contains_subnet(IPv4Network("10.5.21.0/24"))
    assert not config.contains_subnet(IPv4Network("10.5.9.0/24"))
    assert not config.contains_subnet(IPv4Network("10.5.10.0/25"))
