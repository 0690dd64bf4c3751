"""URL checks and RFC 2397 ``data:`` URL decoding.

Validation must reject the same sources Ignition rejects, with the same words, before any
fetch happens; decoding data URLs lives here too because validation has to decode them to
know they are well formed. The standard library's ``urllib`` accepts almost anything, so the
few rules that matter (scheme syntax, escapes, host characters) are checked by hand.
"""

from __future__ import annotations

import base64
import binascii
import re
import string

from flotilla.ignition import messages

CONFIG_SCHEMES = ("http", "https", "tftp", "s3", "gs", "data")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*):")
_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_HOST_OK = set(string.ascii_letters + string.digits + "-._~!$&'()*+,;=:[]%@")
# RFC 2396 "uric" characters that may appear in the data part of a data URL.
_URIC = set(string.ascii_letters + string.digits + ";/?:@&=+$,-_.!~*'()%")
_BASE64 = set(string.ascii_letters + string.digits + "+/=")
_TOKEN = set(string.ascii_letters + string.digits + "!#$&^_.+-")


class URLError(ValueError):
    pass


def scheme_of(url: str) -> str:
    match = _SCHEME.match(url)
    return match.group(1).lower() if match else ""


def check_syntax(url: str) -> None:
    """Raise URLError("unable to parse url") where Go's url.Parse would fail."""
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in url):
        raise URLError(messages.INVALID_URL)
    if url.startswith(":"):
        raise URLError(messages.INVALID_URL)
    scheme = scheme_of(url)
    rest = url[len(scheme) + 1 :] if scheme else url
    if scheme and not rest.startswith("/"):
        return  # opaque URL: Go keeps it verbatim
    if rest.startswith("//"):
        authority = rest[2:].split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]
        host = authority.rsplit("@", 1)[-1]
        if any(ch not in _HOST_OK for ch in host):
            raise URLError(messages.INVALID_URL)
    path = rest.split("#", 1)[0]
    if _ESCAPE.search(path):
        raise URLError(messages.INVALID_URL)


def validate(url: str, allow_file: bool = False) -> None:
    """Validate a resource source as Ignition does; raise URLError with its message."""
    check_syntax(url)
    scheme = scheme_of(url)
    allowed = CONFIG_SCHEMES + (("file",) if allow_file else ())
    if scheme not in allowed:
        raise URLError(messages.INVALID_SCHEME)
    if scheme == "data":
        decode_data_url(url)


def _unescape(data: str) -> bytes:
    out = bytearray()
    i = 0
    raw = data.encode("utf-8")
    while i < len(raw):
        byte = raw[i]
        if byte == 0x25:
            pair = raw[i + 1 : i + 3]
            try:
                if len(pair) != 2:
                    raise ValueError
                out.append(int(pair, 16))
            except ValueError:
                raise URLError("rfc2396: invalid char 0x25 in unescape sequence") from None
            i += 3
        else:
            out.append(byte)
            i += 1
    return bytes(out)


def decode_data_url(url: str) -> bytes:
    """Decode a ``data:`` URL into its bytes (base64 or percent-encoded)."""
    body = url[len("data:") :]
    header, sep, data = body.partition(",")
    params = header.split(";")
    media = params[0]
    if media:
        if "/" not in media:
            raise URLError("missing media type slash")
        kind, _, sub = media.partition("/")
        if not kind or not sub or any(ch not in _TOKEN for ch in kind + sub):
            raise URLError("incomplete media type")
    is_base64 = False
    for param in params[1:]:
        if "=" in param:
            continue
        if param != "base64":
            raise URLError(f"expected base64, got {param}")
        is_base64 = True
    if not sep:
        raise URLError("incomplete media type" if media else "missing comma")
    if is_base64:
        for ch in data:
            if ch not in _BASE64:
                raise URLError("invalid data character")
        try:
            return base64.b64decode(data, validate=True)
        except binascii.Error:
            offset = max(len(data) - len(data) % 4, 0) if len(data) % 4 else 0
            raise URLError(f"illegal base64 data at input byte {offset}") from None
    for ch in data:
        if ch not in _URIC:
            raise URLError("invalid data character")
    return _unescape(data)
