"""The pure decisions of an update attempt: requests, events, URLs, resume records, /usr."""

from __future__ import annotations

import itertools

import pytest
from flotilla.daemons.update import attempter as A
from flotilla.daemons.update import omaha
from flotilla.daemons.update.codes import FLAG_RESUMED, ErrorCode, EventResult, EventType, Status
from flotilla.daemons.update.gptprio import USR_TYPE_GUID, Slot
from flotilla.daemons.update.payload import Checkpoint

USR_A = Slot(3, "7130C94A-213A-4E5A-8E26-6CCE9662F132", USR_TYPE_GUID, 0, "USR-A")
USR_B = Slot(4, "e03dd35c-7c2d-4a47-b3fe-27f15780a57c", USR_TYPE_GUID, 0, "USR-B")
ROOT = Slot(9, "3884dd41-8582-4404-b9a8-e9b84f2df50e",
            "0fc63daf-8483-4772-8e79-3d69d8477de4", 0, "ROOT")


def offer(sha: bytes = b"\x01" * 32, size: int = 1000, urls: tuple[str, ...] = ("u",)
          ) -> omaha.Offer:
    return omaha.Offer("1.2.3", urls, omaha.Package("p", size), sha)


@pytest.mark.parametrize("status", list(Status))
def test_a_check_sends_what_the_status_allows(status: Status) -> None:
    request = A.check_request(status, "1.0.0")
    if status is Status.IDLE:
        assert request == omaha.UpdateCheck(previous_version="1.0.0")
    elif status is Status.UPDATED_NEED_REBOOT:
        assert request == omaha.PingOnly()
    else:
        assert request is None


def test_a_first_check_carries_no_previous_version() -> None:
    assert A.check_request(Status.IDLE, None) == omaha.UpdateCheck(previous_version=None)


@pytest.mark.parametrize("code", list(ErrorCode))
@pytest.mark.parametrize("resumed", [False, True])
def test_failure_events_are_deferred_only_for_policy_codes(code: ErrorCode, resumed: bool
                                                          ) -> None:
    event = A.failure_event(code, resumed=resumed)
    assert event.type == EventType.UPDATE_COMPLETE
    policy = code in (ErrorCode.OMAHA_UPDATE_IGNORED_PER_POLICY,
                      ErrorCode.OMAHA_UPDATE_DEFERRED_PER_POLICY,
                      ErrorCode.OMAHA_UPDATE_DEFERRED_FOR_BACKOFF)
    assert event.result == (EventResult.UPDATE_DEFERRED if policy else EventResult.ERROR)
    assert event.error_code & ~FLAG_RESUMED == code
    assert bool(event.error_code & FLAG_RESUMED) is resumed


def test_progress_events_are_successes_of_their_type() -> None:
    assert (A.DOWNLOAD_STARTED.type, A.DOWNLOAD_STARTED.result) == (13, 1)
    assert (A.DOWNLOAD_FINISHED.type, A.DOWNLOAD_FINISHED.result) == (14, 1)
    assert (A.UPDATE_APPLIED.type, A.UPDATE_APPLIED.result) == (3, 1)


@pytest.mark.parametrize("count,max_failures", list(itertools.product([1, 2, 3], [1, 2, 10])))
def test_each_url_gets_its_tries_in_the_servers_order(count: int, max_failures: int) -> None:
    urls = [f"http://127.0.0.1/{i}" for i in range(count)]
    rotation = A.UrlRotation(urls, max_failures)
    tried = [rotation.current]
    while rotation.failed():
        tried.append(rotation.current)
    assert tried == [u for u in urls for _ in range(max_failures)]


def test_a_url_rotation_needs_urls_and_at_least_one_try() -> None:
    with pytest.raises(ValueError, match="at least one URL"):
        A.UrlRotation([], 3)
    rotation = A.UrlRotation(["a", "b"], 0)
    assert rotation.failed() is True and rotation.current == "b"
    assert rotation.failed() is False


def record(**changes: object) -> A.ResumeRecord:
    fields: dict[str, object] = dict(
        payload_sha256=b"\x01" * 32, payload_size=1000, version="1.2.3",
        slot_uuid=USR_B.uuid,
        checkpoint=Checkpoint(offset=512, next_operation=3, metadata=b"CrAU\x00\xff",
                              payload_hash_state=b"\x00" * 40, signed_hash_state=b"\x07" * 40))
    fields.update(changes)
    return A.ResumeRecord(**fields)  # type: ignore[arg-type]


def test_a_resume_record_round_trips_through_json() -> None:
    raw = A.encode_resume(record())
    assert raw.startswith(b"{") and b"pickle" not in raw
    assert A.decode_resume(raw) == record()


