"""``flanneld``: lease a subnet, program the overlay, write ``subnet.env``, keep it all current.

Order on start, as flannel 0.10: read the network config (waiting, and saying why, while
it is missing or invalid — nothing is programmed from a config that does not parse), find
the external interface, create the VXLAN device (its MAC goes into the lease), acquire
the lease, give the device its /32, install the iptables rules, write ``subnet.env``,
program every peer from one watch of the subnets directory, then tell systemd READY=1.
The lease is renewed an hour (``-subnet-lease-renew-margin``) before its 24 h TTL runs
out, timed from the TTL the store last showed for it; if it is deleted, expires or
is taken over, flanneld logs that and exits 0 so systemd restarts it (flannel does the
same). On SIGTERM it removes its iptables rules and leaves the device and routes in
place, so restarting flanneld does not interrupt traffic.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import os
import random
import sys
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from .. import durable, journal, service
from ..kvclient import ClusterUnavailable, EtcdError, KeyNotFound, KVClient, Mirror, Node
from ..settings import Option, SettingsError, parse_go_bool, resolve
from . import VERSION, lease, netlink, plan
from .config import ConfigError, NetworkConfig, parse
from .lease import LeaseError, OutOfSubnets, decode_lease
from .store import LeaseLost, LeaseStore, leases_from

log = logging.getLogger("flanneld")
PROG = "flanneld"
ENV_PREFIX = "FLANNELD_"
CONFIG_RETRY = 1.0
ACQUIRE_RETRY = 5.0
IPTABLES_RESYNC = 5.0  # flannel re-checks its rules every 5 s and restores missing ones


def _address(text: str) -> IPv4Address:
    return IPv4Address(text)


OPTIONS = (
    Option("etcd-endpoints", "http://127.0.0.1:4001,http://127.0.0.1:2379",
           help="a comma-delimited list of etcd endpoints"),
    Option("etcd-prefix", "/coreos.com/network", help="etcd prefix"),
    Option("etcd-keyfile", "", help="SSL key file used to secure etcd communication"),
    Option("etcd-certfile", "", help="SSL certification file used to secure etcd communication"),
    Option("etcd-cafile", "", help="SSL Certificate Authority file used to secure etcd "
           "communication"),
    Option("etcd-username", "", help="username for BasicAuth to etcd"),
    Option("etcd-password", "", help="password for BasicAuth to etcd"),
    Option("iface", "", help="interface to use (IP or name) for inter-host communication"),
    Option("public-ip", None, _address, help="IP accessible by other nodes for inter-host "
           "communication"),
    Option("subnet-file", "/run/flannel/subnet.env",
           help="filename where env variables (subnet, MTU, ... ) will be written to"),
    Option("subnet-lease-renew-margin", 60, int, help="subnet lease renewal margin, in "
           "minutes, ranging from 1 to 1439"),
    Option("ip-masq", False, parse_go_bool, is_flag=True,
           help="setup IP masquerade rule for traffic destined outside of overlay network"),
    Option("version", False, parse_go_bool, is_flag=True, flag_only=True,
           help="print version and exit"),
)


def usage() -> str:
    lines = [f"Usage: {PROG} [OPTION]...", ""]
    for opt in OPTIONS:
        default = "" if opt.is_flag or not opt.default else f" (default {opt.default!r})"
        lines.append(f"  -{opt.name}")
        lines.append(f"        {opt.help}{default}")
    lines.append("")
    lines.append(f"Every flag can also be set as {ENV_PREFIX}<FLAG>, e.g. "
                 f"{ENV_PREFIX}ETCD_ENDPOINTS; flags take one or two dashes.")
    return "\n".join(lines) + "\n"


def settings(argv: Sequence[str], environ: Mapping[str, str]) -> dict[str, Any]:
    values = resolve(OPTIONS, argv, environ=environ, env_prefix=ENV_PREFIX)
    if not 1 <= values["subnet_lease_renew_margin"] <= 1439:
        raise SettingsError("subnet-lease-renew-margin: must be between 1 and 1439 minutes")
    return values


class Flanneld:
    """The running daemon's state: one lease, one overlay device, one watch."""

    def __init__(self, opts: dict[str, Any], svc: service.Service) -> None:
        self.opts = opts
        self.svc = svc
        self.client = KVClient(opts["etcd_endpoints"], cafile=opts["etcd_cafile"] or None,
                               certfile=opts["etcd_certfile"] or None,
                               keyfile=opts["etcd_keyfile"] or None,
                               username=opts["etcd_username"] or None,
                               password=opts["etcd_password"] or None)
        self.store = LeaseStore(self.client, opts["etcd_prefix"])
        # pyroute2's synchronous IPRoute runs its own event loop, so it lives on one
        # worker thread and every netlink call goes there (see ``netlink_call``).
        self.netlink_thread = ThreadPoolExecutor(1, thread_name_prefix="netlink")
        self.ipr: IPRoute | None = None
        self.lost = asyncio.Event()
        self.rearm = asyncio.Event()  # our lease's TTL changed in the store
        self.lease: lease.Lease | None = None
        self.value = ""
        self.overlay: int | None = None
        self.rules: list[list[str]] = []

    async def netlink_call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Runs ``fn(ipr, *args)`` on the netlink thread."""
        loop = asyncio.get_running_loop()
        if self.ipr is None:
            self.ipr = await loop.run_in_executor(self.netlink_thread, IPRoute)
        return await loop.run_in_executor(self.netlink_thread,
                                          functools.partial(fn, self.ipr, *args))

    async def wait_config(self) -> NetworkConfig | None:
        """The network config, re-read every second until it is there and valid."""
        said = ""
        while not self.svc.stopping.is_set():
            try:
                return parse(await self.store.config_text())
            except (ConfigError, KeyNotFound, ClusterUnavailable, EtcdError) as error:
                text = (f"Couldn't fetch network config: {error}"
                        if not isinstance(error, ConfigError)
                        else f"invalid network config {self.store.prefix}/config: {error}")
                if text != said:
                    log.error("%s", text, extra={"fields": {"config_error": str(error)}})
                    self.svc.status(text)
                    said = text
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.svc.stopping.wait(), CONFIG_RETRY)
        return None

    def previous_subnet(self) -> Any:
        with contextlib.suppress(OSError):
            return lease.previous_subnet(Path(self.opts["subnet_file"]).read_text())
        return None

    async def acquire(self, config: NetworkConfig, public_ip: IPv4Address) -> None:
        """Takes a lease, retrying through store outages and while every subnet is taken
        (a dead host's lease frees its subnet when its TTL runs out)."""
        rng = random.SystemRandom()
        said = ""
        while not self.svc.stopping.is_set():
            try:
                got, how = await self.store.acquire(config, public_ip, self.value,
                                                    rng.randrange, self.previous_subnet())
            except (ClusterUnavailable, EtcdError, TimeoutError, OutOfSubnets) as error:
                text = f"failed to acquire lease: {error}"
                if text != said:
                    log.error("%s", text, extra={"fields": {"event": "lease-failed"}})
                    self.svc.status(text)
                    said = text
                await _first_of((self.svc.stopping,), ACQUIRE_RETRY)
                continue
            self.lease = got
            log.info("lease acquired: %s (%s) public_ip=%s", got.subnet, how, public_ip,
                     extra={"fields": {"event": "lease-acquired", "subnet": str(got.subnet),
                                       "public_ip": str(public_ip), "how": how}})
            return

    def sync(self, ipr: IPRoute, config: NetworkConfig, ext: netlink.External,
             nodes: list[Node]) -> None:
        """Programs the kernel from the leases in ``nodes`` (the whole subnets dir); runs
        on the netlink thread."""
        assert self.lease is not None
        leases, bad = leases_from(nodes)
        for message in bad:
            log.warning("ignoring %s", message)
        want, skipped = plan.desired(config, self.lease.subnet, leases, ext.address.network)
        for other in skipped:
            log.warning("ignoring lease %s: backend %r, want %r", other.subnet,
                        other.backend_type, config.backend.type)
        have = netlink.current_state(ipr, config, self.lease.subnet, self.overlay, ext)
        ops = plan.diff(want, have)
        for failure in netlink.apply(ipr, ops, self.overlay, ext):
            log.warning("data plane: %s", failure)
        for op in ops:
            if isinstance(op.entry, plan.Route):
                log.info("peer %s %s via %s", "added" if op.action == "add" else "removed",
                         op.entry.dst, op.entry.gateway,
                         extra={"fields": {"event": f"peer-{op.action}",
                                           "subnet": str(op.entry.dst)}})

    def still_ours(self, node: Node | None) -> bool:
        """Whether our lease key, as the watch now shows it, still names our PublicIP."""
        if node is None or node.value is None or self.lease is None:
            return False
        try:
            return decode_lease(node.key, node.value).public_ip == self.lease.public_ip
        except LeaseError:
            return False

    async def keep_rules(self) -> None:
        """Puts back any of our iptables rules someone removed, every few seconds."""
        while True:
            await asyncio.sleep(IPTABLES_RESYNC)
            errors = await asyncio.to_thread(netlink.ensure_rules, self.rules)
            for error in errors:
                log.warning("iptables: %s", error)

    async def renew_loop(self, margin: float) -> None:
        """Renews the lease before expiry; sets ``lost`` when the lease is no longer ours."""
        while not self.svc.stopping.is_set() and not self.lost.is_set():
            assert self.lease is not None
            delay = lease.renew_delay(self.lease.ttl, margin)  # None: a reservation
            await _first_of((self.lost, self.rearm), delay)
            if self.lost.is_set():
                return
            if self.rearm.is_set():
                self.rearm.clear()
                continue
            try:
                self.lease = await self.store.renew(self.lease, self.value)
            except LeaseLost:
                self.lost.set()
                return
            except (ClusterUnavailable, EtcdError) as error:
                log.warning("lease renewal failed, retrying in %ds: %s", lease.RENEW_RETRY,
                            error)
                self.lease = dataclasses.replace(self.lease,
                                                 ttl=lease.RENEW_RETRY + int(margin))
                continue
            log.info("lease renewed: %s", self.lease.subnet,
                     extra={"fields": {"event": "lease-renewed",
                                       "subnet": str(self.lease.subnet)}})

    async def run(self) -> int:
        config = await self.wait_config()
        if config is None:
            return 0
        ext = await self.netlink_call(netlink.find_external, self.opts["iface"] or None)
        public_ip = self.opts["public_ip"] or ext.address.ip
        mtu = plan.mtu_for(config, ext.mtu)
        mac = ""
        if config.backend.type == "vxlan":
            self.overlay, mac = await self.netlink_call(
                netlink.ensure_vxlan, config.backend.vni, config.backend.port, ext,
                ext.address.ip, mtu)
        self.value = lease.encode_attrs(public_ip, config.backend.type, mac)
        await self.acquire(config, public_ip)
        if self.lease is None:
            return 0
        own = self.lease.subnet
        if self.overlay is not None:
            await self.netlink_call(netlink.set_address, self.overlay, own.network_address)
        self.rules = netlink.forward_rules(config.network)
        if self.opts["ip_masq"]:
            self.rules = netlink.masq_rules(config.network, own) + self.rules
        for error in netlink.ensure_rules(self.rules):
            log.warning("iptables: %s", error)
        durable.write_atomic(self.opts["subnet_file"], lease.subnet_env(
            config.network, own, mtu, self.opts["ip_masq"]))
        own_key = lease.lease_path(self.store.prefix, own)

        async def on_change(changes: dict[str, Node | None], full: bool) -> None:
            if own_key in changes:
                node = changes[own_key]
                if not self.still_ours(node):
                    self.lost.set()
                    return
                assert node is not None and self.lease is not None
                if node.ttl != self.lease.ttl:  # as flannel, follow a TTL changed outside
                    self.lease = dataclasses.replace(self.lease, ttl=node.ttl)
                    self.rearm.set()
            await self.netlink_call(self.sync, config, ext, list(mirror.nodes.values()))

        mirror = Mirror(self.client, self.store.subnets_dir, on_change)
        async with mirror.running():
            await _first_of((mirror.ready, self.svc.stopping), None)
            if self.svc.stopping.is_set():
                return 0
            self.svc.ready(f"subnet {own} on {ext.name}")
            renewer = asyncio.create_task(
                self.renew_loop(self.opts["subnet_lease_renew_margin"] * 60.0))
            keeper = asyncio.create_task(self.keep_rules())
            stop = asyncio.create_task(self.svc.stopping.wait())
            lost = asyncio.create_task(self.lost.wait())
            await asyncio.wait({stop, lost}, return_when=asyncio.FIRST_COMPLETED)
            for task in (renewer, keeper, stop, lost):
                task.cancel()
        if self.lost.is_set():
            log.error("Lease has been revoked. Shutting down daemon.",
                      extra={"fields": {"event": "lease-lost", "subnet": str(own)}})
        return 0

    async def close(self) -> None:
        netlink.remove_rules(self.rules)
        if self.ipr is not None:
            await self.netlink_call(IPRoute.close)
        self.netlink_thread.shutdown()
        await self.client.close()


async def _first_of(events: Sequence[asyncio.Event], timeout: float | None) -> None:
    """Returns when any of ``events`` is set or after ``timeout`` seconds (None: never)."""
    waiters = [asyncio.create_task(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    environ = os.environ if environ is None else environ
    if any(arg in ("-h", "-help", "--help") for arg in argv):
        sys.stdout.write(usage())
        return 0
    try:
        opts = settings(argv, environ)
    except SettingsError as error:
        sys.stderr.write(f"{PROG}: {error}\n{usage()}")
        return 2
    if opts["version"]:
        print(VERSION)
        return 0
    journal.setup(PROG)

    async def daemon(svc: service.Service) -> int:
        flanneld = Flanneld(opts, svc)
        try:
            return await flanneld.run()
        except (netlink.NetlinkSetupError, NetlinkError, OSError) as error:
            log.error("%s", error)
            return 1
        finally:
            await flanneld.close()

    return service.run(PROG, daemon)
