"""The checker on generated histories: simulations must pass, their mutations must fail,
and on tiny histories its verdict must equal an exhaustive search."""

from __future__ import annotations

import random
import time
from collections import Counter

from hypothesis import example, given, settings
from hypothesis import strategies as st

from tests.lincheck import (
    ANY_VALUE,
    CAS,
    DELETE,
    GET,
    PUT,
    KvModel,
    Operation,
    check_history,
    search,
)

from .lincheck_sim import brute_force, future_read, phantom_read, simulate, stale_read

SEEDS = st.integers(min_value=0, max_value=2**32 - 1)


@settings(max_examples=60, deadline=None)
@given(seed=SEEDS, unknown=st.sampled_from([0.0, 0.1, 0.3]))
def test_simulated_histories_are_linearizable(seed: int, unknown: float) -> None:
    history = simulate(random.Random(seed), clients=5, ops=150, keys=3, unknown=unknown)
    # With a share of lost outcomes the history must hold some, or the pending-write
    # search this test is meant to cover never ran.
    assert (sum(not op.known for op in history) > 0) is (unknown > 0)
    verdict = check_history(history)
    assert verdict.linearizable is True, verdict.explain()


@settings(max_examples=40, deadline=None)
@given(seed=SEEDS, unknown=st.sampled_from([0.0, 0.2]))
def test_a_phantom_read_is_rejected(seed: int, unknown: float) -> None:
    rng = random.Random(seed)
    history = phantom_read(rng, simulate(rng, ops=120, unknown=unknown))
    verdict = check_history(history)
    assert verdict.linearizable is False
    assert any(op.kind == GET and op.output == "never-written" for op in verdict.witness)


@settings(max_examples=40, deadline=None)
@given(seed=SEEDS, unknown=st.sampled_from([0.0, 0.2]))
@example(seed=112976, unknown=0.2)  # pending writes kept this witness at 13 operations
def test_a_stale_read_is_rejected(seed: int, unknown: float) -> None:
    rng = random.Random(seed)
    original = simulate(rng, ops=120, keys=2, unknown=unknown)
    history = stale_read(rng, original)
    assert history is not None, "no write pair followed by a read to mutate"
    verdict = check_history(history)
    assert verdict.linearizable is False, "mutation accepted"
    (mutated,) = (new for old, new in zip(original, history, strict=True) if old != new)
    assert mutated in verdict.witness, verdict.explain()
    # The last shrinking step is a rule of thumb and writes of unknown outcome cannot be
    # dropped safely, so only "smaller than the history" is promised here.
    assert len(verdict.witness) < len(history), verdict.explain()
    assert check_history(verdict.witness, shrink=False).linearizable is False


@settings(max_examples=40, deadline=None)
@given(seed=SEEDS)
def test_a_read_from_the_future_is_rejected(seed: int) -> None:
    rng = random.Random(seed)
    history = future_read(rng, simulate(rng, ops=120, keys=2, unknown=0.1))
    assert history is not None
    assert check_history(history).linearizable is False


def tiny_history() -> st.SearchStrategy[list[Operation]]:
    values = st.sampled_from(["a", "b", "c"])
    maybe = st.one_of(st.none(), values)

    @st.composite
    def one(draw: st.DrawFn, client: int) -> Operation:
        kind = draw(st.sampled_from([GET, PUT, CAS, DELETE]))
        call = draw(st.integers(0, 8))
        ret = None if kind != GET and draw(st.integers(0, 2)) == 0 else \
            call + draw(st.integers(0, 4))
        if kind == GET:
            return Operation(client, kind, "k", None, call, ret, draw(maybe))
        if kind == PUT:
            return Operation(client, kind, "k", draw(values), call, ret)
        arg = (draw(maybe), draw(values)) if kind == CAS else None
        return Operation(client, kind, "k", arg, call, ret, draw(st.booleans()))

    return st.lists(st.integers(0, 3), min_size=1, max_size=7).flatmap(
        lambda clients: st.tuples(*(one(c) for c in clients)).map(list))


