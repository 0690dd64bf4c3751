"""Validation reports in Ignition's wording.

An entry reads ``<kind> at <path>, line <L> col <C>: <message>``; the path is ``$`` joined
with the JSON field names and indices. Only errors are fatal: warnings (unknown keys, an
enabled unit without an [Install] section) are printed but never stop provisioning.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from flotilla.ignition.jsonpos import Path, Positions

ERROR = "error"
WARNING = "warning"


def format_path(path: Path) -> str:
    return "$" + "".join(f".{part}" for part in path)


@dataclass
class Entry:
    kind: str
    message: str
    path: Path | None = None
    # Explicit offset (syntax/type errors) or None to correlate from the path.
    offset: int | None = None
    at_key: bool = False
    line: int = 0
    col: int = 0

    def __str__(self) -> str:
        where = f"line {self.line} col {self.col}" if self.line or self.col else ""
        if self.path is None:
            return f"{self.kind} at {where or 'line 0 col 0'}: {self.message}"
        if where:
            return f"{self.kind} at {format_path(self.path)}, {where}: {self.message}"
        return f"{self.kind} at {format_path(self.path)}: {self.message}"


@dataclass
class Report:
    entries: list[Entry] = field(default_factory=list)

    def error(self, path: Path | None, message: str) -> None:
        self.entries.append(Entry(ERROR, message, path))

    def warning(self, path: Path | None, message: str, at_key: bool = False) -> None:
        self.entries.append(Entry(WARNING, message, path, at_key=at_key))

    def extend(self, other: Report) -> None:
        self.entries.extend(other.entries)

    @property
    def fatal(self) -> bool:
        return any(entry.kind == ERROR for entry in self.entries)

    def correlate(self, positions: Positions | None) -> None:
        """Attach line and column numbers from the source text, as Ignition does."""
        if positions is None:
            return
        for entry in self.entries:
            if entry.line or entry.col:
                continue
            if entry.offset is not None:
                if entry.offset:
                    entry.line, entry.col = positions.line_col(entry.offset)
                continue
            if entry.path is None:
                continue
            if entry.at_key and entry.path in positions.keys:
                offset = positions.keys[entry.path]
            else:
                offset = positions.closest(entry.path)
            entry.line, entry.col = positions.line_col(offset)

    def __str__(self) -> str:
        return "".join(f"{entry}\n" for entry in self.entries)
