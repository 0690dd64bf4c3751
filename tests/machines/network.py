"""The private network the test machines share: one bridge on the host, made by the test.

Each machine's host-side veth (``vb-<machine>``, created by systemd-nspawn
``--network-bridge``) is a port of the bridge, so machines reach each other and the host
reaches them at the bridge's own address. Addresses live only on links the test made; the
bridge has no route to anything else.
"""

from __future__ import annotations

import ipaddress
import secrets
import subprocess

SUBNET_POOL = ipaddress.ip_network("10.231.0.0/16")


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def _used_networks() -> list[ipaddress.IPv4Network]:
    out = _ip("-4", "-o", "addr", "show").stdout
    nets = []
    for line in out.splitlines():
        parts = line.split()
        if "inet" in parts:
            nets.append(ipaddress.ip_interface(parts[parts.index("inet") + 1]).network)
    return nets


class Bridge:
    """A Linux bridge with a /24 of its own, removed again by :meth:`delete`."""

    def __init__(self, name: str) -> None:
        if len(name) > 15:
            raise ValueError(f"bridge name {name!r} is longer than 15 characters")
        self.name = name
        used = _used_networks()
        for candidate in SUBNET_POOL.subnets(new_prefix=24):
            if not any(candidate.overlaps(n) for n in used):
                self.subnet = candidate
                break
        else:
            raise RuntimeError("no free /24 left for a test bridge")
        hosts = list(self.subnet.hosts())
        self.host_address = hosts[0]
        self._machine_addresses = iter(hosts[10:])
        # A fixed address: a bridge without one takes the lowest MAC among its ports, so
        # removing a killed machine's port could change it under the other machines' ARP.
        mac = "02:" + ":".join(f"{b:02x}" for b in secrets.token_bytes(5))
        _ip("link", "add", "name", name, "address", mac, "type", "bridge")
        try:
            _ip("addr", "add", f"{self.host_address}/{self.subnet.prefixlen}", "dev", name)
            _ip("link", "set", name, "up")
        except subprocess.CalledProcessError:
            self.delete()
            raise

    def next_address(self) -> ipaddress.IPv4Address:
        return next(self._machine_addresses)

    def delete(self) -> None:
        _ip("link", "del", self.name, check=False)


def delete_link(name: str) -> None:
    _ip("link", "del", name, check=False)


def set_link(name: str, up: bool) -> None:
    _ip("link", "set", name, "up" if up else "down")


def link_exists(name: str) -> bool:
    return _ip("link", "show", name, check=False).returncode == 0
