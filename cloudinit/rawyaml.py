"""YAML reading that keeps every scalar exactly as written, with its line number.

CoreOS users' cloud-configs were read by a YAML library that stored the raw text of a
scalar in string fields: ``permissions: 0644`` stays ``"0644"``, ``reboot-strategy: off``
stays ``"off"``. PyYAML's constructors would turn those into 420 and False, so we stop at
the composed node graph (which keeps the text, the quoting style and the position) and
build our own small tree. Each scalar also carries the *implicit* kind the original
library would have resolved it to (YAML 1.1 rules: ``yes``/``on``/``y`` are bools, ``0744``
is an octal int), because the validator compares that kind with the schema.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field

import yaml

try:  # the C composer is several times faster and keeps the same marks
    from yaml import CSafeLoader as _Loader
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    from yaml import SafeLoader as _Loader  # type: ignore[assignment]

BINARY_TAG = "tag:yaml.org,2002:binary"

_TRUE = {"y", "Y", "yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON"}
_FALSE = {"n", "N", "no", "No", "NO", "false", "False", "FALSE", "off", "Off", "OFF"}
_NULL = {"", "~", "null", "Null", "NULL"}
_SPECIAL_FLOAT = {
    ".nan", ".NaN", ".NAN", ".inf", ".Inf", ".INF",
    "+.inf", "+.Inf", "+.INF", "-.inf", "-.Inf", "-.INF",
}
_INT = re.compile(
    r"[-+]?(?:0[xX][0-9a-fA-F]+|0[oO][0-7]+|0[bB][01]+|0[0-7]*|[1-9][0-9]*)"
)
_FLOAT = re.compile(r"[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")


class YamlSyntaxError(ValueError):
    """Malformed YAML, with the 1-based line of the problem."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line
        self.message = message


@dataclass
class Node:
    """One YAML value: a mapping, a sequence, a scalar or null.

    ``kind`` is the implicit type the original loader would give it: one of
    ``map``, ``seq``, ``str``, ``int``, ``float``, ``bool``, ``null``.
    ``text`` holds the scalar as written (for ``!!binary`` the decoded bytes as text).
    """

    kind: str
    line: int
    text: str = ""
    raw_bytes: bytes | None = None
    items: list[Node] = field(default_factory=list)
    entries: list[tuple[str, int, Node]] = field(default_factory=list)

    def get(self, key: str) -> Node | None:
        """The value under ``key`` (already normalised) or None. A key given twice (also
        as ``a-b`` and ``a_b``) means its last value, as the original's decoder did."""
        for name, _line, value in reversed(self.entries):
            if name == key:
                return value
        return None

    def key_line(self, key: str) -> int:
        for name, line, _value in reversed(self.entries):
            if name == key:
                return line
        return self.line


def scalar_kind(text: str) -> str:
    """The implicit YAML 1.1 type of a plain (unquoted, untagged) scalar."""
    if text in _TRUE or text in _FALSE:
        return "bool"
    if text in _NULL:
        return "null"
    if text in _SPECIAL_FLOAT:
        return "float"
    if text[0] in "+-.0123456789":
        plain = text.replace("_", "")
        if _INT.fullmatch(plain):
            return "int"
        if _FLOAT.fullmatch(plain):
            return "float"
    return "str"


def normalise_key(key: str) -> str:
    """``-`` and ``_`` in keys are the same thing in cloud-config."""
    return key.replace("-", "_")


def _convert(node: yaml.Node, seen: dict[int, Node]) -> Node:
    if id(node) in seen:  # aliases point at the same composed node
        return seen[id(node)]
    line = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out = Node("map", line)
        seen[id(node)] = out
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node)
            out.entries.append(
                (normalise_key(str(key)), key_node.start_mark.line + 1, _convert(value_node, seen))
            )
        return out
    if isinstance(node, yaml.SequenceNode):
        out = Node("seq", line)
        seen[id(node)] = out
        out.items = [_convert(item, seen) for item in node.value]
        return out
    text = node.value
    if node.tag == BINARY_TAG:
        try:
            data = base64.b64decode("".join(text.split()), validate=True)
        except (binascii.Error, ValueError) as err:
            raise YamlSyntaxError(line, "!!binary value contains invalid base64 data") from err
        out = Node("str", line, text=data.decode("latin-1"), raw_bytes=data)
    elif node.style:  # quoted or block scalars are always strings (plain is None or "")
        out = Node("str", line, text=text)
    else:
        out = Node(scalar_kind(text) if text else "null", line, text=text)
    seen[id(node)] = out
    return out


# Problems noticed only after the construct that caused them: a key without ':' is seen at
# the next token, and an unclosed quote or bracket only where the text (or the next
# mapping) ends, often past the last line. The construct's own line is the one to fix.
_REPORT_AT_CONTEXT = ("while scanning a simple", "while scanning a quoted scalar",
                      "while parsing a flow sequence", "while parsing a flow mapping")


def _problem(err: yaml.MarkedYAMLError) -> tuple[int, str]:
    mark = err.problem_mark or err.context_mark
    context = err.context or ""
    if err.context_mark is not None and context.startswith(_REPORT_AT_CONTEXT):
        mark = err.context_mark
    line = mark.line + 1 if mark is not None else 1
    message = (err.problem or err.context or "invalid YAML").strip()
    if context.startswith(_REPORT_AT_CONTEXT[1:]):
        message = f"{message} {context}"
    # PyYAML names the offending character; the original's wording did not.
    message = re.sub(r"^found character .* that cannot start any token$",
                     "found character that cannot start any token", message)
    return line, message


def load(text: str) -> Node | None:
    """Parse one YAML document into a :class:`Node` tree (None for an empty document).

    Raises :class:`YamlSyntaxError` with the exact line of a syntax error.
    """
    try:
        composed = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as err:
        raise YamlSyntaxError(*_problem(err)) from err
    except yaml.YAMLError as err:
        raise YamlSyntaxError(1, str(err)) from err
    if composed is None:
        return None
    return _convert(composed, {})
