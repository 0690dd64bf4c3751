"""Byte-exact JSON for events and errors, as etcd's Go encoder writes them.

Go's ``encoding/json`` escapes ``<``, ``>``, ``&``, U+2028 and U+2029, writes control
characters as ``\\u00XX`` (except ``\\n``, ``\\r``, ``\\t``) and ends every body with a
newline. Some clients and etcd's own tests compare bodies byte for byte, so the encoder is
written out here rather than approximated with :func:`json.dumps`. Rendering takes
``now`` because ``ttl`` is the time left when the answer is written, not when the key was
stored.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from flotilla.daemons.kv.errors import EtcdError
from flotilla.daemons.kv.store import SECOND_NS, Event, NodeView, ttl_left

_NEEDS_ESCAPE = re.compile('[\x00-\x1f"\\\\<>&\u2028\u2029]')
_SHORT = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_char(match: re.Match[str]) -> str:
    char = match.group(0)
    short = _SHORT.get(char)
    return short if short is not None else f"\\u{ord(char):04x}"


def go_string(text: str) -> str:
    """A JSON string literal exactly as Go encodes it."""
    if _NEEDS_ESCAPE.search(text) is None:
        return f'"{text}"'
    return '"' + _NEEDS_ESCAPE.sub(_escape_char, text) + '"'


def rfc3339nano(ns: int) -> str:
    """Go's ``time.RFC3339Nano`` in UTC: fractional seconds with trailing zeros trimmed."""
    seconds, frac = divmod(ns, SECOND_NS)
    stamp = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    if frac:
        stamp += "." + f"{frac:09d}".rstrip("0")
    return stamp + "Z"


def node_json(view: NodeView, now: int) -> str:
    parts: list[str] = []
    if view.key:
        parts.append('"key":' + go_string(view.key))
    if view.value is not None:
        parts.append('"value":' + go_string(view.value))
    if view.dir:
        parts.append('"dir":true')
    if view.expire is not None:
        parts.append('"expiration":"' + rfc3339nano(view.expire) + '"')
        ttl = view.ttl if view.ttl is not None else ttl_left(view.expire, now)
        if ttl:
            parts.append(f'"ttl":{ttl}')
    if view.nodes:
        parts.append('"nodes":[' + ",".join(node_json(n, now) for n in view.nodes) + "]")
    if view.modified:
        parts.append(f'"modifiedIndex":{view.modified}')
    if view.created:
        parts.append(f'"createdIndex":{view.created}')
    return "{" + ",".join(parts) + "}"


def event_json(event: Event, now: int, no_value: bool = False) -> str:
    """An event body with its trailing newline.

    ``no_value`` is etcd's ``noValueOnSuccess``: writes answer only with their action.
    """
    parts = ['"action":' + go_string(event.action)]
    if not (no_value and event.action in ("set", "compareAndSwap", "create", "update")):
        if event.node is not None:
            parts.append('"node":' + node_json(event.node, now))
        if event.prev is not None:
            parts.append('"prevNode":' + node_json(event.prev, now))
    return "{" + ",".join(parts) + "}\n"


def error_json(error: EtcdError) -> str:
    parts = [f'"errorCode":{error.code}', '"message":' + go_string(error.message)]
    if error.cause:
        parts.append('"cause":' + go_string(error.cause))
    parts.append(f'"index":{error.index}')
    return "{" + ",".join(parts) + "}\n"
