"""Garbage-collector settings for kvd's serving process.

Every request allocates many small container objects (futures, tasks, request and
response objects, log entries), so with CPython's default first-generation threshold
(700 allocations) a collection runs every few requests, and each older-generation pass
walks the Raft log and the store. Profiles of a busy leader put a large share of samples
on allocation sites that were really paying for those collections. Rarer young
collections, and freezing the objects that exist at start-up (modules, configuration)
out of every pass, cut CPU per write by about a quarter. Reference cycles are still
collected; they only wait longer. A young threshold of 10,000 was as fast as 50,000
in measurements and keeps less garbage waiting (RSS with 20,000 keys: +5 MiB over the
defaults).
"""

from __future__ import annotations

import gc

#: objects allocated (net) between young-generation collections
YOUNG_THRESHOLD = 10_000
#: young collections per middle-generation one; middle per old
MIDDLE_THRESHOLD = 20
OLD_THRESHOLD = 100


def tune_for_serving() -> None:
    """Freeze start-up objects and make collections rarer; call once before serving."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, MIDDLE_THRESHOLD, OLD_THRESHOLD)
