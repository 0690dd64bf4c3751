"""The reboot semaphore as locksmith 0.6 stores it: value, operations, keys. Pure, no I/O.

The store holds one JSON value per group, ``{"semaphore":N,"max":M,"holders":[...]}``:
``semaphore`` is the number of free slots, ``max`` the number of slots and ``holders`` the
sorted machine IDs that hold one (``null`` when the list was never filled, as Go's nil
slice encodes). We write exactly the bytes Go's ``encoding/json`` writes for that struct
(field order, no spaces, ``<>&`` escaped as ``\\u003c``...), so the real locksmithctl and
ours can share one cluster and a compare-and-swap by value would match either writer.

The operations return a new value or raise a :class:`LockError` carrying locksmith's own
words ("semaphore is at 0", "holder exists", "holder does not exist"), because scripts
grep for them. One check is stricter than upstream: a lock is refused when the holders
already fill ``max`` even if a hand-edited ``semaphore`` count says a slot is free, so no
value, however written, lets more than ``max`` machines in.

Renewal records (who renewed a held slot, and when) live under a sibling key, never in
the semaphore value, so locksmith 0.6 keeps parsing the semaphore untouched.
"""

from __future__ import annotations

import bisect
import dataclasses
import json
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote_plus

KEY_PREFIX = "/coreos.com/updateengine/rebootlock"
#: Where our renewal records live (one key per holder), next to the semaphore key.
RENEWAL_BRANCH = "flotilla-renewals"


class LockError(Exception):
    """A refused semaphore operation; ``str()`` is locksmith's message."""


class SemaphoreFull(LockError):
    """No free slot: locksmith's ``semaphore is at N``."""


class HolderExists(LockError):
    """The machine already holds a slot (locksmith's ErrExist)."""


class HolderNotFound(LockError):
    """The machine holds no slot (locksmith's ErrNotExist)."""


class InvalidValue(LockError):
    """The stored value is not a semaphore; the message says which part is wrong."""


@dataclasses.dataclass(frozen=True)
class Semaphore:
    """One group's semaphore. ``holders is None`` is Go's nil slice (encodes as null)."""

    semaphore: int = 1
    max: int = 1
    holders: tuple[str, ...] | None = None

    @property
    def holder_list(self) -> tuple[str, ...]:
        return self.holders or ()

    def holds(self, holder: str) -> bool:
        return holder in self.holder_list


#: The value locksmith writes when it creates a group's key.
INITIAL = Semaphore(1, 1, None)


def semaphore_key(group: str = "") -> str:
    """The group's key; the default group ("") uses locksmith's original key.

    Go's ``url.QueryEscape`` and Python's ``quote_plus`` escape the same set (everything
    but letters, digits and ``-_.~``; space as ``+``).
    """
    if not group:
        return f"{KEY_PREFIX}/semaphore"
    return f"{KEY_PREFIX}/groups/{quote_plus(group, safe='~')}/semaphore"


def renewal_dir(group: str = "") -> str:
    base = semaphore_key(group).rsplit("/", 1)[0]
    return f"{base}/{RENEWAL_BRANCH}"


def renewal_key(holder: str, group: str = "") -> str:
    return f"{renewal_dir(group)}/{quote_plus(holder, safe='~')}"


# ---------------------------------------------------------------------------- encoding

_GO_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026",
               "\u2028": "\\u2028", "\u2029": "\\u2029",
               "\b": "\\u0008", "\f": "\\u000c"}


def go_json_string(text: str) -> str:
    """``text`` as Go 1.x's encoding/json writes a string (HTML-safe, UTF-8 kept)."""
    out = json.dumps(text, ensure_ascii=False)
    # json.dumps has already written \b and \f as two-character escapes; Go of locksmith's
    # era wrote them as \u00XX, and it escapes <, >, & and the JS line separators.
    out = out.replace("\\b", "\\u0008").replace("\\f", "\\u000c")
    return "".join(_GO_ESCAPES.get(ch, ch) if ch in "<>&\u2028\u2029" else ch for ch in out)


def encode(sem: Semaphore) -> str:
    """The exact bytes locksmith 0.6 writes for ``sem``."""
    if sem.holders is None:
        holders = "null"
    else:
        holders = "[" + ",".join(go_json_string(h) for h in sem.holders) + "]"
    return f'{{"semaphore":{sem.semaphore},"max":{sem.max},"holders":{holders}}}'


def _int_field(data: Mapping[str, Any], name: str) -> int:
    value = data.get(name, 0)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        raise InvalidValue(f"semaphore value: {name!r} must be an integer, not {value!r}")
    return int(value)


def decode(text: str) -> Semaphore:
    """Reads a stored value as Go's json.Unmarshal would: missing fields are zero,
    unknown fields ignored; anything of the wrong type is refused by name."""
    try:
        data = json.loads(text)
    except ValueError as err:
        raise InvalidValue(f"semaphore value is not JSON: {err}") from err
    if not isinstance(data, dict):
        raise InvalidValue("semaphore value must be a JSON object")
    raw = data.get("holders")
    if raw is None:
        holders: tuple[str, ...] | None = None
    elif isinstance(raw, list) and all(isinstance(h, str) for h in raw):
        holders = tuple(raw)
    else:
        raise InvalidValue(f"semaphore value: 'holders' must be a list of strings, not {raw!r}")
    return Semaphore(_int_field(data, "semaphore"), _int_field(data, "max"), holders)


