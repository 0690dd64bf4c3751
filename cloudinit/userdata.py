"""What kind of user-data this is, decided on its first line as the original did.

Order matters: an empty input, then a ``#!`` script, then ``#cloud-config`` (trailing
whitespace on the header line allowed), then an Ignition config (JSON with
``ignitionVersion`` or ``ignition.version``), else unrecognised. Gzip'd user-data is
unpacked first.
"""

from __future__ import annotations

import enum
import gzip
import json
import zlib


class Kind(enum.Enum):
    EMPTY = "empty"
    SCRIPT = "script"
    CLOUD_CONFIG = "cloud-config"
    IGNITION = "ignition"
    UNKNOWN = "unknown"


GZIP_MAGIC = b"\x1f\x8b"


class UserDataError(ValueError):
    """User-data that cannot be read at all (bad gzip, not text)."""


def unpack(raw: bytes) -> str:
    """Gunzip if needed and decode as UTF-8 text."""
    if raw.startswith(GZIP_MAGIC):
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as err:
            raise UserDataError(f"user-data looks gzip'd but cannot be unpacked: {err}") from err
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise UserDataError(f"user-data is not UTF-8 text (byte {err.start})") from err


def _is_ignition(text: str) -> bool:
    try:
        doc = json.loads(text)
    except ValueError:
        return False
    if not isinstance(doc, dict):
        return False
    if isinstance(doc.get("ignitionVersion"), int):
        return True
    ignition = doc.get("ignition")
    return isinstance(ignition, dict) and "version" in ignition


def classify(text: str) -> Kind:
    if text == "":
        return Kind.EMPTY
    header = text.split("\n", 1)[0]
    if header.startswith("#!"):
        return Kind.SCRIPT
    if header.rstrip() == "#cloud-config":
        return Kind.CLOUD_CONFIG
    if text.lstrip().startswith("{") and _is_ignition(text):
        return Kind.IGNITION
    return Kind.UNKNOWN
