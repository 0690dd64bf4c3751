"""Omaha 3.0 as update_engine speaks it: requests byte for byte, responses read leniently.

Requests are laid out exactly as Flatcar's update_engine writes them (XML declaration and
a newline, ``<os>`` and ``<app>`` indented by four spaces and their children by eight,
open+close tags for empty elements, a fixed attribute order, ``delta_okay="false" >``
with its stray space), because servers and their logs have only ever seen that layout.

Responses are parsed the other way round: whatever a Nebraska, CoreUpdate or hand-rolled
server sends is accepted if the parts update_engine needs are there (several apps, unknown
attributes and elements, an ``event`` beside an ``updatecheck``), and refused with
update_engine's error code when they are not. Documents with a DTD or entities are refused
before they are expanded (defusedxml), and bodies are bounded.

Nothing here does I/O: the shell posts :func:`build_request`'s bytes and hands the answer
to :func:`parse_response`.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import xml.etree.ElementTree as ET

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException

from .codes import ErrorCode, EventResult, EventType

#: The app id of the OS image (CoreOS's and Flatcar's); release files may name another.
DEFAULT_APP_ID = "{e96281a6-d1af-4bde-9a0a-97b76e56dc57}"
#: What Flatcar's client sends as ``version`` and ``updaterversion``.
UPDATER_VERSION = "update_engine-0.4.10"
#: A previous version that was never recorded, as update_engine reports it.
VERSION_ZERO = "0.0.0.0"
#: Largest response body read; Nebraska caps requests at 64 KiB, answers are smaller.
MAX_RESPONSE_BYTES = 1 << 20

#: Server app statuses that mean "not now, by the server's rollout policy" (Nebraska).
DEFERRING_APP_STATUSES = {
    "error-maxUpdatesPerPeriodLimitReached": "the server's rate limit (updates per period)",
    "error-maxConcurrentUpdatesLimitReached": "the server's limit of concurrent updates",
    "error-maxTimedOutUpdatesLimitReached": "the server paused the group after timed-out updates",
    "error-updatesDisabled": "updates are paused for this group on the server",
    "error-updateInProgressOnInstance": "the server still sees an update in progress here",
}


@dataclasses.dataclass(frozen=True)
class ClientInfo:
    """Who is asking: the fields of ``<os>`` and ``<app>`` (from release and update.conf)."""

    version: str
    track: str
    machine_id: str
    boot_id: str
    board: str = "amd64-usr"
    app_id: str = DEFAULT_APP_ID
    oem: str = ""
    oem_version: str = ""
    aleph_version: str = ""
    machine_alias: str = ""
    machine_type: str = "x86_64"
    lang: str = "en-US"
    hardware_class: str = ""
    updater_version: str = UPDATER_VERSION


@dataclasses.dataclass(frozen=True)
class Event:
    """One ``<event>``; ``error_code`` is sent only when the result is not a success."""

    type: int
    result: int
    error_code: int = 0


@dataclasses.dataclass(frozen=True)
class UpdateCheck:
    """An update check. ``previous_version`` is the version recorded before the last
    applied update: None when nothing was ever recorded (sent as 0.0.0.0), "" once it
    has been reported. Equal to the running version, it means the update rolled back."""

    previous_version: str | None = None


@dataclasses.dataclass(frozen=True)
class PingOnly:
    """A check-in while an update waits for its reboot: no updatecheck."""


RequestKind = UpdateCheck | Event | PingOnly


def xml_escape(value: str) -> str:
    """Attribute text escaped as libxml2 does, plus quotes so no value ends an attribute."""
    return (
        value.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace('"', "&quot;")
        .replace("\r", "&#13;")
    )


def rolled_back(check: UpdateCheck, info: ClientInfo) -> bool:
    """True when the version recorded before an update is still the one running."""
    return bool(check.previous_version) and check.previous_version == info.version


def _app_body(kind: RequestKind, info: ClientInfo) -> str:
    if isinstance(kind, Event):
        error = "" if kind.result == EventResult.SUCCESS else f' errorcode="{kind.error_code}"'
        return (f'        <event eventtype="{kind.type}" eventresult="{kind.result}"'
                f"{error}></event>\n")
    body = '        <ping active="1"></ping>\n'
    if isinstance(kind, PingOnly):
        return body
    body += "        <updatecheck></updatecheck>\n"
    if rolled_back(kind, info):
        return body + (
            f'        <event eventtype="{EventType.UPDATE_COMPLETE}" '
            f'eventresult="{EventResult.ERROR}" errorcode="{ErrorCode.ROLLBACK}"></event>\n'
        )
    previous = VERSION_ZERO if kind.previous_version is None else kind.previous_version
    return body + (
        f'        <event eventtype="{EventType.UPDATE_COMPLETE}" '
        f'eventresult="{EventResult.SUCCESS_REBOOT}" '
        f'previousversion="{xml_escape(previous)}"></event>\n'
    )


def build_request(info: ClientInfo, kind: RequestKind, *, interactive: bool = False) -> bytes:
    """The request body for one exchange, laid out as Flatcar's client lays it out."""
    e = xml_escape
    attributes = [
        ("appid", info.app_id), ("version", info.version), ("track", info.track),
        ("bootid", info.boot_id), ("oem", info.oem), ("oemversion", info.oem_version),
        ("alephversion", info.aleph_version), ("machineid", info.machine_id),
        ("machinealias", info.machine_alias), ("lang", info.lang), ("board", info.board),
        ("hardware_class", info.hardware_class), ("delta_okay", "false"),
    ]
    app_open = " ".join(f'{name}="{e(value)}"' for name, value in attributes)
    source = "ondemandupdate" if interactive else "scheduler"
    text = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<request protocol="3.0" version="{e(info.updater_version)}" '
        f'updaterversion="{e(info.updater_version)}" installsource="{source}" '
        'ismachine="1">\n'
        f'    <os version="Chateau" platform="CoreOS" '
        f'sp="{e(info.version)}_{e(info.machine_type)}"></os>\n'
        f"    <app {app_open} >\n"
        f"{_app_body(kind, info)}"
        "    </app>\n"
        "</request>\n"
    )
    return text.encode("utf-8")


