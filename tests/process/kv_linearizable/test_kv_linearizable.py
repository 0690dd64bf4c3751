"""Concurrent clients against a three-member kvd cluster under faults: every history is
linearizable and no acknowledged write is lost.

Five clients read (linearizable by default), write and compare-and-swap a few shared
keys on random members for a bounded time while a nemesis kills, freezes or cuts off one
member at a time. The recorded history, closed by reads from every member once the
faults are over, goes to the Wing-Gong-Lowe checker. A last run reads with
``quorum=false`` from a cut-off member to show the same test flags stale reads.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conditions import wait_until
from tests.lincheck import GET, Recorder, check_history
from tests.process.kv_cluster.harness import Cluster, Member

from .clients import LOG_DIR, Workload, final_reads, log_keys_on
from .nemesis import Killer, Nemesis, Partitioner, Pauser, iptables_rules

FAULT_SECONDS = 15.0
CHECK_STEP_BUDGET = 20_000_000


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path, "--snapshot-count", "200")
    try:
        c.start()
        yield c
    finally:
        c.stop()
        print(c.logs())  # captured; pytest shows it only when the test failed


def run_under(cluster: Cluster, nemesis: Nemesis, seed: int) -> tuple[Recorder, Workload]:
    """Clients work for :data:`FAULT_SECONDS` under ``nemesis``; the history is closed
    with final reads once everything is healed."""
    recorder = Recorder(clock=time.monotonic)
    with Workload(recorder, cluster.members, seed=seed) as workload:
        wait_until(lambda: workload.known_writes() >= 10, 20.0, "writes before the faults")
        with nemesis:
            nemesis.stop.wait(FAULT_SECONDS)
        healed_at = time.monotonic()
        # Otherwise an idle cluster after the faults would be blamed on kvd.
        assert workload.working() == workload.clients, "a client stopped during the faults"
        before = workload.known_writes()
        wait_until(lambda: workload.known_writes() >= before + 10, 30.0,
                   "writes after the faults are healed")
    assert nemesis.events, "the nemesis did nothing"
    cluster.leader(timeout=20.0)
    final_reads(recorder, cluster.members)
    history = recorder.history()
    during = [op for op in history if op.known and op.ret is not None
              and op.call > healed_at - FAULT_SECONDS and op.ret < healed_at]
    print(f"faults: {', '.join(nemesis.events)}; {len(during)} operations completed "
          "during them")
    assert len(during) >= 20, f"only {len(during)} operations completed during the faults"
    return recorder, workload


def assert_linearizable_and_durable(cluster: Cluster, recorder: Recorder,
                                    workload: Workload) -> None:
    history = recorder.history()
    started = time.monotonic()
    verdict = check_history(history, max_steps=CHECK_STEP_BUDGET)
    unknown = sum(1 for op in history if not op.known)
    print(f"{verdict.explain()}; {unknown} unknown outcomes; "
          f"checked in {time.monotonic() - started:.2f}s")
    assert verdict.linearizable is True, verdict.explain()
    acked = set(workload.acked_log_keys)
    assert len(acked) >= 20
    listed: dict[str, set[str] | None] = {}

    def answered(member: Member) -> bool:
        listed[member.name] = log_keys_on(member)
        return listed[member.name] is not None

    for member in cluster.members:
        wait_until(lambda m=member: answered(m), 30.0, f"{member.name} to list {LOG_DIR}")
        lost = acked - (listed[member.name] or set())
        assert not lost, f"{member.name} lost acknowledged writes {sorted(lost)[:10]}"


def assert_rules_restored(before: list[str]) -> None:
    after = iptables_rules()
    assert after == before, f"iptables -S changed: before {before}, after {after}"


@pytest.mark.timeout(75)
def test_history_is_linearizable_while_members_are_killed_and_restarted(
        cluster: Cluster) -> None:
    nemesis = Killer(cluster, seed=1)
    recorder, workload = run_under(cluster, nemesis, seed=1)
    assert sum(e.startswith("kill") for e in nemesis.events) >= 2, nemesis.events
    assert_linearizable_and_durable(cluster, recorder, workload)


@pytest.mark.timeout(75)
def test_history_is_linearizable_while_the_network_is_cut(cluster: Cluster) -> None:
    rules_before = iptables_rules()
    nemesis = Partitioner(cluster, seed=2)
    try:
        recorder, workload = run_under(cluster, nemesis, seed=2)
    finally:
        assert_rules_restored(rules_before)
    assert sum(e.startswith("isolate") for e in nemesis.events) >= 2, nemesis.events
    assert_linearizable_and_durable(cluster, recorder, workload)


@pytest.mark.timeout(75)
def test_history_is_linearizable_while_the_leader_is_frozen(cluster: Cluster) -> None:
    nemesis = Pauser(cluster, seed=3)
    recorder, workload = run_under(cluster, nemesis, seed=3)
    assert sum(e.startswith("pause") for e in nemesis.events) >= 2, nemesis.events
    assert_linearizable_and_durable(cluster, recorder, workload)


@pytest.mark.timeout(75)
def test_local_reads_from_a_cut_off_member_are_flagged(cluster: Cluster) -> None:
    """The broken configuration: ``quorum=false`` reads served by a member that cannot
    hear the leader. The checker must reject the history, proving the tests above can
    fail."""
    follower = cluster.followers()[0]
    majority = [m for m in cluster.members if m is not follower]
    recorder = Recorder(clock=time.monotonic)
    partition = Partitioner(cluster)
    rules_before = iptables_rules()
    partition.install()
    try:
        partition.isolate(follower)
        with Workload(recorder, cluster.members, seed=4, read_from=[follower],
                      write_to=majority, read_query={"quorum": "false"}) as workload:
            wait_until(lambda: workload.known_writes() >= 60, 30.0,
                       "writes on the majority side")
            stale_reads = wait_until(
                lambda: sum(1 for op in recorder.history() if op.kind == GET) >= 60,
                30.0, "local reads from the cut-off member")
            assert stale_reads
    finally:
        partition.remove()
        assert_rules_restored(rules_before)
    verdict = check_history(recorder.history(), max_steps=CHECK_STEP_BUDGET)
    print(verdict.explain())
    assert verdict.linearizable is False, verdict.explain()
    assert any(op.kind == GET for op in verdict.witness)
    assert any(op.kind != GET for op in verdict.witness)
