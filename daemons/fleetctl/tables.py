"""fleetctl's table output: columns padded with tabs to multiples of 8, as Go's
tabwriter (minwidth 0, tabwidth 8, padding 1, padchar tab) lays them out, so scripts
that parse fleetctl output keep working."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

TAB_WIDTH = 8


def render(rows: Sequence[Sequence[str]]) -> str:
    if not rows:
        return ""
    columns = max(len(row) for row in rows)
    widths = [0] * columns
    for row in rows:
        for index, cell in enumerate(row[:-1]):
            widths[index] = max(widths[index], len(cell) + 1)
    widths = [-(-w // TAB_WIDTH) * TAB_WIDTH for w in widths]
    lines = []
    for row in rows:
        parts = []
        for index, cell in enumerate(row):
            if index == len(row) - 1:
                parts.append(cell)
            else:
                tabs = -(-(widths[index] - len(cell)) // TAB_WIDTH)
                parts.append(cell + "\t" * max(1, tabs))
        lines.append("".join(parts))
    return "\n".join(lines) + "\n"


def machine_id_legend(machine_id: str, full: bool) -> str:
    return machine_id if full else f"{machine_id[:8]}..."


def machine_full_legend(machine_id: str, ips: Mapping[str, str], full: bool) -> str:
    legend = machine_id_legend(machine_id, full)
    ip = ips.get(machine_id, "")
    return f"{legend}/{ip}" if ip else legend
