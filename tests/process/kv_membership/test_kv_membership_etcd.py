"""Side by side with Debian's etcd 3.4: member requests and ``member`` commands.

A three-member etcd (``--enable-v2``) on 127.0.0.31-33 answers the same bad ``/v2/members``
bodies as the kvd tests expect, and ``kvctl member ...`` prints what
``ETCDCTL_API=2 etcdctl member ...`` prints against it, exit codes included.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.conditions import free_port, wait_until
from tests.process.kv.harness import require_tools
from tests.process.kv_cluster.harness import REPO

from .test_kv_membership_requests import BAD_ADDS

HOSTS = ("127.0.0.31", "127.0.0.32", "127.0.0.33")


class EtcdCluster:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.client = {h: f"http://{h}:{free_port(h)}" for h in HOSTS}
        self.peer = {h: f"http://{h}:{free_port(h)}" for h in HOSTS}
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self) -> None:
        initial = ",".join(f"e{i}={self.peer[h]}" for i, h in enumerate(HOSTS))
        for i, h in enumerate(HOSTS):
            with open(self.workdir / f"e{i}.log", "ab") as log:
                self.procs.append(subprocess.Popen(
                    ["etcd", "--name", f"e{i}", "--data-dir", str(self.workdir / f"e{i}"),
                     "--listen-client-urls", self.client[h],
                     "--advertise-client-urls", self.client[h],
                     "--listen-peer-urls", self.peer[h],
                     "--initial-advertise-peer-urls", self.peer[h],
                     "--initial-cluster", initial, "--enable-v2"],
                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True))

        def healthy() -> bool:
            for url in self.client.values():
                resp = requests.get(url + "/health", timeout=2)
                if resp.status_code != 200 or resp.json().get("health") != "true":
                    return False
            return True
        wait_until(healthy, 30, "etcd cluster to be healthy",
                   tolerate=(requests.RequestException, ValueError))

        # etcd refuses every membership change (500) until its members have been
        # connected for 5 s (its strict reconfiguration check); a duplicate add answers
        # 409 only from then on.
        def takes_changes() -> bool:
            resp = requests.post(f"{self.url}/v2/members", timeout=5,
                                 json={"peerURLs": [self.peer[HOSTS[1]]]})
            return resp.status_code == 409
        wait_until(takes_changes, 30, "etcd to accept membership changes", interval=0.5,
                   tolerate=(requests.RequestException,))

    @property
    def url(self) -> str:
        return self.client[HOSTS[0]]

    def stop(self) -> None:
        """SIGKILL: the data is thrown away, and etcd's graceful stop takes seconds."""
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGKILL)
        for proc in self.procs:
            proc.wait(timeout=10)


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    require_tools("etcd", "etcdctl")
    c = EtcdCluster(Path(tmp_path_factory.mktemp("etcd3")))
    try:
        c.start()
        yield c
    finally:
        c.stop()


def run(tool: str, *args: str) -> tuple[int, str, str]:
    argv = (["etcdctl"] if tool == "etcdctl"
            else [sys.executable, "-m", "flotilla.daemons.kvctl"]) + list(args)
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30, cwd=REPO,
                          env=dict(os.environ, ETCDCTL_API="2", PYTHONPATH=str(REPO)))
    return proc.returncode, proc.stdout, proc.stderr


@pytest.mark.timeout(60)
def test_etcd_answers_bad_member_bodies_as_kvd_does(etcd: EtcdCluster) -> None:
    for content_type, body, status, message in BAD_ADDS:
        resp = requests.post(f"{etcd.url}/v2/members", data=body, timeout=10,
                             headers={"Content-Type": content_type})
        assert (resp.status_code, resp.json()) == (status, {"message": message}), body
    existing = etcd.peer[HOSTS[1]]
    dup = requests.post(f"{etcd.url}/v2/members", json={"peerURLs": [existing]}, timeout=10)
    assert (dup.status_code, dup.json()) == (409, {"message": "membership: peerURL exists"})
    for path, status, body in [("/v2/members/abc", 404, {"message": "No such member: abc"}),
                               ("/v2/members/zz", 404, {"message": "No such member: zz"})]:
        resp = requests.delete(etcd.url + path, timeout=10)
        assert (resp.status_code, resp.json()) == (status, body)
    assert requests.get(f"{etcd.url}/v2/members/abc", timeout=10).json() == {
        "message": "Not found"}


@pytest.mark.timeout(90)
def test_kvctl_member_commands_print_what_etcdctl_prints(etcd: EtcdCluster) -> None:
    ep = ["--endpoints", etcd.url]
    existing = etcd.peer[HOSTS[1]]
    for args in (["member", "list"], ["member", "add"], ["member", "add", "x", "notaurl"],
                 ["member", "add", "x", existing], ["member", "remove"],
                 ["member", "remove", "abc"]):
        assert run("kvctl", *ep, *args) == run("etcdctl", *ep, *args), args

    # A real add through kvctl: etcd's own tool then lists it exactly as kvctl does.
    new_url = f"http://127.0.0.34:{free_port('127.0.0.34')}"
    code, out, err = run("kvctl", *ep, "member", "add", "e9", new_url)
    assert code == 0, err
    first, blank, name, cluster, state = out.splitlines()
    new_id = first.split()[6]
    assert first == f"Added member named e9 with ID {new_id} to cluster" and blank == ""
    assert name == 'ETCD_NAME="e9"' and state == 'ETCD_INITIAL_CLUSTER_STATE="existing"'
    assert sorted(cluster[len('ETCD_INITIAL_CLUSTER="'):-1].split(",")) == sorted(
        [f"e{i}={etcd.peer[h]}" for i, h in enumerate(HOSTS)] + [f"e9={new_url}"])
    listing = run("etcdctl", *ep, "member", "list")
    assert f"{new_id}[unstarted]: peerURLs={new_url}" in listing[1]
    assert run("kvctl", *ep, "member", "list") == listing

    assert run("kvctl", *ep, "member", "remove", new_id) == (
        0, f"Removed member {new_id} from cluster\n", "")
    assert run("kvctl", *ep, "member", "remove", new_id) == run(
        "etcdctl", *ep, "member", "remove", new_id)
