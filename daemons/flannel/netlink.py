"""The data plane through netlink (pyroute2) and the -ip-masq rules through iptables.

The kernel does the encapsulation; this module only keeps the kernel's tables equal to
what :mod:`.plan` asks for: the ``flannel.<VNI>`` VXLAN device (learning off, local
address = our PublicIP, MTU = underlay - 50, address = our lease's network address /32),
per-peer neighbour, FDB and route entries, host-gw routes. pyroute2 rather than running
``ip``/``bridge``: it is maintained, speaks netlink directly and returns structured
replies. iptables keeps flannel's exact rules, checked with ``-C`` before ``-A``.
"""

from __future__ import annotations

import socket
import subprocess
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv4Network

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl import ndmsg

from .config import NetworkConfig
from .plan import Fdb, Neighbour, Op, Route, State

RTNH_F_ONLINK = 4
NUD_PERMANENT = ndmsg.states["permanent"]
RT_TABLE_MAIN = 254


class NetlinkSetupError(RuntimeError):
    """The external interface or the overlay device could not be set up."""


@dataclass(frozen=True)
class External:
    """The underlay interface flannel sends encapsulated traffic out of."""

    index: int
    name: str
    address: IPv4Interface
    mtu: int


def _addresses(ipr: IPRoute, index: int) -> list[IPv4Interface]:
    return [IPv4Interface(f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}")
            for a in ipr.get_addr(family=socket.AF_INET, index=index)]


def find_external(ipr: IPRoute, iface: str | None) -> External:
    """``-iface`` by name or IP, else the interface of the default route."""
    index: int | None = None
    if iface:
        try:
            wanted = IPv4Address(iface)
        except ValueError:
            wanted = None
        if wanted is None:
            found = ipr.link_lookup(ifname=iface)
            if not found:
                raise NetlinkSetupError(f"-iface: no interface named {iface!r}")
            index = found[0]
        else:
            for link in ipr.get_links():
                if any(a.ip == wanted for a in _addresses(ipr, link["index"])):
                    index = link["index"]
            if index is None:
                raise NetlinkSetupError(f"-iface: no interface has address {iface}")
    else:
        for route in ipr.get_routes(family=socket.AF_INET, table=RT_TABLE_MAIN):
            if route["dst_len"] == 0 and route.get_attr("RTA_OIF"):
                index = route.get_attr("RTA_OIF")
                break
        if index is None:
            raise NetlinkSetupError("no default route; give -iface")
    addresses = _addresses(ipr, index)
    if not addresses:
        raise NetlinkSetupError(f"-iface: interface {index} has no IPv4 address")
    link = ipr.link("get", index=index)[0]
    return External(index, link.get_attr("IFLA_IFNAME"), addresses[0],
                    link.get_attr("IFLA_MTU"))


def ensure_vxlan(ipr: IPRoute, vni: int, port: int, ext: External, local: IPv4Address,
                 mtu: int) -> tuple[int, str]:
    """Creates or reuses ``flannel.<vni>``; returns its index and MAC (the VtepMAC).

    A device with the same settings is kept as it is, so a restarted flanneld keeps its
    VtepMAC and the peers' FDB entries stay right; any other is replaced."""
    name = f"flannel.{vni}"
    found = ipr.link_lookup(ifname=name)
    if found:
        link = ipr.link("get", index=found[0])[0]
        info = (link.get_attr("IFLA_LINKINFO") or {}).get_attr("IFLA_INFO_DATA")
        same = info is not None and (
            info.get_attr("IFLA_VXLAN_ID") == vni and info.get_attr("IFLA_VXLAN_PORT") == port
            and info.get_attr("IFLA_VXLAN_LOCAL") == str(local)
            and info.get_attr("IFLA_VXLAN_LINK") == ext.index
            and not info.get_attr("IFLA_VXLAN_LEARNING"))
        if not same:
            ipr.link("del", index=found[0])
            found = []
    if not found:
        ipr.link("add", ifname=name, kind="vxlan", vxlan_id=vni, vxlan_link=ext.index,
                 vxlan_local=str(local), vxlan_port=port, vxlan_learning=0)
        found = ipr.link_lookup(ifname=name)
    index = found[0]
    ipr.link("set", index=index, mtu=mtu)
    mac = ipr.link("get", index=index)[0].get_attr("IFLA_ADDRESS")
    return index, mac.lower()


def set_address(ipr: IPRoute, index: int, address: IPv4Address) -> None:
    """Gives the overlay device exactly ``address``/32 (no broadcast route) and sets it up."""
    wanted = IPv4Interface(f"{address}/32")
    for current in _addresses(ipr, index):
        if current != wanted:
            ipr.addr("del", index=index, address=str(current.ip),
                     prefixlen=current.network.prefixlen)
    if wanted not in _addresses(ipr, index):
        ipr.addr("add", index=index, address=str(address), prefixlen=32)
    ipr.link("set", index=index, state="up")


