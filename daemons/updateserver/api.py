"""The REST API (Nebraska's routes, snake_case JSON), /health and Prometheus /metrics.

Everything the dashboard and the CLI do is one of these calls. Reads are open; writes
need ``Authorization: Bearer <token>`` when a token file is configured, and without one
they are accepted only from loopback peers, so a fresh install is not writable from the
network. Lists are paged as Nebraska pages them (``page``/``perpage``, answering
``{total_count, count, <items>}``). Errors are JSON ``{"error": "..."}`` naming the field.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import hmac
import ipaddress
import json
import os
import tempfile
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from aiohttp import web

from . import fields
from .fields import Invalid, checked, format_interval, package_values, timestamp
from .model import InstanceStatus, version_key
from .omaha_http import payload_path
from .schema import activity, applications, channels, groups, instance_apps, instances, packages
from .store import Conflict, NotFound, Store, new_id, normal_app_id

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
MAX_PERPAGE = 1000


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda d: json.dumps(d, sort_keys=True))


def _error(status: int, text: str) -> web.Response:
    return _json({"error": text}, status)


def is_local(remote: str | None) -> bool:
    try:
        return remote is not None and ipaddress.ip_address(remote).is_loopback
    except ValueError:
        return False


# ----------------------------------------------------------------------------- renderings

def render_app(row: dict[str, Any]) -> dict[str, Any]:
    return {"id": row["id"], "name": row["name"], "description": row["description"],
            "created_ts": timestamp(row["created_ts"])}


def render_package(row: dict[str, Any]) -> dict[str, Any]:
    return {"id": row["id"], "application_id": row["application_id"],
            "version": row["version"], "filename": row["filename"], "size": str(row["size"]),
            "hash": row["hash"], "url": row["url"], "description": row["description"],
            "type": 1, "arch": 0, "channels_blacklist": json.loads(row["channels_blacklist"]),
            "extra_files": json.loads(row["extra_files"]),
            "flatcar_action": {"event": "postinstall", "sha256": row["hash_sha256"],
                               "is_delta": row["is_delta"],
                               "disable_payload_backoff": row["disable_payload_backoff"],
                               "needs_admin": row["needs_admin"],
                               "metadata_signature_rsa": row["metadata_signature_rsa"],
                               "metadata_size": row["metadata_size"],
                               "chromeos_version": row["chromeos_version"],
                               "deadline": row["deadline"]},
            "stored": row["stored"], "created_ts": timestamp(row["created_ts"])}


def render_channel(row: dict[str, Any], floors: list[dict[str, Any]]) -> dict[str, Any]:
    return {"id": row["id"], "application_id": row["application_id"], "name": row["name"],
            "color": row["color"], "package_id": row["package_id"],
            "floors": [{"package_id": f["package_id"], "floor_reason": f["floor_reason"]}
                       for f in floors],
            "created_ts": timestamp(row["created_ts"])}


def _hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def render_group(row: dict[str, Any]) -> dict[str, Any]:
    out = {k: row[k] for k in ("id", "application_id", "name", "description", "channel_id",
                               "track", "policy_updates_enabled", "policy_safe_mode",
                               "policy_office_hours", "policy_timezone",
                               "policy_max_updates_per_period", "rollout_in_progress")}
    out["policy_period_interval"] = format_interval(row["policy_period_interval"])
    out["policy_update_timeout"] = format_interval(row["policy_update_timeout"])
    out["policy_office_start"] = _hhmm(row["policy_office_start"])
    out["policy_office_end"] = _hhmm(row["policy_office_end"])
    out["policy_office_weekdays"] = [int(d) for d in row["policy_office_weekdays"].split(",")
                                     if d]
    out["created_ts"] = timestamp(row["created_ts"])
    return out


def render_instance_app(row: dict[str, Any]) -> dict[str, Any]:
    return {"application_id": row["application_id"], "group_id": row["group_id"],
            "version": row["version"], "status": row["status"],
            "status_name": fields.status_name(row["status"]),
            "last_check_for_updates": timestamp(row["last_check_ts"]),
            "last_update_granted_ts": timestamp(row["last_update_granted_ts"]),
            "last_update_version": row["last_update_version"],
            "update_in_progress": row["update_in_progress"],
            "last_reason": row["last_reason"], "last_reason_detail": row["last_reason_detail"]}


def render_instance(row: dict[str, Any], apps: list[dict[str, Any]]) -> dict[str, Any]:
    return {"id": row["id"], "ip": row["ip"], "alias": row["alias"], "oem": row["oem"],
            "oem_version": row["oem_version"], "aleph_version": row["aleph_version"],
            "created_ts": timestamp(row["created_ts"]),
            "applications": [render_instance_app(a) for a in apps]}


def render_activity(row: dict[str, Any]) -> dict[str, Any]:
    return {"id": row["id"], "application_id": row["application_id"],
            "group_id": row["group_id"], "channel_id": row["channel_id"],
            "instance_id": row["instance_id"], "class": row["class"],
            "severity": row["severity"], "version": row["version"], "text": row["text"],
            "created_ts": timestamp(row["created_ts"])}


def render_metrics(gauges: dict[str, list[tuple[dict[str, str], float]]],
                   extra: dict[str, float]) -> str:
    """Prometheus text exposition format 0.0.4."""
    helps = {
        "application_instances_per_channel": "Instances per application, channel and version",
        "failed_updates": "Instances whose last update failed",
        "group_instances": "Instances in each group",
        "group_instances_on_channel_version": "Instances of a group on its channel's version "
                                              "(rollout progress)",
    }
    lines = []
    for name, samples in gauges.items():
        metric = f"flotilla_update_server_{name}"
        lines += [f"# HELP {metric} {helps.get(name, name)}", f"# TYPE {metric} gauge"]
        for labels, value in samples:
            text = ",".join(f'{k}="{_label(v)}"' for k, v in sorted(labels.items()))
            lines.append(f"{metric}{{{text}}} {value:g}")
    for name, value in extra.items():
        metric = f"flotilla_update_server_{name}"
        lines += [f"# TYPE {metric} counter", f"{metric} {value:g}"]
    return "\n".join(lines) + "\n"


def _label(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


# ------------------------------------------------------------------------------ the API

class Api:
    """The REST handlers; ``counters`` adds process-wide numbers to /metrics."""

    def __init__(self, store: Store, executor: ThreadPoolExecutor, *, token: str | None,
                 payload_dir: Path | None, counters: Callable[[], dict[str, float]],
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.executor = executor
        self.token = token
        self.payload_dir = payload_dir
        self.counters = counters
        self.clock = clock

    async def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``fn`` in a database worker thread, so the event loop keeps serving."""
        call = functools.partial(fn, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self.executor, call)

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith("/api/") and request.method not in ("GET", "HEAD"):
            if self.token is not None:
                given = request.headers.get("Authorization", "")
                if not hmac.compare_digest(given.encode(), f"Bearer {self.token}".encode()):
                    return _error(401, "writes need Authorization: Bearer <token>")
            elif not is_local(request.remote):
                return _error(403, "writes are accepted only from local connections until "
                                   "a token file is configured (--token-file)")
        try:
            return await handler(request)
        except Invalid as err:
            return _error(400, str(err))
        except NotFound as err:
            return _error(404, str(err))
        except Conflict as err:
            return _error(409, str(err))

    def routes(self) -> list[web.RouteDef]:
        app, group, chan, pkg = ("/api/apps/{app}", "/api/apps/{app}/groups/{group}",
                                 "/api/apps/{app}/channels/{channel}",
                                 "/api/apps/{app}/packages/{package}")
        return [
            web.get("/health", self.health), web.get("/metrics", self.metrics),
            web.get("/api/apps", self.list_apps), web.post("/api/apps", self.create_app),
            web.get(app, self.get_app), web.put(app, self.update_app),
            web.delete(app, self.delete_app),
            web.get(app + "/groups", self.list_groups),
            web.post(app + "/groups", self.create_group),
            web.get(group, self.get_group), web.put(group, self.update_group),
            web.delete(group, self.delete_group),
            web.get(group + "/instances", self.list_instances),
            web.get(group + "/version_breakdown", self.version_breakdown),
            web.get(group + "/instances_stats", self.instances_stats),
            web.get(group + "/instances/{instance}/status_history", self.status_history),
            web.get(app + "/channels", self.list_channels),
            web.post(app + "/channels", self.create_channel),
            web.get(chan, self.get_channel), web.put(chan, self.update_channel),
            web.delete(chan, self.delete_channel),
            web.get("/api/channels/{channel}/floors", self.get_floors),
            web.put("/api/channels/{channel}/floors/{package}", self.put_floor),
            web.delete("/api/channels/{channel}/floors/{package}", self.delete_floor),
            web.get(app + "/packages", self.list_packages),
            web.post(app + "/packages", self.create_package),
            web.get(pkg, self.get_package), web.put(pkg, self.update_package),
            web.delete(pkg, self.delete_package),
            web.put(pkg + "/payload", self.upload_payload),
            web.get("/api/instances/{instance}", self.get_instance),
            web.get("/api/activity", self.list_activity),
        ]

    @staticmethod
    def paging(request: web.Request) -> tuple[int, int]:
        try:
            page = int(request.query.get("page", "1"))
            perpage = int(request.query.get("perpage", "10"))
        except ValueError as err:
            raise Invalid("page/perpage: expected integers") from err
        if page < 1 or not 1 <= perpage <= MAX_PERPAGE:
            raise Invalid(f"page must be >= 1 and perpage 1..{MAX_PERPAGE}")
        return page, perpage

    async def body(self, request: web.Request) -> Any:
        try:
            return await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise Invalid(f"the body is not JSON: {err}") from err

    async def health(self, request: web.Request) -> web.Response:
        return web.Response(text="OK")

    async def metrics(self, request: web.Request) -> web.Response:
        gauges = await self.run(self.store.metrics)
        return web.Response(text=render_metrics(gauges, self.counters()),
                            content_type="text/plain", charset="utf-8",
                            headers={"X-Content-Type-Options": "nosniff"})

    # --------------------------------------------------------------------- apps

    def _app_id(self, request: web.Request) -> str:
        return normal_app_id(request.match_info["app"])

    async def list_apps(self, request: web.Request) -> web.Response:
        page, perpage = self.paging(request)
        total, rows = await self.run(self.store.page, applications, [], page, perpage,
                                     applications.c.created_ts)
        return _json({"total_count": total, "count": len(rows),
                      "applications": [render_app(r) for r in rows]})

    async def create_app(self, request: web.Request) -> web.Response:
        values = checked(await self.body(request), fields.APP_FIELDS, required=("name",))
        values["id"] = normal_app_id(values.get("id") or new_id())
        values.setdefault("description", "")
        row = await self.run(self.store.insert, applications, values | {"created_ts":
                                                                        self.clock()})
        return _json(render_app(row), 201)

    async def get_app(self, request: web.Request) -> web.Response:
        return _json(render_app(await self.run(self.store.get, applications,
                                               self._app_id(request))))

    async def update_app(self, request: web.Request) -> web.Response:
        values = checked(await self.body(request), fields.APP_FIELDS, readonly=("created_ts",
                                                                                "id"))
        row = await self.run(self.store.update, applications, self._app_id(request), values)
        return _json(render_app(row))

    async def delete_app(self, request: web.Request) -> web.Response:
        await self.run(self.store.delete, applications, self._app_id(request))
        return web.Response(status=204)

    # ------------------------------------------------------------------- groups

    async def _scoped_list(self, request: web.Request, table: sa.Table, key: str,
                           render: Callable[[dict[str, Any]], dict[str, Any]]) -> web.Response:
        page, perpage = self.paging(request)
        app_id = self._app_id(request)
        await self.run(self.store.get, applications, app_id)
        total, rows = await self.run(self.store.page, table, [table.c.application_id == app_id],
                                     page, perpage, table.c.created_ts)
        return _json({"total_count": total, "count": len(rows), key: [render(r) for r in rows]})

    async def list_groups(self, request: web.Request) -> web.Response:
        return await self._scoped_list(request, groups, "groups", render_group)

    async def _check_channel(self, app_id: str, channel_id: str | None) -> None:
        if channel_id is not None:
            await self.run(self.store.get, channels, channel_id, application_id=app_id)

    async def create_group(self, request: web.Request) -> web.Response:
        app_id = self._app_id(request)
        values = checked(await self.body(request), fields.GROUP_FIELDS,
                         required=fields.GROUP_REQUIRED, readonly=("created_ts", "id",
                                                                   "application_id"))
        await self.run(self.store.get, applications, app_id)
        await self._check_channel(app_id, values.get("channel_id"))
        values = {"id": new_id(), "application_id": app_id, "created_ts": self.clock(),
                  "track": values.get("track") or values["name"].lower()} | values
        if not values["track"]:
            values["track"] = values["name"].lower()
        return _json(render_group(await self.run(self.store.insert, groups, values)), 201)

    async def get_group(self, request: web.Request) -> web.Response:
        row = await self.run(self.store.get, groups, request.match_info["group"],
                             application_id=self._app_id(request))
        return _json(render_group(row))

    async def update_group(self, request: web.Request) -> web.Response:
        app_id = self._app_id(request)
        values = checked(await self.body(request), fields.GROUP_FIELDS,
                         readonly=("created_ts", "id", "application_id", "rollout_in_progress"))
        await self._check_channel(app_id, values.get("channel_id"))
        row = await self.run(self.store.update, groups, request.match_info["group"], values,
                             application_id=app_id)
        return _json(render_group(row))

    async def delete_group(self, request: web.Request) -> web.Response:
        await self.run(self.store.delete, groups, request.match_info["group"],
                       application_id=self._app_id(request))
        return web.Response(status=204)

    async def list_instances(self, request: web.Request) -> web.Response:
        page, perpage = self.paging(request)
        app_id, group_id = self._app_id(request), request.match_info["group"]
        where = [instance_apps.c.application_id == app_id, instance_apps.c.group_id == group_id]
        if "status" in request.query:
            try:
                where.append(instance_apps.c.status == int(request.query["status"]))
            except ValueError as err:
                raise Invalid("status: expected a status number") from err
        if "version" in request.query:
            where.append(instance_apps.c.version == request.query["version"])
        total, rows = await self.run(self.store.page, instance_apps, where, page, perpage,
                                     instance_apps.c.instance_id)
        return _json({"total_count": total, "count": len(rows), "instances": [
            {"id": r["instance_id"], "application": render_instance_app(r)} for r in rows]})

    async def _breakdown(self, request: web.Request) -> tuple[list[tuple[str, int]],
                                                              list[tuple[int, int]]]:
        app_id, group_id = self._app_id(request), request.match_info["group"]
        await self.run(self.store.get, groups, group_id, application_id=app_id)
        return await self.run(self.store.breakdown, app_id, group_id)

    async def version_breakdown(self, request: web.Request) -> web.Response:
        """Nebraska's shape: instances and percentage per version, newest first."""
        versions, _ = await self._breakdown(request)
        total = sum(c for _, c in versions) or 1
        ordered = sorted(versions, key=lambda vc: version_key(vc[0]), reverse=True)
        return _json([{"version": v, "instances": c, "percentage": round(100 * c / total, 2)}
                      for v, c in ordered])

    async def instances_stats(self, request: web.Request) -> web.Response:
        """Instances per status, every status present (zero when none)."""
        _, statuses = await self._breakdown(request)
        counts = dict(statuses)
        out = {s.name.lower(): counts.get(int(s), 0) for s in InstanceStatus}
        out["total"] = sum(counts.values())
        return _json(out)

    async def status_history(self, request: web.Request) -> web.Response:
        rows = await self.run(self.store.history, request.match_info["instance"],
                              self._app_id(request))
        return _json([{"status": r["status"], "status_name": fields.status_name(r["status"]),
                       "version": r["version"], "reason": r["reason"], "detail": r["detail"],
                       "created_ts": timestamp(r["created_ts"])} for r in rows])

    async def get_instance(self, request: web.Request) -> web.Response:
        ident = request.match_info["instance"]
        row = await self.run(self.store.get, instances, ident)
        return _json(render_instance(row, await self.run(self.store.instance_apps, ident)))

    async def list_activity(self, request: web.Request) -> web.Response:
        page, perpage = self.paging(request)
        where = []
        if "app" in request.query:
            where.append(activity.c.application_id == normal_app_id(request.query["app"]))
        total, rows = await self.run(self.store.page, activity, where, page, perpage,
                                     activity.c.id.desc())
        return _json({"total_count": total, "count": len(rows),
                      "activities": [render_activity(r) for r in rows]})

    # ----------------------------------------------------------------- channels

    async def _render_channel(self, row: dict[str, Any]) -> dict[str, Any]:
        return render_channel(row, await self.run(self.store.floors, row["id"]))

    async def list_channels(self, request: web.Request) -> web.Response:
        page, perpage = self.paging(request)
        app_id = self._app_id(request)
        total, rows = await self.run(self.store.page, channels,
                                     [channels.c.application_id == app_id], page, perpage,
                                     channels.c.created_ts)
        return _json({"total_count": total, "count": len(rows),
                      "channels": [await self._render_channel(r) for r in rows]})

    async def _check_package(self, app_id: str, package_id: str | None) -> None:
        if package_id is not None:
            await self.run(self.store.get, packages, package_id, application_id=app_id)

    async def create_channel(self, request: web.Request) -> web.Response:
        app_id = self._app_id(request)
        values = checked(await self.body(request), fields.CHANNEL_FIELDS, required=("name",),
                         readonly=("created_ts", "id", "application_id", "floors"))
        await self.run(self.store.get, applications, app_id)
        await self._check_package(app_id, values.get("package_id"))
        row = await self.run(self.store.insert, channels, {
            "id": new_id(), "application_id": app_id, "created_ts": self.clock(),
            "color": ""} | values)
        return _json(await self._render_channel(row), 201)

    async def get_channel(self, request: web.Request) -> web.Response:
        row = await self.run(self.store.get, channels, request.match_info["channel"],
                             application_id=self._app_id(request))
        return _json(await self._render_channel(row))

    async def update_channel(self, request: web.Request) -> web.Response:
        app_id = self._app_id(request)
        values = checked(await self.body(request), fields.CHANNEL_FIELDS,
                         readonly=("created_ts", "id", "application_id", "floors"))
        await self._check_package(app_id, values.get("package_id"))
        row = await self.run(self.store.update_channel, self.clock(),
                             request.match_info["channel"], values, app_id)
        return _json(await self._render_channel(row))

    async def delete_channel(self, request: web.Request) -> web.Response:
        await self.run(self.store.delete, channels, request.match_info["channel"],
                       application_id=self._app_id(request))
        return web.Response(status=204)

    async def get_floors(self, request: web.Request) -> web.Response:
        await self.run(self.store.get, channels, request.match_info["channel"])
        floors = await self.run(self.store.floors, request.match_info["channel"])
        return _json({"floors": [{"package_id": f["package_id"],
                                  "floor_reason": f["floor_reason"]} for f in floors]})

    async def put_floor(self, request: web.Request) -> web.Response:
        reason = "Required intermediate version"
        if request.can_read_body:
            body = await self.body(request)
            if not isinstance(body, dict):
                raise Invalid("the body must be a JSON object")
            reason = fields._text(255)(body.get("floor_reason", reason), "floor_reason")
        await self.run(self.store.set_floor, request.match_info["channel"],
                       request.match_info["package"], reason)
        return _json({"package_id": request.match_info["package"], "floor_reason": reason})

    async def delete_floor(self, request: web.Request) -> web.Response:
        await self.run(self.store.delete_floor, request.match_info["channel"],
                       request.match_info["package"])
        return web.Response(status=204)

    # ----------------------------------------------------------------- packages

    async def list_packages(self, request: web.Request) -> web.Response:
        return await self._scoped_list(request, packages, "packages", render_package)

    @staticmethod
    def _package_row(values: dict[str, Any]) -> dict[str, Any]:
        for key in ("channels_blacklist", "extra_files"):
            if key in values:
                values[key] = json.dumps(values[key])
        return values

    async def create_package(self, request: web.Request) -> web.Response:
        app_id = self._app_id(request)
        values = self._package_row(package_values(await self.body(request), create=True))
        await self.run(self.store.get, applications, app_id)
        values = {"id": new_id(), "application_id": app_id, "created_ts": self.clock(),
                  "size": values.get("size", 0) or 0} | values
        return _json(render_package(await self.run(self.store.insert, packages, values)), 201)

    async def get_package(self, request: web.Request) -> web.Response:
        row = await self.run(self.store.get, packages, request.match_info["package"],
                             application_id=self._app_id(request))
        return _json(render_package(row))

    async def update_package(self, request: web.Request) -> web.Response:
        values = self._package_row(package_values(await self.body(request), create=False))
        row = await self.run(self.store.update, packages, request.match_info["package"],
                             values, application_id=self._app_id(request))
        return _json(render_package(row))

    async def delete_package(self, request: web.Request) -> web.Response:
        await self.run(self.store.delete, packages, request.match_info["package"],
                       application_id=self._app_id(request))
        return web.Response(status=204)

    async def upload_payload(self, request: web.Request) -> web.Response:
        """Stores the body as the package's file and records its size and hashes.

        The file is written to a temp name beside its destination, synced and renamed, so
        a download never sees half a payload; the package then points at this server.
        """
        if self.payload_dir is None:
            raise Invalid("this server stores no payloads (start it with --payload-dir)")
        app_id, package_id = self._app_id(request), request.match_info["package"]
        row = await self.run(self.store.get, packages, package_id, application_id=app_id)
        target = payload_path(self.payload_dir, package_id, row["filename"])
        target.parent.mkdir(parents=True, exist_ok=True)
        sha1, sha256, size = hashlib.sha1(), hashlib.sha256(), 0
        fd, temp = tempfile.mkstemp(dir=target.parent, prefix=".upload-")
        try:
            with os.fdopen(fd, "wb") as out:
                async for chunk in request.content.iter_chunked(1 << 20):
                    out.write(chunk)
                    sha1.update(chunk)
                    sha256.update(chunk)
                    size += len(chunk)
                out.flush()
                os.fsync(out.fileno())
            if size == 0:
                raise Invalid("the payload is empty")
            os.replace(temp, target)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
        values = {"size": size, "hash": base64.b64encode(sha1.digest()).decode(),
                  "hash_sha256": base64.b64encode(sha256.digest()).decode(),
                  "stored": True, "url": ""}
        row = await self.run(self.store.update, packages, package_id, values,
                             application_id=app_id)
        return _json(render_package(row))
