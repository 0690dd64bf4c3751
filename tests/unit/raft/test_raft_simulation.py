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
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest
from flotilla.daemons.raft import core
from flotilla.daemons.raft.messages import HardState

from .simnet import (
    ELECTION_SAFETY,
    LEADER_COMPLETENESS,
    LIVENESS,
    LOG_MATCHING,
    ONE_NODE_SEED_BASE,
    READ_FRESHNESS,
    STATE_MACHINE_SAFETY,
    Sim,
    SimFailure,
    run_seed,
    run_seed_exercised,
)

DEFAULT_SEEDS = 5000
ONE_NODE_SEEDS = 200
REPO = Path(__file__).resolve().parents[3]

#: The share of schedules that must exercise each check (compare something) or fault.
#: A pass proves a property only where it was checked: a change that quietly stops the
#: comparisons, the faults or the heal phase would otherwise still pass. Every schedule
#: elects, replicates, applies and heals; the fault mixes are drawn per seed, so for the
#: rest the floor is about half of the share 5,000 seeds give (in brackets).
MUST_EXERCISE = {
    ELECTION_SAFETY: 1.0,
    LOG_MATCHING: 1.0,
    STATE_MACHINE_SAFETY: 1.0,
    LIVENESS: 1.0,
    "leader change": 0.4,  # (0.77) a later term elected a leader
    LEADER_COMPLETENESS: 0.35,  # (0.74) a new leader was checked against committed entries
    READ_FRESHNESS: 0.23,  # (0.47) a ReadIndex came back and was compared
    "crash": 0.35,  # (0.70)
    "partition": 0.33,  # (0.67)
    "membership change": 0.12,  # (0.24) applied
    "snapshot installed": 0.08,  # (0.17) from a leader, past the bootstrap snapshot
}
#: Below this many schedules only the every-schedule floors are checked (small samples
#: of the fault mixes vary too much).
SHARES_FROM = 1000


def _run_chunk(seeds: list[int]) -> tuple[list[tuple[int, str]], list[str], Counter[str]]:
    hashes: list[tuple[int, str]] = []
    failures: list[str] = []
    exercised_by: Counter[str] = Counter()  # check or fault -> schedules exercising it
    for seed in seeds:
        try:
            trace, exercised = run_seed_exercised(seed)
        except SimFailure as exc:
            failures.append(str(exc))
            continue
        except Exception as exc:  # a crash inside the core is a failure of that seed too
            failures.append(
                f"seed {seed}: {type(exc).__name__}: {exc}; replay with RAFT_SIM_SEED={seed}"
            )
            continue
        hashes.append((seed, trace))
        exercised_by.update(name for name, times in exercised.items() if times)
    return hashes, failures, exercised_by


def _run_many(seeds: list[int]) -> tuple[list[tuple[int, str]], list[str], Counter[str]]:
    workers = max(1, min(os.cpu_count() or 1, 8))
    chunks = [seeds[k::workers] for k in range(workers)]
    hashes: list[tuple[int, str]] = []
    failures: list[str] = []
    exercised_by: Counter[str] = Counter()
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for h, f, e in pool.map(_run_chunk, chunks):
            hashes.extend(h)
            failures.extend(f)
            exercised_by.update(e)
    return hashes, failures, exercised_by


def _assert_exercised(exercised_by: Counter[str], count: int) -> None:
    short = []
    for name, share in MUST_EXERCISE.items():
        if share < 1.0 and count < SHARES_FROM:
            continue
        if exercised_by[name] < share * count:
            short.append(f"{name}: {exercised_by[name]} of {count} (need {share:.0%})")
    assert not short, "schedules that exercised too little: " + "; ".join(short)


@pytest.mark.timeout(240)
def test_seeded_schedules_keep_raft_safe_and_live() -> None:
    replay = os.environ.get("RAFT_SIM_SEED")
    if replay is not None:
        run_seed(int(replay))  # raises with the failing property and the replay hint
        return
    count = int(os.environ.get("RAFT_SIM_SEEDS", DEFAULT_SEEDS))
    seeds = list(range(count))
    started = time.monotonic()
    hashes, failures, exercised_by = _run_many(seeds)
    elapsed = time.monotonic() - started
    print(f"\n{count} schedules in {elapsed:.1f}s ({count / elapsed:.0f}/s); exercised: "
          + ", ".join(f"{k} {v}" for k, v in sorted(exercised_by.items())))
    assert not failures, "\n".join(failures[:20])
    assert len(hashes) == count
    _assert_exercised(exercised_by, count)
    sizes = {3: 0, 5: 0}
    for seed, _ in hashes:
        sizes[Sim(seed).sc.nodes] += 1
    assert sizes[3] + sizes[5] == count
    assert min(sizes.values()) >= count // 2 - 1


