"""The semaphore in the store: locksmith 0.6's wire calls through the shared KVClient.

Every change is read, mutate (the pure functions of :mod:`.semaphore`), then write with
``prevIndex`` set to the index just read, so two machines can never both see the last free
slot: the second write fails with etcd error 101 and is retried on a fresh read, after a
short, jittered, growing pause (bounded: a semaphore fought over for that long is
reported, not spun on). The key is created with ``prevExist=false`` first, and error 105
(somebody created it already) is the normal case, as upstream.

Renewal records are written only by us, each under its own key beside the semaphore;
locksmith 0.6 never reads them. A stale holder is taken out of the semaphore by the same
compare-and-swap, so a reclaim racing a lock or an unlock loses cleanly and re-reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable

from ..kvclient import KeyNotFound, KVClient, NodeExist, TestFailed
from . import semaphore as sem_mod
from .semaphore import (
    HolderExists,
    HolderNotFound,
    Renewal,
    Semaphore,
    decode,
    decode_renewal,
    encode,
    encode_renewal,
)

log = logging.getLogger(__name__)


class Contended(Exception):
    """The semaphore kept changing under us for every attempt."""


class SemaphoreStore:
    """One group's semaphore over ``client``; ``attempts`` bounds compare-and-swap retries."""

    def __init__(self, client: KVClient, group: str = "", *, attempts: int = 64,
                 first_pause: float = 0.005, max_pause: float = 0.25,
                 rng: random.Random | None = None) -> None:
        self.client = client
        self.group = group
        self.key = sem_mod.semaphore_key(group)
        self.attempts = attempts
        self.first_pause = first_pause
        self.max_pause = max_pause
        self.rng = rng or random.Random()
        self.conflicts = 0

    async def init(self) -> None:
        """Creates the key with locksmith's initial value unless it exists."""
        with contextlib.suppress(NodeExist):
            await self.client.create(self.key, encode(sem_mod.INITIAL))

    async def get(self) -> tuple[Semaphore, int]:
        """The value and its modifiedIndex (a plain read, as upstream)."""
        reply = await self.client.get(self.key)
        return decode(reply.node.value or ""), reply.node.modified_index

    async def update(self, change: Callable[[Semaphore], Semaphore | None]
                     ) -> tuple[Semaphore, Semaphore, int]:
        """Applies ``change`` by compare-and-swap; returns (old, new, index written).

        ``change`` returning None means "nothing to write" (new is old). LockErrors from
        it propagate unchanged.
        """
        pause = self.first_pause
        for _ in range(self.attempts):
            try:
                old, index = await self.get()
            except KeyNotFound:
                await self.init()
                continue
            new = change(old)
            if new is None:
                return old, old, index
            try:
                reply = await self.client.compare_and_swap(self.key, encode(new),
                                                           prev_index=index)
            except TestFailed:
                self.conflicts += 1
                await asyncio.sleep(pause * (0.5 + self.rng.random()))
                pause = min(pause * 2, self.max_pause)
                continue
            return old, new, reply.node.modified_index
        raise Contended(f"{self.key}: changed by others on each of {self.attempts} attempts")

    async def lock(self, holder: str) -> bool:
        """Takes a slot; True when taken now, False when ``holder`` already had one
        (locking is idempotent, so a machine that holds the lock can reboot again)."""
        def take(current: Semaphore) -> Semaphore | None:
            if current.holds(holder):
                return None
            return sem_mod.lock(current, holder)

        old, new, _ = await self.update(take)
        return new is not old

    async def unlock(self, holder: str) -> None:
        """Gives the slot back; HolderNotFound when ``holder`` has none."""
        await self.update(lambda current: sem_mod.unlock(current, holder))
        await self.forget(holder)

    async def unlock_if_held(self, holder: str) -> bool:
        try:
            await self.unlock(holder)
        except HolderNotFound:
            return False
        return True

    async def set_max(self, new_max: int) -> tuple[int, Semaphore]:
        old, new, _ = await self.update(lambda current: sem_mod.set_max(current, new_max))
        return old.max, new

    async def wait_for_free(self, timeout: float) -> bool:
        """Waits up to ``timeout`` seconds for the semaphore to have a free slot; True
        when it has one. Watches the key (v2 ``wait``/``waitIndex``), so a slot given
        back ends the wait at once; any write wakes it to look again."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            current, index = await self.get()
            if current.semaphore > 0:
                return True
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            try:
                await asyncio.wait_for(self.client.wait(self.key, wait_index=index + 1),
                                       remaining)
            except TimeoutError:
                return False

    # ------------------------------------------------------------------ renewals

    async def renew(self, holder: str, now: float) -> None:
        """Records that ``holder`` is alive and still needs its slot."""
        await self.client.set(sem_mod.renewal_key(holder, self.group),
                              encode_renewal(Renewal(holder, now)))

    async def forget(self, holder: str) -> None:
        with contextlib.suppress(KeyNotFound):
            await self.client.delete(sem_mod.renewal_key(holder, self.group))

    async def renewals(self) -> list[Renewal]:
        try:
            reply = await self.client.get(sem_mod.renewal_dir(self.group), recursive=True)
        except KeyNotFound:
            return []
        records = (decode_renewal(node.value or "") for node in reply.node.leaves()
                   if not node.dir)
        return [r for r in records if r is not None]

    async def reclaim_stale(self, now: float, max_age: float) -> list[str]:
        """Removes holders whose last renewal is older than ``max_age``; returns them."""
        records = await self.renewals()
        reclaimed: list[str] = []
        current, _ = await self.get()
        for holder in sem_mod.stale_holders(current, records, now, max_age):
            def drop(value: Semaphore, holder: str = holder) -> Semaphore | None:
                if not value.holds(holder):
                    return None
                return sem_mod.unlock(value, holder)

            old, new, _ = await self.update(drop)
            if new is not old:
                log.warning("reclaimed the reboot slot of %s: not renewed for more than %.0fs",
                            holder, max_age)
                reclaimed.append(holder)
            await self.forget(holder)
        return reclaimed

    async def fleet_machines(self) -> set[str] | None:
        """IDs in fleet's machine list; None when fleet's directory does not exist."""
        try:
            reply = await self.client.get(sem_mod.FLEET_MACHINES, recursive=True)
        except KeyNotFound:
            return None
        return sem_mod.fleet_machine_ids(node.key for node in reply.node.leaves()
                                         if not node.dir)

    async def departed(self, now: float, grace: float) -> list[str]:
        """Holders gone from fleet's machine list (see :func:`.semaphore.departed_holders`)."""
        current, _ = await self.get()
        return sem_mod.departed_holders(current, await self.fleet_machines(),
                                        await self.renewals(), now, grace)

    async def reclaim_departed(self, now: float, grace: float) -> list[str]:
        """Takes the slots of departed holders back, each by compare-and-swap."""
        reclaimed: list[str] = []
        for holder in await self.departed(now, grace):
            def drop(value: Semaphore, holder: str = holder) -> Semaphore | None:
                if not value.holds(holder):
                    return None
                return sem_mod.unlock(value, holder)

            old, new, _ = await self.update(drop)
            if new is not old:
                log.warning("reclaimed the reboot slot of %s: its machine left fleet's "
                            "machine list (%s/%s/object is gone)", holder,
                            sem_mod.FLEET_MACHINES, holder)
                reclaimed.append(holder)
            await self.forget(holder)
        return reclaimed


__all__ = ["Contended", "HolderExists", "HolderNotFound", "SemaphoreStore"]
