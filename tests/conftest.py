"""Test tiers: every test is marked by the folder it lives in.

``tests/unit`` holds pure-logic tests, ``tests/process`` real daemons on loopback, and
``tests/system`` booted test machines. Marking by folder means a tier can be run alone
(``-m unit``) and no test can forget its marker.

Property tests (hypothesis) are derandomized: the examples are the same on every run, so a
test that passed proves the same thing in CI and a test that counts the branches it took
cannot pass on one run and fail on the next. Set ``HYPOTHESIS_PROFILE=explore`` to search
fresh examples locally.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings

settings.register_profile("ci", derandomize=True, print_blob=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

TIERS = ("unit", "process", "system")
TESTS_ROOT = Path(__file__).parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        relative = Path(str(item.path)).relative_to(TESTS_ROOT)
        tier = relative.parts[0] if relative.parts else ""
        if tier in TIERS:
            item.add_marker(getattr(pytest.mark, tier))
