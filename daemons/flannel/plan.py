"""The data plane as a pure diff: what the leases call for against what the kernel has.

For each remote vxlan lease flannel keeps three entries on ``flannel.<VNI>`` (v0.10
``backend/vxlan/vxlan_network.go``): a permanent neighbour (remote subnet's network
address → remote VtepMAC), a permanent FDB entry (VtepMAC → remote PublicIP) and an
on-link route (remote subnet via its network address). With DirectRouting, a peer whose
PublicIP is on our own underlay link gets a plain route via that PublicIP instead;
host-gw gives every peer such a route. Leases of another backend type are skipped and
reported, as flannel warns and ignores them.

``diff`` orders the work so no moment routes into a missing neighbour: removals go route,
FDB, neighbour; additions neighbour, FDB, route. A neighbour or route whose key stays and
whose value changes is one replace (the netlink shell uses replace), an FDB entry whose
PublicIP changed is removed before the new one is appended.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network

from .config import NetworkConfig
from .lease import Lease


@dataclass(frozen=True, order=True)
class Neighbour:
    ip: IPv4Address
    mac: str


@dataclass(frozen=True, order=True)
class Fdb:
    mac: str
    dst: IPv4Address


@dataclass(frozen=True, order=True)
class Route:
    dst: IPv4Network
    gateway: IPv4Address
    #: on the overlay device with the onlink flag; False: a plain route on the underlay
    overlay: bool


Entry = Neighbour | Fdb | Route


@dataclass(frozen=True)
class Op:
    action: str  # "add" (replace semantics for neighbours and routes) or "remove"
    entry: Entry


@dataclass
class State:
    neighbours: set[Neighbour] = field(default_factory=set)
    fdb: set[Fdb] = field(default_factory=set)
    routes: set[Route] = field(default_factory=set)


def desired(config: NetworkConfig, own: IPv4Network, leases: Iterable[Lease],
            underlay: IPv4Network | None = None) -> tuple[State, list[Lease]]:
    """The entries the other leases call for, and the leases skipped (wrong backend).

    ``underlay`` is our external interface's network, for DirectRouting."""
    state = State()
    skipped: list[Lease] = []
    kind = config.backend.type
    for lease in sorted(leases, key=lambda item: item.subnet):
        if lease.subnet == own:
            continue
        if lease.backend_type != kind:
            skipped.append(lease)
            continue
        direct = kind == "host-gw" or (
            config.backend.direct_routing and underlay is not None
            and lease.public_ip in underlay)
        if direct:
            state.routes.add(Route(lease.subnet, lease.public_ip, overlay=False))
            continue
        if not lease.vtep_mac:
            skipped.append(lease)
            continue
        gateway = lease.subnet.network_address
        state.neighbours.add(Neighbour(gateway, lease.vtep_mac))
        state.fdb.add(Fdb(lease.vtep_mac, lease.public_ip))
        state.routes.add(Route(lease.subnet, gateway, overlay=True))
    return state, skipped


def diff(want: State, have: State) -> list[Op]:
    """The operations that turn ``have`` into ``want``, in a safe order."""
    ops: list[Op] = []
    want_route_dst = {route.dst for route in want.routes}
    want_neigh_ip = {neigh.ip for neigh in want.neighbours}
    ops += [Op("remove", r) for r in sorted(have.routes - want.routes)
            if r.dst not in want_route_dst]
    ops += [Op("remove", f) for f in sorted(have.fdb - want.fdb)]
    ops += [Op("remove", n) for n in sorted(have.neighbours - want.neighbours)
            if n.ip not in want_neigh_ip]
    ops += [Op("add", n) for n in sorted(want.neighbours - have.neighbours)]
    ops += [Op("add", f) for f in sorted(want.fdb - have.fdb)]
    ops += [Op("add", r) for r in sorted(want.routes - have.routes)]
    return ops


def mtu_for(config: NetworkConfig, underlay_mtu: int) -> int:
    """The MTU flannel reports: the underlay's less 50 bytes of VXLAN overhead."""
    return underlay_mtu - 50 if config.backend.type == "vxlan" else underlay_mtu
