"""Omaha codec: requests byte for byte as Flatcar's client, answers from real servers' shapes."""

from __future__ import annotations

import base64
import hashlib

import pytest
from flotilla.daemons.update import omaha as O
from flotilla.daemons.update.codes import ErrorCode, EventResult, EventType

INFO = O.ClientInfo(
    version="3510.2.0",
    track="stable",
    machine_id="0f5d8a1e2b3c4d5e6f708192a3b4c5d6",
    boot_id="{6a3c9b1e-0d2f-4e8a-9b7c-5d4e3f2a1b0c}",
    oem="qemu",
    oem_version="0.1",
    aleph_version="3374.2.0",
)

# The request Flatcar's update_engine 0.4.10 sends for a scheduled check (its layout, our values).
FLATCAR_CHECK = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b'<request protocol="3.0" version="update_engine-0.4.10" updaterversion="update_engine-0.4.10"'
    b' installsource="scheduler" ismachine="1">\n'
    b'    <os version="Chateau" platform="CoreOS" sp="3510.2.0_x86_64"></os>\n'
    b'    <app appid="{e96281a6-d1af-4bde-9a0a-97b76e56dc57}" version="3510.2.0" track="stable"'
    b' bootid="{6a3c9b1e-0d2f-4e8a-9b7c-5d4e3f2a1b0c}" oem="qemu" oemversion="0.1"'
    b' alephversion="3374.2.0" machineid="0f5d8a1e2b3c4d5e6f708192a3b4c5d6" machinealias=""'
    b' lang="en-US" board="amd64-usr" hardware_class="" delta_okay="false" >\n'
    b'        <ping active="1"></ping>\n'
    b'        <updatecheck></updatecheck>\n'
    b'        <event eventtype="3" eventresult="2" previousversion="0.0.0.0"></event>\n'
    b"    </app>\n"
    b"</request>\n"
)

PAYLOAD_SHA256 = base64.b64encode(hashlib.sha256(b"payload").digest()).decode()
NEBRASKA_OFFER = (
    '<?xml version="1.0" encoding="UTF-8"?>\n<response protocol="3.0" server="nebraska">'
    '<daystart elapsed_seconds="0"></daystart>'
    '<app appid="{e96281a6-d1af-4bde-9a0a-97b76e56dc57}" status="ok"><ping status="ok"></ping>'
    '<updatecheck status="ok"><urls><url codebase="http://127.0.0.1:8000/flatcar"></url></urls>'
    '<manifest version="3602.2.0"><packages><package name="flatcar_production_update.gz"'
    ' hash="Zm9v" hash_sha256="YmFy" size="1048576" required="true"></package></packages>'
    f'<actions><action event="postinstall" sha256="{PAYLOAD_SHA256}"'
    ' DisablePayloadBackoff="true"></action></actions></manifest></updatecheck>'
    '<event status="ok"></event></app></response>'
).encode()

COREUPDATE_OFFER = f"""<?xml version="1.0" encoding="UTF-8"?>
<response protocol="3.0" server="update.core-os.net">
 <daystart elapsed_seconds="0"></daystart>
 <app appid="e96281a6-d1af-4bde-9a0a-97b76e56dc57" status="ok">
  <updatecheck status="ok" PollInterval="1800">
   <urls><url codebase="http://index.example.com/webapp:1.0.2/"></url></urls>
   <manifest version="1.0.2">
    <packages><package hash="fe7374" name="update.gz" size="23" required="false"></package>
    </packages>
    <actions><action event="postinstall" sha256="{PAYLOAD_SHA256}" needsadmin="false"
      IsDelta="false" DisablePayloadBackoff="true" MetadataSignatureRsa="ixi6Oebo"
      MetadataSize="190" MaxFailureCountPerUrl="3"></action></actions>
   </manifest>
  </updatecheck>
 </app>
</response>""".encode()


def test_scheduled_check_is_byte_identical_to_flatcars_layout() -> None:
    assert O.build_request(INFO, O.UpdateCheck(previous_version=None)) == FLATCAR_CHECK


def test_interactive_check_says_ondemandupdate_and_reported_version_is_sent() -> None:
    body = O.build_request(INFO, O.UpdateCheck(previous_version=""), interactive=True).decode()
    assert 'installsource="ondemandupdate"' in body
    assert '<event eventtype="3" eventresult="2" previousversion=""></event>' in body


def test_previous_version_equal_to_running_version_reports_a_rollback() -> None:
    check = O.UpdateCheck(previous_version="3510.2.0")
    assert O.rolled_back(check, INFO)
    body = O.build_request(INFO, check).decode()
    assert '        <event eventtype="3" eventresult="0" errorcode="44"></event>\n' in body
    assert "previousversion" not in body


