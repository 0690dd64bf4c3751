"""Turning an HTTP keys request into a validated request and a store command (pure).

The checks, their order and their error causes copy etcd 3.4's ``parseKeyRequest`` so a
malformed request gets the same answer from kvd as from etcd. Parameters come from the
query string and, for PUT and POST, an ``application/x-www-form-urlencoded`` body; body
values win and only the first occurrence of a name counts. The form decoder follows Go's
``url.ParseQuery`` (``+`` is a space, a bad ``%`` escape or a ``;`` separator is an error,
with Go's error text) because clients rely on exactly what etcd accepts. It works on the
raw bytes and decodes each value exactly once. Bytes that are not UTF-8 become U+FFFD, one
per byte: etcd keeps them and its JSON encoder writes U+FFFD for each, so clients read the
same text (kvd's JSON carries the character itself where etcd writes ``\\ufffd``).
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_to_bytes

from flotilla.daemons.kv import errors as E
from flotilla.daemons.kv.errors import EtcdError
from flotilla.daemons.kv.store import SECOND_NS, clean_path
from flotilla.daemons.settings import parse_go_bool as parse_bool

MAX_UINT64 = 2**64 - 1
_DIGITS = re.compile(r"[0-9]+")


def _go_replace(err: UnicodeError) -> tuple[str, int]:
    """One U+FFFD per invalid byte, as Go's UTF-8 decoding (and so etcd's JSON) does."""
    assert isinstance(err, UnicodeDecodeError)
    return "\ufffd" * (err.end - err.start), err.end


codecs.register_error("go-replace", _go_replace)


def decode_go(raw: bytes) -> str:
    return raw.decode("utf-8", "go-replace")


class FormError(ValueError):
    """A form that Go's parser would reject; the text is Go's error string."""


_BAD_ESCAPE = re.compile(rb"%(?![0-9A-Fa-f]{2})")
_GO_SHORT_ESCAPES = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r",
                     "\t": "\\t", "\v": "\\v", '"': '\\"', "\\": "\\\\"}


def go_quote(raw: bytes) -> str:
    """Go's ``strconv.Quote``: the form errors quote the offending bytes this way, so an
    invalid byte shows as ``\\xff`` and a quote or control character is escaped."""
    out = ['"']
    for char in raw.decode("utf-8", "surrogateescape"):
        code = ord(char)
        if 0xDC80 <= code <= 0xDCFF:  # a byte that is not UTF-8
            out.append(f"\\x{code - 0xDC00:02x}")
        elif char in _GO_SHORT_ESCAPES:
            out.append(_GO_SHORT_ESCAPES[char])
        elif char.isprintable():
            out.append(char)
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02x}")
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)


def _unescape(data: bytes) -> str:
    """Go's ``url.QueryUnescape``: ``+`` to space, ``%XX`` to a byte, UTF-8 decoded.

    Every escape is checked before any is decoded, as Go does, so the error names the
    first bad one; the result is decoded once, from the bytes as they arrived.
    """
    if b"%" not in data:
        return decode_go(data.replace(b"+", b" ")) if b"+" in data else decode_go(data)
    bad = _BAD_ESCAPE.search(data)
    if bad is not None:
        raise FormError("invalid URL escape " + go_quote(data[bad.start():bad.start() + 3]))
    return decode_go(unquote_to_bytes(data.replace(b"+", b" ")))


def parse_form(query: str | bytes) -> tuple[list[tuple[str, str]], str | None]:
    """Go's ``url.ParseQuery`` on a raw (still percent-encoded) query string or form body.

    Returns the pairs and Go's error: the first bad escape, except that a ``;`` separator
    replaces any earlier error (Go assigns that one unconditionally); parsing continues.
    A ``str`` must be the raw query as received, never one a framework already decoded.
    """
    data = query.encode("utf-8", "surrogateescape") if isinstance(query, str) else query
    pairs: list[tuple[str, str]] = []
    first_error: str | None = None
    for part in data.split(b"&"):
        if b";" in part:
            first_error = "invalid semicolon separator in query"
            continue
        if not part:
            continue
        name, _, value = part.partition(b"=")
        try:
            pairs.append((_unescape(name), _unescape(value)))
        except FormError as err:
            first_error = first_error or str(err)
    return pairs, first_error


class Form:
    """Go's ``url.Values`` view: first value wins, presence is distinguishable."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self.values: dict[str, str] = {}
        for name, value in pairs:
            self.values.setdefault(name, value)

    def has(self, name: str) -> bool:
        return name in self.values

    def get(self, name: str) -> str:
        return self.values.get(name, "")


def parse_uint(text: str) -> int:
    if not _DIGITS.fullmatch(text):
        raise ValueError(text)
    number = int(text)
    if number > MAX_UINT64:
        raise ValueError(text)
    return number


