"""kvd members that bootstrap through a discovery URL, on 127.0.0.x loopback addresses.

The members are :class:`tests.process.kv_cluster.harness.Member` processes with
``--discovery`` in place of ``--initial-cluster``; the discovery store is a single kvd or
Debian's etcd from :mod:`tests.process.kv.harness`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from tests.conditions import free_port, wait_until
from tests.process.kv_cluster.harness import REPO, Member

MEMBER_HOSTS = ("127.0.0.71", "127.0.0.72", "127.0.0.73", "127.0.0.74")
STORE_HOST = "127.0.0.70"


def http(method: str, url: str, data: dict[str, str] | None = None, timeout: float = 5.0
         ) -> tuple[int, str]:
    body = urllib.parse.urlencode(data).encode() if data is not None else None
    request = urllib.request.Request(url, data=body, method=method)
    if body is not None:
        request.add_header("Content-Type", "application/x-www-form-urlencoded")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def make_token(store_url: str, token: str, size: str | None) -> str:
    """A discovery URL on an etcd v2 store, with ``_config/size`` set unless None."""
    url = f"{store_url}/v2/keys/_etcd/registry/{token}"
    if size is not None:
        status, body = http("PUT", f"{url}/_config/size", {"value": size})
        assert status in (200, 201), body
    return url


def member(workdir: Path, index: int, discovery: str, *extra: str,
           name: str | None = None) -> Member:
    host = MEMBER_HOSTS[index]
    m = Member(name or f"d{index}", host, free_port(host), free_port(host),
               workdir / f"d{index}", workdir / f"d{index}.log")
    m.argv = [sys.executable, "-m", "flotilla.daemons.kv", "--name", m.name,
              "--data-dir", str(m.data_dir), "--listen-client-urls", m.url,
              "--advertise-client-urls", m.url, "--listen-peer-urls", m.peer_url,
              "--initial-advertise-peer-urls", m.peer_url, "--discovery", discovery, *extra]
    return m


def run_to_exit(m: Member, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """Runs a member expected to give up; its output is returned for the assertions."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run(m.argv, capture_output=True, text=True, timeout=timeout, cwd=REPO,
                          env=env, check=False)


def wait_serving(members: list[Member], timeout: float = 60.0) -> None:
    for m in members:
        def up(m: Member = m) -> bool:
            if not m.alive:
                raise AssertionError(f"{m.name} exited:\n{m.log()}")
            return m.state() is not None
        wait_until(up, timeout, f"{m.name} to bootstrap and answer HTTP", interval=0.2)


def member_view(m: Member) -> list[tuple[str, str, tuple[str, ...]]]:
    """(id, name, peer URLs) of every member, as ``m`` reports them."""
    status, body = http("GET", f"{m.url}/v2/members")
    assert status == 200, body
    return sorted((x["id"], x["name"], tuple(x["peerURLs"]))
                  for x in json.loads(body)["members"])


def wait_agreement(members: list[Member], timeout: float = 30.0
                   ) -> list[tuple[str, str, tuple[str, ...]]]:
    """Every member reports the same full membership, with every name published."""
    def agreed() -> list[tuple[str, str, tuple[str, ...]]] | None:
        views = [member_view(m) for m in members]
        first = views[0]
        if all(v == first for v in views) and len(first) == len(members) \
                and all(name for _, name, _ in first):
            return first
        return None
    return wait_until(agreed, timeout, "members to agree on the membership", interval=0.2)


def stop_all(members: list[Member]) -> None:
    for m in members:
        m.stop()
