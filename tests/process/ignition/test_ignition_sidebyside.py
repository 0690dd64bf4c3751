"""Side by side with Debian's ignition 2.14: the same config must give the same tree.

A case with ``fails`` is one Ignition refuses: both tools must fail, leave the seeded tree
exactly as it was, and our message must contain each of the ``fails`` strings (the JSON path
and the name of what is wrong), so a user can tell what to fix.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.process.ignition.sidebyside import apply_both, available

CASES = json.loads((Path(__file__).parent / "sidebyside_cases.json").read_text())

@pytest.fixture(autouse=True)
def _debian_ignition_installed() -> None:
    if not available():
        pytest.fail("Debian's ignition is not installed; tests/setup.sh installs it")


@pytest.fixture
def work() -> Iterator[Path]:
    """A world-traversable scratch dir: Ignition writes SSH keys as the target user."""
    path = Path(tempfile.mkdtemp(prefix="flotilla-ign-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", sorted(CASES))
def test_tree_matches_debian_ignition(name: str, work: Path) -> None:
    case = CASES[name]
    outcome = apply_both(work, case["config"], case["seed"], case.get("seed_attrs"))
    debian_run, ours_run = outcome.debian_run, outcome.ours_run
    if "fails" in case:
        assert debian_run.returncode != 0, "Debian's ignition accepted the config"
        assert ours_run.returncode != 0, "ours accepted a config Ignition refuses"
        for words in case["fails"]:
            assert words in ours_run.stderr, ours_run.stderr
        assert outcome.debian == outcome.seeded, "Debian's ignition changed the tree"
        changed = sorted(path for path in set(outcome.ours) | set(outcome.seeded)
                         if outcome.ours.get(path) != outcome.seeded.get(path))
        assert not changed, f"ours changed {changed} before failing"
        return
    assert debian_run.returncode == 0, debian_run.stdout[-3000:] + debian_run.stderr[-2000:]
    assert ours_run.returncode == 0, ours_run.stderr
    debian, ours = outcome.debian, outcome.ours
    missing = sorted(set(debian) - set(ours))
    extra = sorted(set(ours) - set(debian))
    assert not missing and not extra, f"only in debian: {missing}; only in ours: {extra}"
    differing = {path: (debian[path], ours[path]) for path in debian if debian[path] != ours[path]}
    assert not differing


def test_case_count_is_at_least_forty() -> None:
    assert len(CASES) >= 40
