"""Every #cloud-config example from the original's documentation: our validator prints
exactly what the original's printed, every example decodes, and the planner plans it."""

from __future__ import annotations

from pathlib import Path

import pytest
from flotilla.cloudinit import plan
from flotilla.cloudinit.config import from_tree
from flotilla.cloudinit.rawyaml import load
from flotilla.cloudinit.validate import validate_text

# The 39 examples, one file each, as the original's Documentation/*.md shows them.
EXAMPLES = Path(__file__).parent / "doc_examples"

_ETCD = 'line 4: warning: deprecated key "etcd" (etcd is no longer shipped in Container Linux)'
_ETCD2 = ('line 4: warning: deprecated key "etcd2" (etcd2 is no longer shipped in '
          'Container Linux)')
_FLEET = ('line 4: warning: deprecated key "fleet" (fleet is no longer shipped in '
          'Container Linux)')
_REMOTE = "(trying to fetch from a remote endpoint introduces too many intermittent errors)"

# What the original validator reported for each example; anything not listed was clean.
EXPECTED: dict[str, list[str]] = {
    "cloud-config-26.yml": [_ETCD],
    "cloud-config-27.yml": [_ETCD2],
    "cloud-config-28.yml": [_FLEET],
    "cloud-config-deprecated-01.yml": [
        f'line 5: warning: deprecated key "coreos_ssh_import_github" {_REMOTE}'],
    "cloud-config-deprecated-02.yml": [
        f'line 5: warning: deprecated key "coreos_ssh_import_url" {_REMOTE}'],
    "cloud-config-deprecated-03.yml": [
        f'line 5: warning: deprecated key "coreos_ssh_import_url" {_REMOTE}'],
}
ALL = sorted(p.name for p in EXAMPLES.glob("*.yml"))


def test_all_39_examples_are_present() -> None:
    assert len(ALL) == 39


@pytest.mark.parametrize("name", ALL)
def test_validator_output_equals_the_originals(name: str) -> None:
    entries = [str(e) for e in validate_text((EXAMPLES / name).read_text())]
    assert entries == EXPECTED.get(name, [])


@pytest.mark.parametrize("name", ALL)
def test_example_decodes_and_plans(name: str) -> None:
    cfg = from_tree(load((EXAMPLES / name).read_text()))
    actions = plan.desired_actions(cfg, {})
    assert all(a.describe() for a in actions)


def test_doc_example_38_write_files_decode_to_the_same_text() -> None:
    cfg = from_tree(load((EXAMPLES / "cloud-config-38.yml").read_text()))
    by_path = {f.path: f for f in cfg.write_files}
    assert by_path["/tmp/like_this"].content == by_path["/tmp/or_like_this"].content
    assert by_path["/tmp/like_this"].content.startswith(b"Pack my box")
    assert by_path["/tmp/todolist"].content == b"Pack my box with five dozen liquor jugs"
    assert by_path["/etc/resolv.conf"].permissions == "0644"


def test_doc_example_13_masks_and_enables() -> None:
    cfg = from_tree(load((EXAMPLES / "cloud-config-examples-13.yml").read_text()))
    lines = [a.describe() for a in plan.desired_actions(cfg, {})]
    assert lines == [
        "mask systemd-timesyncd.service (/etc/systemd/system/systemd-timesyncd.service -> "
        "/dev/null)",
        "enable ntpd.service",
        "daemon-reload",
        "stop systemd-timesyncd.service",
        "start ntpd.service",
    ]
