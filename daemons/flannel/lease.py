"""Leases: which subnet to take, how it is stored, when to renew, what ``subnet.env`` says.

Pure, with time and randomness passed in. The store layout and bytes are flannel 0.10's
etcd v2 backend, so our flanneld and flannel's can share one cluster:

* key ``<prefix>/subnets/10.5.34.0-24`` (``subnet.MakeSubnetKey``);
* value ``{"PublicIP":"10.37.7.195","BackendType":"vxlan","BackendData":{"VtepMAC":"…"}}``
  — Go's compact encoding of ``LeaseAttrs``, BackendType and BackendData omitted when empty;
* TTL 24 h, renewed one hour (``--subnet-lease-renew-margin``) before it expires.

Allocation is flannel's: walk from SubnetMin to SubnetMax, collect up to 100 subnets no
lease overlaps, pick one at random; none free is ``out of subnets``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network

from .config import NetworkConfig

SUBNET_TTL = 24 * 3600  # subnetTTL in flannel's local_manager.go
RENEW_MARGIN = 3600  # --subnet-lease-renew-margin default, 60 minutes
RENEW_RETRY = 60  # after a failed renewal flannel tries again every minute
MAX_CANDIDATES = 100
_KEY = re.compile(r"(\d+\.\d+\.\d+\.\d+)-(\d+)")


class OutOfSubnets(Exception):
    """Every subnet between SubnetMin and SubnetMax is leased."""

    def __init__(self) -> None:
        super().__init__("out of subnets")


class LeaseError(ValueError):
    """A lease key or value in the store could not be read."""


@dataclass(frozen=True)
class Lease:
    """One host's lease: its subnet and the attributes flannel stores for it."""

    subnet: IPv4Network
    public_ip: IPv4Address
    backend_type: str = ""
    vtep_mac: str = ""
    #: seconds left on the key's TTL when read; None for a reservation (no TTL)
    ttl: int | None = None


def subnet_key(subnet: IPv4Network) -> str:
    """``10.5.34.0/24`` → ``10.5.34.0-24``, the last path element of the lease key."""
    return f"{subnet.network_address}-{subnet.prefixlen}"


def lease_path(prefix: str, subnet: IPv4Network) -> str:
    return f"{prefix.rstrip('/')}/subnets/{subnet_key(subnet)}"


def parse_subnet_key(name: str) -> IPv4Network | None:
    """The subnet a key's last element names, or None if it is not a lease key."""
    match = _KEY.fullmatch(name.rsplit("/", 1)[-1])
    if match is None:
        return None
    try:
        return IPv4Network(f"{match[1]}/{match[2]}")
    except ValueError:
        return None


def encode_attrs(public_ip: IPv4Address, backend_type: str, vtep_mac: str = "") -> str:
    """The lease value, byte for byte as flannel 0.10 writes it."""
    attrs: dict[str, object] = {"PublicIP": str(public_ip)}
    if backend_type:
        attrs["BackendType"] = backend_type
    if vtep_mac:
        attrs["BackendData"] = {"VtepMAC": vtep_mac}
    return json.dumps(attrs, separators=(",", ":"))


def decode_lease(key: str, value: str, ttl: int | None = None) -> Lease:
    """A lease from its store key and JSON value; :class:`LeaseError` if unreadable."""
    subnet = parse_subnet_key(key)
    if subnet is None:
        raise LeaseError(f"{key}: not a subnet lease key")
    try:
        attrs = json.loads(value)
    except ValueError as error:
        raise LeaseError(f"{key}: invalid lease JSON: {error}") from None
    if not isinstance(attrs, dict):
        raise LeaseError(f"{key}: lease value is not an object")
    try:
        public_ip = IPv4Address(attrs.get("PublicIP"))
    except ValueError:
        raise LeaseError(f"{key}: PublicIP: invalid {attrs.get('PublicIP')!r}") from None
    backend_type = attrs.get("BackendType") or ""
    data = attrs.get("BackendData") or {}
    mac = data.get("VtepMAC", "") if isinstance(data, dict) else ""
    if not isinstance(backend_type, str) or not isinstance(mac, str):
        raise LeaseError(f"{key}: BackendType/BackendData.VtepMAC must be strings")
    return Lease(subnet=subnet, public_ip=public_ip, backend_type=backend_type,
                 vtep_mac=mac.lower(), ttl=ttl)


def candidates(config: NetworkConfig, taken: Iterable[IPv4Network]) -> list[IPv4Network]:
    """The first (up to 100) subnets from SubnetMin to SubnetMax that no lease overlaps."""
    taken = list(taken)
    found: list[IPv4Network] = []
    size = config.subnet_size
    address = int(config.subnet_min)
    while address <= int(config.subnet_max) and len(found) < MAX_CANDIDATES:
        subnet = IPv4Network((address, config.subnet_len))
        if not any(subnet.overlaps(other) for other in taken):
            found.append(subnet)
        address += size
    return found


def allocate(config: NetworkConfig, taken: Iterable[IPv4Network],
             randint: Callable[[int], int]) -> IPv4Network:
    """A free subnet chosen by ``randint(n)`` (0 <= result < n), as flannel chooses."""
    free = candidates(config, taken)
    if not free:
        raise OutOfSubnets()
    return free[randint(len(free))]


def own_lease(config: NetworkConfig, leases: Iterable[Lease], public_ip: IPv4Address
              ) -> tuple[Lease | None, list[Lease]]:
    """The lease to reuse (PublicIP ours and fits the config) and ours that do not fit.

    flannel reuses the lease holding its PublicIP and deletes one that no longer fits
    (the SubnetLen or range changed)."""
    reuse: Lease | None = None
    stale: list[Lease] = []
    for lease in sorted(leases, key=lambda item: item.subnet):
        if lease.public_ip != public_ip:
            continue
        if reuse is None and config.contains_subnet(lease.subnet):
            reuse = lease
        elif not config.contains_subnet(lease.subnet):
            stale.append(lease)
    return reuse, stale


def renew_delay(ttl_left: float | None, margin: float = RENEW_MARGIN) -> float | None:
    """Seconds to wait before renewing a lease with ``ttl_left`` seconds to live.

    None for a reservation (no TTL: never renewed). Never negative: a lease already
    inside the margin is renewed at once."""
    if ttl_left is None:
        return None
    return max(0.0, ttl_left - margin)


def first_address(subnet: IPv4Network) -> IPv4Address:
    """The subnet's network address + 1: the bridge address flannel hands out."""
    return subnet.network_address + 1


def subnet_env(network: IPv4Network, subnet: IPv4Network, mtu: int, ip_masq: bool) -> str:
    """The text of ``subnet.env``, as flannel's ``WriteSubnetFile`` writes it."""
    return (f"FLANNEL_NETWORK={network}\n"
            f"FLANNEL_SUBNET={first_address(subnet)}/{subnet.prefixlen}\n"
            f"FLANNEL_MTU={mtu}\n"
            f"FLANNEL_IPMASQ={'true' if ip_masq else 'false'}\n")


def parse_subnet_env(text: str) -> dict[str, str]:
    """``KEY=value`` lines of a previous ``subnet.env`` (unreadable lines skipped)."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and key:
            values[key] = value
    return values


def previous_subnet(text: str) -> IPv4Network | None:
    """The lease a previous run wrote into ``subnet.env``, if readable."""
    value = parse_subnet_env(text).get("FLANNEL_SUBNET")
    if not value:
        return None
    try:
        return IPv4Network(value, strict=False)
    except ValueError:
        return None