def test_a_resume_record_fits_only_the_same_payload_in_the_same_slot() -> None:
    r = record()
    assert r.fits(offer(), USR_B.uuid.upper())
    assert not r.fits(offer(sha=b"\x02" * 32), USR_B.uuid)
    assert not r.fits(offer(size=1001), USR_B.uuid)
    assert not r.fits(offer(), USR_A.uuid)


@pytest.mark.parametrize("raw,names", [
    (b"not json", "not JSON"),
    (b"\xff\xfe", "not JSON"),
    (b"[]", "unknown format"),
    (b'{"format": 2}', "unknown format"),
])
def test_a_broken_resume_record_is_refused_with_the_reason(raw: bytes, names: str) -> None:
    with pytest.raises(ValueError, match=names):
        A.decode_resume(raw)


@pytest.mark.parametrize("key,value,names", [
    ("offset", -1, "offset is not a non-negative integer"),
    ("offset", True, "offset is not a non-negative integer"),
    ("payload_size", "1000", "payload_size is not a non-negative integer"),
    ("version", 3, "version is not a string"),
    ("metadata", "***", "metadata is not base64"),
    ("slot_uuid", None, "slot_uuid is not a string"),
])
def test_each_bad_field_of_a_resume_record_is_named(key: str, value: object, names: str
                                                   ) -> None:
    import json
    data = json.loads(A.encode_resume(record()))
    data[key] = value
    with pytest.raises(ValueError, match=names):
        A.decode_resume(json.dumps(data).encode())


@pytest.mark.parametrize("text,expected", [
    ("PARTUUID=7130C94A-213A-4E5A-8E26-6CCE9662F132",
     A.UsrSpec("partuuid", "7130c94a-213a-4e5a-8e26-6cce9662f132")),
    ("partuuid=abc", A.UsrSpec("partuuid", "abc")),
    ("PARTLABEL=USR-B", A.UsrSpec("partlabel", "USR-B")),
    ("4", A.UsrSpec("number", "4")),
    ("04", A.UsrSpec("number", "4")),
    ("/dev/sda3", A.UsrSpec("device", "/dev/sda3")),
    ("0", None), ("PARTUUID=", None), ("LABEL=x", None), ("", None), ("sda3", None),
])
def test_usr_specs_parse_as_the_bootloader_writes_them(text: str, expected: object) -> None:
    assert A.parse_usr_spec(text) == expected


def test_mount_usr_wins_over_usr_on_the_command_line() -> None:
    line = 'BOOT_IMAGE=/vmlinuz usr=PARTLABEL=USR-A mount.usr="PARTUUID=ABC" rw'
    assert A.usr_from_cmdline(line) == A.UsrSpec("partuuid", "abc")
    assert A.usr_from_cmdline("root=/dev/sda9 usr=4 usr=3") == A.UsrSpec("number", "4")
    assert A.usr_from_cmdline("root=/dev/sda9 quiet") is None


@pytest.mark.parametrize("spec,slot", [
    (A.UsrSpec("partuuid", USR_A.uuid.lower()), USR_A),
    (A.UsrSpec("partlabel", "USR-B"), USR_B),
    (A.UsrSpec("number", "4"), USR_B),
])
def test_the_booted_slot_is_found_by_each_kind_of_name(spec: A.UsrSpec, slot: Slot) -> None:
    assert A.find_booted([ROOT, USR_A, USR_B], spec) == slot


@pytest.mark.parametrize("spec", [A.UsrSpec("number", "9"), A.UsrSpec("partlabel", "ROOT"),
                                  A.UsrSpec("device", "/dev/sda3"),
                                  A.UsrSpec("partuuid", "0000")])
def test_a_name_that_is_no_usr_slot_is_refused(spec: A.UsrSpec) -> None:
    with pytest.raises(ValueError, match=r"is none of the USR partitions \['USR-A', 'USR-B'\]"):
        A.find_booted([ROOT, USR_A, USR_B], spec)


def test_answers_and_pending_reboots_in_words() -> None:
    assert A.describe_answer(offer()) == "update to 1.2.3 offered"
    assert A.describe_answer(omaha.NoUpdate()) == "no update available"
    assert (A.describe_answer(omaha.Deferred("noupdate", "the rollout's window"))
            == "deferred by the rollout's window (noupdate)")
    assert A.describe_answer(omaha.Acknowledged()) == "ping acknowledged"
    invalid = A.describe_answer(omaha.Invalid(ErrorCode.OMAHA_REQUEST_XML_PARSE_ERROR, "bad"))
    assert invalid.startswith("invalid answer: bad (")
    text = A.reboot_explanation("1.2.3", "USR-B")
    assert "version 1.2.3 is installed in USR-B" in text and "-reset_status" in text
    assert "installed and boots next" in A.reboot_explanation("1.2.3", "")
