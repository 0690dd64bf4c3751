"""Omaha requests read by the server (good, odd, hostile) and its answers' bytes; REST
field checks. Pure: bytes in, values out."""

from __future__ import annotations

import pytest
from flotilla.daemons.update import omaha
from flotilla.daemons.updateserver import fields
from flotilla.daemons.updateserver.model import (
    ExtraFile,
    InstanceApp,
    InstanceStatus,
    Package,
)
from flotilla.daemons.updateserver.omaha_wire import (
    MAX_REQUEST_BYTES,
    AppAnswer,
    RequestError,
    build_response,
    parse_request,
)
from flotilla.daemons.updateserver.policy import Decision, Manifest, Reason

APP = omaha.DEFAULT_APP_ID
INFO = omaha.ClientInfo(version="1.0.0", track="stable", machine_id="ab" * 16,
                        boot_id="{b}", oem="gce", aleph_version="0.9.0", machine_alias="web1")


def test_update_engines_check_is_read_whole() -> None:
    request = parse_request(omaha.build_request(INFO, omaha.UpdateCheck(), interactive=True))
    assert (request.protocol, request.installsource, request.updater_version) == (
        "3.0", "ondemandupdate", omaha.UPDATER_VERSION)
    (app,) = request.apps
    assert (app.app_id, app.version, app.track, app.machine_id, app.boot_id) == (
        APP, "1.0.0", "stable", "ab" * 16, "{b}")
    assert (app.oem, app.aleph_version, app.alias, app.board) == (
        "gce", "0.9.0", "web1", "amd64-usr")
    assert app.updatecheck and app.ping and not app.multi_manifest_ok
    assert [(e.type, e.result, e.previous_version) for e in app.events] == [(3, 2, "0.0.0.0")]


def test_event_and_ping_requests() -> None:
    (app,) = parse_request(omaha.build_request(INFO, omaha.Event(3, 0, 44))).apps
    assert not app.updatecheck and [(e.type, e.result, e.error_code) for e in app.events] == [
        (3, 0, 44)]
    (app,) = parse_request(omaha.build_request(INFO, omaha.PingOnly())).apps
    assert app.ping and not app.updatecheck and not app.events


def test_odd_requests_namespaces_several_apps_and_the_os_version() -> None:
    body = (b'<r:request xmlns:r="urn:x" protocol="3.0"><r:os sp="5.1.0_aarch64"/>'
            b'<r:app appid="a1" track="t" machineid="m" multi_manifest_ok="true">'
            b"<r:updatecheck/><r:unknown/></r:app>"
            b'<r:app appid="a2" version="7" machineid="m"><r:ping/></r:app></r:request>')
    first, second = parse_request(body).apps
    assert first.version == "5.1.0" and first.multi_manifest_ok and first.updatecheck
    assert second.app_id == "a2" and second.version == "7" and second.ping


@pytest.mark.parametrize("body", [
    b'<!DOCTYPE r [<!ENTITY a "x">]><request><app appid="&a;"/></request>',
    b'<!DOCTYPE r SYSTEM "http://example.invalid/x.dtd"><request/>',
    b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY l2 "&lol;&lol;">]>'
    b"<request>&l2;</request>",
])
def test_dtds_and_entities_are_refused_before_expansion(body: bytes) -> None:
    with pytest.raises(RequestError, match="refused XML"):
        parse_request(body)


def test_size_is_bounded_at_nebraskas_64_kib() -> None:
    pad = b"<request>" + b" " * (MAX_REQUEST_BYTES - 40) + b'<app appid="x"/></request>'
    assert len(pad) <= MAX_REQUEST_BYTES and parse_request(pad).apps[0].app_id == "x"
    with pytest.raises(RequestError, match="exceeds"):
        parse_request(b" " * (MAX_REQUEST_BYTES + 1))


PKG = Package("p", APP, "2.0.0", "update.gz", 10, "c2hhMQ==", "c2hhMjU2", url="",
              extra_files=(ExtraFile("oem.raw", 5, "ZQ==", "Zg=="),),
              metadata_size="190")
FLOOR = Package("f", APP, "1.5.0", "update.gz", 7, "", "Zmxvb3I=")


def _decision(*manifests: Manifest) -> Decision:
    inst = InstanceApp("m", APP, "g", "1.0.0", InstanceStatus.UPDATE_GRANTED)
    return Decision(Reason.GRANTED, "", inst, manifests=manifests)


