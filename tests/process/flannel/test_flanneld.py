"""flanneld in two network namespaces over a veth pair, against a real kvd.

What is checked is what a user would see: the leases in the store with flannel's exact
JSON, the VXLAN device and FDB entries in the kernel, a ping that crosses the overlay,
the same subnet after a SIGKILL and restart, and a bad config refused with nothing
programmed.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv4Network

import pytest

from tests.conditions import wait_until

from .netns import Pair, run

VXLAN = '{"Network": "10.5.0.0/16", "Backend": {"Type": "vxlan"}}'


@pytest.fixture
def pair() -> Iterator[Pair]:
    made = Pair()
    try:
        yield made.up()
    finally:
        made.down()


def bridge_address(env: dict[str, str]) -> str:
    return env["FLANNEL_SUBNET"].split("/")[0]


def test_two_hosts_lease_program_and_ping_across_the_overlay_and_survive_sigkill(
        pair: Pair) -> None:
    pair.set_config(VXLAN)
    for side in "ab":
        pair.start_flanneld(side)
    env = {side: pair.wait_ready(side) for side in "ab"}

    subnets = {side: IPv4Network(env[side]["FLANNEL_SUBNET"], strict=False) for side in "ab"}
    assert subnets["a"] != subnets["b"]
    for side in "ab":
        assert env[side]["FLANNEL_NETWORK"] == "10.5.0.0/16"
        assert env[side]["FLANNEL_MTU"] == "1450"
        assert env[side]["FLANNEL_IPMASQ"] == "false"
        assert subnets[side].prefixlen == 24 and subnets[side].subnet_of(
            IPv4Network("10.5.0.0/16"))
        assert subnets[side] != IPv4Network("10.5.0.0/24")  # the first subnet is skipped

    # The leases, byte for byte as flannel 0.10 writes them, with each device's MAC.
    leases = pair.leases()
    devices = {side: pair.link(side, "flannel.1") for side in "ab"}
    for side in "ab":
        device = devices[side]
        assert device is not None
        info = device["linkinfo"]["info_data"]
        assert (info["id"], info["port"], info["local"]) == (1, 8472, pair.ip[side])
        assert info.get("learning") is False
        assert device["mtu"] == 1450
        key = f"{subnets[side].network_address}-24"
        assert leases[key] == (f'{{"PublicIP":"{pair.ip[side]}","BackendType":"vxlan",'
                               f'"BackendData":{{"VtepMAC":"{device["address"]}"}}}}')

    # Each side has an FDB entry for the other's VTEP.
    for side, other in (("a", "b"), ("b", "a")):
        wait_until(lambda s=side, o=other: any(
            e.get("mac") == devices[o]["address"] and e.get("dst") == pair.ip[o]
            for e in pair.fdb(s)), 10, f"FDB entry for {other} on {side}")

    for side in "ab":
        pair.add_bridge(side, env[side]["FLANNEL_SUBNET"])
    source, target = bridge_address(env["a"]), bridge_address(env["b"])
    wait_until(lambda: pair.ping("a", source, target), 10, "a ping across the overlay",
               interval=0.2)

    # SIGKILL b's flanneld and start it again: the same lease, and traffic flows.
    first = pair.subnet_file("b").read_text()
    pair.kill("b")
    # With b's flanneld dead the kernel keeps forwarding: a restart interrupts nothing.
    assert pair.ping("a", source, target)
    pair.subnet_file("b").unlink()  # the restart must find its lease in the store
    pair.start_flanneld("b")
    again = pair.wait_ready("b")
    assert again["FLANNEL_SUBNET"] == env["b"]["FLANNEL_SUBNET"]
    assert pair.subnet_file("b").read_text() == first
    assert sorted(pair.leases()) == sorted(leases)
    assert "(reused)" in pair.log("b")
    wait_until(lambda: pair.ping("a", source, target), 10, "a ping after the restart",
               interval=0.2)
    wait_until(lambda: pair.ping("b", target, source), 10, "a ping back from b",
               interval=0.2)


def test_a_bad_network_config_is_refused_by_name_and_nothing_is_programmed(
        pair: Pair) -> None:
    proc = pair.start_flanneld("a")  # before any config exists: it waits and says so
    wait_until(lambda: "Couldn't fetch network config: 100: Key not found" in pair.log("a"),
               15, "flanneld to report the missing config")
    pair.set_config('{"Network": "10.5.0.0/16", "SubnetLen": 31, "Backend": {"Type": "vxlan"}}')
    wait_until(lambda: "SubnetLen must be less than /31" in pair.log("a"), 15,
               "flanneld to name the bad field")
    assert proc.poll() is None  # it waits for a usable config, as flannel does
    assert pair.link("a", "flannel.1") is None
    assert not pair.subnet_file("a").exists()
    assert pair.store("GET", "/coreos.com/network/subnets").get("errorCode") == 100

    # Fixed in the store, the config is picked up without a restart.
    pair.set_config(VXLAN)
    env = pair.wait_ready("a")
    assert json.loads(next(iter(pair.leases().values())))["PublicIP"] == pair.ip["a"]
    assert env["FLANNEL_SUBNET"].endswith(".1/24")
    assert pair.link("a", "flannel.1") is not None


def test_ip_masq_installs_flannels_rules_restores_them_and_removes_them_on_sigterm(
        pair: Pair) -> None:
    pair.set_config(VXLAN)
    proc = pair.start_flanneld("a", "-ip-masq")
    env = pair.wait_ready("a")
    assert env["FLANNEL_IPMASQ"] == "true"
    own = str(IPv4Network(env["FLANNEL_SUBNET"], strict=False))
    net = "10.5.0.0/16"
    masq = [f"-A POSTROUTING -s {net} -d {net} -j RETURN",
            f"-A POSTROUTING -s {net} ! -d 224.0.0.0/4 -j MASQUERADE",
            f"-A POSTROUTING ! -s {net} -d {own} -j RETURN",
            f"-A POSTROUTING ! -s {net} -d {net} -j MASQUERADE"]
    forward = [f"-A FORWARD -s {net} -j ACCEPT", f"-A FORWARD -d {net} -j ACCEPT"]
    assert pair.rules("a", "nat", "POSTROUTING") == masq
    assert pair.rules("a", "filter", "FORWARD") == forward

    # One rule removed by hand comes back, and in its place: the whole set is redone.
    pair.exec("a", "iptables", "-w", "-t", "nat", "-D", "POSTROUTING", "-s", net, "-d", net,
              "-j", "RETURN")
    wait_until(lambda: pair.rules("a", "nat", "POSTROUTING") == masq, 12,
               "the masquerade rules to be restored in order", interval=0.5)

    pair.kill("a", signal.SIGTERM)
    assert proc.returncode == 0
    assert pair.rules("a", "nat", "POSTROUTING") == []
    assert pair.rules("a", "filter", "FORWARD") == []
    # The device and the lease stay, so a restart does not disturb traffic.
    assert pair.link("a", "flannel.1") is not None
    assert len(pair.leases()) == 1


def test_a_revoked_lease_stops_its_daemon_and_the_peer_forgets_it(pair: Pair) -> None:
    pair.set_config(VXLAN)
    for side in "ab":
        pair.start_flanneld(side)
    env = {side: pair.wait_ready(side) for side in "ab"}
    b_subnet = IPv4Network(env["b"]["FLANNEL_SUBNET"], strict=False)
    b_gateway = str(b_subnet.network_address)
    wait_until(lambda: any(r["dst"] == str(b_subnet) for r in pair.overlay_entries("a")["route"]),
               10, "a's route to b")

    proc = pair.flanneld["b"]
    key = f"/coreos.com/network/subnets/{b_subnet.network_address}-24"
    assert pair.store("DELETE", key)["action"] == "delete"
    assert proc.wait(10) == 0
    assert "Lease has been revoked. Shutting down daemon." in pair.log("b")

    def forgotten() -> bool:
        entries = pair.overlay_entries("a")
        return (not any(r["dst"] == str(b_subnet) for r in entries["route"])
                and not any(n["dst"] == b_gateway for n in entries["neigh"])
                and not any(e["dst"] == pair.ip["b"] for e in entries["fdb"]))

    wait_until(forgotten, 10, "a to remove b's route, neighbour and FDB entry")


def test_host_gw_routes_each_peer_subnet_via_its_public_ip(pair: Pair) -> None:
    pair.set_config('{"Network": "10.5.0.0/16", "Backend": {"Type": "host-gw"}}')
    for side in "ab":
        pair.start_flanneld(side)
    env = {side: pair.wait_ready(side) for side in "ab"}
    for side, other in (("a", "b"), ("b", "a")):
        assert env[side]["FLANNEL_MTU"] == "1500"  # no encapsulation
        assert pair.link(side, "flannel.1") is None
        subnet = str(IPv4Network(env[other]["FLANNEL_SUBNET"], strict=False))
        wait_until(lambda s=side, o=other, n=subnet: any(
            r["dst"] == n and r.get("gateway") == pair.ip[o]
            for r in json.loads(pair.exec(s, "ip", "-j", "route", "show", "dev",
                                          pair.dev[s]).stdout)),
            10, f"{side}'s route to {other}'s subnet via {pair.ip[other]}")
    value = json.loads(next(iter(pair.leases().values())))
    assert value.keys() == {"PublicIP", "BackendType"} and value["BackendType"] == "host-gw"
    for side in "ab":
        pair.add_bridge(side, env[side]["FLANNEL_SUBNET"])
    wait_until(lambda: pair.ping("a", bridge_address(env["a"]), bridge_address(env["b"])),
               10, "a ping over host-gw routes", interval=0.2)


def test_the_lease_is_renewed_a_margin_before_the_ttl_the_store_shows(pair: Pair) -> None:
    pair.set_config(VXLAN)
    pair.start_flanneld("a", "-subnet-lease-renew-margin", "1439")  # renew at TTL 86340 s
    env = pair.wait_ready("a")
    key = ("/coreos.com/network/subnets/"
           f"{IPv4Network(env['FLANNEL_SUBNET'], strict=False).network_address}-24")
    value = pair.store("GET", key)["node"]["value"]
    # Someone shortens the TTL to 86346 s: flanneld follows the watch, renews ~6 s later.
    pair.store("PUT", key, value=value, ttl="86346", prevValue=value)
    renewed = wait_until(lambda: (pair.store("GET", key)["node"]["ttl"] > 86380
                                  and "lease renewed" in pair.log("a") and pair.log("a")),
                         20, "flanneld to renew its lease", interval=0.5)
    assert pair.store("GET", key)["node"]["value"] == value
    assert renewed.count("lease renewed") == 1


def test_pods_attached_by_the_cni_plugin_reach_each_other_across_hosts(pair: Pair) -> None:
    pair.set_config(VXLAN)
    for side in "ab":
        pair.exec(side, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        pair.start_flanneld(side, "-ip-masq")
    env = {side: pair.wait_ready(side) for side in "ab"}
    pods = {side: pair.add_pod(side) for side in "ab"}
    for side in "ab":
        assert IPv4Address(pods[side]) in IPv4Network(env[side]["FLANNEL_SUBNET"], strict=False)
    pod_a = pair.pod_ns[0]
    wait_until(lambda: run("ip", "netns", "exec", pod_a, "ping", "-n", "-c", "1", "-W", "1",
                           pods["b"], check=False).returncode == 0,
               15, "pod a to reach pod b over the overlay", interval=0.3)
    # Pod to pod is not masqueraded: the packets hit flanneld's RETURN rule, not MASQUERADE.
    counted = pair.exec("a", "iptables", "-w", "-t", "nat", "-S", "POSTROUTING", "-v").stdout
    counts = {line.split(" -c ")[0]: int(line.split(" -c ")[1].split()[0])
              for line in counted.splitlines() if " -c " in line}
    assert counts["-A POSTROUTING -s 10.5.0.0/16 -d 10.5.0.0/16"] >= 1
    assert counts["-A POSTROUTING -s 10.5.0.0/16 ! -d 224.0.0.0/4"] == 0


def test_direct_routing_uses_plain_routes_to_peers_on_the_same_link(pair: Pair) -> None:
    pair.set_config('{"Network": "10.5.0.0/16", '
                    '"Backend": {"Type": "vxlan", "DirectRouting": true}}')
    for side in "ab":
        pair.start_flanneld(side)
    env = {side: pair.wait_ready(side) for side in "ab"}
    b_subnet = str(IPv4Network(env["b"]["FLANNEL_SUBNET"], strict=False))
    wait_until(lambda: any(
        r["dst"] == b_subnet and r.get("gateway") == pair.ip["b"]
        for r in json.loads(pair.exec("a", "ip", "-j", "route", "show", "dev",
                                      pair.dev["a"]).stdout)), 10, "a's direct route to b")
    entries = pair.overlay_entries("a")
    assert entries["fdb"] == [] and entries["route"] == []  # nothing through the overlay
    for side in "ab":
        pair.add_bridge(side, env[side]["FLANNEL_SUBNET"])
    wait_until(lambda: pair.ping("a", bridge_address(env["a"]), bridge_address(env["b"])),
               10, "a ping over the direct route", interval=0.2)


def test_out_of_subnets_is_reported_and_retried_until_one_frees(pair: Pair) -> None:
    pair.set_config('{"Network": "10.5.0.0/16", "SubnetMin": "10.5.7.0", '
                    '"SubnetMax": "10.5.7.0", "Backend": {"Type": "vxlan"}}')
    taken = ('{"PublicIP":"10.199.0.99","BackendType":"vxlan",'
             '"BackendData":{"VtepMAC":"aa:bb:cc:dd:ee:ff"}}')
    pair.store("PUT", "/coreos.com/network/subnets/10.5.7.0-24", value=taken, ttl="600")
    pair.start_flanneld("a")
    wait_until(lambda: "failed to acquire lease: out of subnets" in pair.log("a"), 15,
               "flanneld to say it is out of subnets")
    assert not pair.subnet_file("a").exists()
    pair.store("DELETE", "/coreos.com/network/subnets/10.5.7.0-24")
    assert pair.wait_ready("a")["FLANNEL_SUBNET"] == "10.5.7.1/24"
