"""Omaha 3.0 from the server's side: requests read leniently, answers in Nebraska's layout.

This is the mirror image of ``daemons/update/omaha.py`` (which builds the client's requests
and reads servers' answers) and shares its constants. Requests are accepted from Flatcar's
and CoreOS's update_engine, CoreUpdate-era clients and hand-made scripts: several apps, an
``updatecheck`` beside an ``event`` in one app, unknown attributes and elements, namespaces.
Bodies over 64 KiB (Nebraska's cap) and documents with a DTD or entities are refused before
anything is expanded (defusedxml's guards on expat), with a message and no state changed.

Answers are written as Nebraska writes them: the XML declaration, then the whole document on
one line, every element open+close (never ``<x/>``), ``daystart`` first, then each ``app``
with ``ping``, ``updatecheck`` (``urls``, then ``manifest`` with ``packages`` and
``actions``) and one ``event`` per event received; package attributes in the order
``name hash hash_sha256 size required``; action attributes only when they have a value.
Nothing here does I/O.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from xml.parsers import expat

from defusedxml import (
    DefusedXmlException,
    DTDForbidden,
    EntitiesForbidden,
    ExternalReferenceForbidden,
)

from ..update.omaha import VERSION_ZERO, xml_escape
from .model import Package
from .policy import Decision

#: Nebraska's request body cap.
MAX_REQUEST_BYTES = 64 * 1024
#: Our answer's ``server`` attribute (Nebraska says "nebraska", CoreUpdate its host name).
SERVER_NAME = "flotilla"
XML_DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>\n'


class RequestError(ValueError):
    """A request refused whole; the message says why, for the log and the 400 body."""


@dataclasses.dataclass(frozen=True)
class EventReport:
    type: int
    result: int
    error_code: int = 0
    previous_version: str = ""


@dataclasses.dataclass(frozen=True)
class AppRequest:
    """One ``<app>`` of a request: who is asking and what it asks or reports."""

    app_id: str
    version: str
    track: str
    machine_id: str
    boot_id: str = ""
    oem: str = ""
    oem_version: str = ""
    aleph_version: str = ""
    alias: str = ""
    board: str = ""
    multi_manifest_ok: bool = False
    updatecheck: bool = False
    ping: bool = False
    events: tuple[EventReport, ...] = ()


@dataclasses.dataclass(frozen=True)
class Request:
    protocol: str
    installsource: str
    updater_version: str
    apps: tuple[AppRequest, ...]


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def _int(text: str | None, name: str) -> int:
    try:
        return int((text or "0").strip())
    except ValueError as err:
        raise RequestError(f"{name}={text!r} is not a number") from err


class _Node:
    """An element as the request reader needs it: local name, attributes, children."""

    __slots__ = ("attrs", "children", "tag")

    def __init__(self, tag: str, attrs: dict[str, str]) -> None:
        self.tag, self.attrs, self.children = tag, attrs, []

    def get(self, name: str, default: str = "") -> str:
        return self.attrs.get(name, default)

    def __iter__(self) -> Iterator[_Node]:
        return iter(self.children)


def _no_dtd(name: str, sysid: str | None, pubid: str | None, _internal: bool) -> None:
    raise DTDForbidden(name, sysid, pubid)


def _no_entity(name: str, *args: object) -> None:
    # An entity declaration (6 arguments from expat) or an unparsed one (5).
    value = args[0] if len(args) == 6 else None
    base, sysid, pubid, notation = args[-4:]
    raise EntitiesForbidden(name, value, base, sysid, pubid, notation)


def _no_external(context: str, base: str | None, sysid: str | None,
                 pubid: str | None) -> None:
    raise ExternalReferenceForbidden(context, base, sysid, pubid)


def _read_tree(body: bytes) -> _Node:
    """The top three levels of the document, read by expat with defusedxml's refusals.

    An ElementTree built through defusedxml spent more than a check's database work on
    a request (names rewritten per attribute, a tree of every level): a third of the
    server's time under load. Expat is driven directly here with the same guards (a DTD,
    an entity declaration or an external reference raises before anything expands) and
    keeps only the levels the Omaha request uses: request, its children, theirs.
    """
    parser = expat.ParserCreate(None, "}")
    parser.StartDoctypeDeclHandler = _no_dtd
    parser.EntityDeclHandler = _no_entity
    parser.UnparsedEntityDeclHandler = _no_entity
    parser.ExternalEntityRefHandler = _no_external
    stack: list[_Node | None] = []
    roots: list[_Node] = []

    def start(tag: str, attrs: dict[str, str]) -> None:
        node = None
        if len(stack) < 3:
            node = _Node(_local(tag), attrs)
            parent = stack[-1] if stack else None
            if parent is not None:
                parent.children.append(node)
            elif not stack:
                roots.append(node)
        stack.append(node)

    def end(_tag: str) -> None:
        stack.pop()

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.Parse(body, True)
    return roots[0]


def parse_request(body: bytes) -> Request:
    """The request's apps, or :class:`RequestError` naming what is wrong."""
    if len(body) > MAX_REQUEST_BYTES:
        raise RequestError(f"request of {len(body)} bytes exceeds {MAX_REQUEST_BYTES}")
    if not body.strip():
        raise RequestError("empty request")
    try:
        root = _read_tree(body)
    except DefusedXmlException as err:
        raise RequestError(f"refused XML: {type(err).__name__}") from err
    except (expat.ExpatError, ValueError) as err:
        raise RequestError(f"unparsable XML: {err}") from err
    if _local(root.tag) != "request":
        raise RequestError(f"root element is <{_local(root.tag)}>, not <request>")
    protocol = root.get("protocol", "")
    if protocol and protocol != "3.0":
        raise RequestError(f"protocol {protocol!r} is not 3.0")
    os_node = next((c for c in root if _local(c.tag) == "os"), None)
    os_version = os_node.get("sp", "") if os_node is not None else ""
    apps = []
    for node in root:
        if _local(node.tag) != "app":
            continue
        app_id = node.get("appid", "").strip()
        if not app_id:
            raise RequestError("an <app> has no appid")
        reports, check, ping = [], False, False
        for child in node:
            name = _local(child.tag)
            if name == "updatecheck":
                check = True
            elif name == "ping":
                ping = True
            elif name == "event":
                reports.append(EventReport(
                    _int(child.get("eventtype"), "eventtype"),
                    _int(child.get("eventresult"), "eventresult"),
                    _int(child.get("errorcode"), "errorcode"),
                    child.get("previousversion", "")))
        version = node.get("version", "") or os_version.partition("_")[0]
        apps.append(AppRequest(
            app_id=app_id, version=version, track=node.get("track", ""),
            machine_id=node.get("machineid", ""), boot_id=node.get("bootid", ""),
            oem=node.get("oem", ""), oem_version=node.get("oemversion", ""),
            aleph_version=node.get("alephversion", ""), alias=node.get("machinealias", ""),
            board=node.get("board", ""),
            multi_manifest_ok=node.get("multi_manifest_ok", "").lower() in ("true", "1"),
            updatecheck=check, ping=ping, events=tuple(reports)))
    if not apps:
        raise RequestError("the request has no <app>")
    return Request(protocol or "3.0", root.get("installsource", ""),
                   root.get("updaterversion", root.get("version", "")), tuple(apps))