@dataclasses.dataclass(frozen=True)
class Package:
    """One ``<package>`` of a manifest: the payload or an extra file."""

    name: str
    size: int
    sha1_base64: str = ""
    sha256_base64: str = ""


@dataclasses.dataclass(frozen=True)
class Offer:
    """An update the server grants: where to fetch it and what it must hash to."""

    version: str
    urls: tuple[str, ...]
    package: Package
    sha256: bytes
    extra_packages: tuple[Package, ...] = ()
    is_delta: bool = False
    disable_payload_backoff: bool = False
    max_failure_count_per_url: int = 10
    poll_interval: int = 0

    @property
    def payload_urls(self) -> tuple[str, ...]:
        """Each codebase joined with the package name, a slash added where missing."""
        return tuple(
            (url if url.endswith("/") else url + "/") + self.package.name for url in self.urls
        )


@dataclasses.dataclass(frozen=True)
class NoUpdate:
    """The server has nothing newer (``poll_interval`` seconds until the next check, or 0)."""

    poll_interval: int = 0


@dataclasses.dataclass(frozen=True)
class Deferred:
    """The server holds the update back by policy; ``reason`` says which, for -status."""

    app_status: str
    reason: str
    poll_interval: int = 0


@dataclasses.dataclass(frozen=True)
class Acknowledged:
    """An answer to an event or ping: the server took it."""


@dataclasses.dataclass(frozen=True)
class Invalid:
    """An answer update_engine refuses, with its error code and a message for the log."""

    code: ErrorCode
    message: str


Answer = Offer | NoUpdate | Deferred | Acknowledged | Invalid


def _local(tag: str) -> str:
    """An element's name without any namespace, so ``{ns}app`` reads as ``app``."""
    return tag.rsplit("}", 1)[-1]


def _children(node: ET.Element, name: str) -> list[ET.Element]:
    return [child for child in node if _local(child.tag) == name]


def _child(node: ET.Element | None, name: str) -> ET.Element | None:
    if node is None:
        return None
    found = _children(node, name)
    return found[0] if found else None


def _listed(node: ET.Element, container: str, name: str) -> list[ET.Element]:
    """``name`` elements inside ``<container>`` (or, leniently, right under ``node``)."""
    holder = _child(node, container)
    return _children(node if holder is None else holder, name)


def _same_app(a: str, b: str) -> bool:
    return a.strip("{}").lower() == b.strip("{}").lower()


def _int(text: str | None) -> int | None:
    try:
        return int((text or "").strip())
    except ValueError:
        return None


