"""``flotilla-ignition validate``: the ``ignition-validate`` command, same output and codes.

The report goes to stdout and a fatal report exits 1; a config that cannot be parsed at all
(unknown version, empty input) prints ``couldn't parse config: <reason>`` on stderr.
Warnings alone exit 0, as upstream.
"""

from __future__ import annotations

import sys
from typing import TextIO

from flotilla.ignition.config import ConfigError, parse


def run_validate(raw: bytes, out: TextIO, err: TextIO) -> int:
    try:
        parsed = parse(raw)
    except ConfigError as exc:
        if exc.report.entries:
            out.write(str(exc.report))
            return 1
        err.write(f"couldn't parse config: {exc.message}\n")
        return 1
    out.write(str(parsed.report))
    return 0


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        sys.stderr.write("usage: flotilla-ignition validate FILE|-\n")
        return 2
    name = argv[0]
    try:
        if name == "-":
            raw = sys.stdin.buffer.read()
        else:
            with open(name, "rb") as handle:
                raw = handle.read()
    except OSError as exc:
        sys.stderr.write(f"failed to open {name}: {exc.strerror}\n")
        return 1
    return run_validate(raw, sys.stdout, sys.stderr)
