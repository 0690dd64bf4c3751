"""Raft consensus: a pure, deterministic core (`core.RaftNode`) and its data types.

The core does no I/O and reads no clock: the shell calls ``tick()`` on a timer, ``step()``
for each peer message and ``propose()`` for client writes, then drains ``ready()``,
persists, sends, applies and calls ``advance()``. See `messages.Ready` for the rules.
"""
