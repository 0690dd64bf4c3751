"""The update server's storage: SQLAlchemy Core over SQLite (WAL) or PostgreSQL.

Every Omaha exchange for one app is one transaction: the instance is registered, its events
applied, the group's counts read and the grant written together. On SQLite the transaction
starts with ``BEGIN IMMEDIATE``, which takes the database's write lock before the counts are
read, so two checks can never both see the last free slot of a rate limit (a plain
``BEGIN`` would let both read and then one fail or, worse, both write). On PostgreSQL the
group's row is locked with ``SELECT ... FOR UPDATE`` for the same effect. Reads for the REST
API use a second engine whose transactions are deferred, so they never wait on the lock.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from ..update.codes import EventResult
from . import queries as Q
from .configcache import ConfigCache
from .model import (
    Channel,
    Floor,
    Group,
    InstanceApp,
    InstanceStatus,
    Package,
    newer,
)
from .omaha_wire import AppAnswer, AppRequest
from .policy import Reason, RolloutStats, apply_event, decide
from .records import _instance_app, group_from_row, package_from_row
from .schema import (
    activity,
    applications,
    channel_floors,
    channels,
    events,
    groups,
    instance_apps,
    instances,
    metadata,
    migrate,
    packages,
    status_history,
)

#: The OS image's app id without braces, as stored (Flatcar's and CoreOS's).
OS_APP_ID = "e96281a6-d1af-4bde-9a0a-97b76e56dc57"


def normal_app_id(app_id: str) -> str:
    """App ids compare without braces and case: clients send ``{E96281A6-...}`` too."""
    return app_id.strip().strip("{}").lower()


def new_id() -> str:
    return str(uuid.uuid4())


class NotFound(LookupError):
    """A named thing does not exist; the message names it."""


class Conflict(ValueError):
    """A write that would break a rule (a duplicate name, a foreign package)."""


def _sqlite_engine(url: str, *, immediate: bool) -> sa.Engine:
    engine = sa.create_engine(url, connect_args={"check_same_thread": False, "timeout": 30},
                              pool_size=8, max_overflow=8)

    @sa.event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # transactions are begun below, not by pysqlite
        cursor = dbapi_conn.cursor()
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON",
                       "busy_timeout=30000"):
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _begin(conn: sa.Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def row_dict(row: Any) -> dict[str, Any]:
    return dict(row._mapping)


class Store:
    """The database behind the Omaha endpoint and the REST API."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._write_lock = threading.Lock()
        self.sqlite = url.startswith("sqlite")
        if self.sqlite:
            self.writer = _sqlite_engine(url, immediate=True)
            self.reader = _sqlite_engine(url, immediate=False)
        else:
            self.writer = self.reader = sa.create_engine(url, pool_size=8, max_overflow=8)
        self._check_conn: sa.Connection | None = None
        self._cache: ConfigCache | None = ConfigCache() if self.sqlite else None

    @contextlib.contextmanager
    def _write(self) -> Iterator[sa.Connection]:
        """A write transaction; this process's writers queue on a lock first.

        SQLite's busy handler sleeps in growing steps while another connection holds the
        write lock, so threads of one process contending there would idle for
        milliseconds per check; queueing on a Python lock hands the database over at
        once. Other processes on the same file still wait in SQLite's busy handler.
        """
        with self._write_lock, self.writer.begin() as conn:
            yield conn

    @classmethod
    def open_sqlite(cls, path: str) -> Store:
        return cls(f"sqlite:///{path}")

    def migrate(self, now: float) -> list[int]:
        with self._write() as conn:
            return migrate(conn, now)

    @contextlib.contextmanager
    def _check_write(self) -> Iterator[sa.Connection]:
        """A check's write transaction, on SQLite always on the same connection.

        One connection is what makes ``PRAGMA data_version`` a test of other writers (see
        configcache), and it skips the pool's check-out on every check.
        """
        if not self.sqlite:
            with self._write() as conn:
                yield conn
            return
        with self._write_lock:
            if self._check_conn is None or self._check_conn.closed:
                self._check_conn = self.writer.connect()
            with self._check_conn.begin():
                assert self._cache is not None
                self._cache.validate(self._check_conn.connection.driver_connection)
                yield self._check_conn

    def _forget(self) -> None:
        """A check wrote to groups: cached groups may be stale (and a rollback too)."""
        if self._cache is not None:
            self._cache.forget()

    def close(self) -> None:
        with self._write_lock:
            if self._check_conn is not None:
                self._check_conn.close()
                self._check_conn = None
        self.writer.dispose()
        self.reader.dispose()

    # ------------------------------------------------------------------ generic records

    def insert(self, table: sa.Table, values: Mapping[str, Any]) -> dict[str, Any]:
        try:
            with self._write() as conn:
                conn.execute(table.insert().values(**values))
                key = [c.name for c in table.primary_key.columns]
                return row_dict(conn.execute(sa.select(table).where(
                    *(table.c[k] == values[k] for k in key))).one())
        except sa.exc.IntegrityError as err:
            raise Conflict(_integrity_words(table, err)) from err

    def get(self, table: sa.Table, ident: str, **scope: str) -> dict[str, Any]:
        with self.reader.begin() as conn:
            row = conn.execute(sa.select(table).where(
                table.c.id == ident, *(table.c[k] == v for k, v in scope.items()))).first()
        if row is None:
            raise NotFound(f"{table.name[:-1]} {ident} not found")
        return row_dict(row)

    def update(self, table: sa.Table, ident: str, values: Mapping[str, Any],
               **scope: str) -> dict[str, Any]:
        try:
            with self._write() as conn:
                done = conn.execute(table.update().where(
                    table.c.id == ident, *(table.c[k] == v for k, v in scope.items())
                ).values(**values))
                if done.rowcount == 0:
                    raise NotFound(f"{table.name[:-1]} {ident} not found")
                return row_dict(conn.execute(sa.select(table).where(table.c.id == ident)).one())
        except sa.exc.IntegrityError as err:
            raise Conflict(_integrity_words(table, err)) from err

    def delete(self, table: sa.Table, ident: str, **scope: str) -> None:
        with self._write() as conn:
            done = conn.execute(table.delete().where(
                table.c.id == ident, *(table.c[k] == v for k, v in scope.items())))
        if done.rowcount == 0:
            raise NotFound(f"{table.name[:-1]} {ident} not found")

    def page(self, table: sa.Table, where: Iterable[Any], page: int, perpage: int,
             order: Any) -> tuple[int, list[dict[str, Any]]]:
        """One page (1-based) of rows and the total count, Nebraska's paging."""
        conditions = list(where)
        with self.reader.begin() as conn:
            total = conn.execute(sa.select(sa.func.count()).select_from(table)
                                 .where(*conditions)).scalar_one()
            rows = conn.execute(sa.select(table).where(*conditions).order_by(order)
                                .limit(perpage).offset((page - 1) * perpage)).all()
        return total, [row_dict(r) for r in rows]

    def update_channel(self, now: float, channel_id: str, values: Mapping[str, Any],
                       app_id: str) -> dict[str, Any]:
        """A channel change; pointing it at another package is recorded in the feed."""
        with self._write() as conn:
            before = conn.execute(sa.select(channels).where(
                channels.c.id == channel_id, channels.c.application_id == app_id)).first()
            if before is None:
                raise NotFound(f"channel {channel_id} not found")
            try:
                with conn.begin_nested():
                    conn.execute(channels.update().where(channels.c.id == channel_id)
                                 .values(**values))
            except sa.exc.IntegrityError as err:
                raise Conflict(_integrity_words(channels, err)) from err
            after = conn.execute(sa.select(channels).where(channels.c.id == channel_id)).one()
            if after.package_id != before.package_id and after.package_id is not None:
                version = conn.execute(sa.select(packages.c.version).where(
                    packages.c.id == after.package_id)).scalar_one()
                self.record_activity(conn, now, app_id, "channel_package_updated", "info",
                                     f"channel {after.name} now offers {version}",
                                     channel_id=channel_id, version=version)
            return row_dict(after)

    def floors(self, channel_id: str) -> list[dict[str, Any]]:
        with self.reader.begin() as conn:
            return [row_dict(r) for r in conn.execute(
                sa.select(channel_floors).where(channel_floors.c.channel_id == channel_id))]

    def set_floor(self, channel_id: str, package_id: str, reason: str) -> None:
        with self._write() as conn:
            channel = conn.execute(sa.select(channels).where(channels.c.id == channel_id)).first()
            package = conn.execute(sa.select(packages).where(packages.c.id == package_id)).first()
            if channel is None or package is None:
                raise NotFound(f"channel {channel_id} or package {package_id} not found")
            if channel.application_id != package.application_id:
                raise Conflict("a floor must be a package of the channel's application")
            conn.execute(channel_floors.delete().where(
                channel_floors.c.channel_id == channel_id,
                channel_floors.c.package_id == package_id))
            conn.execute(channel_floors.insert().values(
                channel_id=channel_id, package_id=package_id, floor_reason=reason))

    def delete_floor(self, channel_id: str, package_id: str) -> None:
        with self._write() as conn:
            done = conn.execute(channel_floors.delete().where(
                channel_floors.c.channel_id == channel_id,
                channel_floors.c.package_id == package_id))
        if done.rowcount == 0:
            raise NotFound(f"package {package_id} is not a floor of channel {channel_id}")

    def record_activity(self, conn: sa.Connection, now: float, app_id: str, klass: str,
                        severity: str, text: str, **refs: str | None) -> None:
        conn.execute(activity.insert().values(application_id=app_id, **{"class": klass},
                                              severity=severity, text=text, created_ts=now,
                                              **{k: v for k, v in refs.items()
                                                 if k != "version"},
                                              version=refs.get("version") or ""))

    def instance_apps(self, instance_id: str) -> list[dict[str, Any]]:
        with self.reader.begin() as conn:
            return [row_dict(r) for r in conn.execute(
                sa.select(instance_apps).where(instance_apps.c.instance_id == instance_id))]

    def history(self, instance_id: str, app_id: str, limit: int = 100) -> list[dict[str, Any]]:
        with self.reader.begin() as conn:
            return [row_dict(r) for r in conn.execute(
                sa.select(status_history).where(status_history.c.instance_id == instance_id,
                                                status_history.c.application_id == app_id)
                .order_by(status_history.c.id.desc()).limit(limit))]

    # ------------------------------------------------------------------------- Omaha

    def check_in(self, now: float, app: AppRequest, ip: str) -> AppAnswer:
        """One app's exchange: register, apply events, decide a check; one transaction."""
        with self._check_write() as conn:
            return self._exchange(conn, now, app, ip)

    def check_batch(self, clock: Callable[[], float],
                    work: Sequence[tuple[AppRequest, str]]) -> list[tuple[Any, bool]]:
        """Several exchanges in one transaction, each in a savepoint of its own.

        One commit for a round of queued checks instead of one each (a commit was a third
        of a check's time); a check that raises rolls back to its savepoint alone and its
        exception is returned in its place, as ``(error, True)``. Nothing is answered
        before the commit, so a grant is still durable before the machine hears of it;
        if the commit fails, it raises and every check of the round fails.
        """
        out: list[tuple[Any, bool]] = []
        with self._check_write() as conn:
            raw = conn.connection.driver_connection if self.sqlite else None
            for app, ip in work:
                try:
                    if raw is None:
                        with conn.begin_nested():
                            out.append((self._exchange(conn, clock(), app, ip), False))
                        continue
                    raw.execute("SAVEPOINT flotilla_check")
                    try:
                        answer = self._exchange(conn, clock(), app, ip)
                    except BaseException:
                        raw.execute("ROLLBACK TO flotilla_check")
                        raw.execute("RELEASE flotilla_check")
                        raise
                    raw.execute("RELEASE flotilla_check")
                    out.append((answer, False))
                except Exception as err:  # that check's own failure, raised in its handler
                    self._forget()
                    out.append((err, True))
        return out

    def _exchange(self, conn: sa.Connection, now: float, app: AppRequest,
                  ip: str) -> AppAnswer:
        app_id = normal_app_id(app.app_id)
        cache = self._cache
        known_app = cache.apps.get(app_id) if cache is not None else None
        if known_app is None:
            known_app = Q.first(conn, Q.APP_EXISTS, {"app_id": app_id}) is not None
            if cache is not None:
                cache.apps[app_id] = known_app
        if not known_app:
            return AppAnswer(app.app_id, status="error-unknownApplication",
                             ping=app.ping, check_error="error-unknownApplication"
                             if app.updatecheck else "")
        found = self._group(conn, app_id, app.track)
        if found is None or not app.machine_id:
            why = "error-unknownGroup" if found is None else "error-noMachineId"
            return AppAnswer(app.app_id, status=why, ping=app.ping,
                             check_error=why if app.updatecheck else "")
        group = found
        before = self._register(conn, now, app, app_id, group.id, ip)
        inst = dataclasses.replace(before, version=app.version or before.version,
                                   group_id=group.id)
        for report in app.events:
            if inst.update_in_progress or report.result == EventResult.ERROR:
                # Kept while an update is under way (the instance's event timeline)
                # and for failures; the 3/2 every idle check carries is not news.
                conn.execute(events.insert(), {
                    "instance_id": app.machine_id, "application_id": app_id,
                    "event_type": report.type, "event_result": report.result,
                    "error_code": report.error_code,
                    "previous_version": report.previous_version, "created_ts": now})
            outcome = apply_event(inst, report.type, report.result,
                                  os_app=app_id == OS_APP_ID)
            if outcome.changed:
                self._history(conn, now, outcome.instance, "event",
                              f"event {report.type}/{report.result}"
                              + (f" error {report.error_code}" if outcome.failed else ""))
                inst = outcome.instance
            if outcome.completed:
                self._save(conn, inst, None)
                self._maybe_finished(conn, now, group, inst.version)
            if outcome.failed:
                self.record_activity(conn, now, app_id, "instance_update_failed", "error",
                                     f"instance {app.machine_id} failed its update to "
                                     f"{inst.last_update_version} (error "
                                     f"{report.error_code})", group_id=group.id,
                                     instance_id=app.machine_id,
                                     version=inst.last_update_version)
                if group.policy.safe_mode and group.policy.updates_enabled:
                    # Safe mode: "stop if an update fails" (Nebraska's dashboard words).
                    self._forget()
                    conn.execute(groups.update().where(groups.c.id == group.id)
                                 .values(policy_updates_enabled=False))
                    group = dataclasses.replace(group, policy=dataclasses.replace(
                        group.policy, updates_enabled=False))
                    self.record_activity(conn, now, app_id, "rollout_failed", "error",
                                         f"safe mode: updates paused for group "
                                         f"{group.name} after instance {app.machine_id} "
                                         "failed", group_id=group.id,
                                         version=inst.last_update_version)
        decision = None
        if app.updatecheck:
            decision = self._decide(conn, now, group, inst, app.multi_manifest_ok)
            if decision.completed:
                self._save(conn, decision.instance, decision)
                self._maybe_finished(conn, now, group, decision.instance.version)
            if decision.instance.status != inst.status or decision.granted:
                self._history(conn, now, decision.instance, decision.reason.value,
                              decision.detail)
            inst = decision.instance
        self._save(conn, inst, decision)
        status = decision.app_status if decision is not None else "ok"
        return AppAnswer(app.app_id, status=status, ping=app.ping, events=len(app.events),
                     decision=decision)

    def _group(self, conn: sa.Connection, app_id: str, track: str) -> Group | None:
        """The group a check's track names (its track or its id), through the cache."""
        cache = self._cache
        if cache is not None and (app_id, track) in cache.groups:
            return cache.groups[(app_id, track)]
        # On PostgreSQL this also locks the group's row for the rest of the check.
        row = Q.first(conn, Q.GROUP_BY_TRACK, {"app_id": app_id, "track": track})
        group = group_from_row(row) if row is not None else None
        if cache is not None:
            cache.groups[(app_id, track)] = group
        return group

    def _channel(self, conn: sa.Connection, channel_id: str) -> tuple[Channel | None,
                                                                      dict[str, Package]]:
        """A channel with its floors and the packages they name, through the cache."""
        cache = self._cache
        if cache is not None and channel_id in cache.channels:
            return cache.channels[channel_id]
        channel = None
        known: dict[str, Package] = {}
        crow = Q.first(conn, Q.CHANNEL, {"channel_id": channel_id})
        if crow is not None:
            floor_rows = Q.rows(conn, Q.FLOORS, {"channel_id": crow.id})
            channel = Channel(crow.id, crow.application_id, crow.name, crow.package_id,
                              crow.color, tuple(Floor(f.package_id, f.floor_reason or
                                                      Floor.reason) for f in floor_rows))
            wanted = {f.package_id for f in channel.floors} | {crow.package_id}
            for package_id in sorted(i for i in wanted if i is not None):
                prow = Q.first(conn, Q.PACKAGE, {"package_id": package_id})
                if prow is not None:
                    known[prow.id] = package_from_row(prow)
        if cache is not None:
            cache.channels[channel_id] = (channel, known)
        return channel, known

    def _register(self, conn: sa.Connection, now: float, app: AppRequest, app_id: str,
                  group_id: str, ip: str) -> InstanceApp:
        facts = {"ip": ip, "alias": app.alias, "oem": app.oem, "oem_version": app.oem_version,
                 "aleph_version": app.aleph_version}
        known = Q.first(conn, Q.INSTANCE_FACTS, {"b_id": app.machine_id})
        if known is None:
            conn.execute(instances.insert(), {"id": app.machine_id, "created_ts": now, **facts})
        elif known._asdict() != facts:
            Q.run(conn, Q.INSTANCE_UPDATE, {"b_id": app.machine_id,
                                            **{f"b_{k}": v for k, v in facts.items()}})
        row = Q.first(conn, Q.INSTANCE_APP, {"b_id": app.machine_id, "app_id": app_id})
        if row is not None:
            return _instance_app(row)
        fresh = InstanceApp(app.machine_id, app_id, group_id, app.version)
        conn.execute(instance_apps.insert().values(
            instance_id=fresh.instance_id, application_id=app_id, group_id=group_id,
            version=fresh.version, status=int(fresh.status)))
        self._history(conn, now, fresh, "registered", "first seen")
        return fresh

    def _history(self, conn: sa.Connection, now: float, inst: InstanceApp, reason: str,
                 detail: str) -> None:
        conn.execute(status_history.insert().values(
            instance_id=inst.instance_id, application_id=inst.app_id, group_id=inst.group_id,
            status=int(inst.status), version=inst.version, reason=reason, detail=detail,
            created_ts=now))

    def _save(self, conn: sa.Connection, inst: InstanceApp, decision: Any) -> None:
        values = {"b_id": inst.instance_id, "app_id": inst.app_id, "b_group": inst.group_id,
                  "b_version": inst.version, "b_status": int(inst.status),
                  "b_check": inst.last_check, "b_granted": inst.last_update_granted,
                  "b_last_version": inst.last_update_version,
                  "b_in_progress": inst.update_in_progress}
        if decision is None:
            Q.run(conn, Q.SAVE, values)
            return
        Q.run(conn, Q.SAVE_WITH_REASON, values | {"b_reason": decision.reason.value,
                                                  "b_detail": decision.detail})

    def _decide(self, conn: sa.Connection, now: float, group: Group, inst: InstanceApp,
                multi_manifest_ok: bool) -> Any:
        channel: Channel | None = None
        known: dict[str, Package] = {}
        if group.channel_id is not None:
            channel, known = self._channel(conn, group.channel_id)
        target = known.get(channel.package_id or "") if channel is not None else None
        # Only a grant consults the counts: an up-to-date check (most of them) skips them.
        stats = (self._stats(conn, now, group, target.version)
                 if target is not None and newer(target.version, inst.version)
                 else RolloutStats())
        decision = decide(now, group, channel, known, inst, stats,
                          multi_manifest_ok=multi_manifest_ok)
        refs = {"group_id": group.id, "channel_id": channel.id if channel else None}
        if decision.reason is Reason.NO_PACKAGE:
            self.record_activity(conn, now, group.app_id, "package_not_found", "warning",
                                 f"group {group.name} has no package to offer", **refs)
        if decision.disable_group:
            self._forget()
            conn.execute(groups.update().where(groups.c.id == group.id)
                         .values(policy_updates_enabled=False))
            self.record_activity(conn, now, group.app_id, "rollout_failed", "error",
                                 decision.detail, **refs)
        if decision.granted and decision.reason is not Reason.REOFFERED:
            self._forget()
            started = conn.execute(groups.update().where(
                groups.c.id == group.id, groups.c.rollout_in_progress.is_(False))
                .values(rollout_in_progress=True)).rowcount
            if started:
                self.record_activity(conn, now, group.app_id, "rollout_started", "info",
                                     f"rollout of {target.version if target else '?'} "
                                     f"started in group {group.name}",
                                     version=target.version if target else "", **refs)
        return decision

    def _maybe_finished(self, conn: sa.Connection, now: float, group: Group,
                        version: str) -> None:
        """Ends the group's rollout once no instance of it is left on another version."""
        if not conn.execute(sa.select(groups.c.rollout_in_progress)
                            .where(groups.c.id == group.id)).scalar_one():
            return
        behind = conn.execute(sa.select(sa.func.count()).where(
            instance_apps.c.group_id == group.id,
            instance_apps.c.version != version)).scalar_one()
        if behind == 0:
            self._forget()
            conn.execute(groups.update().where(groups.c.id == group.id)
                         .values(rollout_in_progress=False))
            self.record_activity(conn, now, group.app_id, "rollout_finished", "success",
                                 f"rollout of {version} finished in group {group.name}",
                                 group_id=group.id, version=version)

    def _stats(self, conn: sa.Connection, now: float, group: Group,
               target_version: str) -> RolloutStats:
        """The group's counts, as :class:`RolloutStats` defines them."""
        policy = group.policy
        cutoff = {"group_id": group.id, "cutoff": now - policy.update_timeout}
        granted, oldest = Q.first(conn, Q.GRANTED_IN_PERIOD, {
            "group_id": group.id, "since": now - policy.period_interval})
        in_progress = Q.first(conn, Q.IN_PROGRESS, cutoff)[0]
        timed_out = Q.first(conn, Q.TIMED_OUT, cutoff)[0]
        attempted = Q.first(conn, Q.ATTEMPTED, {"group_id": group.id,
                                                "version": target_version}) is not None
        return RolloutStats(granted, in_progress, timed_out, attempted, oldest)

    # ---------------------------------------------------------------------- reporting

    def breakdown(self, app_id: str, group_id: str) -> tuple[list[tuple[str, int]],
                                                              list[tuple[int, int]]]:
        """A group's instances counted by version and by status."""
        ia = instance_apps.c
        scope = (ia.application_id == app_id, ia.group_id == group_id)
        with self.reader.begin() as conn:
            versions = conn.execute(sa.select(ia.version, sa.func.count()).where(*scope)
                                    .group_by(ia.version)).all()
            statuses = conn.execute(sa.select(ia.status, sa.func.count()).where(*scope)
                                    .group_by(ia.status)).all()
        return [(v, c) for v, c in versions], [(s, c) for s, c in statuses]

    def metrics(self) -> dict[str, list[tuple[dict[str, str], float]]]:
        """Gauges for /metrics: instances per channel and version, failures, progress."""
        ia = instance_apps.c
        out: dict[str, list[tuple[dict[str, str], float]]] = {
            "application_instances_per_channel": [], "failed_updates": [],
            "group_instances": [], "group_instances_on_channel_version": []}
        with self.reader.begin() as conn:
            rows = conn.execute(
                sa.select(applications.c.name, channels.c.name, ia.version, sa.func.count())
                .select_from(instance_apps.join(groups, groups.c.id == ia.group_id)
                             .join(channels, channels.c.id == groups.c.channel_id)
                             .join(applications, applications.c.id == ia.application_id))
                .group_by(applications.c.name, channels.c.name, ia.version)).all()
            for app_name, channel_name, version, count in rows:
                out["application_instances_per_channel"].append(
                    ({"application": app_name, "channel": channel_name, "version": version},
                     count))
            rows = conn.execute(
                sa.select(applications.c.name, sa.func.count())
                .select_from(instance_apps.join(applications,
                                                applications.c.id == ia.application_id))
                .where(ia.status == int(InstanceStatus.ERROR))
                .group_by(applications.c.name)).all()
            out["failed_updates"] = [({"application": a}, c) for a, c in rows]
            current = packages.alias("current")
            rows = conn.execute(
                sa.select(groups.c.name, applications.c.name, sa.func.count(ia.instance_id),
                          sa.func.sum(sa.case((ia.version == current.c.version, 1),
                                              else_=0)))
                .select_from(groups.join(applications,
                                         applications.c.id == groups.c.application_id)
                             .outerjoin(channels, channels.c.id == groups.c.channel_id)
                             .outerjoin(current, current.c.id == channels.c.package_id)
                             .outerjoin(instance_apps, ia.group_id == groups.c.id))
                .group_by(groups.c.id, groups.c.name, applications.c.name)).all()
            for group_name, app_name, total, on_version in rows:
                labels = {"application": app_name, "group": group_name}
                out["group_instances"].append((labels, total or 0))
                out["group_instances_on_channel_version"].append((labels, on_version or 0))
        return out


def _integrity_words(table: sa.Table, err: sa.exc.IntegrityError) -> str:
    text = str(err.orig)
    if "UNIQUE" in text.upper() or "duplicate" in text:
        return f"a {table.name[:-1]} with that name or version already exists"
    return f"{table.name[:-1]}: {text}"


__all__ = ["Conflict", "NotFound", "Store", "metadata", "new_id", "normal_app_id"]
