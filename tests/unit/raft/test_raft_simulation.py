"""Thousands of seeded schedules over 3- and 5-node clusters (and some 1-node ones).

``RAFT_SIM_SEEDS`` sets how many schedules run (default 5000, half 3-node, half 5-node);
``RAFT_SIM_SEED=<n>`` replays exactly one schedule in this process, with a full
traceback. Seeds are spread over worker processes, one per CPU.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest
from flotilla.daemons.raft import core
from flotilla.daemons.raft.messages import HardState

from .simnet import ONE_NODE_SEED_BASE, Sim, SimFailure, run_seed

DEFAULT_SEEDS = 5000
ONE_NODE_SEEDS = 200
REPO = Path(__file__).resolve().parents[3]


def _run_chunk(seeds: list[int]) -> tuple[list[tuple[int, str]], list[str]]:
    hashes: list[tuple[int, str]] = []
    failures: list[str] = []
    for seed in seeds:
        try:
            hashes.append((seed, run_seed(seed)))
        except SimFailure as exc:
            failures.append(str(exc))
        except Exception as exc:  # a crash inside the core is a failure of that seed too
            failures.append(
                f"seed {seed}: {type(exc).__name__}: {exc}; replay with RAFT_SIM_SEED={seed}"
            )
    return hashes, failures


def _run_many(seeds: list[int]) -> tuple[list[tuple[int, str]], list[str]]:
    workers = max(1, min(os.cpu_count() or 1, 8))
    chunks = [seeds[k::workers] for k in range(workers)]
    hashes: list[tuple[int, str]] = []
    failures: list[str] = []
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for h, f in pool.map(_run_chunk, chunks):
            hashes.extend(h)
            failures.extend(f)
    return hashes, failures


@pytest.mark.timeout(240)
def test_seeded_schedules_keep_raft_safe_and_live() -> None:
    replay = os.environ.get("RAFT_SIM_SEED")
    if replay is not None:
        run_seed(int(replay))  # raises with the failing property and the replay hint
        return
    count = int(os.environ.get("RAFT_SIM_SEEDS", DEFAULT_SEEDS))
    seeds = list(range(count))
    started = time.monotonic()
    hashes, failures = _run_many(seeds)
    elapsed = time.monotonic() - started
    print(f"\n{count} schedules in {elapsed:.1f}s ({count / elapsed:.0f}/s)")
    assert not failures, "\n".join(failures[:20])
    assert len(hashes) == count
    sizes = {3: 0, 5: 0}
    for seed, _ in hashes:
        sizes[Sim(seed).sc.nodes] += 1
    assert sizes[3] + sizes[5] == count
    assert min(sizes.values()) >= count // 2 - 1


@pytest.mark.timeout(120)
def test_single_node_schedules() -> None:
    seeds = [ONE_NODE_SEED_BASE + k for k in range(ONE_NODE_SEEDS)]
    hashes, failures = _run_chunk(seeds)
    assert not failures, "\n".join(failures[:20])
    assert all(Sim(s).sc.nodes == 1 for s in seeds[:5])
    assert len(hashes) == ONE_NODE_SEEDS


def test_same_seed_gives_identical_trace() -> None:
    for seed in (3, 4, 77, ONE_NODE_SEED_BASE + 1):
        assert run_seed(seed) == run_seed(seed)
    assert run_seed(3) != run_seed(5)


def test_replay_in_another_process_is_byte_identical() -> None:
    seeds = (11, 12)
    local = [run_seed(s) for s in seeds]
    code = (
        "from tests.unit.raft.simnet import run_seed\n"
        f"print(' '.join(run_seed(s) for s in {seeds!r}))\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == local


# -- the checks themselves must be able to fail ----------------------------------------


def _first_failure(seeds: range) -> str | None:
    for seed in seeds:
        try:
            run_seed(seed)
        except SimFailure as exc:
            return str(exc)
    return None


def test_simulator_catches_double_voting(monkeypatch: pytest.MonkeyPatch) -> None:
    original = core.RaftNode._handle_vote_request

    def forgetful(self: core.RaftNode, m: object) -> None:
        self.vote = 0
        self.lead = 0
        original(self, m)  # type: ignore[arg-type]

    monkeypatch.setattr(core.RaftNode, "_handle_vote_request", forgetful)
    failure = _first_failure(range(300))
    assert failure is not None
    assert "replay with RAFT_SIM_SEED=" in failure


def test_simulator_catches_missing_election_restriction(monkeypatch: pytest.MonkeyPatch) -> None:
    from flotilla.daemons.raft import log

    monkeypatch.setattr(log.RaftLog, "is_up_to_date", lambda self, i, t: True)
    failure = _first_failure(range(300))
    assert failure is not None


def test_simulator_catches_reads_without_quorum(monkeypatch: pytest.MonkeyPatch) -> None:
    def eager(self: core.RaftNode, ctx: bytes, requester: int) -> None:
        self._deliver_read(self.log.committed, ctx, requester)

    monkeypatch.setattr(core.RaftNode, "_leader_read", eager)
    failure = _first_failure(range(400))
    assert failure is not None and "read index" in failure


def test_simulator_catches_small_quorum(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(core.RaftNode, "_quorum", lambda self: max(1, len(self.voters) // 2))
    failure = _first_failure(range(100))
    assert failure is not None


def test_simulator_catches_lost_term_on_restart(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        core.RaftNode, "_hard_state", lambda self: HardState(0, 0, self.log.committed)
    )
    failure = _first_failure(range(300))
    assert failure is not None


def test_raft_sim_seed_env_replays_one_schedule(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    original = run_seed

    def recording(seed: int) -> str:
        calls.append(seed)
        return original(seed)

    monkeypatch.setenv("RAFT_SIM_SEED", "42")
    monkeypatch.setattr(sys.modules[__name__], "run_seed", recording)
    test_seeded_schedules_keep_raft_safe_and_live()
    assert calls == [42]


# -- a leader's appends leave while its own write is in flight --------------------------


def test_leaders_send_appends_before_their_write_is_durable() -> None:
    sims = [Sim(seed) for seed in range(20)]
    for sim in sims:
        sim.run()
    assert sum(sim.early_sent for sim in sims) > 0


def test_simulator_catches_acknowledgements_before_persisting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Sending every message early (votes, follower acks) must break safety visibly."""
    from . import simnet

    monkeypatch.setattr(simnet, "early_messages", lambda rd, leader, durable: rd.messages)
    failure = _first_failure(range(400))
    assert failure is not None
