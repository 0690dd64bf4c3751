"""The data-plane diff: entries per remote lease, and the order of the work."""

from __future__ import annotations

import json
from ipaddress import IPv4Address, IPv4Network

from flotilla.daemons.flannel.config import parse
from flotilla.daemons.flannel.lease import Lease
from flotilla.daemons.flannel.plan import Fdb, Neighbour, Op, Route, State, desired, diff, mtu_for

NET, IP = IPv4Network, IPv4Address
OWN = NET("10.5.1.0/24")
MAC_B, MAC_C = "aa:aa:aa:aa:aa:0b", "aa:aa:aa:aa:aa:0c"


def config(backend: dict):
    return parse(json.dumps({"Network": "10.5.0.0/16", "Backend": backend}))


VX = config({"Type": "vxlan"})
B = Lease(NET("10.5.2.0/24"), IP("192.168.0.2"), "vxlan", MAC_B)
C = Lease(NET("10.5.3.0/24"), IP("172.16.0.3"), "vxlan", MAC_C)
ME = Lease(OWN, IP("192.168.0.1"), "vxlan", "aa:aa:aa:aa:aa:01")


def entries(lease: Lease) -> State:
    gw = lease.subnet.network_address
    return State({Neighbour(gw, lease.vtep_mac)}, {Fdb(lease.vtep_mac, lease.public_ip)},
                 {Route(lease.subnet, gw, overlay=True)})


def test_each_remote_vxlan_lease_gives_neighbour_fdb_and_onlink_route() -> None:
    want, skipped = desired(VX, OWN, [ME, B, C])
    assert skipped == []
    assert want.neighbours == {Neighbour(IP("10.5.2.0"), MAC_B), Neighbour(IP("10.5.3.0"), MAC_C)}
    assert want.fdb == {Fdb(MAC_B, IP("192.168.0.2")), Fdb(MAC_C, IP("172.16.0.3"))}
    assert want.routes == {Route(B.subnet, IP("10.5.2.0"), True),
                           Route(C.subnet, IP("10.5.3.0"), True)}


def test_other_backends_and_mac_less_leases_are_skipped() -> None:
    gw = Lease(NET("10.5.4.0/24"), IP("192.168.0.4"), "host-gw")
    nomac = Lease(NET("10.5.5.0/24"), IP("192.168.0.5"), "vxlan")
    want, skipped = desired(VX, OWN, [B, gw, nomac])
    assert skipped == [gw, nomac]
    assert want.routes == {Route(B.subnet, IP("10.5.2.0"), True)}


def test_direct_routing_uses_plain_routes_for_peers_on_our_link_only() -> None:
    direct = config({"Type": "vxlan", "DirectRouting": True})
    want, _ = desired(direct, OWN, [B, C], underlay=NET("192.168.0.0/24"))
    assert Route(B.subnet, B.public_ip, overlay=False) in want.routes
    assert Neighbour(IP("10.5.2.0"), MAC_B) not in want.neighbours
    assert Route(C.subnet, IP("10.5.3.0"), overlay=True) in want.routes


def test_host_gw_routes_every_peer_via_its_public_ip() -> None:
    hostgw = config({"Type": "host-gw"})
    peer = Lease(NET("10.5.2.0/24"), IP("192.168.0.2"), "host-gw")
    want, skipped = desired(hostgw, OWN, [peer, B])
    assert want == State(set(), set(), {Route(peer.subnet, peer.public_ip, overlay=False)})
    assert skipped == [B]


def test_adds_go_neighbour_fdb_route_and_nothing_when_in_sync() -> None:
    want, _ = desired(VX, OWN, [B])
    ops = diff(want, State())
    assert [type(op.entry) for op in ops] == [Neighbour, Fdb, Route]
    assert all(op.action == "add" for op in ops)
    assert diff(want, want) == []


def test_a_departed_peer_is_removed_route_first() -> None:
    want, _ = desired(VX, OWN, [B])
    have = entries(B)
    for kind in ("neighbours", "fdb", "routes"):
        getattr(have, kind).update(getattr(entries(C), kind))
    ops = diff(want, have)
    assert ops == [Op("remove", Route(C.subnet, IP("10.5.3.0"), True)),
                   Op("remove", Fdb(MAC_C, C.public_ip)),
                   Op("remove", Neighbour(IP("10.5.3.0"), MAC_C))]


def test_a_peer_with_a_new_mac_is_replaced_and_its_old_fdb_entry_removed() -> None:
    moved = Lease(B.subnet, B.public_ip, "vxlan", "aa:aa:aa:aa:aa:ff")
    want, _ = desired(VX, OWN, [moved])
    ops = diff(want, entries(B))
    assert ops == [Op("remove", Fdb(MAC_B, B.public_ip)),
                   Op("add", Neighbour(IP("10.5.2.0"), "aa:aa:aa:aa:aa:ff")),
                   Op("add", Fdb("aa:aa:aa:aa:aa:ff", B.public_ip))]


def test_a_peer_with_a_new_public_ip_gets_its_fdb_entry_moved() -> None:
    moved = Lease(B.subnet, IP("192.168.0.99"), "vxlan", MAC_B)
    ops = diff(desired(VX, OWN, [moved])[0], entries(B))
    assert ops == [Op("remove", Fdb(MAC_B, B.public_ip)), Op("add", Fdb(MAC_B, moved.public_ip))]


def test_mtu_is_the_underlay_less_vxlan_overhead() -> None:
    assert mtu_for(VX, 1500) == 1450
    assert mtu_for(config({"Type": "host-gw"}), 1500) == 1500
