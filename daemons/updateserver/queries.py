"""The statements of the Omaha hot path, built once with bound parameters.

A check runs a dozen statements; building each SQLAlchemy construct anew per check cost
more than executing it (profiled: about 40% of a check went to constructing and coercing
clauses). Built once here, each is only bound and run. Parameter names carry a ``b_``
prefix where SQLAlchemy reserves the column's own name for SET clauses.
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy import bindparam as p
from sqlalchemy.dialects.sqlite import dialect as sqlite_dialect

from .schema import (
                  applications,
                  channel_floors,
                  channels,
                  groups,
                  instance_apps,
                  instances,
                  packages,
)

ia = instance_apps.c

APP_EXISTS = sa.select(applications.c.id).where(applications.c.id == p("app_id"))
GROUP_BY_TRACK = (sa.select(groups)
                  .where(groups.c.application_id == p("app_id"),
                         sa.or_(groups.c.track == p("track"), groups.c.id == p("track")))
                  .with_for_update())
INSTANCE_FACTS = sa.select(instances.c.ip, instances.c.alias, instances.c.oem,
                           instances.c.oem_version, instances.c.aleph_version).where(
    instances.c.id == p("b_id"))
INSTANCE_UPDATE = instances.update().where(instances.c.id == p("b_id")).values(
    ip=p("b_ip"), alias=p("b_alias"), oem=p("b_oem"), oem_version=p("b_oem_version"),
    aleph_version=p("b_aleph_version"))
INSTANCE_APP = sa.select(instance_apps).where(ia.instance_id == p("b_id"),
                                              ia.application_id == p("app_id"))
_SAVE_VALUES = {"group_id": p("b_group"), "version": p("b_version"), "status": p("b_status"),
                "last_check_ts": p("b_check"), "last_update_granted_ts": p("b_granted"),
                "last_update_version": p("b_last_version"),
                "update_in_progress": p("b_in_progress")}
_SAVE_WHERE = (ia.instance_id == p("b_id"), ia.application_id == p("app_id"))
SAVE = instance_apps.update().where(*_SAVE_WHERE).values(**_SAVE_VALUES)
SAVE_WITH_REASON = instance_apps.update().where(*_SAVE_WHERE).values(
    **_SAVE_VALUES, last_reason=p("b_reason"), last_reason_detail=p("b_detail"))
CHANNEL = sa.select(channels).where(channels.c.id == p("channel_id"))
FLOORS = sa.select(channel_floors).where(channel_floors.c.channel_id == p("channel_id"))
GRANTED_IN_PERIOD = sa.select(sa.func.count(), sa.func.min(ia.last_update_granted_ts)).where(
    ia.group_id == p("group_id"), ia.last_update_granted_ts > p("since"))
IN_PROGRESS = sa.select(sa.func.count()).where(
    ia.group_id == p("group_id"), ia.update_in_progress.is_(True),
    ia.last_update_granted_ts > p("cutoff"))
TIMED_OUT = sa.select(sa.func.count()).where(
    ia.group_id == p("group_id"), ia.update_in_progress.is_(True),
    ia.last_update_granted_ts <= p("cutoff"))
ATTEMPTED = sa.select(ia.instance_id).where(
    ia.group_id == p("group_id"), ia.last_update_version == p("version"),
    ia.last_update_granted_ts.is_not(None), ia.update_in_progress.is_(False)).limit(1)
PACKAGE = sa.select(packages).where(packages.c.id == p("package_id"))


# ----------------------------------------------------------------- running them on SQLite
#
# Even built once, a statement run through ``Connection.execute`` spent about 200 us in
# SQLAlchemy (cache lookup, parameter processing, result set-up, events) around 30 us in
# sqlite3; a check ran eight of them. On SQLite the hot statements are therefore compiled
# to SQL text once and run on the DBAPI cursor of the same connection, inside the same
# transaction. Rows come back as named tuples with Boolean columns turned into bools, as
# SQLAlchemy would return them. Other databases go through ``Connection.execute`` as before.

_SQLITE = sqlite_dialect(paramstyle="qmark")


@dataclass(frozen=True)
class Prepared:
    """One statement as SQLite text: its SQL, parameter names in order, and row shape."""

    sql: str
    names: tuple[str, ...]
    row: type[tuple[Any, ...]] | None
    booleans: tuple[int, ...]
    fixed: Mapping[str, Any]  # values bound in the construct itself, such as a LIMIT

    def values(self, params: Mapping[str, Any]) -> list[Any]:
        return [params[n] if n in params else self.fixed[n] for n in self.names]


_prepared: dict[int, Prepared] = {}


def prepare(stmt: sa.Executable) -> Prepared:
    """The statement's SQLite form, compiled on first use and kept (statements are constants)."""
    done = _prepared.get(id(stmt))
    if done is not None:
        return done
    compiled = stmt.compile(dialect=_SQLITE)  # type: ignore[attr-defined]
    row = None
    booleans: tuple[int, ...] = ()
    if isinstance(stmt, sa.Select):
        columns = list(stmt.selected_columns)
        row = namedtuple("Row", [c.key or f"c{i}" for i, c in enumerate(columns)],  # type: ignore[misc]
                         rename=True)
        booleans = tuple(i for i, c in enumerate(columns) if isinstance(c.type, sa.Boolean))
    done = Prepared(compiled.string, tuple(compiled.positiontup or ()), row, booleans,
                    dict(compiled.params))
    _prepared[id(stmt)] = done
    return done


def _is_sqlite(conn: sa.Connection) -> bool:
    return conn.dialect.name == "sqlite"


def rows(conn: sa.Connection, stmt: sa.Select[Any], params: Mapping[str, Any]) -> list[Any]:
    """All rows of a hot SELECT."""
    if not _is_sqlite(conn):
        return list(conn.execute(stmt, params))
    prep = prepare(stmt)
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        found = cursor.execute(prep.sql, prep.values(params)).fetchall()
    finally:
        cursor.close()
    assert prep.row is not None
    if prep.booleans:
        flags = prep.booleans
        found = [tuple(bool(v) if i in flags and v is not None else v
                       for i, v in enumerate(r)) for r in found]
    return [prep.row._make(r) for r in found]  # type: ignore[attr-defined]


def first(conn: sa.Connection, stmt: sa.Select[Any], params: Mapping[str, Any]) -> Any:
    """The first row of a hot SELECT, or None."""
    found = rows(conn, stmt, params)
    return found[0] if found else None


def run(conn: sa.Connection, stmt: sa.Executable, params: Mapping[str, Any]) -> int:
    """A hot INSERT or UPDATE; the number of rows it touched."""
    if not _is_sqlite(conn):
        return conn.execute(stmt, params).rowcount
    prep = prepare(stmt)
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        return cursor.execute(prep.sql, prep.values(params)).rowcount
    finally:
        cursor.close()