def test_events_carry_error_codes_only_when_failed() -> None:
    started = O.Event(EventType.UPDATE_DOWNLOAD_STARTED, EventResult.SUCCESS)
    body = O.build_request(INFO, started).decode()
    assert '        <event eventtype="13" eventresult="1"></event>\n    </app>' in body
    assert "<ping" not in body and "<updatecheck" not in body
    failed = O.Event(EventType.UPDATE_COMPLETE, EventResult.ERROR, ErrorCode.PAYLOAD_HASH_MISMATCH)
    assert '<event eventtype="3" eventresult="0" errorcode="10"></event>' in (
        O.build_request(INFO, failed).decode())


def test_ping_only_request_has_no_updatecheck() -> None:
    body = O.build_request(INFO, O.PingOnly()).decode()
    assert '    <app appid=' in body and '        <ping active="1"></ping>\n    </app>' in body
    assert "updatecheck" not in body and "<event" not in body


def test_attribute_values_cannot_break_out_of_their_quotes() -> None:
    info = O.ClientInfo(version="1", track='a"b<c>&d', machine_id="m", boot_id="b",
                        machine_alias="x\ry")
    body = O.build_request(info, O.PingOnly()).decode()
    assert 'track="a&quot;b&lt;c&gt;&amp;d"' in body
    assert 'machinealias="x&#13;y"' in body


def test_nebraska_offer_is_read() -> None:
    offer = O.parse_response(NEBRASKA_OFFER)
    assert isinstance(offer, O.Offer)
    assert offer.version == "3602.2.0"
    assert offer.package == O.Package("flatcar_production_update.gz", 1048576, "Zm9v", "YmFy")
    assert offer.payload_urls == ("http://127.0.0.1:8000/flatcar/flatcar_production_update.gz",)
    assert offer.sha256 == hashlib.sha256(b"payload").digest()
    assert offer.disable_payload_backoff and not offer.is_delta
    assert offer.max_failure_count_per_url == 10 and offer.poll_interval == 0


def test_coreupdate_offer_with_unbraced_app_id_and_poll_interval() -> None:
    offer = O.parse_response(COREUPDATE_OFFER)
    assert isinstance(offer, O.Offer)
    assert offer.payload_urls == ("http://index.example.com/webapp:1.0.2/update.gz",)
    assert (offer.poll_interval, offer.max_failure_count_per_url) == (1800, 3)


def test_no_update_and_acknowledgements() -> None:
    body = (b'<response protocol="3.0"><app appid="{e96281a6-d1af-4bde-9a0a-97b76e56dc57}"'
            b' status="ok"><updatecheck status="noupdate" PollInterval="600"/></app></response>')
    assert O.parse_response(body) == O.NoUpdate(poll_interval=600)
    ack = (b'<response protocol="3.0"><app appid="{E96281A6-D1AF-4BDE-9A0A-97B76E56DC57}"'
           b' status="ok"><event status="ok"/></app></response>')
    assert O.parse_response(ack, expect_check=False) == O.Acknowledged()
    invalid = O.parse_response(ack)
    assert isinstance(invalid, O.Invalid) and invalid.code == ErrorCode.OMAHA_RESPONSE_INVALID


def test_our_app_is_picked_among_several_and_namespaces_are_ignored() -> None:
    body = (b'<response xmlns="http://www.google.com/update2/response" protocol="3.0">'
            b'<app appid="{other}" status="error-unknownApplication"/>'
            b'<app appid="{e96281a6-d1af-4bde-9a0a-97b76e56dc57}" status="ok" extra="1">'
            b'<updatecheck status="noupdate" unknown="x"><future/></updatecheck></app>'
            b'</response>')
    assert O.parse_response(body) == O.NoUpdate()


@pytest.mark.parametrize("status", sorted(O.DEFERRING_APP_STATUSES))
def test_server_policy_holds_are_deferrals_with_a_reason(status: str) -> None:
    body = (f'<response protocol="3.0"><app appid="{O.DEFAULT_APP_ID}" status="{status}">'
            '<updatecheck status="error-internal"></updatecheck></app></response>').encode()
    answer = O.parse_response(body)
    assert answer == O.Deferred(status, O.DEFERRING_APP_STATUSES[status])


def _offer_with(**changes: str) -> bytes:
    text = NEBRASKA_OFFER.decode()
    for old, new in changes.items():
        assert old in text
        text = text.replace(old, new)
    return text.encode()


