"""The built .deb/.rpm for tests, built once per source state (see packaging/build.py)."""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _builder():
    spec = importlib.util.spec_from_file_location(
        "flotilla_packaging_build", REPO / "packaging/build.py"
    )
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


@functools.cache
def built_packages() -> dict[str, Path]:
    """{'deb': path, 'rpm': path}, reusing a build made from identical sources."""
    return _builder().build(["deb", "rpm"], REPO / "packaging/out")


def console_scripts() -> list[str]:
    return sorted(_builder().project().get("scripts", {}))


def shipped_units() -> list[str]:
    builder = _builder()
    return sorted(
        p.name for p in (REPO / "units").iterdir()
        if p.is_file() and p.name.endswith(builder.UNIT_SUFFIXES)
    )