@pytest.mark.timeout(120)
def test_single_node_schedules() -> None:
    seeds = [ONE_NODE_SEED_BASE + k for k in range(ONE_NODE_SEEDS)]
    hashes, failures, exercised_by = _run_chunk(seeds)
    assert not failures, "\n".join(failures[:20])
    assert all(Sim(s).sc.nodes == 1 for s in seeds[:5])
    assert len(hashes) == ONE_NODE_SEEDS
    # A lone member elects itself, survives its crashes and is live after them; its
    # applied entries are compared again when it replays them after a crash.
    for name in (ELECTION_SAFETY, LIVENESS):
        assert exercised_by[name] == ONE_NODE_SEEDS, (name, exercised_by)
    assert exercised_by[STATE_MACHINE_SAFETY] >= ONE_NODE_SEEDS // 2, exercised_by
    assert exercised_by["crash"] >= ONE_NODE_SEEDS // 4, exercised_by


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


def _first_failure(seeds: range) -> SimFailure | None:
    """The first seed's failure; a core that crashes instead counts as no catch."""
    for seed in seeds:
        try:
            run_seed(seed)
        except SimFailure as exc:
            return exc
    return None


def _assert_caught(failure: SimFailure | None, *props: str) -> None:
    """The broken behaviour was caught as the property it breaks, not as any failure."""
    assert failure is not None, "no schedule noticed"
    assert failure.prop in props, f"caught as {failure.prop!r}, not {props}: {failure}"
    assert "replay with RAFT_SIM_SEED=" in str(failure)


def test_simulator_catches_double_voting(monkeypatch: pytest.MonkeyPatch) -> None:
    original = core.RaftNode._handle_vote_request

    def forgetful(self: core.RaftNode, m: object) -> None:
        self.vote = 0
        self.lead = 0
        original(self, m)  # type: ignore[arg-type]

    monkeypatch.setattr(core.RaftNode, "_handle_vote_request", forgetful)
    _assert_caught(_first_failure(range(300)), ELECTION_SAFETY)


def test_simulator_catches_missing_election_restriction(monkeypatch: pytest.MonkeyPatch) -> None:
    from flotilla.daemons.raft import log

    monkeypatch.setattr(log.RaftLog, "is_up_to_date", lambda self, i, t: True)
    # A voter elects a candidate that lacks entries it has: a leader without them.
    _assert_caught(_first_failure(range(300)), LEADER_COMPLETENESS)


def test_simulator_catches_reads_without_quorum(monkeypatch: pytest.MonkeyPatch) -> None:
    def eager(self: core.RaftNode, ctx: bytes, requester: int) -> None:
        self._deliver_read(self.log.committed, ctx, requester)

    monkeypatch.setattr(core.RaftNode, "_leader_read", eager)
    _assert_caught(_first_failure(range(400)), READ_FRESHNESS)


def test_simulator_catches_small_quorum(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(core.RaftNode, "_quorum", lambda self: max(1, len(self.voters) // 2))
    # A minority commits and a later leader never had the entry: it is lost, seen either
    # as a leader without it or as another entry applied at its index.
    _assert_caught(_first_failure(range(100)), STATE_MACHINE_SAFETY, LEADER_COMPLETENESS)


def test_simulator_catches_lost_term_on_restart(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        core.RaftNode, "_hard_state", lambda self: HardState(0, 0, self.log.committed)
    )
    # A restarted voter forgets its vote and grants a second one in the same term.
    _assert_caught(_first_failure(range(300)), ELECTION_SAFETY)


def test_simulator_catches_a_follower_never_repaired(monkeypatch: pytest.MonkeyPatch) -> None:
    """A leader that ignores rejected appends stays safe but never repairs a follower
    whose log diverged: only the liveness check after the heal can see that."""
    from flotilla.daemons.raft import progress

    monkeypatch.setattr(progress.Progress, "maybe_decr_to", lambda self, rejected, hint: False)
    _assert_caught(_first_failure(range(300)), LIVENESS)


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
