"""The numbers update_engine puts on the wire: statuses, Omaha events and error codes.

Servers (Nebraska, CoreUpdate) and tools (locksmith, dashboards) read these values, so
they keep update_engine's exact numbering and spelling. Error code 44 is Flatcar's
rollback report; 2000 + HTTP status reports a server's HTTP error; the flag bits are
OR-ed into a code the way update_engine does it.
"""

from __future__ import annotations

import enum


class Status(enum.Enum):
    """update_engine's statuses, spelled as they travel in ``StatusUpdate`` and -status."""

    IDLE = "UPDATE_STATUS_IDLE"
    CHECKING_FOR_UPDATE = "UPDATE_STATUS_CHECKING_FOR_UPDATE"
    UPDATE_AVAILABLE = "UPDATE_STATUS_UPDATE_AVAILABLE"
    DOWNLOADING = "UPDATE_STATUS_DOWNLOADING"
    VERIFYING = "UPDATE_STATUS_VERIFYING"
    FINALIZING = "UPDATE_STATUS_FINALIZING"
    UPDATED_NEED_REBOOT = "UPDATE_STATUS_UPDATED_NEED_REBOOT"
    REPORTING_ERROR_EVENT = "UPDATE_STATUS_REPORTING_ERROR_EVENT"


class EventType(enum.IntEnum):
    """Omaha ``eventtype`` values update_engine sends."""

    UNKNOWN = 0
    DOWNLOAD_COMPLETE = 1
    INSTALL_COMPLETE = 2
    UPDATE_COMPLETE = 3
    UPDATE_DOWNLOAD_STARTED = 13
    UPDATE_DOWNLOAD_FINISHED = 14


class EventResult(enum.IntEnum):
    """Omaha ``eventresult`` values update_engine sends."""

    ERROR = 0
    SUCCESS = 1
    SUCCESS_REBOOT = 2
    UPDATE_DEFERRED = 9


class ErrorCode(enum.IntEnum):
    """update_engine's action exit codes, the ``errorcode`` of a failed event."""

    SUCCESS = 0
    ERROR = 1
    OMAHA_REQUEST_ERROR = 2
    OMAHA_RESPONSE_HANDLER_ERROR = 3
    FILESYSTEM_COPIER_ERROR = 4
    POSTINSTALL_RUNNER_ERROR = 5
    SET_BOOTABLE_FLAG_ERROR = 6
    INSTALL_DEVICE_OPEN_ERROR = 7
    KERNEL_DEVICE_OPEN_ERROR = 8
    DOWNLOAD_TRANSFER_ERROR = 9
    PAYLOAD_HASH_MISMATCH = 10
    PAYLOAD_SIZE_MISMATCH = 11
    DOWNLOAD_PAYLOAD_VERIFICATION_ERROR = 12
    DOWNLOAD_NEW_PARTITION_INFO_ERROR = 13
    DOWNLOAD_WRITE_ERROR = 14
    NEW_ROOTFS_VERIFICATION_ERROR = 15
    NEW_KERNEL_VERIFICATION_ERROR = 16
    SIGNED_DELTA_PAYLOAD_EXPECTED = 17
    DOWNLOAD_PAYLOAD_PUBKEY_VERIFICATION_ERROR = 18
    POSTINSTALL_BOOTED_FROM_FIRMWARE_B = 19
    DOWNLOAD_STATE_INITIALIZATION_ERROR = 20
    DOWNLOAD_INVALID_METADATA_MAGIC_STRING = 21
    DOWNLOAD_SIGNATURE_MISSING_IN_MANIFEST = 22
    DOWNLOAD_MANIFEST_PARSE_ERROR = 23
    DOWNLOAD_METADATA_SIGNATURE_ERROR = 24
    DOWNLOAD_METADATA_SIGNATURE_VERIFICATION_ERROR = 25
    DOWNLOAD_METADATA_SIGNATURE_MISMATCH = 26
    DOWNLOAD_OPERATION_HASH_VERIFICATION_ERROR = 27
    DOWNLOAD_OPERATION_EXECUTION_ERROR = 28
    DOWNLOAD_OPERATION_HASH_MISMATCH = 29
    OMAHA_REQUEST_EMPTY_RESPONSE_ERROR = 30
    OMAHA_REQUEST_XML_PARSE_ERROR = 31
    DOWNLOAD_INVALID_METADATA_SIZE = 32
    DOWNLOAD_INVALID_METADATA_SIGNATURE = 33
    OMAHA_RESPONSE_INVALID = 34
    OMAHA_UPDATE_IGNORED_PER_POLICY = 35
    OMAHA_UPDATE_DEFERRED_PER_POLICY = 36
    OMAHA_ERROR_IN_HTTP_RESPONSE = 37
    DOWNLOAD_OPERATION_HASH_MISSING_ERROR = 38
    DOWNLOAD_METADATA_SIGNATURE_MISSING_ERROR = 39
    OMAHA_UPDATE_DEFERRED_FOR_BACKOFF = 40
    POSTINSTALL_POWERWASH_ERROR = 41
    NEW_PCR_POLICY_VERIFICATION_ERROR = 42
    NEW_PCR_POLICY_HTTP_ERROR = 43
    ROLLBACK = 44


#: A server's HTTP error is reported as this base plus the HTTP status.
HTTP_RESPONSE_BASE = 2000

#: Bits OR-ed into an error code to say how the failed attempt ran.
FLAG_DEV_MODE = 1 << 31
FLAG_RESUMED = 1 << 30
FLAG_TEST_IMAGE = 1 << 29
FLAG_TEST_OMAHA_URL = 1 << 28
SPECIAL_FLAGS = FLAG_DEV_MODE | FLAG_RESUMED | FLAG_TEST_IMAGE | FLAG_TEST_OMAHA_URL


def http_error_code(http_status: int) -> int:
    """The error code for an HTTP failure, as update_engine reports it to the server."""
    return HTTP_RESPONSE_BASE + http_status


def describe_error(code: int) -> str:
    """A readable name for an error code with its flag bits, for logs and -status."""
    flags = []
    for bit, name in (
        (FLAG_DEV_MODE, "DevModeFlag"),
        (FLAG_RESUMED, "ResumedFlag"),
        (FLAG_TEST_IMAGE, "TestImageFlag"),
        (FLAG_TEST_OMAHA_URL, "TestOmahaUrlFlag"),
    ):
        if code & bit:
            flags.append(name)
    base = code & ~SPECIAL_FLAGS
    if base >= HTTP_RESPONSE_BASE:
        text = f"OmahaRequestHTTPResponse{base - HTTP_RESPONSE_BASE}"
    else:
        try:
            text = ErrorCode(base).name
        except ValueError:
            text = f"Unknown{base}"
    return " with ".join([text, *flags]) if flags else text
