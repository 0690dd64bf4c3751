"""Test tiers: every test is marked by the folder it lives in.

``tests/unit`` holds pure-logic tests, ``tests/process`` real daemons on loopback, and
``tests/system`` booted test machines. Marking by folder means a tier can be run alone
(``-m unit``) and no test can forget its marker.
"""

from __future__ import annotations

from pathlib import Path

import pytest

TIERS = ("unit", "process", "system")
TESTS_ROOT = Path(__file__).parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        relative = Path(str(item.path)).relative_to(TESTS_ROOT)
        tier = relative.parts[0] if relative.parts else ""
        if tier in TIERS:
            item.add_marker(getattr(pytest.mark, tier))
