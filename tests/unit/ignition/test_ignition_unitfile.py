"""Unit contents are read as go-systemd's lexer reads them (Ignition 2.14's validator).

The expected results were checked against ``ignition-validate`` 2.14; the word-for-word
validator output for the same kinds of input is in validate_expected.json.
"""

from __future__ import annotations

import pytest
from flotilla.ignition.unitfile import Option, UnitSyntaxError, go_quote, parse, sections


def _error(text: str) -> str:
    with pytest.raises(UnitSyntaxError) as info:
        parse(text)
    return str(info.value)


def test_options_with_sections_comments_and_continuations() -> None:
    text = ("# head\n[Unit]\nDescription = app  \n; note \\\n  still a note\n\n"
            "[Service]\nExecStart=/bin/a \\\n  --flag\nEnvironment=A=1\n")
    assert parse(text) == [
        Option("Unit", "Description", "app"),
        Option("Service", "ExecStart", "/bin/a \\\n  --flag"),
        Option("Service", "Environment", "A=1"),
    ]


def test_line_without_equals_inside_a_section_is_refused() -> None:
    message = "unexpected newline encountered while parsing option name"
    assert _error("[Unit]\nDescription=x\nnot an assignment\n") == message
    assert _error("[Unit]\r\nbroken\r\n") == message


def test_text_ending_inside_an_option_name_is_go_eof() -> None:
    assert _error("[Service]\nUser") == "EOF"


def test_text_before_the_first_section_is_skipped() -> None:
    assert parse("stray words\n[Unit]\nA=b\n") == [Option("Unit", "A", "b")]
    # ... one character at a time, so a bracket in it opens a section.
    assert parse("x[Unit]\nA=b\n") == [Option("Unit", "A", "b")]


def test_section_headers() -> None:
    assert _error("[Unit\nA=b\n") == "unable to find end of section"
    assert parse("[Un\nit]\nA=b\n") == [Option("Un\nit", "A", "b")]
    assert _error("[Unit] x\u00a0\x01y\n") == (
        'found garbage after section name : "x\\u00a0\\x01y"')


def test_install_counts_only_with_an_option_in_it() -> None:
    assert sections("[Unit]\nA=b\n[Install]\n") == ["Unit"]
    assert sections("[Install]\nWantedBy=multi-user.target\n") == ["Install"]


def test_long_lines_caught_as_go_systemd_catches_them() -> None:
    too_long = "line too long (max 2048 bytes)"
    assert parse("[Unit]\nDescription=" + "d" * 2035 + "\n")  # 2047 bytes: fine
    assert _error("[Unit]\nDescription=" + "d" * 2036 + "\n") == too_long
    assert _error("[Unit]\n#" + "c" * 2047) == too_long
    # Only checked with 2048 bytes in the 4096-byte read buffer: a long line that starts
    # near the end of the first buffer-full slips through, exactly as in Ignition.
    slipped = "[Unit]\n" + ("#" + "c" * 98 + "\n") * 30 + "A=" + "v" * 2100 + "\n"
    assert parse(slipped) == [Option("Unit", "A", "v" * 2100)]


def test_go_quote_matches_strconv() -> None:
    quoted = go_quote('a"\\\t\x7f\u00a0\U0001f600\u200b')
    assert quoted == '"a\\"\\\\\\t\\x7f\\u00a0\U0001f600\\u200b"'
