"""Reading systemd unit contents the way Ignition's validator reads them.

Ignition 2.14 hands every unit and drop-in body to go-systemd's ``unit.Deserialize`` and
refuses the whole config when that fails; an enabled unit whose options name no
``[Install]`` section only gets a warning. To accept and refuse exactly the same texts,
with the same messages, this is a small state machine that follows that lexer's rules
rather than systemd's own (no library parses unit files with go-systemd's quirks):

* before the first section header anything that is not ``[`` or a comment is skipped, one
  character at a time, so stray text there is no error (and a ``[`` inside it opens a
  section);
* a section name runs to the next ``]``, across lines if need be ("unable to find end of
  section" when there is none); anything but white space after it on the line is
  "found garbage after section name";
* inside a section every line that is not blank, a comment or a header must hold an ``=``
  on the same line ("unexpected newline encountered while parsing option name"), and the
  text may not end in the middle of an option name (Go's bare "EOF");
* values and comments continue on the next line after a trailing backslash;
* a line of 2048 bytes or more is "line too long (max 2048 bytes)". go-systemd only looks
  when at least 2048 bytes sit in its 4096-byte read buffer, so the buffer is modelled too:
  that is what decides whether a long line far into a big unit is caught.
"""

from __future__ import annotations

from dataclasses import dataclass

LINE_MAX = 2048
_BUFFER = 4096  # bufio.NewReader's default size
_GO_SPACE = frozenset("\t\n\v\f\r \x85\xa0\u1680\u2028\u2029\u202f\u205f\u3000"
                      + "".join(chr(c) for c in range(0x2000, 0x200B)))


class UnitSyntaxError(ValueError):
    pass


@dataclass(frozen=True)
class Option:
    section: str
    name: str
    value: str


def _go_strip(text: str) -> str:
    """Go's strings.TrimSpace: Go's idea of white space, which is not Python's."""
    start, end = 0, len(text)
    while start < end and text[start] in _GO_SPACE:
        start += 1
    while end > start and text[end - 1] in _GO_SPACE:
        end -= 1
    return text[start:end]


def go_quote(text: str) -> str:
    """Go's strconv.Quote, which the garbage-after-section message uses."""
    named = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t",
             "\v": "\\v", '"': '\\"', "\\": "\\\\"}
    out = []
    for char in text:
        code = ord(char)
        if char in named:
            out.append(named[char])
        elif char.isprintable():  # Python's and Go's printable agree: no C*, Z* but " "
            out.append(char)
        elif code < 0x80:
            out.append(f"\\x{code:02x}")
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    return '"' + "".join(out) + '"'


class _Reader:
    """The parts of Go's bufio.Reader over a strings.Reader that the lexer depends on.

    ``pos`` is what has been consumed and ``filled`` how far the buffer has read; only the
    difference (``buffered``) matters to the long-line check.
    """

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0
        self.filled = 0
        self.eof = False
        self.last_rune = 0

    def buffered(self) -> int:
        return self.filled - self.pos

    def _fill(self) -> None:
        remaining = len(self.data) - self.filled
        if remaining == 0:
            self.eof = True
        self.filled += min(_BUFFER - self.buffered(), remaining)

    def read_rune(self) -> str | None:
        """The next character, or None at the end (invalid UTF-8 cannot come from JSON)."""
        while (self.buffered() < 4 and not self.eof
               and self.buffered() < _rune_len(self.data, self.pos)):
            self._fill()
        if self.pos >= len(self.data):
            return None
        size = _rune_len(self.data, self.pos)
        char = self.data[self.pos:self.pos + size].decode("utf-8", errors="replace")
        self.pos += size
        self.last_rune = size
        return char

    def unread_rune(self) -> None:
        self.pos -= self.last_rune

    def read_until(self, delim: int) -> tuple[bytes, bool]:
        """Bytes up to and including ``delim``, and whether the end came first."""
        start = self.pos
        while True:
            found = self.data.find(delim, self.pos, self.filled)
            if found >= 0:
                self.pos = found + 1
                return self.data[start:self.pos], False
            if self.eof:
                self.pos = self.filled
                return self.data[start:self.pos], True
            if self.buffered() >= _BUFFER:  # a full buffer is handed over and reading goes on
                self.pos = self.filled
            self._fill()

    def to_eol(self) -> tuple[str, bool]:
        """One line without its newline (a CR before the LF stays), and whether at the end."""
        raw, at_end = self.read_until(0x0A)
        if raw.endswith((b"\n", b"\r")):  # only one of them: CR LF keeps its CR
            raw = raw[:-1]
        return raw.decode("utf-8", errors="replace"), at_end

    def line_too_long(self) -> bool:
        if self.buffered() < LINE_MAX:
            return False
        window = self.data[self.pos:self.pos + LINE_MAX]
        return b"\n" not in window and b"\r" not in window


