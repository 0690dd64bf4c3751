"""Just enough systemd unit-file parsing to validate Ignition units.

Ignition refuses unit contents that systemd's own parser would choke on and warns when an
enabled unit has no [Install] section (enabling it would do nothing). Both only need the
section headers, so this reads those and nothing else.
"""

from __future__ import annotations


class UnitSyntaxError(ValueError):
    pass


def sections(contents: str) -> list[str]:
    """Names of the sections in ``contents``, in order; raise on a malformed header."""
    names: list[str] = []
    for raw in contents.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            if not line.endswith("]"):
                raise UnitSyntaxError("unable to find end of section")
            names.append(line[1:-1])
    return names
