"""The fleet API v1 against real etcd: status codes, error shape, paging, bad input."""

from __future__ import annotations

import json

import pytest

from .harness import Etcd, running_cluster, wait_for

OPTIONS = [{"section": "Service", "name": "ExecStart", "value": "/bin/true"}]


def put(cluster, name: str, body: object, content_type: str | None = "application/json"):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return cluster.api("PUT", f"/units/{name}", raw, content_type)


@pytest.mark.timeout(60)
def test_bad_input_is_rejected_with_fleet_errors_and_changes_nothing(etcd: Etcd) -> None:
    with running_cluster(etcd, metadata=[""]) as cluster:
        cases = [
            (put(cluster, "a.service", b"{not json"), 400, "unable to decode body"),
            (put(cluster, "a.service", [1, 2]), 400, "expected a JSON object"),
            (put(cluster, "a.service", {"options": OPTIONS}, "text/plain"), 415, "Content-Type"),
            (put(cluster, "a.bogus", {"options": OPTIONS}), 400, 'invalid unit type: "bogus"'),
            (put(cluster, "nodot", {"options": OPTIONS}), 400, 'must contain "."'),
            (put(cluster, "a.service", {"name": "b.service", "options": OPTIONS}), 400,
             "differs from unit name"),
            (put(cluster, "a.service", {"desiredState": "launched"}), 409,
             "unit does not exist and options field empty"),
            (put(cluster, "a.service", {"desiredState": "running", "options": OPTIONS}), 400,
             'desiredState: invalid value "running"'),
            (put(cluster, "a.service", {"options": [*OPTIONS, {"section": "X-Fleet",
                                        "name": "Bogus", "value": "1"}]}), 400,
             'unrecognized requirement in [X-Fleet] section: "Bogus"'),
            (put(cluster, "a.service", {"options": [*OPTIONS,
                 {"section": "X-Fleet", "name": "Global", "value": "true"},
                 {"section": "X-Fleet", "name": "MachineOf", "value": "b.service"}]}), 400,
             "Global cannot be used with MachineOf"),
            (put(cluster, "a.service", {"options": [{"section": "S", "name": "N", "value": 5}]}),
             400,
             "options[0].value: must be a string"),
            (put(cluster, "t@.service", {"desiredState": "launched", "options": OPTIONS}), 400,
             "cannot activate template"),
            (cluster.api("GET", "/units/none.service"), 404, "unit does not exist"),
            (cluster.api("DELETE", "/units/none.service"), 404, "unit does not exist"),
            (cluster.api("GET", "/units?nextPageToken=%%%"), 400, "invalid page token"),
            (cluster.api("POST", "/units", b"{}"), 405, "method not supported"),
            (cluster.api("PATCH", "/machines", b'[{"op":"add","path":"/m/x/y"}]'), 400,
             "[0].path"),
        ]
        for (status, body), want_status, want_message in cases:
            assert status == want_status, (want_message, status, body)
            assert body["error"]["code"] == want_status
            assert want_message in body["error"]["message"], body
        assert cluster.api("GET", "/units")[1] == {"units": []}
        assert etcd.get(f"{cluster.prefix}job", recursive=True) is None


@pytest.mark.timeout(60)
def test_create_update_replace_delete_status_codes(etcd: Etcd) -> None:
    with running_cluster(etcd, metadata=[""]) as cluster:
        assert put(cluster, "a.service", {"options": OPTIONS})[0] == 201
        status, unit = cluster.api("GET", "/units/a.service")
        assert status == 200 and unit["desiredState"] == "inactive"
        assert unit["options"] == OPTIONS and unit["currentState"] == "inactive"
        assert put(cluster, "a.service", {"desiredState": "loaded"})[0] == 204
        assert put(cluster, "a.service", {})[0] == 409
        changed = [{"section": "Service", "name": "ExecStart", "value": "/bin/false"}]
        assert put(cluster, "a.service", {"options": changed})[0] == 201  # re-created
        unit = cluster.api("GET", "/units/a.service")[1]
        assert unit["options"] == changed and unit["desiredState"] == "loaded"
        job = etcd.get(f"{cluster.prefix}job/a.service/object")
        assert len(json.loads(job["node"]["value"])["UnitHash"]) == 20  # fleet's layout
        assert cluster.api("DELETE", "/units/a.service")[0] == 204
        assert cluster.api("GET", "/units/a.service")[0] == 404


@pytest.mark.timeout(60)
def test_paging_with_next_page_token(etcd: Etcd) -> None:
    with running_cluster(etcd, metadata=[""], token_limit=2) as cluster:
        for i in range(5):
            assert put(cluster, f"u{i}.service", {"options": OPTIONS})[0] == 201
        names, token, pages = [], None, 0
        while True:
            path = "/units" + (f"?nextPageToken={token}" if token else "")
            body = cluster.api("GET", path)[1]
            names += [u["name"] for u in body["units"]]
            pages += 1
            token = body.get("nextPageToken")
            if not token:
                break
        assert names == [f"u{i}.service" for i in range(5)] and pages == 3
        assert cluster.api("GET", "/units?nextPageToken=ZAABAA==")[0] == 400  # other limit
        listed = cluster.fleetctl("list-unit-files", "--no-legend", "--fields", "unit").stdout
        assert listed.split() == names
        _, response = cluster.api("GET", "/machines")
        assert response["machines"][0]["primaryIP"] == cluster.nodes[0].host


@pytest.mark.timeout(60)
def test_patch_machine_metadata_changes_listing_and_placement(etcd: Etcd) -> None:
    with running_cluster(etcd, metadata=["", ""]) as cluster:
        target = cluster.nodes[1].machine_id
        options = [*OPTIONS, {"section": "X-Fleet", "name": "MachineMetadata",
                              "value": "disk=ssd"}]
        assert put(cluster, "ssd.service", {"desiredState": "launched",
                                            "options": options})[0] == 201
        ops = [{"op": "add", "path": f"/{target}/metadata/disk", "value": {"value": "ssd"}}]
        assert cluster.api("PATCH", "/machines", json.dumps(ops).encode())[0] == 204
        wait_for(lambda: cluster.running().get("ssd.service") == target, 15,
                 "unit placed on the machine given disk=ssd at run time")
        machines = {m["id"]: m["metadata"] for m in cluster.api("GET", "/machines")[1]["machines"]}
        assert machines[target] == {"disk": "ssd"}
        remove = [{"op": "remove", "path": f"/{target}/metadata/disk"}]
        assert cluster.api("PATCH", "/machines", json.dumps(remove).encode())[0] == 204
        wait_for(lambda: "ssd.service" not in cluster.running(), 15,
                 "unit unscheduled once the metadata is removed")