def delete_vxlan(ipr: IPRoute, vni: int) -> None:
    for index in ipr.link_lookup(ifname=f"flannel.{vni}"):
        ipr.link("del", index=index)


def current_state(ipr: IPRoute, config: NetworkConfig, own: IPv4Network,
                  overlay: int | None, ext: External) -> State:
    """What the kernel has that is ours to manage: entries inside the flannel Network."""
    state = State()
    network = config.network
    if overlay is not None:
        for neigh in ipr.get_neighbours(family=socket.AF_INET, ifindex=overlay):
            dst, mac = neigh.get_attr("NDA_DST"), neigh.get_attr("NDA_LLADDR")
            if dst and mac and neigh["state"] & NUD_PERMANENT and IPv4Address(dst) in network:
                state.neighbours.add(Neighbour(IPv4Address(dst), mac.lower()))
        for entry in ipr.fdb("dump", ifindex=overlay):
            dst, mac = entry.get_attr("NDA_DST"), entry.get_attr("NDA_LLADDR")
            if dst and mac and entry["ifindex"] == overlay and mac != "00:00:00:00:00:00":
                state.fdb.add(Fdb(mac.lower(), IPv4Address(dst)))
    for route in ipr.get_routes(family=socket.AF_INET, table=RT_TABLE_MAIN):
        dst, gateway = route.get_attr("RTA_DST"), route.get_attr("RTA_GATEWAY")
        if dst is None or gateway is None:
            continue
        subnet = IPv4Network(f"{dst}/{route['dst_len']}")
        if not subnet.subnet_of(network) or subnet == own:
            continue
        oif = route.get_attr("RTA_OIF")
        if overlay is not None and oif == overlay:
            state.routes.add(Route(subnet, IPv4Address(gateway), overlay=True))
        elif oif == ext.index:
            state.routes.add(Route(subnet, IPv4Address(gateway), overlay=False))
    return state


def apply(ipr: IPRoute, ops: list[Op], overlay: int | None, ext: External) -> list[str]:
    """Carries out ``ops`` in order; returns one message per op that failed."""
    failures: list[str] = []
    for op in ops:
        entry = op.entry
        try:
            if isinstance(entry, Neighbour):
                ipr.neigh("replace" if op.action == "add" else "del", dst=str(entry.ip),
                          lladdr=entry.mac, ifindex=overlay, state=NUD_PERMANENT)
            elif isinstance(entry, Fdb):
                ipr.fdb("append" if op.action == "add" else "del", ifindex=overlay,
                        lladdr=entry.mac, dst=str(entry.dst), state=NUD_PERMANENT)
            else:
                oif = overlay if entry.overlay else ext.index
                flags = RTNH_F_ONLINK if entry.overlay else 0
                ipr.route("replace" if op.action == "add" else "del", dst=str(entry.dst),
                          gateway=str(entry.gateway), oif=oif, flags=flags)
        except NetlinkError as error:
            failures.append(f"{op.action} {entry}: {error}")
    return failures


def masq_rules(network: IPv4Network, own: IPv4Network) -> list[list[str]]:
    """flannel 0.10's -ip-masq rules (nat POSTROUTING) and its FORWARD accepts."""
    net, sub = str(network), str(own)
    return [
        ["-t", "nat", "POSTROUTING", "-s", net, "-d", net, "-j", "RETURN"],
        ["-t", "nat", "POSTROUTING", "-s", net, "!", "-d", "224.0.0.0/4", "-j", "MASQUERADE"],
        ["-t", "nat", "POSTROUTING", "!", "-s", net, "-d", sub, "-j", "RETURN"],
        ["-t", "nat", "POSTROUTING", "!", "-s", net, "-d", net, "-j", "MASQUERADE"],
    ]


def forward_rules(network: IPv4Network) -> list[list[str]]:
    return [["-t", "filter", "FORWARD", "-s", str(network), "-j", "ACCEPT"],
            ["-t", "filter", "FORWARD", "-d", str(network), "-j", "ACCEPT"]]


def _iptables(action: str, rule: list[str]) -> subprocess.CompletedProcess:
    table, chain, spec = rule[1], rule[2], rule[3:]
    return subprocess.run(["iptables", "-w", "-t", table, action, chain, *spec],
                          capture_output=True, text=True, check=False)


def ensure_rules(rules: list[list[str]]) -> list[str]:
    """Makes the rules present, in order; returns the errors iptables printed.

    If any is missing, all are removed and appended again, as flannel does, so a rule put
    back never lands after the MASQUERADE it must precede."""
    if all(_iptables("-C", rule).returncode == 0 for rule in rules):
        return []
    remove_rules(rules)
    errors = []
    for rule in rules:
        done = _iptables("-A", rule)
        if done.returncode != 0:
            errors.append(done.stderr.strip())
    return errors


def remove_rules(rules: list[list[str]]) -> None:
    for rule in rules:
        while _iptables("-C", rule).returncode == 0:
            if _iptables("-D", rule).returncode != 0:
                break