def _rune_len(data: bytes, pos: int) -> int:
    if pos >= len(data):
        return 1
    lead = data[pos]
    return 1 if lead < 0xC0 else 2 if lead < 0xE0 else 3 if lead < 0xF0 else 4


def _plain(text: str) -> str:
    """Lone surrogates (possible in JSON) become U+FFFD, as Go's decoder makes them."""
    if all(not 0xD800 <= ord(char) <= 0xDFFF for char in text):
        return text
    return "".join("\ufffd" if 0xD800 <= ord(char) <= 0xDFFF else char for char in text)


def parse(contents: str) -> list[Option]:
    """The options in ``contents``, in order; raise UnitSyntaxError as go-systemd would."""
    reader = _Reader(_plain(contents).encode("utf-8"))
    options: list[Option] = []
    state, section, name, partial = "before", "", "", ""
    resume = "before"
    while state != "done":
        if reader.line_too_long():
            raise UnitSyntaxError(f"line too long (max {LINE_MAX} bytes)")
        if state in ("before", "body"):
            char = reader.read_rune()
            if char is None:
                state = "done"
            elif char == "[":
                state = "header"
            elif char in "#;":
                state, resume = "comment", state
            elif state == "body" and char not in _GO_SPACE:
                reader.unread_rune()
                state = "name"
        elif state == "comment":
            while True:
                line, _ = reader.to_eol()
                if not line.removesuffix(" ").endswith("\\"):
                    break
            state = resume
        elif state == "header":
            raw, at_end = reader.read_until(0x5D)
            if at_end:
                raise UnitSyntaxError("unable to find end of section")
            section = raw[:-1].decode("utf-8", errors="replace")
            state = "suffix"
        elif state == "suffix":
            garbage = _go_strip(reader.to_eol()[0])
            if garbage:
                # go-systemd names the section from a field it never sets.
                raise UnitSyntaxError(f"found garbage after section name : {go_quote(garbage)}")
            state = "body"
        elif state == "name":
            chars = []
            while True:
                char = reader.read_rune()
                if char is None:
                    raise UnitSyntaxError("EOF")
                if char in "\r\n":
                    raise UnitSyntaxError(
                        "unexpected newline encountered while parsing option name")
                if char == "=":
                    break
                chars.append(char)
            name, partial, state = _go_strip("".join(chars)), "", "value"
        else:  # value, possibly continued over several lines
            line, at_end = reader.to_eol()
            if _go_strip(line):
                partial += line
                if line.endswith("\\"):
                    partial += "" if at_end else "\n"
                    continue
            value = _go_strip(partial) + ("\n" if partial.endswith("\n") else "")
            options.append(Option(section, name, value))
            state = "body"
    return options


def sections(contents: str) -> list[str]:
    """Sections that hold at least one option, in order; raise like :func:`parse`.

    Ignition's [Install] check looks at the options, so an empty ``[Install]`` header
    does not count.
    """
    names: list[str] = []
    for option in parse(contents):
        if option.section not in names:
            names.append(option.section)
    return names
