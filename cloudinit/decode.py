"""Decoding of ``write_files[].content`` by its ``encoding``.

``gz``/``gzip`` mean the content itself is gzip data (in practice a ``!!binary`` scalar);
the ``+base64``/``+b64`` forms mean base64 text of gzip data. Like the original, base64
may be wrapped over several lines but must otherwise be exact (padding included).
"""

from __future__ import annotations

import base64
import binascii
import gzip
import zlib


class ContentError(ValueError):
    """Content that cannot be decoded with its declared encoding."""


_BASE64 = {"b64", "base64"}
_GZIP = {"gz", "gzip"}
_GZIP_BASE64 = {"gz+base64", "gzip+base64", "gz+b64", "gzip+b64"}
ENCODINGS = ("", *sorted(_BASE64 | _GZIP | _GZIP_BASE64))


def _base64(data: bytes) -> bytes:
    try:
        return base64.b64decode(data.replace(b"\r", b"").replace(b"\n", b""), validate=True)
    except (binascii.Error, ValueError) as err:
        raise ContentError(f"invalid base64: {err}") from err


def _gunzip(data: bytes) -> bytes:
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as err:
        raise ContentError(f"invalid gzip data: {err}") from err


def decode_content(data: bytes, encoding: str) -> bytes:
    """The bytes to write for ``data`` declared with ``encoding``."""
    if encoding == "":
        return data
    if encoding in _BASE64:
        return _base64(data)
    if encoding in _GZIP:
        return _gunzip(data)
    if encoding in _GZIP_BASE64:
        return _gunzip(_base64(data))
    raise ContentError(f'unsupported encoding "{encoding}"')
