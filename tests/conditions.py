"""Waiting on conditions with a deadline, and picking free ports: what every tier needs.

Tests never sleep and hope; they poll a condition until it holds or a deadline passes, and
a timeout names what was awaited and the last value seen, so the failure explains itself.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any


def wait_until(
    condition: Callable[[], Any],
    timeout: float,
    what: str,
    *,
    interval: float = 0.1,
    tolerate: tuple[type[BaseException], ...] = (),
) -> Any:
    """Polls ``condition`` until it returns something truthy and returns that value.

    Exceptions of the ``tolerate`` types count as "not yet" (the thing awaited may not
    exist yet); any other exception propagates at once. Raises AssertionError on timeout.
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = condition()
        except tolerate as error:
            last = error
        if last and not isinstance(last, BaseException):
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")
        time.sleep(interval)


def free_port(host: str, preferred: int | None = None) -> int:
    """A TCP port free on ``host`` right now: ``preferred`` if it is, else any."""
    with socket.socket() as sock:
        if preferred is not None:
            try:
                sock.bind((host, preferred))
                return sock.getsockname()[1]
            except OSError:
                pass
        sock.bind((host, 0))
        return sock.getsockname()[1]


async def async_wait_until(
    condition: Callable[[], Awaitable[Any]],
    timeout: float,
    what: str,
    *,
    interval: float = 0.1,
) -> Any:
    """:func:`wait_until` for asyncio code: awaits ``condition`` until it is truthy.

    The event loop keeps running between polls, so requests already in flight (watches
    waiting for the awaited change) are still served. Raises AssertionError on timeout.
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = await condition()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")
        await asyncio.sleep(interval)
