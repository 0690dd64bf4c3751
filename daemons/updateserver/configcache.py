"""What a check reads besides the instance itself, kept between checks on SQLite.

An idle check used to read the app, the group, the channel, its floors and their packages
afresh: five of its eight statements, for rows that change when an operator acts, not when
a machine asks. They are kept here, keyed as the check looks them up, and dropped whole
when the database changed under them. The test is SQLite's ``PRAGMA data_version`` on the
one connection checks use: it moves when any *other* connection commits, which covers the
REST API's writes (its own pooled connections) and every other server process on the same
file. The check connection's own writes to groups (safe mode, a rollout starting or ending)
do not move it, so the store calls :meth:`ConfigCache.forget` when it makes them.

Reading the version after ``BEGIN IMMEDIATE`` holds the write lock means no commit can
land between the test and the use. A busy second writer (another server answering checks)
moves the version on each of its commits, so there the cache only saves a little; it is
never wrong.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .model import Channel, Group, Package


@dataclass
class ConfigCache:
    """Memoised lookups of one data version; empty until a check fills it."""

    version: int | None = None
    apps: dict[str, bool] = field(default_factory=dict)
    groups: dict[tuple[str, str], Group | None] = field(default_factory=dict)
    channels: dict[str, tuple[Channel | None, dict[str, Package]]] = field(default_factory=dict)

    def forget(self) -> None:
        """Drops everything: the next check reads from the database again."""
        self.version = None
        self.apps.clear()
        self.groups.clear()
        self.channels.clear()

    def validate(self, dbapi_conn: Any) -> None:
        """Keeps the entries only if nobody else committed since they were read."""
        cursor = dbapi_conn.cursor()
        try:
            version = cursor.execute("PRAGMA data_version").fetchone()[0]
        finally:
            cursor.close()
        if version != self.version:
            self.forget()
            self.version = version
