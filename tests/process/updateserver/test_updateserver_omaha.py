"""flotilla-update-server on SQLite answering Omaha as Flatcar's and CoreOS's clients speak it.

Requests are built with daemons/update/omaha.build_request (the bytes our engine and
Flatcar's update_engine send) and answers are read back with omaha.parse_response, the
engine's own reader, so a layout the engine would refuse fails here.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from flotilla.daemons.update import omaha

from .harness import APP_ID, APP_PATH, Server, digests, setup_flatcar

PAYLOAD = bytes(range(256)) * 400 + b"tail"


def flatcar(machine: str, version: str = "1.0.0", kind: omaha.RequestKind | None = None,
            track: str = "stable") -> bytes:
    info = omaha.ClientInfo(version=version, track=track, machine_id=machine,
                            boot_id="{4f1a1e0c-0000-4000-8000-000000000001}")
    return omaha.build_request(info, kind if kind is not None else omaha.UpdateCheck())


def coreos(machine: str, version: str = "1.0.0") -> bytes:
    """CoreOS's last client: update_engine-0.3.2, no machinealias attribute."""
    info = omaha.ClientInfo(version=version, track="stable", machine_id=machine,
                            boot_id="{4f1a1e0c-0000-4000-8000-000000000002}",
                            updater_version="update_engine-0.3.2")
    body = omaha.build_request(info, omaha.UpdateCheck(previous_version=""))
    return body.replace(b' machinealias=""', b"")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    srv = Server(tmp_path).start()
    try:
        yield srv
    finally:
        assert srv.stop() == 0, srv.log()


def test_ready_is_announced_with_a_status(server: Server) -> None:
    assert "READY=1" in server.ready_lines
    assert any(line.startswith("STATUS=serving on 127.0.0.1:") for line in server.ready_lines)
    assert server.session.get(server.url + "/health", timeout=10).text == "OK"


@pytest.mark.parametrize("layout", [flatcar, coreos])
def test_both_client_layouts_get_an_offer_they_accept(server: Server, layout) -> None:
    made = setup_flatcar(server, PAYLOAD)
    reply = server.omaha(layout("ab" * 16))
    assert reply.status_code == 200 and reply.headers["Content-Type"].startswith("text/xml")
    offer = omaha.parse_response(reply.content)
    assert isinstance(offer, omaha.Offer), offer
    sha1, sha256 = digests(PAYLOAD)
    assert offer.version == "2.0.0" and offer.package.size == len(PAYLOAD)
    assert offer.package.sha1_base64 == sha1 and offer.package.sha256_base64 == sha256
    assert offer.disable_payload_backoff and not offer.is_delta
    (url,) = offer.payload_urls
    assert url == f"{server.url}/v1/payloads/{made['package']['id']}/update.gz"
    assert server.session.get(url, timeout=10).content == PAYLOAD
    ranged = server.session.get(url, headers={"Range": "bytes=1000-"}, timeout=10)
    assert ranged.status_code == 206 and ranged.content == PAYLOAD[1000:]


def test_the_answer_has_nebraskas_byte_layout(server: Server) -> None:
    setup_flatcar(server, PAYLOAD)
    body = server.omaha(flatcar("ab" * 16)).content.decode()
    head, _, rest = body.partition("\n")
    assert head == '<?xml version="1.0" encoding="UTF-8"?>'
    assert "\n" not in rest and "/>" not in rest
    assert rest.startswith('<response protocol="3.0" server="flotilla">'
                           '<daystart elapsed_seconds="0"></daystart>'
                           f'<app appid="{APP_ID}" status="ok"><ping status="ok"></ping>'
                           '<updatecheck status="ok"><urls><url codebase="')
    sha1, sha256 = digests(PAYLOAD)
    assert (f'<package name="update.gz" hash="{sha1}" hash_sha256="{sha256}" '
            f'size="{len(PAYLOAD)}" required="true"></package>') in rest
    assert (f'<action event="postinstall" sha256="{sha256}" needsadmin="false" '
            'IsDeltaPayload="false" DisablePayloadBackoff="true"></action>') in rest
    # The 3/2 event that rides along with every check is acknowledged after the check.
    assert rest.endswith('</updatecheck><event status="ok"></event></app></response>')


def test_an_up_to_date_machine_is_told_noupdate(server: Server) -> None:
    setup_flatcar(server, PAYLOAD)
    answer = omaha.parse_response(server.omaha(flatcar("cd" * 16, version="2.0.0")).content)
    assert answer == omaha.NoUpdate()
    inst = server.api("GET", "/api/instances/" + "cd" * 16, expect=200)
    assert inst["applications"][0]["last_reason"] == "up_to_date"