@dataclass(slots=True)
class KeyRequest:
    """A validated ``/v2/keys`` request."""

    method: str
    key: str
    value: str = ""
    dir: bool = False
    prev_value: str = ""
    prev_index: int = 0
    prev_exist: bool | None = None
    wait: bool = False
    wait_index: int = 0
    recursive: bool = False
    sorted: bool = False
    quorum: bool = False
    stream: bool = False
    ttl: int | None = None
    refresh: bool = False
    no_value: bool = False

    def command(self, now: int) -> dict[str, Any]:
        """The replicated command for a write; ``now`` is the proposer's wall time (ns)."""
        params: dict[str, Any] = {}
        if self.method == "DELETE":
            op = "delete"
            for name, value in (("dir", self.dir), ("recursive", self.recursive),
                                ("prevValue", self.prev_value),
                                ("prevIndex", self.prev_index)):
                if value:
                    params[name] = value
        else:
            op = "post" if self.method == "POST" else "put"
            for name, value in (("value", self.value), ("dir", self.dir),
                                ("prevValue", self.prev_value),
                                ("prevIndex", self.prev_index), ("refresh", self.refresh)):
                if value:
                    params[name] = value
            if self.prev_exist is not None and op == "put":
                params["prevExist"] = self.prev_exist
            if self.ttl is not None:
                params["ttl"] = min(self.ttl, MAX_TTL_SECONDS)
        return {"op": op, "key": self.key, "params": params, "now": now}


# A TTL longer than this would overflow Go's nanosecond durations; etcd wraps such values,
# kvd clamps them to roughly 292 years instead.
MAX_TTL_SECONDS = (2**63 - 1) // SECOND_NS


def _bad(code: int, cause: str) -> EtcdError:
    return EtcdError(code, cause, 0)


def parse_key_request(method: str, key: str, form: Form,
                      form_error: str | None = None) -> KeyRequest:
    """Validate parameters in etcd's order; raises :class:`EtcdError` with index 0."""
    if form_error is not None:
        raise _bad(E.INVALID_FORM, form_error)
    req = KeyRequest(method, key)
    for name, attr in (("prevIndex", "prev_index"), ("waitIndex", "wait_index")):
        if form.has(name):
            try:
                setattr(req, attr, parse_uint(form.get(name)))
            except ValueError:
                raise _bad(E.INDEX_NAN, f'invalid value for "{name}"') from None
    for name in ("recursive", "sorted", "wait", "dir", "quorum", "stream"):
        if form.has(name):
            try:
                setattr(req, name, parse_bool(form.get(name)))
            except ValueError:
                raise _bad(E.INVALID_FIELD, f'invalid value for "{name}"') from None
    if req.wait and method != "GET":
        raise _bad(E.INVALID_FIELD, '"wait" can only be used with GET requests')
    req.prev_value = form.get("prevValue")
    if form.has("prevValue") and req.prev_value == "":
        raise _bad(E.PREV_VALUE_REQUIRED, '"prevValue" cannot be empty')
    if form.has("noValueOnSuccess"):
        try:
            req.no_value = parse_bool(form.get("noValueOnSuccess"))
        except ValueError:
            raise _bad(E.INVALID_FIELD, 'invalid value for "noValueOnSuccess"') from None
    if form.get("ttl"):
        try:
            req.ttl = parse_uint(form.get("ttl"))
        except ValueError:
            raise _bad(E.TTL_NAN, 'invalid value for "ttl"') from None
    if form.has("prevExist"):
        try:
            req.prev_exist = parse_bool(form.get("prevExist"))
        except ValueError:
            raise _bad(E.INVALID_FIELD, "invalid value for prevExist") from None
    if form.has("refresh"):
        try:
            req.refresh = parse_bool(form.get("refresh"))
        except ValueError:
            raise _bad(E.INVALID_FIELD, "invalid value for refresh") from None
        if req.refresh:
            if form.has("value") and form.get("value") != "":
                raise _bad(E.REFRESH_VALUE, "A value was provided on a refresh")
            if req.ttl is None:
                raise _bad(E.REFRESH_TTL_REQUIRED, "No TTL value set")
    req.value = form.get("value")
    return req


def go_path_unescape(raw: str) -> str | None:
    """Go's URL path decoding: ``%XX`` to bytes (``+`` stays), UTF-8 with U+FFFD per bad
    byte. None for a malformed escape, which Go's server rejects before any handler."""
    if "%" not in raw:
        return raw
    out = bytearray()
    data = raw.encode("utf-8", "surrogateescape")
    i = 0
    while i < len(data):
        if data[i] == 0x25:
            hexpart = data[i + 1:i + 3]
            if len(hexpart) < 2 or not all(c in b"0123456789abcdefABCDEF" for c in hexpart):
                return None
            out.append(int(hexpart, 16))
            i += 3
        else:
            out.append(data[i])
            i += 1
    return decode_go(bytes(out))


def go_clean_url_path(path: str) -> str:
    """Go ServeMux's canonical form of a request path (keeps one trailing slash)."""
    if not path:
        return "/"
    if not path.startswith("/"):
        path = "/" + path
    cleaned = clean_path(path)
    if path.endswith("/") and cleaned != "/":
        cleaned += "/"
    return cleaned
