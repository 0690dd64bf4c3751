"""The network config flannel reads from ``<prefix>/config``, parsed and checked.

Pure: text in, a frozen :class:`NetworkConfig` or a :class:`ConfigError` out. Defaults and
checks follow flannel 0.10's ``subnet/config.go``: SubnetLen defaults to 24 for networks
of /22 or larger and to prefix+2 otherwise; the first subnet is skipped by default
(SubnetMin = Network + one subnet); SubnetMin/SubnetMax must lie inside the Network and on
a SubnetLen boundary. Keys match case-insensitively, as Go's JSON decoder does. The error
strings are flannel's where flannel has one; each starts with the field it is about.

Unlike flannel, an omitted Backend is refused rather than silently meaning ``udp`` (a
debugging backend we do not ship), and unknown backend keys and wrong value types are
named instead of ignored or reported as a bare decode error.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from typing import Any

DEFAULT_VNI = 1
DEFAULT_VXLAN_PORT = 8472  # the Linux kernel's default when flannel passes Port 0
BACKENDS = ("vxlan", "host-gw")
_TOP_KEYS = {"network": "Network", "subnetlen": "SubnetLen", "subnetmin": "SubnetMin",
             "subnetmax": "SubnetMax", "backend": "Backend"}
# Keys newer flannel releases added: accepted when they ask for what we do (IPv4 only,
# iptables), so a config written for them still works, and refused by name otherwise.
_NEWER_KEYS = {"enableipv4": "EnableIPv4", "enableipv6": "EnableIPv6",
               "ipv6network": "IPv6Network", "ipv6subnetlen": "IPv6SubnetLen",
               "ipv6subnetmin": "IPv6SubnetMin", "ipv6subnetmax": "IPv6SubnetMax",
               "enablenftables": "EnableNFTables"}
_VXLAN_KEYS = {"type": "Type", "vni": "VNI", "port": "Port", "gbp": "GBP",
               "directrouting": "DirectRouting", "learning": "Learning"}
_HOSTGW_KEYS = {"type": "Type"}


class ConfigError(ValueError):
    """The network config is unusable; the message names the field."""


@dataclass(frozen=True)
class Backend:
    """The ``Backend`` object: its type and the vxlan settings (ignored for host-gw)."""

    type: str
    vni: int = DEFAULT_VNI
    port: int = DEFAULT_VXLAN_PORT
    direct_routing: bool = False


@dataclass(frozen=True)
class NetworkConfig:
    network: IPv4Network
    subnet_len: int
    subnet_min: IPv4Address
    subnet_max: IPv4Address
    backend: Backend

    @property
    def subnet_size(self) -> int:
        return 1 << (32 - self.subnet_len)

    def contains_subnet(self, subnet: IPv4Network) -> bool:
        """Whether ``subnet`` is a lease this config could have handed out (flannel's
        check before reusing a lease)."""
        return (subnet.prefixlen == self.subnet_len
                and self.subnet_min <= subnet.network_address <= self.subnet_max)


def _fold(obj: dict[str, Any], known: dict[str, str], where: str) -> dict[str, Any]:
    """Keys matched case-insensitively onto their canonical names; unknown keys refused."""
    out: dict[str, Any] = {}
    for key, value in obj.items():
        name = known.get(key.lower())
        if name is None:
            raise ConfigError(f"{where}{key}: unknown field")
        out[name] = value
    return out


def _int(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{field}: must be a number, got {json.dumps(value)}")
    return value


def _bool(value: Any, field: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{field}: must be true or false, got {json.dumps(value)}")
    return value


def _address(value: Any, field: str) -> IPv4Address:
    if not isinstance(value, str):
        raise ConfigError(f"{field}: must be an IPv4 address string, got {json.dumps(value)}")
    try:
        return IPv4Address(value)
    except ValueError:
        raise ConfigError(f"{field}: invalid IPv4 address {value!r}") from None


def _network(value: Any) -> IPv4Network:
    if value is None or value == "":
        raise ConfigError("Network: required (a CIDR such as \"10.5.0.0/16\")")
    if not isinstance(value, str) or "/" not in value:
        raise ConfigError(f"Network: must be a CIDR string, got {json.dumps(value)}")
    try:
        return ipaddress.ip_network(value, strict=False)  # flannel masks host bits too
    except ValueError:
        raise ConfigError(f"Network: invalid IPv4 CIDR {value!r}") from None


def _backend(value: Any) -> Backend:
    if value is None:
        raise ConfigError('Backend: required; flannel\'s default "udp" is not supported '
                          '(use {"Type": "vxlan"} or {"Type": "host-gw"})')
    if not isinstance(value, dict):
        raise ConfigError(f"Backend: must be an object, got {json.dumps(value)}")
    kind = next((v for k, v in value.items() if k.lower() == "type"), None)
    if not isinstance(kind, str) or not kind:
        raise ConfigError("Backend.Type: required, one of vxlan, host-gw")
    kind = kind.lower()
    if kind not in BACKENDS:
        raise ConfigError(f"Backend.Type: unsupported backend {kind!r} "
                          f"(supported: {', '.join(BACKENDS)})")
    if kind == "host-gw":
        _fold(value, _HOSTGW_KEYS, "Backend.")
        return Backend(type=kind)
    fields = _fold(value, _VXLAN_KEYS, "Backend.")
    vni = _int(fields.get("VNI", DEFAULT_VNI), "Backend.VNI")
    if not 0 < vni < (1 << 24):
        raise ConfigError(f"Backend.VNI: must be between 1 and 16777215, got {vni}")
    port = _int(fields.get("Port", 0), "Backend.Port") or DEFAULT_VXLAN_PORT
    if not 0 < port < 65536:
        raise ConfigError(f"Backend.Port: must be between 1 and 65535, got {port}")
    if _bool(fields.get("GBP", False), "Backend.GBP"):
        raise ConfigError("Backend.GBP: group-based policy is not supported")
    if _bool(fields.get("Learning", False), "Backend.Learning"):
        raise ConfigError("Backend.Learning: learning VXLAN devices are not supported")
    direct = _bool(fields.get("DirectRouting", False), "Backend.DirectRouting")
    return Backend(type=kind, vni=vni, port=port, direct_routing=direct)


def parse(text: str | bytes) -> NetworkConfig:
    """Parses and checks the config JSON; raises :class:`ConfigError` naming the field."""
    try:
        raw = json.loads(text)
    except ValueError as error:
        raise ConfigError(f"config: invalid JSON: {error}") from None
    if not isinstance(raw, dict):
        raise ConfigError("config: must be a JSON object")
    fields = _fold(raw, {**_TOP_KEYS, **_NEWER_KEYS}, "")
    if not _bool(fields.get("EnableIPv4", True), "EnableIPv4"):
        raise ConfigError("EnableIPv4: an IPv6-only network is not supported")
    if _bool(fields.get("EnableIPv6", False), "EnableIPv6"):
        raise ConfigError("EnableIPv6: IPv6 networks are not supported yet")
    if _bool(fields.get("EnableNFTables", False), "EnableNFTables"):
        raise ConfigError("EnableNFTables: only iptables rules are supported")
    network = _network(fields.get("Network"))
    if "SubnetLen" in fields and fields["SubnetLen"] not in (0, None):
        subnet_len = _int(fields["SubnetLen"], "SubnetLen")
        if subnet_len > 30:
            raise ConfigError("SubnetLen must be less than /31")
        if subnet_len < network.prefixlen + 2:
            raise ConfigError("Network must be able to accommodate at least four subnets")
    elif network.prefixlen > 28:
        raise ConfigError("Network is too small. Minimum useful network prefix is /28")
    elif network.prefixlen <= 22:
        subnet_len = 24
    else:
        subnet_len = network.prefixlen + 2
    size = 1 << (32 - subnet_len)
    base = network.network_address
    subnet_min = base + size
    subnet_max = IPv4Address(int(network.broadcast_address) + 1 - size)
    if fields.get("SubnetMin") not in (None, ""):
        subnet_min = _address(fields["SubnetMin"], "SubnetMin")
        if subnet_min not in network:
            raise ConfigError("SubnetMin is not in the range of the Network")
    if fields.get("SubnetMax") not in (None, ""):
        subnet_max = _address(fields["SubnetMax"], "SubnetMax")
        if subnet_max not in network:
            raise ConfigError("SubnetMax is not in the range of the Network")
    if int(subnet_min) % size:
        raise ConfigError(f"SubnetMin is not on a SubnetLen boundary: {subnet_min}")
    if int(subnet_max) % size:
        raise ConfigError(f"SubnetMax is not on a SubnetLen boundary: {subnet_max}")
    if subnet_min > subnet_max:
        raise ConfigError(f"SubnetMin {subnet_min} is above SubnetMax {subnet_max}")
    return NetworkConfig(network=network, subnet_len=subnet_len, subnet_min=subnet_min,
                         subnet_max=subnet_max, backend=_backend(fields.get("Backend")))