# Each property below is proven only by the histories that reach its branch, so each
# test counts its outcomes and asserts that every branch was taken often enough. About
# half of the tiny histories are rejected from a missing key and a quarter from any value
# (measured over 1,800 draws); the floors are a third of that, or less.


def test_verdict_equals_exhaustive_search_on_tiny_histories() -> None:
    outcomes: Counter[tuple[bool | None, bool]] = Counter()  # (verdict, several operations)

    @settings(max_examples=600, deadline=None)
    @given(history=tiny_history())
    def each(history: list[Operation]) -> None:
        verdict = check_history(history, shrink=False).linearizable
        assert verdict is brute_force(history)
        outcomes[verdict, len(history) > 2] += 1

    each()
    for verdict in (True, False):
        assert outcomes[verdict, True] >= 60, f"too few {verdict} verdicts: {outcomes}"


def test_rejected_from_any_value_means_rejected_from_every_value() -> None:
    outcomes: Counter[bool | None] = Counter()

    @settings(max_examples=200, deadline=None)
    @given(history=tiny_history())
    def each(history: list[Operation]) -> None:
        verdict = search(KvModel(ANY_VALUE), history).linearizable
        outcomes[verdict] += 1
        if verdict is False:
            for initial in (None, "a", "b", "c"):
                assert not brute_force(history, initial), f"accepted starting from {initial!r}"
        else:
            assert verdict is True  # no step budget: always a verdict

    each()
    assert outcomes[False] >= 20, f"too few rejected from any value: {outcomes}"
    assert outcomes[True] >= 20, f"too few accepted from any value: {outcomes}"


def _within(witness: list[Operation], history: list[Operation]) -> bool:
    """True when every operation of ``witness`` is one of ``history``'s: the same client,
    kind, key and argument, and the same output unless the witness forgot it (the shrinker
    may drop an outcome, and renumbers call and return times once operations go)."""
    def asked(op: Operation) -> tuple[object, ...]:
        return (op.client, op.kind, op.key, op.arg)

    return all(any(asked(w) == asked(h) and (not w.known or (h.known and w.output == h.output))
                   for h in history) for w in witness)


def test_witness_is_itself_rejected() -> None:
    outcomes: Counter[tuple[bool | None, bool]] = Counter()  # (verdict, witness shorter)

    @settings(max_examples=100, deadline=None)
    @given(history=tiny_history())
    def each(history: list[Operation]) -> None:
        verdict = check_history(history)
        if verdict.linearizable is False:
            assert verdict.witness
            assert _within(verdict.witness, history), "the witness is not a sub-history"
            assert check_history(verdict.witness, shrink=False).linearizable is False
            outcomes[False, len(verdict.witness) < len(history)] += 1
        else:
            assert verdict.linearizable is True, verdict.explain()
            assert not verdict.witness
            outcomes[True, False] += 1

    each()
    rejected = outcomes[False, True] + outcomes[False, False]
    assert rejected >= 15, f"too few rejected histories: {outcomes}"
    assert outcomes[False, True] >= 5, f"witnesses never shrank: {outcomes}"
    assert outcomes[True, False] >= 15, f"too few accepted histories: {outcomes}"


def test_thousands_of_operations_check_in_seconds() -> None:
    rng = random.Random(7)
    history = simulate(rng, clients=6, ops=6000, keys=8, unknown=0.05)
    started = time.monotonic()
    verdict = check_history(history)
    elapsed = time.monotonic() - started
    assert verdict.linearizable is True, verdict.explain()
    assert elapsed < 10.0, f"{len(history)} operations took {elapsed:.1f}s"


def test_a_stale_read_in_thousands_of_operations_is_found_and_explained() -> None:
    # Rejecting means exhausting the search, which grows with the number of timed-out
    # writes pending at once; a few per key is what fault tests produce.
    rng = random.Random(11)
    history = simulate(rng, clients=6, ops=4000, keys=8, unknown=0.01)
    bad = stale_read(rng, history)
    assert bad is not None
    started = time.monotonic()
    verdict = check_history(bad)
    assert verdict.linearizable is False
    assert time.monotonic() - started < 20.0
    assert len(verdict.witness) <= 4, verdict.explain()
    assert check_history(verdict.witness, shrink=False).linearizable is False
