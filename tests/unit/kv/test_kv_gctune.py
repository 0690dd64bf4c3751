"""kvd's collector settings: rarer young collections, start-up objects frozen."""

from __future__ import annotations

import gc

from flotilla.daemons.kv import gctune


def test_tune_for_serving_raises_thresholds_and_freezes_startup_objects() -> None:
    before = gc.get_threshold()
    try:
        gctune.tune_for_serving()
        assert gc.get_threshold() == (
            gctune.YOUNG_THRESHOLD, gctune.MIDDLE_THRESHOLD, gctune.OLD_THRESHOLD)
        assert gc.get_threshold()[0] > before[0]
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
