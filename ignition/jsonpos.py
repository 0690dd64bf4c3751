"""A JSON parser that remembers where every value came from.

Ignition reports each problem with the line and column of the JSON node it concerns, and
users need that to find a typo in a long config. Python's ``json`` module returns values
without positions, so this small recursive-descent parser records, for every node, the
offset that Ignition's reports point at: the first character of a scalar, the character
after the opening bracket of an object or array, and the first character of each key.
Syntax errors use the wording of Go's ``encoding/json`` so reports read the same as
``ignition-validate``'s.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Path = tuple[str | int, ...]

_WS = " \t\n\r"
_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


class JSONSyntaxError(ValueError):
    """Malformed JSON; ``offset`` follows Go's convention (bytes consumed, 0 at EOF)."""

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(message)
        self.message = message
        self.offset = offset


@dataclass
class Positions:
    """Offsets of every node (``nodes``), of every key (``keys``) and where scalars end."""

    text: str
    nodes: dict[Path, int] = field(default_factory=dict)
    keys: dict[Path, int] = field(default_factory=dict)
    ends: dict[Path, int] = field(default_factory=dict)

    def line_col(self, offset: int) -> tuple[int, int]:
        """1-based line and column (in bytes, as Go counts) of a 0-based offset."""
        line = self.text.count("\n", 0, offset) + 1
        start = self.text.rfind("\n", 0, offset) + 1
        return line, len(self.text[start:offset].encode("utf-8", "surrogatepass")) + 1

    def closest(self, path: Path) -> int:
        """Offset of the deepest existing node on ``path`` (Ignition's correlation rule)."""
        probe = tuple(path)
        while probe:
            if probe in self.nodes:
                return self.nodes[probe]
            probe = probe[:-1]
        return self.nodes.get((), 0)


