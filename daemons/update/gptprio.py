"""The A/B boot rule: GPT attribute bits of the USR slots, and which slot boots next.

CoreOS keeps its two /usr partitions (USR-A, USR-B) apart by three fields packed into
each GPT entry's 64-bit attribute word, the ChromeOS cgpt convention GRUB's ``gptprio``
reads: bits 48-51 priority (0 = never boot), bits 52-55 tries left, bit 56 successful.
Everything here is arithmetic on those words, with no disk I/O, so the update engine,
its tests and the test-machine harness (which plays the bootloader) share one rule:

- :func:`choose_boot` is GRUB's ``gptprio.next``: the highest-priority USR slot that is
  successful or still has tries; a try is spent (and must be written back) when taken.
- :func:`prioritize` is ``cgpt prioritize``: the chosen slot ranks first, the others keep
  their order below it, nothing is lowered to zero.
- :func:`after_install` and :func:`mark_good` are what postinstall and "set good root" do.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

#: The GPT partition type GRUB's gptprio looks for (CoreOS USR, x86-64).
USR_TYPE_GUID = "5dfbf5f4-2848-4bac-aa5e-0d9a20b745a6"
#: The partition GUIDs CoreOS and Flatcar images give their two slots.
USR_A_UUID = "7130c94a-213a-4e5a-8e26-6cce9662f132"
USR_B_UUID = "e03dd35c-7c2d-4a47-b3fe-27f15780a57c"

PRIORITY_SHIFT = 48
TRIES_SHIFT = 52
SUCCESSFUL_SHIFT = 56
FIELD_MASK = 0xF
MAX_PRIORITY = 15
MAX_TRIES = 15
_OWNED = (FIELD_MASK << PRIORITY_SHIFT) | (FIELD_MASK << TRIES_SHIFT) | (1 << SUCCESSFUL_SHIFT)


@dataclasses.dataclass(frozen=True)
class Flags:
    """The three boot fields of one partition entry."""

    priority: int
    tries: int
    successful: bool

    def __post_init__(self) -> None:
        if not 0 <= self.priority <= MAX_PRIORITY:
            raise ValueError(f"priority must be 0-{MAX_PRIORITY}, not {self.priority}")
        if not 0 <= self.tries <= MAX_TRIES:
            raise ValueError(f"tries must be 0-{MAX_TRIES}, not {self.tries}")

    @classmethod
    def unpack(cls, attributes: int) -> Flags:
        return cls(
            priority=(attributes >> PRIORITY_SHIFT) & FIELD_MASK,
            tries=(attributes >> TRIES_SHIFT) & FIELD_MASK,
            successful=bool((attributes >> SUCCESSFUL_SHIFT) & 1),
        )

    def pack(self, attributes: int = 0) -> int:
        """``attributes`` with these fields written in; every other bit is kept."""
        return (
            (attributes & ~_OWNED)
            | (self.priority << PRIORITY_SHIFT)
            | (self.tries << TRIES_SHIFT)
            | (int(self.successful) << SUCCESSFUL_SHIFT)
        )

    @property
    def bootable(self) -> bool:
        """GRUB considers the slot at all: a priority, and a try left or a good boot."""
        return self.priority > 0 and (self.tries > 0 or self.successful)

    def show(self) -> str:
        """The way ``cgpt show`` prints the fields."""
        return f"priority={self.priority} tries={self.tries} successful={int(self.successful)}"


@dataclasses.dataclass(frozen=True)
class Slot:
    """One GPT entry as the rule needs it: its number, identity, type and attributes."""

    number: int
    uuid: str
    type_guid: str
    attributes: int
    label: str = ""

    @property
    def flags(self) -> Flags:
        return Flags.unpack(self.attributes)

    @property
    def is_usr(self) -> bool:
        return self.type_guid.lower() == USR_TYPE_GUID

    def with_flags(self, flags: Flags) -> Slot:
        return dataclasses.replace(self, attributes=flags.pack(self.attributes))


@dataclasses.dataclass(frozen=True)
class BootChoice:
    """The slot to boot and the table to write back first (a try may have been spent)."""

    slot: Slot
    slots: tuple[Slot, ...]
    try_spent: bool


def choose_boot(slots: Sequence[Slot]) -> BootChoice | None:
    """GRUB's gptprio: which USR slot boots, or None when no slot can.

    The highest priority among bootable USR slots wins; on equal priority the first in
    table order does. If the winner still has tries, one is spent: the caller writes the
    returned table before booting, so a boot that never reaches "mark good" cannot be
    retried forever.
    """
    best: Slot | None = None
    for slot in slots:
        if slot.is_usr and slot.flags.bootable and (
            best is None or slot.flags.priority > best.flags.priority
        ):
            best = slot
    if best is None:
        return None
    flags = best.flags
    if flags.tries == 0:
        return BootChoice(slot=best, slots=tuple(slots), try_spent=False)
    spent = best.with_flags(dataclasses.replace(flags, tries=flags.tries - 1))
    table = tuple(spent if s.number == best.number else s for s in slots)
    return BootChoice(slot=spent, slots=table, try_spent=True)


def prioritize(slots: Sequence[Slot], number: int, max_priority: int = 0) -> tuple[Slot, ...]:
    """``cgpt prioritize -i NUMBER``: slot NUMBER first, the other USR slots below it.

    Slots are ranked in groups of equal priority; the chosen slot leaves its group and
    goes on top. Ranks are handed out from ``max_priority`` (or the number of groups, at
    most 15) downwards, never below 1, and slots at priority 0 stay at 0.
    """
    usr = [s for s in slots if s.is_usr]
    if not any(s.number == number for s in usr):
        raise ValueError(f"partition {number} is not a USR partition")
    if not 0 <= max_priority <= MAX_PRIORITY:
        raise ValueError(f"max priority must be 0-{MAX_PRIORITY}, not {max_priority}")
    top = MAX_PRIORITY + 1  # above every real priority, like cgpt's 99
    groups: dict[int, list[int]] = {}
    for s in usr:
        key = top if s.number == number else s.flags.priority
        groups.setdefault(key, []).append(s.number)
    ranked = sorted((k for k in groups if k != 0), reverse=True)
    priority = max_priority or min(len(ranked), MAX_PRIORITY)
    new_priority: dict[int, int] = {}
    for key in ranked:
        for member in groups[key]:
            new_priority[member] = priority
        priority = max(priority - 1, 1)
    return tuple(
        s.with_flags(dataclasses.replace(s.flags, priority=new_priority[s.number]))
        if s.number in new_priority
        else s
        for s in slots
    )


def _set(slots: Sequence[Slot], number: int, tries: int, successful: bool) -> tuple[Slot, ...]:
    return tuple(
        s.with_flags(dataclasses.replace(s.flags, tries=tries, successful=successful))
        if s.number == number
        else s
        for s in slots
    )


def after_install(slots: Sequence[Slot], number: int) -> tuple[Slot, ...]:
    """Postinstall on the freshly written slot: one try, not yet good, highest priority."""
    return prioritize(_set(slots, number, tries=1, successful=False), number)


def mark_good(slots: Sequence[Slot], number: int) -> tuple[Slot, ...]:
    """The running slot booted healthy: successful, no tries needed, highest priority."""
    return prioritize(_set(slots, number, tries=0, successful=True), number)


def other_slot(slots: Sequence[Slot], number: int) -> Slot:
    """The passive USR slot: the one that is not ``number`` (an A/B table has two)."""
    usr = [s for s in slots if s.is_usr]
    if len(usr) != 2 or not any(s.number == number for s in usr):
        raise ValueError(f"expected two USR partitions, one of them {number}; found "
                         f"{[s.number for s in usr]}")
    return next(s for s in usr if s.number != number)