@pytest.mark.parametrize(
    "body,code,words",
    [
        (b"", ErrorCode.OMAHA_REQUEST_EMPTY_RESPONSE_ERROR, "empty"),
        (b"   \n", ErrorCode.OMAHA_REQUEST_EMPTY_RESPONSE_ERROR, "empty"),
        (b"<response><app", ErrorCode.OMAHA_REQUEST_XML_PARSE_ERROR, "unparsable"),
        (b"<html>busy</html>", ErrorCode.OMAHA_RESPONSE_INVALID, "root element"),
        (b'<response><app appid="{x}"/></response>', ErrorCode.OMAHA_RESPONSE_INVALID, "no <app>"),
        (b'<response><app appid="{e96281a6-d1af-4bde-9a0a-97b76e56dc57}" '
         b'status="error-unknownApplication"/></response>',
         ErrorCode.OMAHA_RESPONSE_INVALID, "error-unknownApplication"),
        (_offer_with(**{'<updatecheck status="ok">': "<updatecheck>"}),
         ErrorCode.OMAHA_RESPONSE_INVALID, "no status"),
        (_offer_with(**{'<updatecheck status="ok">': '<updatecheck status="error-hash">'}),
         ErrorCode.OMAHA_RESPONSE_INVALID, "error-hash"),
        (_offer_with(**{'codebase="http://127.0.0.1:8000/flatcar"': 'codebase=""'}),
         ErrorCode.OMAHA_RESPONSE_INVALID, "empty codebase"),
        (_offer_with(**{'<urls><url codebase="http://127.0.0.1:8000/flatcar"></url></urls>': ""}),
         ErrorCode.OMAHA_RESPONSE_INVALID, "no <url>"),
        (_offer_with(**{'size="1048576"': 'size="0"'}), ErrorCode.OMAHA_RESPONSE_INVALID, "size"),
        (_offer_with(**{'size="1048576"': 'size="big"'}), ErrorCode.OMAHA_RESPONSE_INVALID, "size"),
        (_offer_with(**{'name="flatcar_production_update.gz"': 'name="../../etc/shadow"'}),
         ErrorCode.OMAHA_RESPONSE_INVALID, "package name"),
        (_offer_with(**{f'sha256="{PAYLOAD_SHA256}"': 'sha256=""'}),
         ErrorCode.OMAHA_RESPONSE_INVALID, "sha256"),
        (_offer_with(**{f'sha256="{PAYLOAD_SHA256}"': 'sha256="not*base64"'}),
         ErrorCode.OMAHA_RESPONSE_INVALID, "sha256"),
        (_offer_with(**{'event="postinstall"': 'event="preinstall"'}),
         ErrorCode.OMAHA_RESPONSE_INVALID, "postinstall"),
        (_offer_with(**{'<manifest version="3602.2.0">': "<nomanifest>",
                        "</manifest>": "</nomanifest>"}),
         ErrorCode.OMAHA_RESPONSE_INVALID, "no <manifest>"),
    ],
)
def test_broken_answers_are_refused_with_update_engines_code(
    body: bytes, code: ErrorCode, words: str
) -> None:
    answer = O.parse_response(body)
    assert isinstance(answer, O.Invalid), answer
    assert answer.code == code
    assert words in answer.message


@pytest.mark.parametrize(
    "hostile",
    [
        # Billion laughs: entities that expand to gigabytes.
        b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaaaaaaaa">'
        b'<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;"><!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;">]>'
        b"<response><app>&c;</app></response>",
        # An external entity that would read a local file.
        b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
        b"<response><app>&x;</app></response>",
        # A bare DOCTYPE is refused too: no answer needs one.
        b'<!DOCTYPE response><response protocol="3.0"></response>',
    ],
)
def test_hostile_xml_is_refused_before_expansion(hostile: bytes) -> None:
    answer = O.parse_response(hostile)
    assert answer == O.Invalid(ErrorCode.OMAHA_REQUEST_XML_PARSE_ERROR, answer.message)


def test_oversized_answers_are_refused_unparsed() -> None:
    body = b"<response>" + b" " * 100 + b"</response>"
    answer = O.parse_response(body, max_bytes=64)
    assert isinstance(answer, O.Invalid) and "exceeds 64" in answer.message


def test_floors_take_the_first_manifest_and_extra_packages_are_kept() -> None:
    second = ('<manifest version="3700.0.0" is_target="true"><packages>'
              '<package name="b.gz" size="5"></package></packages><actions>'
              f'<action event="postinstall" sha256="{PAYLOAD_SHA256}"></action>'
              "</actions></manifest>")
    body = _offer_with(**{
        '<manifest version="3602.2.0">': '<manifest version="3602.2.0" is_floor="true">',
        "</manifest></updatecheck>": f"</manifest>{second}</updatecheck>",
        '</package></packages>': '</package><package name="oem-azure.gz" size="7" '
                                 'hash_sha256="eHl6"></package></packages>',
    })
    offer = O.parse_response(body)
    assert isinstance(offer, O.Offer) and offer.version == "3602.2.0"
    assert offer.extra_packages == (O.Package("oem-azure.gz", 7, "", "eHl6"),)