def parse_response(body: bytes, app_id: str = DEFAULT_APP_ID, *, expect_check: bool = True,
                   max_bytes: int = MAX_RESPONSE_BYTES) -> Answer:
    """What the server said about ``app_id``: an offer, no update, a deferral, or why not.

    ``expect_check`` is False for answers to event-only and ping-only requests, where an
    ``<app>`` without ``<updatecheck>`` is the normal acknowledgement.
    """
    if not body.strip():
        return Invalid(ErrorCode.OMAHA_REQUEST_EMPTY_RESPONSE_ERROR, "empty response")
    if len(body) > max_bytes:
        return Invalid(ErrorCode.OMAHA_REQUEST_XML_PARSE_ERROR,
                       f"response of {len(body)} bytes exceeds {max_bytes}")
    try:
        root = SafeET.fromstring(body, forbid_dtd=True)
    except (ET.ParseError, DefusedXmlException, ValueError) as err:
        return Invalid(ErrorCode.OMAHA_REQUEST_XML_PARSE_ERROR, f"unparsable response: {err}")
    if _local(root.tag) != "response":
        return Invalid(ErrorCode.OMAHA_RESPONSE_INVALID, f"root element is <{root.tag}>")
    apps = _children(root, "app")
    app = next((a for a in apps if _same_app(a.get("appid", ""), app_id)), None)
    if app is None and len(apps) == 1 and not apps[0].get("appid"):
        app = apps[0]  # a lone app that names no id answers the only app asked about
    if app is None:
        return Invalid(ErrorCode.OMAHA_RESPONSE_INVALID, f"no <app> for {app_id}")
    app_status = app.get("status", "ok")
    check = _child(app, "updatecheck")
    poll = _int(check.get("PollInterval")) if check is not None else None
    poll_interval = poll if poll and poll > 0 else 0
    if app_status in DEFERRING_APP_STATUSES:
        return Deferred(app_status, DEFERRING_APP_STATUSES[app_status], poll_interval)
    if app_status != "ok":
        return Invalid(ErrorCode.OMAHA_RESPONSE_INVALID, f"app status {app_status!r}")
    if check is None:
        if expect_check:
            return Invalid(ErrorCode.OMAHA_RESPONSE_INVALID, "no <updatecheck> in the answer")
        return Acknowledged()
    return _parse_check(check, poll_interval)


def _parse_check(check: ET.Element, poll_interval: int) -> Answer:
    status = check.get("status")
    if status is None:
        return Invalid(ErrorCode.OMAHA_RESPONSE_INVALID, "updatecheck has no status")
    if status == "noupdate":
        return NoUpdate(poll_interval)
    if status != "ok":
        return Invalid(ErrorCode.OMAHA_RESPONSE_INVALID, f"updatecheck status {status!r}")
    manifests = _children(check, "manifest")
    if not manifests:
        return Invalid(ErrorCode.OMAHA_RESPONSE_INVALID, "no <manifest>")
    manifest = manifests[0]  # with floors, the first manifest is the next step to take
    urls = [u.get("codebase", "") for u in _listed(check, "urls", "url")]
    if not urls:
        return Invalid(ErrorCode.OMAHA_RESPONSE_INVALID, "no <url> to download from")
    if any(not url for url in urls):
        return Invalid(ErrorCode.OMAHA_RESPONSE_INVALID, "a <url> has an empty codebase")
    packages = _listed(manifest, "packages", "package")
    if not packages:
        return Invalid(ErrorCode.OMAHA_RESPONSE_INVALID, "no <package> in the manifest")
    parsed = []
    for node in packages:
        name = node.get("name", "")
        size = _int(node.get("size"))
        if not name or "/" in name or name in (".", ".."):
            return Invalid(ErrorCode.OMAHA_RESPONSE_INVALID, f"package name {name!r}")
        if size is None or size <= 0:
            return Invalid(ErrorCode.OMAHA_RESPONSE_INVALID,
                           f"package {name} has invalid size {node.get('size')!r}")
        parsed.append(Package(name, size, node.get("hash", ""), node.get("hash_sha256", "")))
    actions = _listed(manifest, "actions", "action")
    postinstall = next((a for a in actions if a.get("event") == "postinstall"), None)
    if postinstall is None:
        return Invalid(ErrorCode.OMAHA_RESPONSE_INVALID, "no postinstall <action>")
    digest_text = postinstall.get("sha256", "")
    try:
        digest = base64.b64decode(digest_text, validate=True)
    except (binascii.Error, ValueError):
        digest = b""
    if len(digest) != 32:
        return Invalid(ErrorCode.OMAHA_RESPONSE_INVALID,
                       f"postinstall sha256 {digest_text!r} is not a base64 SHA-256")
    max_failures = _int(postinstall.get("MaxFailureCountPerUrl"))
    return Offer(
        version=manifest.get("version", ""),
        urls=tuple(urls),
        package=parsed[0],
        sha256=digest,
        extra_packages=tuple(parsed[1:]),
        is_delta=postinstall.get("IsDeltaPayload") == "true",
        disable_payload_backoff=postinstall.get("DisablePayloadBackoff") == "true",
        max_failure_count_per_url=max_failures if max_failures and max_failures > 0 else 10,
        poll_interval=poll_interval,
    )
