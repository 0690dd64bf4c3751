"""Rows of the update server's tables turned into the model's records."""

from __future__ import annotations

import json
from typing import Any

from .model import ExtraFile, Group, InstanceApp, InstanceStatus, OfficeHours, Package, Policy


def package_from_row(row: Any) -> Package:
    extras = tuple(ExtraFile(e["name"], int(e["size"]), e.get("hash", ""),
                             e.get("hash256", "")) for e in json.loads(row.extra_files))
    return Package(
        id=row.id, app_id=row.application_id, version=row.version, filename=row.filename,
        size=row.size, sha1_base64=row.hash, sha256_base64=row.hash_sha256, url=row.url,
        description=row.description, channels_blacklist=tuple(json.loads(row.channels_blacklist)),
        extra_files=extras, is_delta=row.is_delta,
        disable_payload_backoff=row.disable_payload_backoff, needs_admin=row.needs_admin,
        metadata_signature_rsa=row.metadata_signature_rsa, metadata_size=row.metadata_size,
        chromeos_version=row.chromeos_version, deadline=row.deadline)


def group_from_row(row: Any) -> Group:
    window = OfficeHours(row.policy_office_start, row.policy_office_end,
                         frozenset(int(d) for d in row.policy_office_weekdays.split(",") if d))
    return Group(row.id, row.application_id, row.name, row.channel_id, row.track, Policy(
        updates_enabled=row.policy_updates_enabled, safe_mode=row.policy_safe_mode,
        office_hours=row.policy_office_hours, timezone=row.policy_timezone,
        max_updates_per_period=row.policy_max_updates_per_period,
        period_interval=row.policy_period_interval,
        update_timeout=row.policy_update_timeout, office_window=window), row.description)


def _instance_app(row: Any) -> InstanceApp:
    return InstanceApp(row.instance_id, row.application_id, row.group_id, row.version,
                       InstanceStatus(row.status), row.last_check_ts,
                       row.last_update_granted_ts, row.last_update_version,
                       row.update_in_progress)
