"""Validation output, word for word as ignition-validate 2.14 printed it for each input."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from flotilla.ignition.config import ConfigError, parse
from flotilla.ignition.validate_cli import run_validate

EXPECTED = json.loads((Path(__file__).parent / "validate_expected.json").read_text())


@pytest.mark.parametrize("case", EXPECTED, ids=[str(i) for i in range(len(EXPECTED))])
def test_output_and_exit_code_match_ignition_validate(case: dict) -> None:
    out, err = io.StringIO(), io.StringIO()
    rc = run_validate(case["input"].encode(), out, err)
    assert (rc, out.getvalue(), err.getvalue()) == (case["rc"], case["stdout"], case["stderr"])


def _errors(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse(text)
    return str(info.value.report)


def test_relative_path_names_path_line_and_column() -> None:
    text = ('{"ignition": {"version": "3.3.0"},\n "storage": {"files": [\n'
            '  {"path": "etc/x"}]}}')
    assert _errors(text) == "error at $.storage.files.0.path, line 3 col 12: path not absolute\n"


def test_wrong_type_reports_go_style_message() -> None:
    text = ('{"ignition":{"version":"3.3.0"},"systemd":{"units":[{"name":"a.service",'
            '"mask":"yes"}]}}')
    assert _errors(text) == ("error at line 1 col 85: json: cannot unmarshal string into Go struct"
                             " field Unit.systemd.units.mask of type bool\n")


def test_missing_required_merge_source() -> None:
    text = '{"ignition":{"version":"3.1.0","config":{"merge":[{"verification":{}}]}}}'
    assert _errors(text) == ("error at $.ignition.config.merge.0, line 1 col 52: "
                             "source is required\n")


def test_replace_without_source_is_no_replace() -> None:
    assert not parse('{"ignition":{"version":"3.1.0","config":{"replace":{}}}}').report.fatal


def test_duplicate_across_files_and_links() -> None:
    text = ('{"ignition":{"version":"3.3.0"},"storage":{"files":[{"path":"/a"}],'
            '"links":[{"path":"/a","target":"/b"}]}}')
    assert _errors(text) == "error at $.storage.links.0, line 1 col 78: duplicate entry defined\n"


def test_bad_hash_and_bad_url() -> None:
    text = ('{"ignition":{"version":"3.3.0"},"storage":{"files":[{"path":"/a","contents":'
            '{"source":"ftp://x/y","verification":{"hash":"sha1-00"}}}]}}')
    assert _errors(text) == (
        "error at $.storage.files.0.contents.source, line 1 col 87: invalid url scheme\n"
        "error at $.storage.files.0.contents.verification.hash, line 1 col 122: "
        "unrecognized hash function\n")


def test_spec_3_4_rejects_file_over_unit_path() -> None:
    text = ('{"ignition":{"version":"3.4.0"},"storage":{"files":[{"path":'
            '"/etc/systemd/system/a.service"}]},"systemd":{"units":[{"name":"a.service",'
            '"contents":"[Unit]"}]}}')
    assert "path conflicts with systemd unit or dropin" in _errors(text)


def test_versions_3_0_to_3_6_accepted_and_translated_up() -> None:
    for minor in range(7):
        parsed = parse(f'{{"ignition":{{"version":"3.{minor}.0"}}}}')
        assert parsed.config["ignition"]["version"] == "3.6.0"


def test_special_mode_bits_kept_only_from_3_6() -> None:
    old = parse('{"ignition":{"version":"3.5.0"},"storage":{"files":[{"path":"/a","mode":2541}]}}')
    new = parse('{"ignition":{"version":"3.6.0"},"storage":{"files":[{"path":"/a","mode":2541}]}}')
    assert old.config["storage"]["files"][0]["mode"] == 0o755
    assert new.config["storage"]["files"][0]["mode"] == 0o4755
    assert "setuid/setgid/sticky" in str(old.report)


def test_spec_2x_is_rejected_with_ignitions_message() -> None:
    with pytest.raises(ConfigError) as info:
        parse('{"ignition":{"version":"2.2.0"}}')
    assert info.value.message == "unsupported config version"
