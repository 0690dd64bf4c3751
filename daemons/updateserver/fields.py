"""REST bodies to table rows and back, with Nebraska's snake_case names and limits.

A body is checked whole before anything is written: an unknown field, a wrong type, a name
over its length limit or an unknown time zone is refused with a message naming the field.
Durations travel as Nebraska's PostgreSQL interval strings ("15 minutes", "500
milliseconds") and are stored as seconds; bare numbers are read as seconds.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .model import InstanceStatus


class Invalid(ValueError):
    """A body refused; the message names the field."""


_UNITS = {"millisecond": 0.001, "ms": 0.001, "second": 1, "sec": 1, "s": 1, "minute": 60,
          "min": 60, "m": 60, "hour": 3600, "h": 3600, "day": 86400, "d": 86400}
_INTERVAL = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-z]*?)s?\s*$")


def parse_interval(value: Any, field: str) -> float:
    """Seconds from ``"15 minutes"``, ``"1 hour"``, ``"500 milliseconds"`` or a number."""
    if isinstance(value, bool):
        raise Invalid(f"{field}: expected an interval, got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        match = _INTERVAL.match(value.lower())
        unit = match.group(2) if match else None
        if match is None or (unit and unit not in _UNITS):
            raise Invalid(f"{field}: {value!r} is not an interval like '15 minutes'")
        seconds = float(match.group(1)) * (_UNITS[unit] if unit else 1)
    else:
        raise Invalid(f"{field}: expected an interval, got {type(value).__name__}")
    if seconds <= 0:
        raise Invalid(f"{field}: the interval must be positive")
    return seconds


def format_interval(seconds: float) -> str:
    """The interval string given back: whole minutes as minutes, else seconds."""
    if seconds >= 60 and seconds % 60 == 0:
        return f"{int(seconds // 60)} minutes"
    if seconds == int(seconds):
        return f"{int(seconds)} seconds"
    return f"{round(seconds * 1000)} milliseconds"


def _clock(value: Any, field: str) -> int:
    if not isinstance(value, str) or not re.fullmatch(r"\d{1,2}:\d{2}", value):
        raise Invalid(f"{field}: expected HH:MM, got {value!r}")
    hours, minutes = (int(x) for x in value.split(":"))
    if hours > 23 or minutes > 59:
        raise Invalid(f"{field}: {value!r} is not a time of day")
    return hours * 60 + minutes


def timestamp(ts: float | None) -> str | None:
    """RFC 3339 in UTC, as Nebraska's API writes times."""
    if ts is None:
        return None
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat().replace("+00:00", "Z")


def _text(limit: int) -> Any:
    def check(value: Any, field: str) -> str:
        if not isinstance(value, str):
            raise Invalid(f"{field}: expected a string, got {type(value).__name__}")
        if len(value) > limit:
            raise Invalid(f"{field}: longer than {limit} characters")
        return value
    return check


def _name(limit: int) -> Any:
    text = _text(limit)

    def check(value: Any, field: str) -> str:
        value = text(value, field)
        if not value.strip():
            raise Invalid(f"{field}: must not be empty")
        return value
    return check


def _bool(value: Any, field: str) -> bool:
    if not isinstance(value, bool):
        raise Invalid(f"{field}: expected true or false, got {value!r}")
    return value


def _count(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise Invalid(f"{field}: expected a non-negative integer, got {value!r}")
    return value


def _size(value: Any, field: str) -> int:
    """Nebraska sends sizes as strings; numbers are taken too."""
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise Invalid(f"{field}: expected a positive size, got {value!r}")
    return value


def _zone(value: Any, field: str) -> str:
    if not isinstance(value, str):
        raise Invalid(f"{field}: expected a time zone name")
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError) as err:
        raise Invalid(f"{field}: unknown time zone {value!r}") from err
    return value


def _weekdays(value: Any, field: str) -> str:
    if not isinstance(value, list) or not all(isinstance(d, int) and not isinstance(d, bool)
                                              and 0 <= d <= 6 for d in value):
        raise Invalid(f"{field}: expected a list of weekdays 0 (Monday) to 6")
    return ",".join(str(d) for d in sorted(set(value)))


