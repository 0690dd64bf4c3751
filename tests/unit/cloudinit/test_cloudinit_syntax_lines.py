"""A YAML syntax error is one entry at the exact line to fix, never the spurious line 0
the original added, whether reported by ``--validate`` or by a refused apply."""

from __future__ import annotations

import pytest
from flotilla.cloudinit.main import validate_command
from flotilla.cloudinit.validate import validate_text

H = "#cloud-config\n"

# (text, line to fix, words the message must contain)
CASES = [
    (H + "hostname: a\n\tfoo: b\n", 3, "tab"),
    (H + "users:\n  - name: a\n   bad: [\n", 4, "'-' indicator"),
    (H + "hostname: a\nfoo\nbar: b\n", 3, "expected ':'"),
    (H + "write_files:\n  - path: /a\n    content: |\n  bad\n", 5, "expected ':'"),
    (H + "hostname: *nope\n", 2, "undefined alias"),
    (H + "coreos:\n  units:\n    - name: a\n      content: a: b: c\n", 5,
     "mapping values are not allowed"),
    (H + "hostname: a\n- b\n", 3, "expected key"),
    (H + ":\n", 2, "expected key"),
    # Unclosed constructs are noticed where the text ends (past the last line for a
    # quote); the line to fix is where they start.
    (H + 'hostname: "abc\nusers: []\n', 2, "quoted scalar"),
    (H + "write_files:\n  - content: 'abc\n    path: /x\n", 3, "quoted scalar"),
    (H + "ssh_authorized_keys: [a, b\nhostname: x\n", 2, "flow sequence"),
    (H + "coreos: {update: {group: a}\n", 2, "flow mapping"),
    (H + "write_files:\n  - path: /a\n    content: !!binary |\n      !!!notbase64\n", 4,
     "invalid base64"),
]


@pytest.mark.parametrize(("text", "line", "words"), CASES)
def test_syntax_error_is_one_entry_at_the_exact_line(text: str, line: int, words: str) -> None:
    entries = validate_text(text)
    assert len(entries) == 1, entries
    entry = entries[0]
    assert (entry.line, entry.kind) == (line, "error"), entry
    assert words in entry.message
    assert 1 <= entry.line <= text.count("\n")


def test_validate_command_prints_the_line_and_exits_1(tmp_path, capsys) -> None:
    path = tmp_path / "user-data"
    path.write_text(CASES[-3][0])
    assert validate_command(str(path)) == 1
    out = capsys.readouterr().out.splitlines()
    assert out == ["line 2: error: did not find expected ',' or ']' while parsing a flow "
                   "sequence"]


def test_gzip_user_data_is_validated_after_unpacking(tmp_path, capsys) -> None:
    import gzip

    path = tmp_path / "user-data.gz"
    path.write_bytes(gzip.compress((H + "hostnme: a\n").encode()))
    assert validate_command(str(path)) == 1
    assert capsys.readouterr().out == 'line 2: warning: unrecognized key "hostnme"\n'