def test_an_offer_is_byte_for_byte_nebraskas_shape_and_our_engine_reads_it() -> None:
    answer = AppAnswer(APP, ping=True, events=1,
                       decision=_decision(Manifest(PKG, is_target=True)))
    body = build_response([answer], lambda p: "http://u/")
    assert body == (
        b'<?xml version="1.0" encoding="UTF-8"?>\n<response protocol="3.0" server="flotilla">'
        b'<daystart elapsed_seconds="0"></daystart><app appid="' + APP.encode()
        + b'" status="ok"><ping status="ok"></ping><updatecheck status="ok"><urls>'
        b'<url codebase="http://u/"></url></urls><manifest version="2.0.0"><packages>'
        b'<package name="update.gz" hash="c2hhMQ==" hash_sha256="c2hhMjU2" size="10" '
        b'required="true"></package><package name="oem.raw" hash="ZQ==" hash_sha256="Zg==" '
        b'size="5" required="true"></package></packages><actions><action event="postinstall"'
        b' sha256="c2hhMjU2" needsadmin="false" IsDeltaPayload="false" '
        b'DisablePayloadBackoff="true" MetadataSize="190"></action></actions></manifest>'
        b'</updatecheck><event status="ok"></event></app></response>')


def test_floors_carry_their_flags_and_reason() -> None:
    answer = AppAnswer(APP, decision=_decision(
        Manifest(FLOOR, is_floor=True, floor_reason="disk layout"),
        Manifest(PKG, is_target=True)))
    text = build_response([answer], lambda p: "http://u/").decode()
    assert ('<manifest version="1.5.0" is_floor="true" floor_reason="disk layout" '
            'is_target="false">') in text
    assert '<manifest version="2.0.0" is_floor="false" is_target="true">' in text


def test_deferrals_and_no_update_read_back_through_the_engine_parser() -> None:
    inst = InstanceApp("m", APP, "g", "1.0.0")
    held = AppAnswer(APP, status="error-updatesDisabled",
                     decision=Decision(Reason.PAUSED, "", inst, app_status="error-updatesDisabled"))
    body = build_response([held], lambda p: "")
    assert b'status="error-updatesDisabled"><updatecheck status="error-internal">' in body
    parsed = omaha.parse_response(body)
    assert isinstance(parsed, omaha.Deferred) and "paused" in parsed.reason
    none = AppAnswer(APP, decision=Decision(Reason.UP_TO_DATE, "", inst))
    assert omaha.parse_response(build_response([none], lambda p: "")) == omaha.NoUpdate()
    ack = AppAnswer(APP, events=2)
    body = build_response([ack], lambda p: "")
    assert body.endswith(b'status="ok"><event status="ok"></event><event status="ok">'
                         b"</event></app></response>")
    assert omaha.parse_response(body, expect_check=False) == omaha.Acknowledged()


def test_attribute_values_are_escaped() -> None:
    body = build_response([AppAnswer('x"<&>', status="ok")], lambda p: "")
    assert b'appid="x&quot;&lt;&amp;&gt;"' in body


# --------------------------------------------------------------------------- REST fields

@pytest.mark.parametrize(("text", "seconds"), [
    ("15 minutes", 900), ("1 minute", 60), ("500 milliseconds", 0.5), ("2 hours", 7200),
    ("1 day", 86400), ("30", 30), (45, 45), ("90s", 90)])
def test_intervals_in_nebraskas_spelling(text: object, seconds: float) -> None:
    assert fields.parse_interval(text, "f") == seconds


@pytest.mark.parametrize("text", ["soon", "-5 minutes", "0", "3 fortnights", True, None])
def test_bad_intervals_name_the_field(text: object) -> None:
    with pytest.raises(fields.Invalid, match=r"^policy_update_timeout:"):
        fields.parse_interval(text, "policy_update_timeout")


