"""Side by side with Debian's ignition 2.14: the same config must give the same tree."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.process.ignition.sidebyside import available, compare

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
    debian, ours = compare(work, case["config"], case["seed"])
    missing = sorted(set(debian) - set(ours))
    extra = sorted(set(ours) - set(debian))
    assert not missing and not extra, f"only in debian: {missing}; only in ours: {extra}"
    differing = {path: (debian[path], ours[path]) for path in debian if debian[path] != ours[path]}
    assert not differing


def test_case_count_is_at_least_forty() -> None:
    assert len(CASES) >= 40