def real_previous_version(version: str) -> bool:
    """False for the placeholders update_engine sends when nothing was recorded."""
    return version not in ("", VERSION_ZERO)


@dataclasses.dataclass(frozen=True)
class AppAnswer:
    """What to say about one requested app."""

    app_id: str
    status: str = "ok"
    ping: bool = False
    events: int = 0
    decision: Decision | None = None
    check_error: str = ""


def _element(name: str, attributes: Sequence[tuple[str, str]], inner: str = "") -> str:
    attrs = "".join(f' {key}="{xml_escape(value)}"' for key, value in attributes)
    return f"<{name}{attrs}>{inner}</{name}>"


def _bool(value: bool) -> str:
    return "true" if value else "false"


def _package(package: Package) -> str:
    main = _element("package", [("name", package.filename), ("hash", package.sha1_base64),
                                ("hash_sha256", package.sha256_base64),
                                ("size", str(package.size)), ("required", "true")])
    extras = "".join(
        _element("package", [("name", f.name), ("hash", f.sha1_base64),
                             ("hash_sha256", f.sha256_base64), ("size", str(f.size)),
                             ("required", "true")])
        for f in package.extra_files)
    return main + extras


def _action(package: Package) -> str:
    attributes = [("event", "postinstall"), ("ChromeOSVersion", package.chromeos_version),
                  ("sha256", package.sha256_base64),
                  ("needsadmin", _bool(package.needs_admin)),
                  ("IsDeltaPayload", _bool(package.is_delta)),
                  ("DisablePayloadBackoff", _bool(package.disable_payload_backoff)),
                  ("MetadataSignatureRsa", package.metadata_signature_rsa),
                  ("MetadataSize", package.metadata_size), ("deadline", package.deadline)]
    return _element("action", [(k, v) for k, v in attributes if v])


def _updatecheck(answer: AppAnswer, codebase: Callable[[Package], str]) -> str:
    decision = answer.decision
    if answer.check_error or decision is None:
        return _element("updatecheck", [("status", answer.check_error or "error-internal")])
    if answer.status != "ok":
        return _element("updatecheck", [("status", "error-internal")])
    if not decision.granted:
        return _element("updatecheck", [("status", "noupdate")])
    first = decision.manifests[0].package
    urls = _element("urls", [], _element("url", [("codebase", codebase(first))]))
    several = len(decision.manifests) > 1
    manifests = ""
    for step in decision.manifests:
        attributes = [("version", step.package.version)]
        if several or step.is_floor:
            attributes += [("is_floor", _bool(step.is_floor))]
            if step.is_floor:
                attributes += [("floor_reason", step.floor_reason)]
            attributes += [("is_target", _bool(step.is_target))]
        manifests += _element("manifest", attributes,
                              _element("packages", [], _package(step.package))
                              + _element("actions", [], _action(step.package)))
    return _element("updatecheck", [("status", "ok")], urls + manifests)


def build_response(answers: Sequence[AppAnswer], codebase: Callable[[Package], str],
                   *, elapsed_seconds: int = 0) -> bytes:
    """The answer document; ``codebase(package)`` is the URL the package is fetched under.

    With several manifests (floors), every one names its own package but there is one
    ``<urls>``, as Nebraska sends it: the codebase of the first step.
    """
    body = _element("daystart", [("elapsed_seconds", str(elapsed_seconds))])
    for answer in answers:
        inner = ""
        if answer.ping:
            inner += _element("ping", [("status", "ok")])
        if answer.decision is not None or answer.check_error:
            inner += _updatecheck(answer, codebase)
        inner += _element("event", [("status", "ok")]) * answer.events
        body += _element("app", [("appid", answer.app_id), ("status", answer.status)], inner)
    text = XML_DECLARATION + _element(
        "response", [("protocol", "3.0"), ("server", SERVER_NAME)], body)
    return text.encode("utf-8")
