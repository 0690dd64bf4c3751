"""Two network namespaces joined by a veth pair, a kvd in the first, flanneld in each.

The test creates everything it uses: namespaces ``flt<pid>a``/``flt<pid>b``, the veth
pair (10.199.0.1/24 in A, 10.199.0.2/24 in B), the kvd on 10.199.0.1:2379 inside A (B
reaches it over the veth), and a bridge ``cni0`` per namespace holding the first address
of that namespace's flannel subnet (the address a container bridge would have), so a
ping between the two bridges crosses the VXLAN overlay. Deleting the namespaces removes
their links; every process started here is killed by PID.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from tests.conditions import wait_until

PYTHON = sys.executable
STORE_IP = "10.199.0.1"
STORE_URL = f"http://{STORE_IP}:2379"
PREFIX = "/coreos.com/network"


def run(*cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, check=check, timeout=30)


class Pair:
    """The two namespaces, the store, and the flanneld processes running in them."""

    def __init__(self) -> None:
        tag = f"flt{os.getpid()}"
        self.ns = {"a": f"{tag}a", "b": f"{tag}b"}
        self.ip = {"a": "10.199.0.1", "b": "10.199.0.2"}
        self.dev = {"a": "fva", "b": "fvb"}
        self.dir = Path(tempfile.mkdtemp(prefix="flannel-"))
        self.procs: list[subprocess.Popen] = []
        self.flanneld: dict[str, subprocess.Popen] = {}
        self.pod_ns: list[str] = []

    def exec(self, side: str, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
        return run("ip", "netns", "exec", self.ns[side], *cmd, check=check)

    def up(self) -> Pair:
        for side in "ab":
            run("ip", "netns", "add", self.ns[side])
            self.exec(side, "ip", "link", "set", "lo", "up")
        run("ip", "link", "add", self.dev["a"], "netns", self.ns["a"], "type", "veth",
            "peer", "name", self.dev["b"], "netns", self.ns["b"])
        for side in "ab":
            self.exec(side, "ip", "addr", "add", f"{self.ip[side]}/24", "dev", self.dev[side])
            self.exec(side, "ip", "link", "set", self.dev[side], "up")
        peer = f"http://{STORE_IP}:2380"
        with open(self.dir / "kvd.log", "wb") as log:
            self.procs.append(subprocess.Popen(
                ["ip", "netns", "exec", self.ns["a"], PYTHON, "-m", "flotilla.daemons.kv",
                 "--name", "t", "--data-dir", str(self.dir / "kvd"),
                 "--listen-client-urls", STORE_URL, "--advertise-client-urls", STORE_URL,
                 "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                 "--initial-cluster", f"t={peer}"], stdout=log, stderr=subprocess.STDOUT))
        wait_until(lambda: self.store("GET", "/").get("action") == "get", 20, "kvd to answer",
                   interval=0.2, tolerate=(ValueError, subprocess.CalledProcessError))
        return self

    def store(self, method: str, key: str, **form: str) -> dict[str, Any]:
        """One etcd v2 request from inside namespace A (the host has no route there)."""
        cmd = ["curl", "-sS", "-X", method, f"{STORE_URL}/v2/keys{key}"]
        for name, value in form.items():
            cmd += ["--data-urlencode", f"{name}={value}"]
        return json.loads(self.exec("a", *cmd).stdout)

    def set_config(self, text: str) -> None:
        assert self.store("PUT", f"{PREFIX}/config", value=text)["action"] == "set"

    def leases(self) -> dict[str, str]:
        reply = self.store("GET", f"{PREFIX}/subnets?recursive=true")
        nodes = reply.get("node", {}).get("nodes", [])
        return {node["key"].rsplit("/", 1)[1]: node["value"] for node in nodes}

    def subnet_file(self, side: str) -> Path:
        return self.dir / side / "subnet.env"

    def start_flanneld(self, side: str, *extra: str) -> subprocess.Popen:
        (self.dir / side).mkdir(exist_ok=True)
        log = open(self.dir / side / "flanneld.log", "ab")  # noqa: SIM115 - child owns it
        env = {**os.environ, "FLANNELD_ETCD_ENDPOINTS": STORE_URL}
        env.pop("NOTIFY_SOCKET", None)
        proc = subprocess.Popen(
            ["ip", "netns", "exec", self.ns[side], PYTHON, "-m", "flotilla.daemons.flannel",
             "-iface", self.dev[side], "--subnet-file", str(self.subnet_file(side)), *extra],
            stdout=log, stderr=subprocess.STDOUT, env=env)
        log.close()
        self.procs.append(proc)
        self.flanneld[side] = proc
        return proc

    def log(self, side: str) -> str:
        path = self.dir / side / "flanneld.log"
        return path.read_text() if path.exists() else ""

    def env(self, side: str) -> dict[str, str]:
        lines = self.subnet_file(side).read_text().splitlines()
        return dict(line.split("=", 1) for line in lines)

    def wait_ready(self, side: str, timeout: float = 20) -> dict[str, str]:
        proc = self.flanneld[side]

        def ready() -> dict[str, str] | None:
            assert proc.poll() is None, f"flanneld {side} exited:\n{self.log(side)}"
            return self.env(side) if self.subnet_file(side).exists() else None

        return wait_until(ready, timeout, f"flanneld {side} to write subnet.env")

    def kill(self, side: str, sig: int = signal.SIGKILL) -> None:
        proc = self.flanneld.pop(side)
        proc.send_signal(sig)
        proc.wait(10)

    def link(self, side: str, name: str) -> dict[str, Any] | None:
        done = self.exec(side, "ip", "-d", "-j", "link", "show", name, check=False)
        return json.loads(done.stdout)[0] if done.returncode == 0 else None

    def fdb(self, side: str) -> list[dict[str, Any]]:
        return json.loads(self.exec(side, "bridge", "-j", "fdb", "show", "dev",
                                    "flannel.1").stdout)

    def overlay_entries(self, side: str) -> dict[str, list[dict[str, Any]]]:
        """Neighbours, FDB entries and routes on ``flannel.1`` in ``side``."""
        def dump(*cmd: str) -> list[dict[str, Any]]:
            return json.loads(self.exec(side, *cmd).stdout or "[]")
        return {"neigh": dump("ip", "-j", "neigh", "show", "dev", "flannel.1"),
                "fdb": [e for e in self.fdb(side) if "dst" in e],
                "route": dump("ip", "-j", "route", "show", "dev", "flannel.1")}

    def rules(self, side: str, table: str, chain: str) -> list[str]:
        out = self.exec(side, "iptables", "-w", "-t", table, "-S", chain).stdout
        return [line for line in out.splitlines() if line.startswith("-A ")]

    def add_bridge(self, side: str, address: str) -> None:
        self.exec(side, "ip", "link", "add", "cni0", "type", "bridge")
        self.exec(side, "ip", "addr", "add", address, "dev", "cni0")
        self.exec(side, "ip", "link", "set", "cni0", "up")

    def ping(self, side: str, source: str, target: str) -> bool:
        done = self.exec(side, "ping", "-n", "-c", "1", "-W", "1", "-I", source, target,
                         check=False)
        return done.returncode == 0

    def add_pod(self, side: str) -> str:
        """A pod namespace attached through the ``flannel`` CNI plugin; returns its IP."""
        pod = f"{self.ns[side]}p"
        run("ip", "netns", "add", pod)
        self.pod_ns.append(pod)
        bin_dir = self.dir / "bin"
        if not (bin_dir / "flannel").exists():
            bin_dir.mkdir(exist_ok=True)
            (bin_dir / "flannel").write_text(
                f"#!/bin/sh\nexec {PYTHON} -m flotilla.daemons.flannel.cni_main\n")
            (bin_dir / "flannel").chmod(0o755)
        conf = {"cniVersion": "0.4.0", "name": "fltpods", "type": "flannel",
                "subnetFile": str(self.subnet_file(side)),
                "dataDir": str(self.dir / side / "cni"),
                "ipam": {"dataDir": str(self.dir / side / "ipam")}}
        env = {**os.environ, "CNI_COMMAND": "ADD", "CNI_CONTAINERID": f"pod-{side}",
               "CNI_NETNS": f"/run/netns/{pod}", "CNI_IFNAME": "eth0",
               "CNI_PATH": f"{bin_dir}:/usr/lib/cni"}
        done = subprocess.run(["ip", "netns", "exec", self.ns[side], str(bin_dir / "flannel")],
                              input=json.dumps(conf), env=env, capture_output=True,
                              text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
        return json.loads(done.stdout)["ips"][0]["address"].split("/")[0]

    def down(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        for name in [*self.pod_ns, *self.ns.values()]:
            run("ip", "netns", "del", name, check=False)
        shutil.rmtree(self.dir, ignore_errors=True)
