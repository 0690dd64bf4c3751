"""The checker on small hand-written histories whose verdict is known."""

from __future__ import annotations

import pytest

from tests.lincheck import CAS, DELETE, GET, PUT, Operation, Recorder, check_history


def put(client: int, value: str, call: float, ret: float | None, key: str = "k") -> Operation:
    return Operation(client, PUT, key, value, call, ret)


def get(client: int, seen: str | None, call: float, ret: float, key: str = "k") -> Operation:
    return Operation(client, GET, key, None, call, ret, seen)


def cas(client: int, expected: str | None, new: str, swapped: bool | None, call: float,
        ret: float | None, key: str = "k") -> Operation:
    return Operation(client, CAS, key, (expected, new), call, ret, swapped)


def delete(client: int, found: bool | None, call: float, ret: float | None) -> Operation:
    return Operation(client, DELETE, "k", None, call, ret, found)


def assert_linearizable(history: list[Operation]) -> None:
    verdict = check_history(history)
    assert verdict.linearizable is True, verdict.explain()


def assert_rejected(history: list[Operation]) -> list[Operation]:
    verdict = check_history(history)
    assert verdict.linearizable is False, verdict.explain()
    return verdict.witness


def test_read_of_the_initial_state_sees_a_missing_key() -> None:
    assert_linearizable([get(0, None, 0, 1)])
    assert_rejected([get(0, "x", 0, 1)])


def test_sequential_write_then_read() -> None:
    assert_linearizable([put(0, "a", 0, 1), get(1, "a", 2, 3)])


def test_stale_read_after_an_acknowledged_write_is_rejected() -> None:
    witness = assert_rejected([put(0, "a", 0, 1), put(0, "b", 2, 3), get(1, "a", 4, 5)])
    assert [op.describe() for op in witness][-1] == "get k -> 'a'"


def test_lost_write_is_rejected() -> None:
    # acknowledged, then a later read finds nothing and no delete happened
    assert_rejected([put(0, "a", 0, 1), get(1, None, 2, 3)])


def test_read_concurrent_with_a_write_may_see_either_value() -> None:
    assert_linearizable([put(0, "a", 0, 1), put(0, "b", 2, 6), get(1, "a", 3, 4)])
    assert_linearizable([put(0, "a", 0, 1), put(0, "b", 2, 6), get(1, "b", 3, 4)])


def test_value_seen_once_cannot_be_unseen() -> None:
    # a write still running is seen by one read; a later read must not see the old value
    assert_rejected([put(0, "a", 0, 1), put(0, "b", 2, 10), get(1, "b", 3, 4),
                     get(2, "a", 5, 6)])


def test_two_concurrent_writes_read_in_both_orders_is_rejected() -> None:
    writes = [put(0, "a", 0, 10), put(1, "b", 0, 10)]
    reader_ab = [get(2, "a", 1, 2), get(2, "b", 3, 4)]
    reader_ba = [get(3, "b", 1, 2), get(3, "a", 3, 4)]
    assert_linearizable(writes + reader_ab)
    assert_linearizable(writes + reader_ba)
    assert_rejected(writes + reader_ab + reader_ba)


def test_two_readers_after_both_writes_must_agree() -> None:
    writes = [put(0, "a", 0, 5), put(1, "b", 0, 5)]
    assert_linearizable([*writes, get(2, "a", 6, 7), get(3, "a", 8, 9)])
    assert_rejected([*writes, get(2, "a", 6, 7), get(3, "b", 8, 9)])


def test_cas_succeeds_only_from_the_expected_value() -> None:
    assert_linearizable([put(0, "a", 0, 1), cas(1, "a", "b", True, 2, 3), get(0, "b", 4, 5)])
    assert_rejected([put(0, "z", 0, 1), cas(1, "a", "b", True, 2, 3)])


def test_cas_refused_although_the_value_matched_is_rejected() -> None:
    assert_rejected([put(0, "a", 0, 1), cas(1, "a", "b", False, 2, 3)])
    assert_linearizable([put(0, "a", 0, 1), cas(1, "x", "b", False, 2, 3), get(0, "a", 4, 5)])


def test_two_concurrent_cas_from_one_value_cannot_both_win() -> None:
    base = [put(0, "a", 0, 1)]
    assert_linearizable([*base, cas(1, "a", "b", True, 2, 5), cas(2, "a", "c", False, 2, 5)])
    assert_rejected([*base, cas(1, "a", "b", True, 2, 5), cas(2, "a", "c", True, 2, 5)])


def test_cas_create_only_when_absent() -> None:
    assert_linearizable([cas(0, None, "a", True, 0, 1), cas(1, None, "b", False, 2, 3)])
    assert_rejected([put(0, "x", 0, 1), cas(1, None, "a", True, 2, 3)])


def test_successful_cas_then_stale_read_is_rejected() -> None:
    assert_rejected([put(0, "a", 0, 1), cas(1, "a", "b", True, 2, 3), get(2, "a", 4, 5)])


def test_delete_removes_the_key() -> None:
    assert_linearizable([put(0, "a", 0, 1), delete(1, True, 2, 3), get(0, None, 4, 5),
                         delete(1, False, 6, 7)])
    assert_rejected([put(0, "a", 0, 1), delete(1, True, 2, 3), get(0, "a", 4, 5)])
    assert_rejected([delete(1, True, 0, 1)])


