"""Stopping background tasks without hanging on one that will not end.

On Python 3.11 a cancellation that lands while an ``asyncio.timeout`` (aiohttp uses one
per request) is expiring can come back as ``TimeoutError``; a retry loop that catches
it then never ends, and awaiting the cancelled task would block fleetd's stop until
systemd kills it. Retry loops ask :func:`cancel_requested` before retrying, and
:func:`cancel_and_wait` bounds the wait in any case.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

log = logging.getLogger(__name__)

#: How long a stop waits for cancelled tasks before going on without them.
CANCEL_WAIT_SECONDS = 10.0


def cancel_requested() -> bool:
    """True when the running task has been asked to stop (even if the cancel was lost)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


async def cancel_and_wait(tasks: Iterable[asyncio.Task[object]],
                          timeout: float = CANCEL_WAIT_SECONDS) -> None:
    """Cancel ``tasks`` and wait at most ``timeout`` seconds for them to end."""
    pending = [task for task in tasks if not task.done()]
    for task in pending:
        task.cancel()
    if not pending:
        return
    _, stuck = await asyncio.wait(pending, timeout=timeout)
    for task in stuck:
        log.warning("task %s did not stop within %.0fs; going on without it",
                    task.get_name(), timeout)
