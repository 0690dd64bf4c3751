"""``coreos.flannel`` -> ``/run/flannel/options.env``, the file flanneld.service reads.

coreos-cloudinit wrote the section's set fields as ``FLANNELD_*=value`` lines, joined by
``\\n`` with no trailing newline, to ``/run/flannel/options.env`` (not a drop-in, whatever
its documentation said), and flanneld.service loads it with ``EnvironmentFile=-``. Ours
writes the same bytes for the same input.

What the original did not do, and this module does: refuse a value flanneld would refuse
at start (its unit restarts every 10 s, so a bad value would loop forever instead of
failing once, here, with the field named), and refuse a line break, which would have
smuggled extra variables into the file. A value that systemd's environment-file reader
would alter (a backslash, leading quote, whitespace at either end) is written
double-quoted with ``\\ " ` $`` escaped, so flanneld receives exactly what was written;
plain values are written bare, byte for byte as the original.

Pure: no I/O. Used by the planner (after ``$public_ipv4`` substitution) and by the
validator (on literal values, before it).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Address

from flotilla.daemons.settings import GO_FALSE, GO_TRUE

from .config import EnvSection

OPTIONS_ENV = "/run/flannel/options.env"
# A Linux interface name: 1-15 bytes, no "/", no whitespace, not "." or "..".
_IFNAME = re.compile(r"^(?!\.{1,2}$)[^/\s:]{1,15}$")
_ENDPOINT = re.compile(r"^https?://[^/\s?#]+(/\S*)?$")
_NEEDS_QUOTES = re.compile(r"""^[\s'"]|\\|\s$""")


def check(name: str, text: str) -> str | None:
    """Why flanneld would not take ``text`` for field ``name`` (None when it would)."""
    if any(c in text for c in "\n\r\0"):
        return f"coreos.flannel.{name}: a value cannot contain a line break or NUL " \
               "(options.env holds one variable per line)"
    if name == "ip_masq" and text not in GO_TRUE | GO_FALSE:
        return f"coreos.flannel.ip_masq: {text!r} is not a boolean flanneld reads " \
               "(write true or false)"
    if name == "public_ip" and not _is_ipv4(text):
        return f"coreos.flannel.public_ip: {text!r} is not an IPv4 address"
    if name == "interface" and not (_is_ipv4(text) or (_IFNAME.match(text)
                                                         and not _looks_numeric(text))):
        return f"coreos.flannel.interface: {text!r} is neither an interface name nor " \
               "an IPv4 address"
    if name == "etcd_endpoints":
        urls = [u for u in text.split(",") if u]
        bad = [u for u in urls if not _ENDPOINT.match(u)]
        if not urls or bad:
            shown = bad[0] if bad else text
            return f"coreos.flannel.etcd_endpoints: {shown!r} is not an http:// or " \
                   "https:// URL (a comma-separated list of them)"
    return None


def _is_ipv4(text: str) -> bool:
    try:
        IPv4Address(text)
    except ValueError:
        return False
    return True


def _looks_numeric(text: str) -> bool:
    """Digits and dots only: meant as an address, so it must be a valid one."""
    return bool(re.fullmatch(r"[0-9.]+", text))


def env_value(text: str) -> str:
    """``text`` as systemd's EnvironmentFile= reader gives it back unchanged."""
    if not _NEEDS_QUOTES.search(text):
        return text
    return '"' + re.sub(r'(["\\`$])', r"\\\1", text) + '"'


@dataclass
class FlannelOptions:
    """The options.env bytes (empty: nothing to write) and the refusals, field-named."""

    content: bytes = b""
    errors: list[str] = field(default_factory=list)


def translate(section: EnvSection, go_value: Callable[[object], str] = str) -> FlannelOptions:
    """The set fields in schema order as ``KEY=value`` lines; errors instead of content
    when any value would not reach flanneld as written or flanneld would refuse it."""
    out = FlannelOptions()
    lines = []
    for item, value in section:
        text = go_value(value)
        problem = check(item.name, text)
        if problem:
            out.errors.append(problem)
        lines.append(f"{item.env}={env_value(text)}")
    if not out.errors:
        out.content = "\n".join(lines).encode()
    return out
