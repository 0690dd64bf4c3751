"""Fixtures for tests on booted test machines.

A failed test gets the journal of every machine it used attached to its report, because
the reason a cluster test fails is almost always in a machine's log, not in the assertion.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator

import pytest

from tests.machines import Cluster, Machine, ensure_rootfs


def _requirements_missing() -> str | None:
    for tool in ("systemd-nspawn", "debootstrap", "nsenter", "ip"):
        if shutil.which(tool) is None:
            return tool
    return None


@pytest.fixture(scope="session")
def rootfs_template():
    missing = _requirements_missing()
    if missing:
        pytest.fail(f"system tests need {missing}; run the README's test command to install it")
    return ensure_rootfs()


@pytest.fixture(scope="module")
def cluster_factory(rootfs_template) -> Iterator[Callable[[int], Cluster]]:
    """Makes booted clusters for this module; all are destroyed when the module ends."""
    made: list[Cluster] = []

    def make(count: int) -> Cluster:
        cluster = Cluster(count)
        made.append(cluster)
        cluster.boot()
        return cluster

    yield make
    for cluster in made:
        cluster.destroy()


@pytest.fixture(scope="module")
def machine(cluster_factory) -> Machine:
    """One booted machine shared by the tests of a module."""
    return cluster_factory(1)[0]


def _machines_in(item: pytest.Item) -> list[Machine]:
    found: list[Machine] = []
    for value in getattr(item, "funcargs", {}).values():
        if isinstance(value, Machine):
            found.append(value)
        elif isinstance(value, Cluster):
            found.extend(value.machines)
    return found


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or not report.failed:
        return
    for machine in _machines_in(item):
        try:
            text = machine.journal(lines=200)
        except Exception as exc:  # the report must not fail because a machine is gone
            text = f"(journal unavailable: {exc})"
        report.sections.append((f"journal of {machine.name}", text))
