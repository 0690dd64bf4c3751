"""Many lockers at once never put more than ``max`` machines in, on kvd and on etcd.

The proof is the store's own history: after the run every version of the semaphore key is
read back through v2 watches (``waitIndex`` from the key's creation), and each one must
hold at most ``max`` holders with a consistent free count; the holders each locker saw
itself add must appear, in order, in that history. Bounded: a fixed seed, a fixed number
of rounds per locker, and a deadline on the whole run.
"""

from __future__ import annotations

import asyncio
import random
import subprocess
import uuid

from flotilla.daemons.kvclient import KVClient
from flotilla.daemons.locksmith.semaphore import SemaphoreFull, decode
from flotilla.daemons.locksmith.store import SemaphoreStore

from tests.process.fleet.harness import Store

from .harness import PYTHON, env

LOCKERS = 10
ROUNDS = 6
MAX = 3


async def history(url: str, key: str, after: int, until: int) -> list[tuple[int, str]]:
    """Every value the key took after index ``after`` up to ``until``, from the store."""
    seen: list[tuple[int, str]] = []
    async with KVClient(url) as client:
        index = after + 1
        while index <= until:
            event = await client.wait(key, wait_index=index)
            seen.append((event.node.modified_index, event.node.value or ""))
            index = event.node.modified_index + 1
    return seen


async def locker(url: str, group: str, name: str, seed: int,
                 taken: list[tuple[str, int]], conflicts: list[int]) -> int:
    rng = random.Random(seed)
    wins = 0
    async with KVClient(url) as client:
        store = SemaphoreStore(client, group, rng=rng)
        for _ in range(ROUNDS):
            try:
                _, new, index = await store.update(lambda v: _lock(v, name))
            except SemaphoreFull:
                await asyncio.sleep(rng.uniform(0.001, 0.01))
                continue
            assert name in new.holder_list
            taken.append((name, index))
            wins += 1
            await asyncio.sleep(rng.uniform(0.0, 0.02))  # the "reboot": hold the slot a while
            await store.unlock(name)
        conflicts.append(store.conflicts)
    return wins


def _lock(value, name):
    from flotilla.daemons.locksmith.semaphore import lock
    return lock(value, name)


async def run_lockers(url: str, group: str) -> tuple[list[tuple[int, str]], int, int]:
    async with KVClient(url) as client:
        store = SemaphoreStore(client, group)
        await store.init()
        await store.set_max(MAX)
        _, start = await store.get()
        taken: list[tuple[str, int]] = []
        conflicts: list[int] = []
        wins = await asyncio.wait_for(asyncio.gather(*(
            locker(url, group, f"m{n:02d}", 1300 + n, taken, conflicts)
            for n in range(LOCKERS))), 120)
        _, end = await store.get()
        events = await history(url, store.key, start, end)
    by_index = dict(events)
    for name, index in taken:
        assert name in decode(by_index[index]).holder_list, (name, index)
    return events, sum(wins), sum(conflicts)


def test_concurrent_lockers_never_exceed_max_in_the_recorded_history(store: Store) -> None:
    group = f"race-{uuid.uuid4().hex[:8]}"
    events, wins, conflicts = asyncio.run(run_lockers(store.url, group))
    print(f"{store.backend}: {wins} wins, {conflicts} lost compare-and-swaps, "
          f"{len(events)} writes")
    assert conflicts > 0, "no compare-and-swap ever lost: the run raced nothing"
    assert wins >= ROUNDS, "the lockers made almost no progress"
    peak = 0
    for index, text in events:
        value = decode(text)
        holders = value.holder_list
        assert len(holders) <= MAX, f"index {index}: {text}"
        assert value.semaphore == MAX - len(holders), f"index {index}: {text}"
        assert list(holders) == sorted(set(holders)), f"index {index}: {text}"
        peak = max(peak, len(holders))
    # every win is one lock write and one unlock write, and nothing else wrote the key
    assert len(events) == 2 * wins
    assert peak >= 2, "the run never had two holders at once: it tested no concurrency"
    final = decode(events[-1][1])
    assert (final.semaphore, final.holder_list) == (MAX, ())


def test_concurrent_locksmithctl_processes_take_exactly_max_slots(store: Store) -> None:
    group = f"procs-{uuid.uuid4().hex[:8]}"
    base = [PYTHON, "-m", "flotilla.daemons.locksmith.ctl", "-endpoint", store.url,
            "-group", group]
    assert subprocess.run([*base, "set-max", "3"], env=env(), capture_output=True,
                          timeout=30).returncode == 0
    procs = [subprocess.Popen([*base, "lock", f"host-{n}"], env=env(), text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for n in range(8)]
    results = []
    for proc in procs:
        _out, err = proc.communicate(timeout=60)
        results.append((proc.returncode, err))
    assert sorted(code for code, _ in results) == [0, 0, 0, 1, 1, 1, 1, 1]
    assert {err for code, err in results if code} == {"Error locking: semaphore is at 0\n"}
    status = subprocess.run([*base, "status"], env=env(), capture_output=True, text=True,
                            timeout=30).stdout
    winners = sorted(f"host-{n}" for n, (code, _) in enumerate(results) if code == 0)
    assert status == "Available: 0\nMax: 3\n\nMACHINE ID\n" + "".join(w + "\n" for w in winners)
