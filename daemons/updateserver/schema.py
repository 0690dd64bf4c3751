"""The update server's tables (SQLAlchemy Core) and the migrations that create them.

One schema for SQLite (the default, one file in WAL mode) and PostgreSQL: column types are
SQLAlchemy's portable ones, times are float seconds since the epoch, lists are JSON text.
Column names follow Nebraska's where it has one, so a reader of its API recognises them.

Migrations are numbered steps recorded in ``schema_migrations``; each runs once, inside the
transaction that records it, so a crash mid-way leaves the previous version intact. Alembic
would be the tool once there are branches to merge; a list of steps is enough for one line.
"""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa

metadata = sa.MetaData()

applications = sa.Table(
    "applications", metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("description", sa.Text, nullable=False, default=""),
    sa.Column("created_ts", sa.Float, nullable=False),
)

packages = sa.Table(
    "packages", metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("application_id", sa.String(64), sa.ForeignKey("applications.id",
              ondelete="CASCADE"), nullable=False),
    sa.Column("version", sa.String(255), nullable=False),
    sa.Column("filename", sa.String(255), nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("hash", sa.String(64), nullable=False, default=""),
    sa.Column("hash_sha256", sa.String(64), nullable=False, default=""),
    sa.Column("url", sa.Text, nullable=False, default=""),
    sa.Column("description", sa.Text, nullable=False, default=""),
    sa.Column("channels_blacklist", sa.Text, nullable=False, default="[]"),
    sa.Column("extra_files", sa.Text, nullable=False, default="[]"),
    sa.Column("is_delta", sa.Boolean, nullable=False, default=False),
    sa.Column("disable_payload_backoff", sa.Boolean, nullable=False, default=True),
    sa.Column("needs_admin", sa.Boolean, nullable=False, default=False),
    sa.Column("metadata_signature_rsa", sa.Text, nullable=False, default=""),
    sa.Column("metadata_size", sa.String(20), nullable=False, default=""),
    sa.Column("chromeos_version", sa.String(255), nullable=False, default=""),
    sa.Column("deadline", sa.String(255), nullable=False, default=""),
    sa.Column("stored", sa.Boolean, nullable=False, default=False),
    sa.Column("created_ts", sa.Float, nullable=False),
    sa.UniqueConstraint("application_id", "version"),
)

channels = sa.Table(
    "channels", metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("application_id", sa.String(64), sa.ForeignKey("applications.id",
              ondelete="CASCADE"), nullable=False),
    sa.Column("name", sa.String(25), nullable=False),
    sa.Column("color", sa.String(25), nullable=False, default=""),
    sa.Column("package_id", sa.String(36), sa.ForeignKey("packages.id", ondelete="SET NULL"),
              nullable=True),
    sa.Column("created_ts", sa.Float, nullable=False),
    sa.UniqueConstraint("application_id", "name"),
)

channel_floors = sa.Table(
    "channel_floors", metadata,
    sa.Column("channel_id", sa.String(36), sa.ForeignKey("channels.id", ondelete="CASCADE"),
              primary_key=True),
    sa.Column("package_id", sa.String(36), sa.ForeignKey("packages.id", ondelete="CASCADE"),
              primary_key=True),
    sa.Column("floor_reason", sa.Text, nullable=False, default=""),
)

groups = sa.Table(
    "groups", metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("application_id", sa.String(64), sa.ForeignKey("applications.id",
              ondelete="CASCADE"), nullable=False),
    sa.Column("name", sa.String(50), nullable=False),
    sa.Column("description", sa.String(250), nullable=False, default=""),
    sa.Column("channel_id", sa.String(36), sa.ForeignKey("channels.id", ondelete="SET NULL"),
              nullable=True),
    sa.Column("track", sa.String(256), nullable=False),
    sa.Column("policy_updates_enabled", sa.Boolean, nullable=False, default=True),
    sa.Column("policy_safe_mode", sa.Boolean, nullable=False, default=False),
    sa.Column("policy_office_hours", sa.Boolean, nullable=False, default=False),
    sa.Column("policy_timezone", sa.String(40), nullable=False, default="UTC"),
    sa.Column("policy_period_interval", sa.Float, nullable=False),
    sa.Column("policy_max_updates_per_period", sa.Integer, nullable=False),
    sa.Column("policy_update_timeout", sa.Float, nullable=False),
    sa.Column("policy_office_start", sa.Integer, nullable=False, default=9 * 60),
    sa.Column("policy_office_end", sa.Integer, nullable=False, default=17 * 60),
    sa.Column("policy_office_weekdays", sa.String(20), nullable=False, default="0,1,2,3,4"),
    sa.Column("rollout_in_progress", sa.Boolean, nullable=False, default=False),
    sa.Column("created_ts", sa.Float, nullable=False),
    sa.UniqueConstraint("application_id", "track"),
)

instances = sa.Table(
    "instances", metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("ip", sa.String(64), nullable=False, default=""),
    sa.Column("alias", sa.String(255), nullable=False, default=""),
    sa.Column("oem", sa.String(255), nullable=False, default=""),
    sa.Column("oem_version", sa.String(255), nullable=False, default=""),
    sa.Column("aleph_version", sa.String(255), nullable=False, default=""),
    sa.Column("created_ts", sa.Float, nullable=False),
)

instance_apps = sa.Table(
    "instance_apps", metadata,
    sa.Column("instance_id", sa.String(64), sa.ForeignKey("instances.id", ondelete="CASCADE"),
              primary_key=True),
    sa.Column("application_id", sa.String(64), sa.ForeignKey("applications.id",
              ondelete="CASCADE"), primary_key=True),
    sa.Column("group_id", sa.String(36), sa.ForeignKey("groups.id", ondelete="CASCADE"),
              nullable=False),
    sa.Column("version", sa.String(255), nullable=False),
    sa.Column("status", sa.Integer, nullable=False),
    sa.Column("last_check_ts", sa.Float, nullable=True),
    sa.Column("last_update_granted_ts", sa.Float, nullable=True),
    sa.Column("last_update_version", sa.String(255), nullable=False, default=""),
    sa.Column("update_in_progress", sa.Boolean, nullable=False, default=False),
    sa.Column("last_reason", sa.String(32), nullable=False, default=""),
    sa.Column("last_reason_detail", sa.Text, nullable=False, default=""),
    sa.Index("instance_apps_group_grant", "group_id", "last_update_granted_ts"),
)

events = sa.Table(
    "events", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("instance_id", sa.String(64), nullable=False),
    sa.Column("application_id", sa.String(64), nullable=False),
    sa.Column("event_type", sa.Integer, nullable=False),
    sa.Column("event_result", sa.Integer, nullable=False),
    sa.Column("error_code", sa.BigInteger, nullable=False, default=0),
    sa.Column("previous_version", sa.String(255), nullable=False, default=""),
    sa.Column("created_ts", sa.Float, nullable=False),
    sa.Index("events_instance", "instance_id", "application_id", "created_ts"),
)

status_history = sa.Table(
    "instance_status_history", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("instance_id", sa.String(64), nullable=False),
    sa.Column("application_id", sa.String(64), nullable=False),
    sa.Column("group_id", sa.String(36), nullable=False),
    sa.Column("status", sa.Integer, nullable=False),
    sa.Column("version", sa.String(255), nullable=False),
    sa.Column("reason", sa.String(32), nullable=False, default=""),
    sa.Column("detail", sa.Text, nullable=False, default=""),
    sa.Column("created_ts", sa.Float, nullable=False),
    sa.Index("history_instance", "instance_id", "application_id", "created_ts"),
)

activity = sa.Table(
    "activity", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("application_id", sa.String(64), nullable=False),
    sa.Column("group_id", sa.String(36), nullable=True),
    sa.Column("channel_id", sa.String(36), nullable=True),
    sa.Column("instance_id", sa.String(64), nullable=True),
    sa.Column("class", sa.String(40), nullable=False),
    sa.Column("severity", sa.String(10), nullable=False),
    sa.Column("version", sa.String(255), nullable=False, default=""),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("created_ts", sa.Float, nullable=False),
    sa.Index("activity_time", "created_ts"),
)

migrations_table = sa.Table(
    "schema_migrations", sa.MetaData(),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("applied_ts", sa.Float, nullable=False),
)


def _initial(conn: sa.Connection) -> None:
    metadata.create_all(conn)


#: (version, name, step) in order; a new schema change is appended, never edited in place.
MIGRATIONS: list[tuple[int, str, Callable[[sa.Connection], None]]] = [
    (1, "initial schema", _initial),
]


def migrate(conn: sa.Connection, now: float) -> list[int]:
    """Applies the steps ``schema_migrations`` does not list yet; returns their numbers."""
    migrations_table.create(conn, checkfirst=True)
    done = {row.version for row in conn.execute(sa.select(migrations_table.c.version))}
    newest = max((v for v, _, _ in MIGRATIONS), default=0)
    if done and max(done) > newest:
        raise RuntimeError(f"the database is at schema version {max(done)}, newer than this "
                           f"server's {newest}: upgrade the server")
    applied = []
    for version, name, step in MIGRATIONS:
        if version in done:
            continue
        step(conn)
        conn.execute(migrations_table.insert().values(version=version, name=name,
                                                      applied_ts=now))
        applied.append(version)
    return applied
