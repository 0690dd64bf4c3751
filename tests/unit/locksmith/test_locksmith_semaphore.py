"""The semaphore value and its operations against locksmith 0.6's bytes and words."""

from __future__ import annotations

import json
import random

import pytest
from flotilla.daemons.locksmith import semaphore as s
from hypothesis import given, settings
from hypothesis import strategies as st


def test_initial_value_is_the_bytes_locksmith_creates() -> None:
    assert s.encode(s.INITIAL) == '{"semaphore":1,"max":1,"holders":null}'


def test_encoding_matches_go_field_order_spacing_and_html_escapes() -> None:
    value = s.Semaphore(0, 2, ("a&b", "<x>", "é", "\u2028", "\b\f\n\x01"))
    assert s.encode(value) == ('{"semaphore":0,"max":2,"holders":["a\\u0026b","\\u003cx\\u003e",'
                               '"é","\\u2028","\\u0008\\u000c\\n\\u0001"]}')
    assert s.encode(s.Semaphore(1, 1, ())) == '{"semaphore":1,"max":1,"holders":[]}'


def test_decode_reads_as_go_does_missing_zero_unknown_ignored() -> None:
    assert s.decode('{"max":3,"extra":true}') == s.Semaphore(0, 3, None)
    assert s.decode('{"semaphore":1,"max":1,"holders":[]}').holders == ()
    for bad, field in [('{"semaphore":"1"}', "semaphore"), ('{"max":1.5}', "max"),
                       ('{"holders":[1]}', "holders"), ("[]", "object"), ("nope", "JSON")]:
        with pytest.raises(s.InvalidValue, match=field):
            s.decode(bad)


def test_round_trip_of_what_locksmith_writes() -> None:
    text = '{"semaphore":0,"max":2,"holders":["aa","bb"]}'
    assert s.encode(s.decode(text)) == text


def test_lock_keeps_holders_sorted_and_counts_down() -> None:
    value = s.set_max(s.INITIAL, 3)
    for holder in ["m", "a", "z"]:
        value = s.lock(value, holder)
    assert value == s.Semaphore(0, 3, ("a", "m", "z"))


def test_lock_errors_are_locksmiths_words_in_its_order() -> None:
    full = s.lock(s.INITIAL, "a")
    with pytest.raises(s.SemaphoreFull, match=r"^semaphore is at 0$"):
        s.lock(full, "b")
    # upstream checks the count first: a holder locking again on a full semaphore
    with pytest.raises(s.SemaphoreFull):
        s.lock(full, "a")
    with pytest.raises(s.HolderExists, match=r"^holder exists$"):
        s.lock(s.set_max(full, 2), "a")
    with pytest.raises(s.HolderNotFound, match=r"^holder does not exist$"):
        s.unlock(full, "b")


def test_a_hand_edited_count_cannot_let_more_than_max_in() -> None:
    lying = s.Semaphore(5, 1, ("a",))
    with pytest.raises(s.SemaphoreFull, match="semaphore is at 0"):
        s.lock(lying, "b")


def test_set_max_moves_the_free_count_and_may_go_negative() -> None:
    two = s.lock(s.lock(s.set_max(s.INITIAL, 2), "a"), "b")
    lowered = s.set_max(two, 1)
    assert lowered == s.Semaphore(-1, 1, ("a", "b"))
    with pytest.raises(s.SemaphoreFull, match="semaphore is at -1"):
        s.lock(lowered, "c")
    assert s.unlock(lowered, "a") == s.Semaphore(0, 1, ("b",))
    with pytest.raises(s.InvalidValue):
        s.set_max(two, -1)


def test_unlock_of_an_unsorted_hand_written_list() -> None:
    assert s.unlock(s.Semaphore(0, 2, ("b", "a")), "a") == s.Semaphore(1, 2, ("b",))


def test_keys_as_locksmith_names_them() -> None:
    assert s.semaphore_key() == "/coreos.com/updateengine/rebootlock/semaphore"
    assert s.semaphore_key("web") == "/coreos.com/updateengine/rebootlock/groups/web/semaphore"
    # url.QueryEscape: space as +, / and & escaped, -_.~ kept
    assert s.semaphore_key("a b/c&d-_.~") == \
        "/coreos.com/updateengine/rebootlock/groups/a+b%2Fc%26d-_.~/semaphore"
    assert s.renewal_key("m1", "web") == \
        "/coreos.com/updateengine/rebootlock/groups/web/flotilla-renewals/m1"


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["lock", "unlock", "max"]),
                          st.sampled_from(["a", "b", "c", "d", "e"]),
                          st.integers(0, 4)), max_size=40))
def test_no_sequence_of_operations_exceeds_max_or_breaks_the_invariant(ops) -> None:
    value = s.INITIAL
    raised_max = False
    for op, holder, n in ops:
        try:
            if op == "lock":
                before = len(value.holder_list)
                value = s.lock(value, holder)
                assert before < value.max, "a lock was granted with every slot taken"
            elif op == "unlock":
                value = s.unlock(value, holder)
            else:
                value = s.set_max(value, n)
                raised_max = True
        except s.LockError:
            pass
        assert list(value.holder_list) == sorted(set(value.holder_list))
        assert value.semaphore == value.max - len(value.holder_list)
        # only lowering max can leave more holders than slots, and then nobody new enters
        assert raised_max or len(value.holder_list) <= value.max


def test_stale_holders_only_with_an_old_record() -> None:
    value = s.Semaphore(0, 3, ("fresh", "manual", "old"))
    records = [s.Renewal("old", 100.0), s.Renewal("fresh", 100.0), s.Renewal("fresh", 950.0),
               s.Renewal("gone", 0.0)]
    assert s.stale_holders(value, records, now=1000.0, max_age=600.0) == ["old"]
    assert s.stale_holders(value, records, now=700.0, max_age=600.0) == []


def test_renewal_records_round_trip_and_junk_is_ignored() -> None:
    record = s.Renewal("m", 12.5)
    assert s.decode_renewal(s.encode_renewal(record)) == record
    for junk in ["", "[]", '{"holder":1,"renewed":2}', '{"holder":"m","renewed":true}']:
        assert s.decode_renewal(junk) is None


def test_go_string_encoding_agrees_with_json_for_random_text() -> None:
    rng = random.Random(13)
    for _ in range(200):
        text = "".join(chr(rng.choice([rng.randrange(0, 0x80), rng.randrange(0x80, 0x3000)]))
                       for _ in range(rng.randrange(0, 12)))
        assert json.loads(s.go_json_string(text)) == text
        assert not any(ch in s.go_json_string(text) for ch in "<>&")