def test_update_engines_events_drive_the_instance_to_complete(server: Server) -> None:
    made = setup_flatcar(server, PAYLOAD)
    machine = "ef" * 16
    assert isinstance(omaha.parse_response(server.omaha(flatcar(machine)).content), omaha.Offer)
    statuses = []
    for event in (omaha.Event(13, 1), omaha.Event(14, 1), omaha.Event(3, 1)):
        answer = omaha.parse_response(server.omaha(flatcar(machine, kind=event)).content,
                                      expect_check=False)
        assert answer == omaha.Acknowledged()
        statuses.append(server.api("GET", "/api/instances/" + machine)
                        ["applications"][0]["status_name"])
    assert statuses == ["downloading", "downloaded", "installed"]
    # Waiting for the reboot the engine only pings; a second check would be refused.
    assert omaha.parse_response(server.omaha(flatcar(machine, kind=omaha.PingOnly())).content,
                                expect_check=False) == omaha.Acknowledged()
    held = omaha.parse_response(server.omaha(flatcar(machine)).content)
    assert isinstance(held, omaha.Deferred)
    assert held.app_status == "error-updateInProgressOnInstance"
    # After the reboot: version 2.0.0 and 3/2 with the previous version.
    rebooted = flatcar(machine, "2.0.0", omaha.UpdateCheck(previous_version="1.0.0"))
    assert omaha.parse_response(server.omaha(rebooted).content) == omaha.NoUpdate()
    app = server.api("GET", "/api/instances/" + machine)["applications"][0]
    assert (app["status_name"], app["version"], app["update_in_progress"]) == (
        "complete", "2.0.0", False)
    group = made["group"]["id"]
    history = server.api("GET", f"{APP_PATH}/groups/{group}/instances/{machine}/status_history")
    assert [h["status_name"] for h in reversed(history)] == [
        "undefined", "update granted", "downloading", "downloaded", "installed", "complete"]
    feed = [a["class"] for a in server.api("GET", "/api/activity")["activities"]]
    assert feed == ["rollout_finished", "rollout_started"]
    assert not server.api("GET", f"{APP_PATH}/groups/{group}")["rollout_in_progress"]
    metrics = server.session.get(server.url + "/metrics", timeout=10).text
    assert re.search(r'group_instances_on_channel_version\{application="Flatcar",'
                     r'group="Stable"\} 1\n', metrics), metrics


def test_a_failed_update_is_an_error_with_an_activity_entry(server: Server) -> None:
    setup_flatcar(server, PAYLOAD)
    machine = "12" * 16
    server.omaha(flatcar(machine))
    server.omaha(flatcar(machine, kind=omaha.Event(3, 0, 10)))
    app = server.api("GET", "/api/instances/" + machine)["applications"][0]
    assert app["status_name"] == "error" and not app["update_in_progress"]
    feed = server.api("GET", "/api/activity?perpage=50")["activities"]
    assert any(a["class"] == "instance_update_failed" and "error 10" in a["text"]
               for a in feed), feed
    assert 'failed_updates{application="Flatcar"} 1' in server.session.get(
        server.url + "/metrics", timeout=10).text


def test_odd_requests_are_read_leniently(server: Server) -> None:
    setup_flatcar(server, PAYLOAD)
    body = ('<?xml version="1.0"?><request protocol="3.0" futureattr="x">'
            '<os platform="CoreOS" sp="1.0.0_x86_64"/><extra><nested/></extra>'
            f'<app appid="{APP_ID.upper()}" version="1.0.0" track="stable" '
            'machineid="3434343434343434343434343434343434" unknown="1">'
            '<updatecheck targetversionprefix=""/><event eventtype="3" eventresult="2" '
            'previousversion="0.0.0.0"/><whatever/></app>'
            '<app appid="{00000000-0000-0000-0000-000000000000}" version="1" track="x" '
            'machineid="3434343434343434343434343434343434"><ping active="1"/></app>'
            "</request>").encode()
    reply = server.omaha(body)
    assert reply.status_code == 200, reply.text
    offer = omaha.parse_response(reply.content, APP_ID.upper())
    assert isinstance(offer, omaha.Offer) and offer.version == "2.0.0"
    assert ('<app appid="{00000000-0000-0000-0000-000000000000}" '
            'status="error-unknownApplication"><ping status="ok"></ping></app>') in reply.text


