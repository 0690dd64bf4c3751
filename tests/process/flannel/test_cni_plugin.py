"""The ``flannel`` CNI plugin with Debian's real bridge and host-local plugins.

A "host" namespace holds a subnet.env as flanneld writes it; the plugin is run there the
way a runtime runs it (CNI_* variables, config on stdin) to give a "container" namespace
an address in the host's flannel subnet. The namespaces are the test's own and are
deleted afterwards, taking the bridge and veth with them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conditions import wait_until

CNI_PLUGINS = "/usr/lib/cni"
SUBNET_ENV = ("FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=10.5.72.1/24\n"
              "FLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n")


class Pod:
    def __init__(self) -> None:
        tag = f"fcni{os.getpid()}"
        self.host, self.container = f"{tag}h", f"{tag}c"
        self.dir = Path(tempfile.mkdtemp(prefix="flannel-cni-"))
        self.bin = self.dir / "bin"
        self.bin.mkdir()
        plugin = self.bin / "flannel"
        plugin.write_text(f"#!/bin/sh\nexec {sys.executable} -m "
                          "flotilla.daemons.flannel.cni_main\n")
        plugin.chmod(0o755)
        self.subnet_file = self.dir / "subnet.env"
        self.conf = {"cniVersion": "0.4.0", "name": "fltnet", "type": "flannel",
                     "subnetFile": str(self.subnet_file), "dataDir": str(self.dir / "flannel"),
                     "ipam": {"dataDir": str(self.dir / "ipam")}}

    def up(self) -> Pod:
        for name in (self.host, self.container):
            subprocess.run(["ip", "netns", "add", name], check=True)
            self.exec(name, "ip", "link", "set", "lo", "up")
        return self

    def exec(self, ns: str, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(["ip", "netns", "exec", ns, *cmd], capture_output=True,
                              text=True, check=check, timeout=30)

    def cni(self, command: str, conf: dict[str, Any] | None = None
            ) -> tuple[int, dict[str, Any] | None]:
        env = {**os.environ, "CNI_COMMAND": command, "CNI_CONTAINERID": "pod1",
               "CNI_NETNS": f"/run/netns/{self.container}", "CNI_IFNAME": "eth0",
               "CNI_PATH": f"{self.bin}:{CNI_PLUGINS}"}
        done = subprocess.run(["ip", "netns", "exec", self.host, str(self.bin / "flannel")],
                              input=json.dumps(conf or self.conf), env=env,
                              capture_output=True, text=True, timeout=60, check=False)
        return done.returncode, json.loads(done.stdout) if done.stdout.strip() else None

    def addresses(self, ns: str, dev: str) -> list[str]:
        done = self.exec(ns, "ip", "-j", "addr", "show", dev, check=False)
        if done.returncode != 0:
            return []
        return [f"{a['local']}/{a['prefixlen']}" for link in json.loads(done.stdout)
                for a in link["addr_info"] if a["family"] == "inet"]

    def down(self) -> None:
        for name in (self.host, self.container):
            subprocess.run(["ip", "netns", "del", name], check=False)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def pod() -> Iterator[Pod]:
    made = Pod()
    try:
        yield made.up()
    finally:
        made.down()


def test_add_check_del_give_and_take_back_an_address_in_the_flannel_subnet(pod: Pod) -> None:
    pod.subnet_file.write_text(SUBNET_ENV)
    status, result = pod.cni("ADD")
    assert status == 0, result
    assert result is not None and result["cniVersion"] == "0.4.0"
    address = result["ips"][0]["address"]
    assert address.startswith("10.5.72.") and address.endswith("/24")
    assert result["ips"][0]["gateway"] == "10.5.72.1"
    assert pod.addresses(pod.container, "eth0") == [address]
    assert pod.addresses(pod.host, "cni0") == ["10.5.72.1/24"]
    link = json.loads(pod.exec(pod.container, "ip", "-j", "link", "show", "eth0").stdout)[0]
    assert link["mtu"] == 1450
    routes = json.loads(pod.exec(pod.container, "ip", "-j", "route").stdout)
    assert {"dst": "10.5.0.0/16", "gateway": "10.5.72.1"}.items() <= next(
        r for r in routes if r["dst"] == "10.5.0.0/16").items()
    ip = address.split("/")[0]
    wait_until(lambda: pod.exec(pod.host, "ping", "-n", "-c", "1", "-W", "1", ip,
                                check=False).returncode == 0, 10, "the pod to answer a ping")
    saved = pod.dir / "flannel" / "pod1"
    assert json.loads(saved.read_text())["ipam"]["subnet"] == "10.5.72.0/24"

    status, reply = pod.cni("CHECK", {**pod.conf, "prevResult": result})
    assert status == 0, reply

    status, reply = pod.cni("DEL")
    assert status == 0, reply
    assert pod.addresses(pod.container, "eth0") == []
    assert not saved.exists()
    assert not (pod.dir / "ipam" / "fltnet" / ip).exists()  # host-local released it
    assert pod.cni("DEL")[0] == 0  # a second DEL is not an error


def test_add_without_subnet_env_fails_with_flannels_message_and_sets_nothing_up(
        pod: Pod) -> None:
    status, reply = pod.cni("ADD")
    assert status == 1
    assert reply == {"cniVersion": "0.4.0", "code": 999,
                     "msg": f"loadFlannelSubnetEnv failed: open {pod.subnet_file}: "
                            "no such file or directory"}
    assert pod.exec(pod.container, "ip", "link", "show", "eth0", check=False).returncode != 0
    assert pod.exec(pod.host, "ip", "link", "show", "cni0", check=False).returncode != 0
    assert not (pod.dir / "flannel" / "pod1").exists()


def test_version(pod: Pod) -> None:
    status, reply = pod.cni("VERSION")
    assert status == 0 and reply is not None
    assert {"0.3.1", "0.4.0", "1.0.0"} <= set(reply["supportedVersions"])
