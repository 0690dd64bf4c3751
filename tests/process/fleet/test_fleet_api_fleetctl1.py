"""fleetctl 1.0 against our fleetd, request by request, each answer checked against fleet 1.0.

The real fleetctl 1.0 speaks to fleetd through the client generated from fleet's
discovery document; ``fleetctl1`` sends the same requests command by command (every
command that needs no SSH) and checks every answer against what fleet 1.0's API returns
for it. Blocking ``start`` ends by polling ``GET /state/<unit>`` for systemd's active and
load states: fleetctl 1.0 dereferences whatever comes back, so a fleetd without that
resource makes it panic. The store is kvd (fleet's own process tests use etcd).
"""

from __future__ import annotations

import hashlib
import json
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from .fleetctl1 import Fleet1Oracle, Fleetctl1, expand, go_view, schema_option
from .harness import Cluster, Store, running_cluster, wait_for

# fleet 1.0.0's schema/v1.json (served verbatim as schema.DiscoveryJSON)
FLEET_DISCOVERY_SHA1 = "1c11f4f9696be193b36027650ef3e86d7bf49f49"

HELLO = [
    schema_option("Unit", "Description", "Hello <world> & co"),
    schema_option("Service", "ExecStartPre", ""),  # empty: fleetctl leaves "value" out
    schema_option("Service", "ExecStart", "/bin/sh -c 'while true; do echo hi; sleep 1; done'"),
]
FRESH = [schema_option("Service", "ExecStart", "/bin/sleep 1000")]
TEMPLATE = [
    schema_option("Unit", "Description", "web %i"),
    schema_option("Service", "ExecStart", "/bin/sleep 1000"),
    schema_option("X-Fleet", "Conflicts", "web@*.service"),
]
GLOBAL = [
    schema_option("Service", "ExecStart", "/bin/sleep 1000"),
    schema_option("X-Fleet", "Global", "true"),
]


@pytest.fixture(scope="module")
def kvd() -> Iterator[Store]:
    """kvd by name: this conversation is about our fleetd on our store."""
    server = Store("kvd").start()
    try:
        yield server
    finally:
        server.stop()


def fleet_machines(cluster: Cluster) -> list[dict]:
    """fleet's Machine entities for the cluster, sorted by ID as fleet lists them."""
    machines = []
    for node in sorted(cluster.nodes, key=lambda n: n.machine_id):
        metadata = dict(pair.split("=", 1) for pair in node.metadata.split(",") if pair)
        machines.append({"id": node.machine_id, "primaryIP": node.host, "metadata": metadata})
    return machines


def session(cluster: Cluster, node: int = 0) -> Fleetctl1:
    oracle = Fleet1Oracle(fleet_machines(cluster), token_limit=2)
    return Fleetctl1(cluster.nodes[node].endpoint, oracle)


def runs_on(cluster: Cluster, unit: str) -> set[str]:
    return {n.machine_id for n in cluster.nodes if unit in n.active_units()}


@pytest.mark.timeout(180)
def test_fleetctl1_unit_lifecycle_over_the_api(kvd: Store) -> None:
    with running_cluster(kvd, metadata=["role=web,disk=ssd", ""], token_limit=2) as cluster:
        ctl = session(cluster)
        ids = {n.machine_id for n in cluster.nodes}
        listed = ctl.list_machines()  # two full pages: the second is empty, as in fleet
        assert [m["id"] for m in listed] == sorted(ids)

        ctl.submit("hello.service", HELLO)
        files = ctl.list_unit_files()
        assert [(u["name"], u["desiredState"], u.get("currentState")) for u in files] == [
            ("hello.service", "inactive", "inactive")]

        ctl.start("hello.service")
        unit = ctl.cat("hello.service")
        assert go_view(unit["options"]) == HELLO
        target = unit["machineID"]
        assert unit["currentState"] == "launched" and target in ids
        wait_for(lambda: runs_on(cluster, "hello.service") == {target}, 15,
                 "hello.service running where fleet says")
        assert ctl.output[-1].startswith("Unit hello.service launched on ")
        states = ctl.list_units("unit,active,machine")
        assert [(s["name"], s["machineID"], s["systemdActiveState"]) for s in states] == [
            ("hello.service", target, "active")]

        ctl.stop("hello.service")
        assert ctl.unit("hello.service")["currentState"] == "loaded"
        wait_for(lambda: ctl.unit_state("hello.service")["systemdActiveState"] == "inactive",
                 15, "systemd to report hello.service stopped")
        assert runs_on(cluster, "hello.service") == set()

        ctl.unload("hello.service")
        wait_for(lambda: "machineID" not in ctl.unit("hello.service"), 15,
                 "hello.service unscheduled")
        wait_for(lambda: ctl.unit_state("hello.service") is None, 15,
                 "hello.service's state removed once unloaded")

        ctl.load("hello.service")
        assert ctl.unit("hello.service")["currentState"] == "loaded"
        ctl.start("hello.service")
        ctl.start("fresh.service", FRESH)  # submit, load and start in one command
        states = ctl.list_units()
        assert {s["name"] for s in states} == {"hello.service", "fresh.service"}
        assert len(ctl.list_unit_files()) == 2  # a full page, then an empty one

        ctl.destroy("hello.service")
        assert ctl.unit("hello.service") is None
        wait_for(lambda: runs_on(cluster, "hello.service") == set(), 15,
                 "destroyed hello.service stopped")
        ctl.destroy("fresh.service")
        wait_for(lambda: ctl.list_units() == [], 15, "every state gone after destroy")