def _describe(ch: str) -> str:
    if ch == "'":
        return "'\\''"
    if ch == '"':
        return "'\"'"
    return f"'{ch}'"


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.positions = Positions(text)

    def skip_ws(self) -> None:
        text, pos = self.text, self.pos
        while pos < len(text) and text[pos] in _WS:
            pos += 1
        self.pos = pos

    def fail(self, context: str) -> JSONSyntaxError:
        if self.pos >= len(self.text):
            return JSONSyntaxError("unexpected end of JSON input", 0)
        ch = self.text[self.pos]
        return JSONSyntaxError(f"invalid character {_describe(ch)} {context}", self.pos + 1)

    def parse_document(self) -> Any:
        self.skip_ws()
        value = self.parse_value(())
        self.skip_ws()
        if self.pos < len(self.text):
            ch = self.text[self.pos]
            raise JSONSyntaxError(
                f"invalid character {_describe(ch)} after top-level value", 0
            )
        return value

    def parse_value(self, path: Path) -> Any:
        self.skip_ws()
        if self.pos >= len(self.text):
            raise self.fail("looking for beginning of value")
        ch = self.text[self.pos]
        if ch == "{":
            return self.parse_object(path)
        if ch == "[":
            return self.parse_array(path)
        self.positions.nodes[path] = self.pos
        if ch == '"':
            value: Any = self.parse_string()
        elif ch == "-" or ch.isdigit():
            value = self.parse_number()
        elif self.text.startswith("true", self.pos):
            self.pos += 4
            value = True
        elif self.text.startswith("false", self.pos):
            self.pos += 5
            value = False
        elif self.text.startswith("null", self.pos):
            self.pos += 4
            value = None
        else:
            raise self.fail("looking for beginning of value")
        self.positions.ends[path] = self.pos
        return value

    def parse_object(self, path: Path) -> dict[str, Any]:
        self.pos += 1
        self.positions.nodes[path] = self.pos
        result: dict[str, Any] = {}
        self.skip_ws()
        if self.pos < len(self.text) and self.text[self.pos] == "}":
            self.pos += 1
            return result
        while True:
            self.skip_ws()
            if self.pos >= len(self.text) or self.text[self.pos] != '"':
                raise self.fail("looking for beginning of object key string")
            key_offset = self.pos
            key = self.parse_string()
            self.positions.keys[(*path, key)] = key_offset
            self.skip_ws()
            if self.pos >= len(self.text) or self.text[self.pos] != ":":
                raise self.fail("after object key")
            self.pos += 1
            value = self.parse_value((*path, key))
            previous = result.get(key)
            if isinstance(previous, dict) and isinstance(value, dict):
                # Go decodes a repeated key into the struct it already filled.
                value = _overlay(previous, value)
            result[key] = value
            self.skip_ws()
            if self.pos < len(self.text) and self.text[self.pos] == ",":
                self.pos += 1
                continue
            if self.pos < len(self.text) and self.text[self.pos] == "}":
                self.pos += 1
                return result
            raise self.fail("after object key:value pair")

    def parse_array(self, path: Path) -> list[Any]:
        self.pos += 1
        self.positions.nodes[path] = self.pos
        result: list[Any] = []
        self.skip_ws()
        if self.pos < len(self.text) and self.text[self.pos] == "]":
            self.pos += 1
            return result
        while True:
            result.append(self.parse_value((*path, len(result))))
            self.skip_ws()
            if self.pos < len(self.text) and self.text[self.pos] == ",":
                self.pos += 1
                continue
            if self.pos < len(self.text) and self.text[self.pos] == "]":
                self.pos += 1
                return result
            raise self.fail("after array element")

    def parse_string(self) -> str:
        text = self.text
        pos = self.pos + 1
        out: list[str] = []
        while True:
            end = pos
            while end < len(text) and text[end] not in '"\\' and text[end] >= " ":
                end += 1
            out.append(text[pos:end])
            if end >= len(text):
                self.pos = end
                raise JSONSyntaxError("unexpected end of JSON input", 0)
            ch = text[end]
            if ch == '"':
                self.pos = end + 1
                return "".join(out)
            if ch < " ":
                self.pos = end
                raise self.fail("in string literal")
            esc = text[end + 1 : end + 2]
            if esc in _ESCAPES:
                out.append(_ESCAPES[esc])
                pos = end + 2
            elif esc == "u":
                digits = text[end + 2 : end + 6]
                try:
                    code = int(digits, 16)
                except ValueError:
                    self.pos = end + 2
                    raise self.fail("in \\u hexadecimal character escape") from None
                pos = end + 6
                if 0xD800 <= code < 0xDC00 and text[pos : pos + 2] == "\\u":
                    try:
                        low = int(text[pos + 2 : pos + 6], 16)
                    except ValueError:
                        low = 0
                    if 0xDC00 <= low < 0xE000:
                        code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
                        pos += 6
                out.append(chr(code))
            else:
                self.pos = end + 1
                raise self.fail("in string escape code")

    def parse_number(self) -> int | float:
        text = self.text
        start = pos = self.pos
        if text[pos] == "-":
            pos += 1
        if pos < len(text) and text[pos] == "0":
            pos += 1
        elif pos < len(text) and text[pos].isdigit():
            while pos < len(text) and text[pos].isdigit():
                pos += 1
        else:
            self.pos = pos
            raise self.fail("in numeric literal")
        is_float = False
        if pos < len(text) and text[pos] == ".":
            is_float = True
            pos += 1
            if pos >= len(text) or not text[pos].isdigit():
                self.pos = pos
                raise self.fail("after decimal point in numeric literal")
            while pos < len(text) and text[pos].isdigit():
                pos += 1
        if pos < len(text) and text[pos] in "eE":
            is_float = True
            pos += 1
            if pos < len(text) and text[pos] in "+-":
                pos += 1
            if pos >= len(text) or not text[pos].isdigit():
                self.pos = pos
                raise self.fail("in exponent of numeric literal")
            while pos < len(text) and text[pos].isdigit():
                pos += 1
        self.pos = pos
        literal = text[start:pos]
        return _Number(literal) if is_float else int(literal)


def _overlay(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    merged = dict(old)
    for key, value in new.items():
        if isinstance(merged.get(key), dict) and isinstance(value, dict):
            value = _overlay(merged[key], value)
        merged[key] = value
    return merged


class _Number(float):
    """A float that remembers its literal, so type errors can quote it as Go does."""

    literal: str

    def __new__(cls, literal: str) -> _Number:
        obj = super().__new__(cls, literal)
        obj.literal = literal
        return obj


def parse(text: str) -> tuple[Any, Positions]:
    """Parse ``text`` into Python values plus the position of every node."""
    parser = _Parser(text)
    value = parser.parse_document()
    return value, parser.positions


def number_literal(value: Any) -> str:
    """The JSON spelling of a parsed number."""
    return getattr(value, "literal", repr(value))
