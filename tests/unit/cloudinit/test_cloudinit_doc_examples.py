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

_REMOTE = "(trying to fetch from a remote endpoint introduces too many intermittent errors)"

# What the original validator reported for each example; anything not listed was clean.
# One difference on purpose: the original warned that the etcd, etcd2 and fleet sections of
# examples 26-28 are deprecated ("no longer shipped in Container Linux"); here they configure
# kvd and fleetd, so those examples are clean.
EXPECTED: dict[str, list[str]] = {
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


def _machine_for(actions: list[plan.Action]) -> plan.Observed:
    """A fresh CoreOS host: it has every unit the example names and the ``core`` user,
    and none of the users the example creates."""
    observed = plan.Observed(hostname="localhost")
    for name in plan.units_to_observe(actions):
        observed.units[name] = plan.UnitState("loaded", "inactive", "disabled")
    created = {a.user.name for a in actions if isinstance(a, plan.EnsureUser)}
    for name in set(plan.users_to_observe(actions)) - created:
        observed.users[name] = plan.UserState(name, 500, 500, f"/home/{name}", "")
    for owner in plan.owners_to_observe(actions):
        observed.owners[owner] = (1000, 1000)
    return observed


@pytest.mark.parametrize("name", ALL)
def test_example_plans_every_item_and_reconciles_on_a_fresh_machine(name: str) -> None:
    cfg = from_tree(load((EXAMPLES / name).read_text()))
    actions = plan.desired_actions(cfg, {"public_ipv4": "192.0.2.1"})
    steps = plan.reconcile(actions, _machine_for(actions))
    assert [s.action for s in steps] == actions
    by_kind: dict[type, list[plan.Action]] = {}
    for action in actions:
        by_kind.setdefault(type(action), []).append(action)
    written = {a.path for a in by_kind.get(plan.WriteFile, [])}
    assert {f.path for f in cfg.write_files} <= written
    unit_files = {a.path for a in by_kind.get(plan.WriteUnitFile, [])}
    for unit in cfg.coreos.units:
        directory = plan.unit_dir(unit.name, unit.runtime)
        if unit.content:
            assert f"{directory}/{unit.name}" in unit_files
        for drop in unit.drop_ins:
            assert f"{directory}/{unit.name}.d/{drop.name}" in unit_files
        if unit.command and not unit.name.endswith(plan.NETWORK_SUFFIXES):
            assert plan.UnitCommand(unit.name, unit.command) in actions
    users = {a.user.name for a in by_kind.get(plan.EnsureUser, [])}
    assert users == {u.name for u in cfg.users if u.name}
    if cfg.hostname:
        assert plan.SetHostname(cfg.hostname) in actions
    # On a machine that has none of it yet, every file and user step is a change.
    for step in steps:
        if isinstance(step.action, plan.WriteFile | plan.WriteUnitFile | plan.EnsureUser):
            assert step.change, step.describe()
        assert step.describe().startswith(("[change] ", "[ok] ", "[info] "))


def test_examples_cover_every_section_the_planner_knows() -> None:
    """The examples as a whole exercise users, files, units, drop-ins and every coreos
    section, so the parametrized test above is not vacuous."""
    kinds: set[str] = set()
    for name in ALL:
        cfg = from_tree(load((EXAMPLES / name).read_text()))
        for action in plan.desired_actions(cfg, {}):
            kinds.add(type(action).__name__)
            if isinstance(action, plan.WriteUnitFile) and action.path.endswith(
                    "/20-cloudinit.conf"):
                kinds.add("section-drop-in " + action.unit)
    assert {"SetHostname", "EnsureUser", "InstallKeys", "WriteFile", "WriteUnitFile",
            "MaskUnit", "EnableUnit", "DaemonReload", "UnitCommand", "MergeEnvFile",
            "section-drop-in etcd2.service", "section-drop-in fleet.service",
            "section-drop-in locksmithd.service"} <= kinds