def test_timed_out_write_that_took_effect() -> None:
    assert_linearizable([put(0, "a", 0, None), get(1, "a", 5, 6), get(1, "a", 7, 8)])


def test_timed_out_write_that_never_took_effect() -> None:
    assert_linearizable([put(0, "a", 0, None), get(1, None, 5, 6), get(1, None, 7, 8)])


def test_timed_out_write_stays_pending_until_the_end() -> None:
    # it may take effect long after the client gave up
    assert_linearizable([put(0, "a", 0, None), get(1, None, 50, 51), get(1, "a", 90, 91)])


def test_timed_out_write_once_seen_stays() -> None:
    assert_rejected([put(0, "a", 0, None), get(1, "a", 5, 6), get(2, None, 7, 8)])


def test_timed_out_cas_either_way() -> None:
    base = [put(0, "a", 0, 1), cas(1, "a", "b", None, 2, None)]
    assert_linearizable([*base, get(2, "b", 3, 4)])
    assert_linearizable([*base, get(2, "a", 3, 4)])
    assert_rejected([*base, get(2, "b", 3, 4), get(2, "a", 5, 6)])


def test_touching_intervals_count_as_concurrent() -> None:
    # the read returns at the instant the write is called: either order is allowed
    assert_linearizable([get(1, "a", 0, 1), put(0, "a", 1, 2)])
    assert_rejected([get(1, "a", 0, 1), put(0, "a", 1.5, 2)])


def test_keys_are_independent() -> None:
    history = [put(0, "a", 0, 1, key="x"), put(0, "b", 0, 1, key="y"),
               get(1, "a", 2, 3, key="x"), get(1, None, 2, 3, key="z")]
    verdict = check_history(history)
    assert verdict.linearizable is True and verdict.partitions == 3
    bad = check_history([*history, get(1, "a", 4, 5, key="y")])
    assert bad.linearizable is False and bad.key == "y"


def test_failure_report_names_the_key_and_the_operations() -> None:
    verdict = check_history([put(0, "a", 0, 1), put(0, "b", 2, 3), get(1, "a", 4, 5)])
    text = verdict.explain()
    assert "not linearizable: key 'k'" in text
    assert "put k = 'b' -> ok" in text and "get k -> 'a'" in text


def test_witness_leaves_out_history_the_contradiction_does_not_need() -> None:
    # a long chain of swaps, then a read of a value overwritten before it began: the
    # last read of the chain and the stale read are enough, whatever came before
    history = [put(0, "v0", 0, 1)]
    for i in range(1, 40):
        history.append(cas(i % 3, f"v{i - 1}", f"v{i}", True, 2 * i, 2 * i + 1))
        history.append(get(3, f"v{i}", 2 * i + 1.5, 2 * i + 1.8))
    history.append(get(4, "v20", 100, 101))
    verdict = check_history(history)
    assert verdict.linearizable is False
    assert verdict.from_any_value
    assert [op.describe() for op in verdict.witness] == ["get k -> 'v39'", "get k -> 'v20'"]
    assert "whatever value the key held before them" in verdict.explain()


def test_witness_keeps_the_start_when_the_initial_state_matters() -> None:
    verdict = check_history([get(0, None, 0, 1), put(1, "a", 2, 3), get(0, "z", 4, 5)])
    assert verdict.linearizable is False
    assert not verdict.from_any_value or len(verdict.witness) <= 2


def test_step_budget_gives_no_verdict() -> None:
    history = [put(c, f"v{c}", 0, 100) for c in range(8)] + [get(9, "v0", 101, 102)]
    verdict = check_history(history, max_steps=3)
    assert verdict.linearizable is None and not verdict
    assert "no verdict" in verdict.explain()


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"kind": "incr", "arg": None}, "kind"),
    ({"kind": CAS, "arg": "a"}, "arg"),
    ({"kind": GET, "arg": None, "ret": -1.0}, "ret"),
])
def test_malformed_operations_name_the_field(kwargs: dict, field: str) -> None:
    fields = {"client": 0, "key": "k", "call": 0.0, "ret": 1.0, **kwargs}
    with pytest.raises(ValueError, match=f"^{field}:"):
        Operation(**fields)


def test_recorder_stamps_calls_and_returns_and_loses_outcomes() -> None:
    ticks = iter([1.0, 2.0, 3.0])
    recorder = Recorder(clock=lambda: next(ticks))
    call = recorder.begin()
    recorder.end(0, PUT, "k", "a", call, None)
    recorder.end(1, PUT, "k", "b", recorder.begin(), "ignored", known=False)
    first, second = recorder.history()
    assert (first.call, first.ret, first.known) == (1.0, 2.0, True)
    assert (second.call, second.ret, second.known, second.output) == (3.0, None, False, None)


def test_which_timed_out_write_explains_a_read_matters_later() -> None:
    # Both a timed-out put and a timed-out cas could have produced the first 'a'; only
    # the cas explaining it leaves the put free to produce the second 'a' after 'c'.
    assert_linearizable([put(0, "b", 0, 1), put(1, "a", 0, None),
                         cas(2, "b", "a", None, 0, None), get(3, "a", 2, 3),
                         put(0, "c", 4, 5), get(3, "a", 6, 7)])
