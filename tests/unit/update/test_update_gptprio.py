"""The A/B boot rule over every attribute combination, and the update/rollback walk."""

from __future__ import annotations

import itertools

import pytest
from flotilla.daemons.update import gptprio as G

OTHER_TYPE = "0fc63daf-8483-4772-8e79-3d69d8477de4"  # a Linux filesystem partition
ALL_FLAGS = [
    G.Flags(priority=p, tries=t, successful=s)
    for p, t, s in itertools.product(range(16), range(16), (False, True))
]
# Pairs take the edge values of each field: every ordering of priorities and tries.
EDGE_FLAGS = [
    G.Flags(priority=p, tries=t, successful=s)
    for p, t, s in itertools.product((0, 1, 2, 15), (0, 1, 2, 15), (False, True))
]


def table(a: G.Flags, b: G.Flags, noise: int = 0) -> tuple[G.Slot, ...]:
    return (
        G.Slot(3, G.USR_A_UUID, G.USR_TYPE_GUID, a.pack(noise), "USR-A"),
        G.Slot(4, G.USR_B_UUID, G.USR_TYPE_GUID, b.pack(noise), "USR-B"),
    )


def test_fields_sit_in_cgpt_bits_and_other_bits_survive() -> None:
    flags = G.Flags(priority=2, tries=1, successful=True)
    assert flags.pack() == (2 << 48) | (1 << 52) | (1 << 56)
    noise = (1 << 60) | (1 << 0) | (1 << 63)  # read-only, required, no-auto
    packed = flags.pack(noise | G.Flags(15, 15, True).pack())
    assert packed & noise == noise
    assert G.Flags.unpack(packed) == flags
    assert flags.show() == "priority=2 tries=1 successful=1"


@pytest.mark.parametrize("field,value", [("priority", 16), ("tries", -1), ("tries", 16)])
def test_out_of_range_fields_are_refused(field: str, value: int) -> None:
    args = {"priority": 1, "tries": 1, "successful": False, field: value}
    with pytest.raises(ValueError, match=field):
        G.Flags(**args)


def test_every_attribute_word_of_one_slot_boots_as_gptprio_says() -> None:
    for flags in ALL_FLAGS:
        choice = G.choose_boot(table(flags, G.Flags(0, 0, False))[:1])
        expected = flags.priority > 0 and (flags.tries > 0 or flags.successful)
        assert (choice is not None) == expected == flags.bootable


def test_every_edge_combination_of_two_slots_follows_gptprio() -> None:
    """For all edge pairs: the winner is bootable, none ranks higher, ties go first."""
    counts = {"none": 0, "a": 0, "b": 0, "spent": 0, "tie": 0}
    noise = 1 << 60
    for a, b in itertools.product(EDGE_FLAGS, EDGE_FLAGS):
        slots = table(a, b, noise)
        choice = G.choose_boot(slots)
        if not a.bootable and not b.bootable:
            assert choice is None
            counts["none"] += 1
            continue
        assert choice is not None
        winner = "a" if choice.slot.number == 3 else "b"
        counts[winner] += 1
        before = a if winner == "a" else b
        loser = b if winner == "a" else a
        assert before.bootable
        assert not (loser.bootable and loser.priority > before.priority)
        if loser.bootable and loser.priority == before.priority:
            assert winner == "a"  # first in table order
            counts["tie"] += 1
        after = choice.slot.flags
        assert choice.try_spent == (before.tries > 0)
        assert after.tries == max(before.tries - 1, 0)
        assert (after.priority, after.successful) == (before.priority, before.successful)
        assert choice.slot.attributes & noise == noise
        other = next(s for s in choice.slots if s.number != choice.slot.number)
        assert other == next(s for s in slots if s.number == other.number)
        counts["spent"] += choice.try_spent
    # Each branch was taken many times, so no assertion above sat in a dead branch.
    assert min(counts.values()) > 20, counts


def test_only_usr_partitions_are_candidates() -> None:
    good = G.Flags(priority=15, tries=0, successful=True)
    slots = (
        G.Slot(1, "x", OTHER_TYPE, good.pack(), "ROOT"),
        G.Slot(3, G.USR_A_UUID, G.USR_TYPE_GUID, G.Flags(1, 0, True).pack(), "USR-A"),
    )
    choice = G.choose_boot(slots)
    assert choice is not None and choice.slot.number == 3


def test_prioritize_ranks_target_first_and_keeps_the_rest_in_order() -> None:
    slots = table(G.Flags(2, 0, True), G.Flags(1, 0, True))
    result = G.prioritize(slots, 4)
    assert [s.flags.priority for s in result] == [1, 2]
    # Groups of equal priority are squashed into consecutive ranks, zero stays zero.
    three = (*table(G.Flags(5, 0, True), G.Flags(0, 0, False)),
             G.Slot(5, "c", G.USR_TYPE_GUID, G.Flags(5, 0, True).pack(), "USR-C"))
    result = G.prioritize(three, 5)
    assert [s.flags.priority for s in result] == [1, 0, 2]
    result = G.prioritize(three, 4, max_priority=9)
    assert [s.flags.priority for s in result] == [8, 9, 8]
    with pytest.raises(ValueError, match="not a USR partition"):
        G.prioritize(three, 7)


def test_update_then_healthy_boot_then_rollback_walk() -> None:
    """The attribute states of an update that sticks, then one that fails to boot."""
    # A fresh image: USR-A good and booted, USR-B empty.
    slots = table(G.Flags(1, 0, True), G.Flags(0, 0, False))
    assert G.choose_boot(slots).slot.number == 3  # type: ignore[union-attr]
    assert G.other_slot(slots, 3).number == 4
    # Update written to B: B gets one try and the top rank.
    slots = G.after_install(slots, 4)
    assert [s.flags for s in slots] == [G.Flags(1, 0, True), G.Flags(2, 1, False)]
    choice = G.choose_boot(slots)
    assert choice is not None and choice.slot.number == 4 and choice.try_spent
    slots = choice.slots
    assert slots[1].flags == G.Flags(2, 0, False)
    # B came up healthy and is marked good.
    slots = G.mark_good(slots, 4)
    assert [s.flags for s in slots] == [G.Flags(1, 0, True), G.Flags(2, 0, True)]
    # A second update into A whose /usr never gets marked good.
    slots = G.after_install(slots, 3)
    first = G.choose_boot(slots)
    assert first is not None and first.slot.number == 3
    slots = first.slots  # the try is spent; the boot fails before mark_good
    second = G.choose_boot(slots)
    assert second is not None and second.slot.number == 4 and not second.try_spent


def test_other_slot_needs_an_ab_table() -> None:
    with pytest.raises(ValueError, match="two USR partitions"):
        G.other_slot(table(G.Flags(1, 0, True), G.Flags(0, 0, False))[:1], 3)