@pytest.mark.parametrize(("body", "words"), [
    (b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;">'
     b']><request protocol="3.0"><app appid="x">&b;</app></request>', "refused XML"),
    (b'<?xml version="1.0"?><!DOCTYPE r SYSTEM "file:///etc/passwd"><request/>',
     "refused XML"),
    (b"<request protocol='3.0'>" + b"<app appid='x'></app>" * 4000 + b"</request>",
     "exceeds 65536"),
    (b"not xml at all", "unparsable"),
    (b"", "empty request"),
    (b'<request protocol="2.0"><app appid="x"/></request>', "protocol '2.0'"),
    (b'<response protocol="3.0"></response>', "not <request>"),
    (b'<request protocol="3.0"><app version="1"/></request>', "no appid"),
    (b'<request protocol="3.0"><app appid="x"><event eventtype="x"/></app></request>',
     "eventtype='x'"),
])
def test_hostile_and_broken_requests_are_refused_and_the_server_carries_on(
        server: Server, body: bytes, words: str) -> None:
    reply = server.omaha(body)
    assert reply.status_code == 400 and words in reply.text, (reply.status_code, reply.text)
    assert server.session.get(server.url + "/health", timeout=10).text == "OK"


def test_an_oversized_body_is_refused_without_being_read_whole(server: Server) -> None:
    def endless():
        yield b'<request protocol="3.0">'
        for _ in range(4096):
            yield b"<!-- " + b"x" * 1024 + b" -->"
    try:
        reply = requests.post(server.url + "/v1/update/", data=endless(), timeout=30)
        assert reply.status_code == 400 and "exceeds" in reply.text
    except requests.ConnectionError:
        pass  # the server may close the connection once it answered: also a refusal
    assert server.session.get(server.url + "/health", timeout=10).text == "OK"


def test_an_unknown_track_is_named_in_the_answer(server: Server) -> None:
    setup_flatcar(server, PAYLOAD)
    reply = server.omaha(flatcar("56" * 16, track="nightly"))
    assert 'status="error-unknownGroup"' in reply.text


def test_safe_mode_pauses_the_group_when_an_update_fails(server: Server) -> None:
    made = setup_flatcar(server, PAYLOAD, policy_safe_mode=True)
    canary = "78" * 16
    assert isinstance(omaha.parse_response(server.omaha(flatcar(canary)).content), omaha.Offer)
    # Safe mode lets one canary through at first.
    second = omaha.parse_response(server.omaha(flatcar("79" * 16)).content)
    assert isinstance(second, omaha.Deferred)
    server.omaha(flatcar(canary, kind=omaha.Event(3, 0, 21)))
    group = server.api("GET", f"{APP_PATH}/groups/{made['group']['id']}")
    assert group["policy_updates_enabled"] is False
    feed = server.api("GET", "/api/activity")["activities"]
    assert feed[0]["class"] == "rollout_failed" and canary in feed[0]["text"]
    paused = omaha.parse_response(server.omaha(flatcar("7a" * 16)).content)
    assert isinstance(paused, omaha.Deferred) and paused.app_status == "error-updatesDisabled"


def test_an_external_package_url_is_the_codebase(server: Server) -> None:
    server.api("POST", "/api/apps", {"id": APP_ID, "name": "Flatcar"}, expect=201)
    sha1, sha256 = digests(PAYLOAD)
    package = server.api("POST", APP_PATH + "/packages", {
        "version": "2.0.0", "filename": "flatcar_production_update.gz",
        "url": "https://mirror.example/2.0.0/", "size": str(len(PAYLOAD)), "hash": sha1,
        "flatcar_action": {"sha256": sha256}}, expect=201)
    channel = server.api("POST", APP_PATH + "/channels",
                         {"name": "stable", "package_id": package["id"]}, expect=201)
    server.api("POST", APP_PATH + "/groups", {
        "name": "Stable", "track": "stable", "channel_id": channel["id"],
        "policy_max_updates_per_period": 10, "policy_period_interval": "1 hours",
        "policy_timezone": "UTC", "policy_update_timeout": "1 hours"}, expect=201)
    body = flatcar("9a" * 16)
    reply = server.session.post(server.url + "/v1/update/", data=body, timeout=30,
                                headers={"X-Forwarded-For": "203.0.113.7, 10.0.0.1"})
    offer = omaha.parse_response(reply.content)
    assert isinstance(offer, omaha.Offer)
    assert offer.payload_urls == ("https://mirror.example/2.0.0/flatcar_production_update.gz",)
    assert offer.sha256 == hashlib.sha256(PAYLOAD).digest()
    assert server.api("GET", "/api/instances/" + "9a" * 16)["ip"] == "203.0.113.7"
