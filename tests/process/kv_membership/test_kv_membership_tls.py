"""Peer TLS: a cluster on https:// peer URLs with client-certificate authentication.

It serves writes; a member with a certificate from the cluster's CA joins over TLS; a
member whose certificate another CA signed cannot join and writes nothing; a peer
without any certificate gets no answer.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from flotilla.daemons.kv.membership import MEMBERS_QUERY
from flotilla.daemons.raft.transport import QueryError, query_peer

from tests.process.raft.harness import make_ca_and_cert

from .harness import Cluster, add_member, wait_until


def tls_flags(tmp: Path, name: str) -> list[str]:
    return ["--peer-cert-file", str(tmp / f"{name}.pem"),
            "--peer-key-file", str(tmp / f"{name}.key"),
            "--peer-trusted-ca-file", str(tmp / f"{name}-ca.pem")]


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = Path(tmp_path_factory.mktemp("peercerts"))
    make_ca_and_cert(tmp, "peer")
    make_ca_and_cert(tmp, "rogue")
    return tmp


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, certs: Path) -> Iterator[Cluster]:
    c = Cluster(Path(tmp_path_factory.mktemp("kvtls")), peer_scheme="https",
                extra=[*tls_flags(certs, "peer"), "--peer-client-cert-auth"])
    try:
        c.start()
        yield c
    finally:
        c.stop()


@pytest.mark.timeout(60)
def test_https_peers_replicate_writes(cluster: Cluster) -> None:
    first, second, third = cluster.members[:3]
    assert first.put("/tls/a", "1").status_code == 201
    for m in (second, third):
        assert m.get("/v2/keys/tls/a", timeout=8).json()["node"]["value"] == "1"
    urls = sorted(u for x in first.members() for u in x["peerURLs"])
    assert urls == sorted(m.peer_url for m in (first, second, third))
    assert all(u.startswith("https://") for u in urls)


@pytest.mark.timeout(30)
def test_a_peer_without_a_certificate_gets_no_answer(cluster: Cluster) -> None:
    m = cluster.members[0]
    bare = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    bare.check_hostname = False
    bare.verify_mode = ssl.CERT_NONE
    with pytest.raises(QueryError):
        asyncio.run(query_peer((m.host, m.peer_port), "etcd-cluster", MEMBERS_QUERY,
                               ssl_context=bare, timeout=5))
    with pytest.raises(QueryError):  # plain TCP to a TLS port
        asyncio.run(query_peer((m.host, m.peer_port), "etcd-cluster", MEMBERS_QUERY,
                               timeout=5))
    assert all(x.alive for x in cluster.members[:3])


@pytest.mark.timeout(60)
def test_a_member_with_a_foreign_certificate_cannot_join(cluster: Cluster,
                                                         certs: Path) -> None:
    before = {x["id"] for x in cluster.members[0].members()}
    rogue = cluster.new_member()
    added = add_member(cluster.leader(), rogue.peer_url)
    assert added.status_code == 201, added.text
    rogue.argv = cluster.join_argv(rogue, tls_flags(certs, "rogue"))
    rogue.start()
    assert rogue.wait_exit(30) == 2
    assert "--initial-cluster: no existing member reachable to join" in rogue.log()
    assert not rogue.data_dir.exists()
    ident = added.json()["id"]
    gone = requests.delete(f"{cluster.members[0].url}/v2/members/{ident}", timeout=15)
    assert gone.status_code == 204, gone.text
    wait_until(lambda: {x["id"] for x in cluster.members[0].members()} == before, 10,
               "the unjoined member to be removed")
    cluster.members.remove(rogue)


@pytest.mark.timeout(60)
def test_a_member_with_the_clusters_certificate_joins_over_tls(cluster: Cluster) -> None:
    joiner = cluster.new_member()
    added = add_member(cluster.members[1], joiner.peer_url)
    assert added.status_code == 201, added.text
    joiner.argv = cluster.join_argv(joiner)
    joiner.start()
    cluster.wait_serving(joiner)
    assert joiner.member_id() == added.json()["id"]
    assert cluster.leader().put("/tls/joined", "yes").status_code == 201
    assert joiner.get("/v2/keys/tls/joined", timeout=8).json()["node"]["value"] == "yes"