def test_group_bodies_are_checked_whole() -> None:
    good = fields.checked({"name": "G", "policy_timezone": "Asia/Tokyo",
                           "policy_office_start": "22:00", "policy_office_weekdays": [4, 0, 4],
                           "policy_max_updates_per_period": 3,
                           "policy_period_interval": "1 hours",
                           "policy_update_timeout": "60 minutes"}, fields.GROUP_FIELDS,
                          required=fields.GROUP_REQUIRED)
    assert good["policy_office_start"] == 22 * 60 and good["policy_office_weekdays"] == "0,4"
    for body, words in (
            ({"name": "x" * 51}, "name: longer than 50"),
            ({"policy_timezone": "Nowhere/Land"}, "unknown time zone"),
            ({"policy_max_updates_per_period": -1}, "non-negative"),
            ({"policy_updates_enabled": "yes"}, "true or false"),
            ({"policy_office_end": "25:00"}, "not a time of day"),
            ({"nope": 1}, "nope: unknown field")):
        with pytest.raises(fields.Invalid, match=words):
            fields.checked(body, fields.GROUP_FIELDS)
    with pytest.raises(fields.Invalid, match="policy_max_updates_per_period: required"):
        fields.checked({"name": "G"}, fields.GROUP_FIELDS, required=fields.GROUP_REQUIRED)


def test_package_bodies_take_nebraskas_shape() -> None:
    values = fields.package_values({
        "version": "2.0.0", "filename": "u.gz", "size": "123", "hash": "aGFzaA==",
        "application_id": "ignored", "type": 1, "arch": 0,
        "flatcar_action": {"sha256": "c2hh"}, "channels_blacklist": ["c1"],
        "extra_files": [{"name": "oem.raw", "size": 5, "hash": "x", "hash256": "y"}]},
        create=True)
    assert values == {"version": "2.0.0", "filename": "u.gz", "size": 123, "hash": "aGFzaA==",
                      "hash_sha256": "c2hh", "channels_blacklist": ["c1"],
                      "extra_files": [{"name": "oem.raw", "size": 5, "hash": "x",
                                       "hash256": "y"}]}
    with pytest.raises(fields.Invalid, match=r"extra_files\[0\].size"):
        fields.package_values({"version": "1", "filename": "f",
                               "extra_files": [{"name": "a", "size": 0}]}, create=True)
    with pytest.raises(fields.Invalid, match="filename: required"):
        fields.package_values({"version": "1"}, create=True)


def test_interval_and_time_renderings() -> None:
    assert fields.format_interval(900) == "15 minutes"
    assert fields.format_interval(90) == "90 seconds"
    assert fields.format_interval(0.5) == "500 milliseconds"
    assert fields.timestamp(0) == "1970-01-01T00:00:00Z" and fields.timestamp(None) is None


# ---------------------------------------------------------------------- shells' pure parts

@pytest.mark.parametrize(("remote", "local"), [
    ("127.0.0.1", True), ("127.3.4.5", True), ("::1", True), ("10.0.0.1", False),
    ("192.168.1.2", False), ("::ffff:8.8.8.8", False), (None, False), ("garbage", False)])
def test_only_loopback_peers_count_as_local(remote: str | None, local: bool) -> None:
    from flotilla.daemons.updateserver.api import is_local
    assert is_local(remote) is local


def test_metrics_are_prometheus_text_with_escaped_labels() -> None:
    from flotilla.daemons.updateserver.api import render_metrics
    text = render_metrics({"group_instances": [({"group": 'a"b\\c', "application": "F"}, 3)]},
                          {"omaha_checks_total": 7})
    assert text == (
        "# HELP flotilla_update_server_group_instances Instances in each group\n"
        "# TYPE flotilla_update_server_group_instances gauge\n"
        'flotilla_update_server_group_instances{application="F",group="a\\"b\\\\c"} 3\n'
        "# TYPE flotilla_update_server_omaha_checks_total counter\n"
        "flotilla_update_server_omaha_checks_total 7\n")


@pytest.mark.parametrize(("text", "parsed"), [
    ("127.0.0.1:8000", ("127.0.0.1", 8000)), ("0.0.0.0:80", ("0.0.0.0", 80)),
    ("[::1]:8000", ("::1", 8000)), ("9000", ("127.0.0.1", 9000)), (":7", ("127.0.0.1", 7))])
def test_listen_addresses(text: str, parsed: tuple[str, int]) -> None:
    from flotilla.daemons.updateserver.main import parse_listen
    assert parse_listen(text) == parsed


@pytest.mark.parametrize("name", ["", "..", ".", "a/b", "x\0"])
def test_payload_names_never_leave_the_payload_directory(name: str) -> None:
    from pathlib import Path

    from flotilla.daemons.updateserver.omaha_http import payload_path
    with pytest.raises(ValueError, match="unsafe"):
        payload_path(Path("/srv/p"), name, "update.gz")
    with pytest.raises(ValueError, match="unsafe"):
        payload_path(Path("/srv/p"), "pkg", name)