# ---------------------------------------------------------------------------- operations

def lock(sem: Semaphore, holder: str) -> Semaphore:
    """Takes a slot for ``holder``; upstream's checks in upstream's order."""
    if sem.semaphore <= 0:
        raise SemaphoreFull(f"semaphore is at {sem.semaphore}")
    holders = list(sem.holder_list)
    at = bisect.bisect_left(holders, holder)
    if at < len(holders) and holders[at] == holder:
        raise HolderExists("holder exists")
    if len(holders) >= sem.max:
        # The count says a slot is free but the holders fill max: trust the holders.
        raise SemaphoreFull(f"semaphore is at {sem.max - len(holders)}")
    holders.insert(at, holder)
    return Semaphore(sem.semaphore - 1, sem.max, tuple(holders))


def unlock(sem: Semaphore, holder: str) -> Semaphore:
    """Gives back ``holder``'s slot."""
    holders = list(sem.holder_list)
    at = bisect.bisect_left(holders, holder)
    if at >= len(holders) or holders[at] != holder:
        if holder not in holders:
            raise HolderNotFound("holder does not exist")
        at = holders.index(holder)  # an unsorted list written by hand
    del holders[at]
    return Semaphore(sem.semaphore + 1, sem.max, tuple(holders))


def set_max(sem: Semaphore, new_max: int) -> Semaphore:
    """Changes the slot count; the free count moves by the same amount (it may go
    negative when lowered under the current holders, who keep their slots)."""
    if new_max < 0:
        raise InvalidValue(f"maximum must not be negative, not {new_max}")
    return Semaphore(sem.semaphore - (sem.max - new_max), new_max, sem.holders)


# ---------------------------------------------------------------------------- renewals

@dataclasses.dataclass(frozen=True)
class Renewal:
    """When a holder last said it is alive and still needs its slot (Unix seconds)."""

    holder: str
    renewed: float


def encode_renewal(renewal: Renewal) -> str:
    return json.dumps({"holder": renewal.holder, "renewed": renewal.renewed},
                      separators=(",", ":"))


def decode_renewal(text: str) -> Renewal | None:
    """A renewal record, or None when the value is not one (ignored, never trusted)."""
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    holder, renewed = data.get("holder"), data.get("renewed")
    if not isinstance(holder, str) or isinstance(renewed, bool) \
            or not isinstance(renewed, int | float):
        return None
    return Renewal(holder, float(renewed))


def stale_holders(sem: Semaphore, renewals: Iterable[Renewal], now: float,
                  max_age: float) -> list[str]:
    """Holders whose last renewal is older than ``max_age`` seconds at ``now``.

    A holder with no renewal record at all is never stale: it was locked by locksmith 0.6
    or by hand (``locksmithctl lock ID`` to keep a machine from rebooting), and only an
    operator may take that slot away.
    """
    latest: dict[str, float] = {}
    for record in renewals:
        latest[record.holder] = max(latest.get(record.holder, record.renewed), record.renewed)
    return [h for h in sem.holder_list if h in latest and now - latest[h] > max_age]


# ------------------------------------------------------------------ fleet departures

#: Where fleet (ours or upstream's, default etcd_key_prefix) lists live machines: one
#: ``machines/<id>/object`` key each, with the agent's TTL, so a dead machine drops out.
FLEET_MACHINES = "/_coreos.com/fleet/machines"


def fleet_machine_ids(keys: Iterable[str], machines_dir: str = FLEET_MACHINES) -> set[str]:
    """Machine IDs that have an ``object`` key under ``machines_dir`` (fleet's live list)."""
    prefix = machines_dir.rstrip("/") + "/"
    found: set[str] = set()
    for key in keys:
        if not key.startswith(prefix):
            continue
        parts = key[len(prefix):].split("/")
        if len(parts) == 2 and parts[1] == "object" and parts[0]:
            found.add(parts[0])
    return found


def departed_holders(sem: Semaphore, fleet_ids: set[str] | None,
                     renewals: Iterable[Renewal], now: float, grace: float) -> list[str]:
    """Holders whose machine is not in fleet's machine list and that have not renewed
    for ``grace`` seconds at ``now``.

    ``fleet_ids`` None (fleet's directory does not exist) or empty means fleet is not in
    use here, and then nobody has departed: an absent list is no evidence. The grace
    matters because a holder that is rebooting is briefly gone from fleet too (its
    machine key lives only as long as fleet's agent TTL, 30 s by default); it renewed
    just before the reboot. A holder without a renewal record is judged on fleet alone.
    """
    if not fleet_ids:
        return []
    latest: dict[str, float] = {}
    for record in renewals:
        latest[record.holder] = max(latest.get(record.holder, record.renewed), record.renewed)
    return [h for h in sem.holder_list
            if h not in fleet_ids and (h not in latest or now - latest[h] >= grace)]