@pytest.mark.timeout(180)
def test_fleetctl1_templates_and_global_units(kvd: Store) -> None:
    with running_cluster(kvd, metadata=["", ""], token_limit=2) as cluster:
        ctl = session(cluster)
        ids = {n.machine_id for n in cluster.nodes}
        ctl.submit("web@.service", TEMPLATE)
        assert ctl.unit("web@.service")["currentState"] == "inactive"
        ctl.start("web@1.service")  # created by fleetctl from the template's options
        ctl.start("web@2.service")
        instances = [ctl.cat(f"web@{i}.service") for i in (1, 2)]
        assert [go_view(u["options"]) for u in instances] == [TEMPLATE, TEMPLATE]
        assert {u["machineID"] for u in instances} == ids  # Conflicts keeps them apart

        ctl.start("global.service", GLOBAL)  # global: triggered, fleetctl does not wait
        unit = ctl.unit("global.service")
        assert unit["desiredState"] == "launched" and "currentState" not in unit
        wait_for(lambda: {s["machineID"] for s in ctl.list_units()
                          if s["name"] == "global.service"
                          and s["systemdActiveState"] == "active"} == ids,
                 20, "the global unit active on every machine")
        assert ctl.unit_state("global.service")["machineID"] in ids
        listed = {u["name"]: u for u in ctl.list_unit_files()}
        assert set(listed) == {"global.service", "web@.service", "web@1.service",
                               "web@2.service"}

        ctl.stop("global.service")
        wait_for(lambda: all(s["systemdActiveState"] == "inactive" for s in ctl.list_units()
                             if s["name"] == "global.service"), 20,
                 "the global unit stopped everywhere")
        ctl.stop("web@1.service")
        ctl.unload("web@2.service")
        for name in ("global.service", "web@1.service", "web@2.service", "web@.service"):
            ctl.destroy(name)
        assert ctl.list_unit_files() == []
        wait_for(lambda: all(not n.active_units() for n in cluster.nodes), 15,
                 "nothing left running")


def raw_get(url: str, method: str = "GET") -> tuple[int, str, bytes]:
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=5) as reply:
            return reply.status, reply.headers.get("Content-Type", ""), reply.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers.get("Content-Type", ""), error.read()


@pytest.mark.timeout(60)
def test_state_of_one_unit_and_discovery_document(kvd: Store) -> None:
    with running_cluster(kvd, metadata=[""]) as cluster:
        ctl = session(cluster)
        assert ctl.unit_state("none.service") is None  # 404 "unit state does not exist"
        endpoint = cluster.nodes[0].endpoint
        for path in ("/fleet/v1/discovery", "/v1-alpha/discovery", "/fleet/v1/discovery.json"):
            status, content_type, body = raw_get(endpoint + path)
            assert status == 200 and content_type.startswith("application/json"), path
            assert hashlib.sha1(body).hexdigest() == FLEET_DISCOVERY_SHA1, path
        status, _, body = raw_get(endpoint + "/fleet/v1/discovery", "POST")
        assert (status, json.loads(body)) == (400, {"error": {
            "code": 400, "message": "only HTTP GET supported against this resource"}})

        # every method the document describes is served where it says
        document = json.loads(raw_get(endpoint + "/fleet/v1/discovery")[2])
        assert document["basePath"] == "/fleet/v1/"
        for resource in document["resources"].values():
            for method in resource["methods"].values():
                path = method["path"].replace("{unitName}", expand("x@1.service"))
                if method["httpMethod"] not in ("GET", "DELETE"):
                    continue
                status, _, body = raw_get(f"{endpoint}/fleet/v1/{path}", method["httpMethod"])
                assert status in (200, 404), (method["id"], status, body)
                if status == 404:
                    assert json.loads(body)["error"]["message"] in (
                        "unit does not exist", "unit state does not exist"), method["id"]