def _optional_id(value: Any, field: str) -> str | None:
    if value is None or value == "":
        return None
    return _name(36)(value, field)


APP_FIELDS = {"id": _name(64), "name": _name(100), "description": _text(250)}
CHANNEL_FIELDS = {"name": _name(25), "color": _text(25), "package_id": _optional_id}
GROUP_FIELDS = {
    "name": _name(50), "description": _text(250), "channel_id": _optional_id,
    "track": _text(256), "policy_updates_enabled": _bool, "policy_safe_mode": _bool,
    "policy_office_hours": _bool, "policy_timezone": _zone,
    "policy_period_interval": parse_interval, "policy_max_updates_per_period": _count,
    "policy_update_timeout": parse_interval, "policy_office_start": _clock,
    "policy_office_end": _clock, "policy_office_weekdays": _weekdays,
}
#: Nebraska requires these on create and update of a group.
GROUP_REQUIRED = ("name", "policy_max_updates_per_period", "policy_period_interval",
                  "policy_timezone", "policy_update_timeout")
PACKAGE_FIELDS = {
    "version": _name(255), "filename": _name(255), "size": _size, "hash": _text(64),
    "url": _text(2048), "description": _text(250), "channels_blacklist": None,
    "extra_files": None, "flatcar_action": None, "is_delta": _bool,
    "disable_payload_backoff": _bool, "needs_admin": _bool,
    "metadata_signature_rsa": _text(4096), "metadata_size": _text(20),
    "chromeos_version": _text(255), "deadline": _text(255),
    # Nebraska's fields the server reads but does not use.
    "application_id": _text(64), "type": None, "arch": None, "id": None,
}


def _ignore_ro(body: Mapping[str, Any], readonly: tuple[str, ...]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k not in readonly}


def checked(body: Any, spec: Mapping[str, Any], *, required: tuple[str, ...] = (),
            readonly: tuple[str, ...] = ("created_ts",)) -> dict[str, Any]:
    """The body's fields converted for the table; anything unknown is refused."""
    if not isinstance(body, dict):
        raise Invalid("the body must be a JSON object")
    body = _ignore_ro(body, readonly)
    unknown = sorted(set(body) - set(spec))
    if unknown:
        raise Invalid(f"{unknown[0]}: unknown field")
    missing = [f for f in required if f not in body]
    if missing:
        raise Invalid(f"{missing[0]}: required")
    out = {}
    for key, value in body.items():
        convert = spec[key]
        if convert is not None:
            out[key] = convert(value, key)
    return out


def package_values(body: Any, *, create: bool) -> dict[str, Any]:
    """A package body: Nebraska's ``flatcar_action.sha256`` becomes the stored sha256."""
    values = checked(body, PACKAGE_FIELDS,
                     required=("version", "filename") if create else ())
    values.pop("application_id", None)
    action = body.get("flatcar_action")
    if action is not None:
        if not isinstance(action, dict) or not isinstance(action.get("sha256", ""), str):
            raise Invalid("flatcar_action: expected an object with sha256")
        if action.get("sha256"):
            values["hash_sha256"] = action["sha256"]
    blacklist = body.get("channels_blacklist")
    if blacklist is not None:
        if not isinstance(blacklist, list) or not all(isinstance(c, str) for c in blacklist):
            raise Invalid("channels_blacklist: expected a list of channel ids")
        values["channels_blacklist"] = blacklist
    extras = body.get("extra_files")
    if extras is not None:
        if not isinstance(extras, list):
            raise Invalid("extra_files: expected a list")
        clean = []
        for i, extra in enumerate(extras):
            field = f"extra_files[{i}]"
            if not isinstance(extra, dict):
                raise Invalid(f"{field}: expected an object")
            clean.append({"name": _name(255)(extra.get("name"), f"{field}.name"),
                          "size": _size(extra.get("size"), f"{field}.size"),
                          "hash": _text(64)(extra.get("hash", ""), f"{field}.hash"),
                          "hash256": _text(64)(extra.get("hash256", ""), f"{field}.hash256")})
        values["extra_files"] = clean
    return values


def status_name(status: int) -> str:
    return InstanceStatus(status).label
