"""``flotilla-updatectl``: the update server's REST API from a shell.

Every command is one or two API calls, so what it can do is exactly what the API allows
(and a token is needed for the same writes). ``--output json`` prints the API's own JSON
for scripts; the default is a table with the columns people look at first. Objects are
named by id or, where names are unique (apps, a group's name or track, a channel's name),
by name. Exit status: 0 done, 1 the server refused (its message is printed), 2 usage.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import requests

DEFAULT_SERVER = "http://127.0.0.1:8000"


class Refused(Exception):
    """The server answered with an error; the message is its own."""


class Client:
    def __init__(self, server: str, token: str | None) -> None:
        self.server = server.rstrip("/")
        self.session = requests.Session()
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"

    def call(self, method: str, path: str, body: Any = None, data: bytes | None = None) -> Any:
        try:
            reply = self.session.request(method, self.server + path, json=body, data=data,
                                         timeout=60)
        except requests.RequestException as err:
            raise Refused(f"cannot reach {self.server}: {err}") from err
        if reply.status_code >= 400:
            try:
                message = reply.json().get("error", reply.text)
            except ValueError:
                message = reply.text.strip()
            raise Refused(f"{method} {path}: {reply.status_code} {message}")
        return reply.json() if reply.content else None

    def app(self, ref: str) -> dict[str, Any]:
        for app in self.call("GET", "/api/apps?perpage=1000")["applications"]:
            if ref.strip("{}").lower() == app["id"] or ref == app["name"]:
                return app
        raise Refused(f"no application {ref!r}")

    def _find(self, app_id: str, kind: str, ref: str, names: tuple[str, ...]) -> dict[str, Any]:
        for item in self.call("GET", f"/api/apps/{app_id}/{kind}?perpage=1000")[kind]:
            if ref == item["id"] or any(ref == item.get(n) for n in names):
                return item
        raise Refused(f"no {kind[:-1]} {ref!r} in application {app_id}")

    def group(self, app_id: str, ref: str) -> dict[str, Any]:
        return self._find(app_id, "groups", ref, ("name", "track"))

    def channel(self, app_id: str, ref: str) -> dict[str, Any]:
        return self._find(app_id, "channels", ref, ("name",))

    def package(self, app_id: str, ref: str) -> dict[str, Any]:
        return self._find(app_id, "packages", ref, ("version",))


COLUMNS = {
    "applications": ("id", "name", "description"),
    "groups": ("id", "name", "track", "channel_id", "policy_updates_enabled",
               "policy_max_updates_per_period", "policy_period_interval", "rollout_in_progress"),
    "channels": ("id", "name", "package_id"),
    "packages": ("id", "version", "filename", "size", "stored", "url"),
    "instances": ("id", "version", "status_name", "last_reason", "last_reason_detail"),
    "activities": ("created_ts", "class", "severity", "text"),
}


def table(rows: list[dict[str, Any]], columns: Sequence[str]) -> str:
    cells = [[str(row.get(c, "")) for c in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(line.rstrip() for line in lines)


def emit(args: argparse.Namespace, data: Any, kind: str) -> None:
    if args.output == "json":
        print(json.dumps(data, indent=2, sort_keys=True))
        return
    rows = data if isinstance(data, list) else [data]
    print(table(rows, COLUMNS[kind]))


def _policy(args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = {}
    for flag, key in (("max_updates", "policy_max_updates_per_period"),
                      ("period", "policy_period_interval"),
                      ("update_timeout", "policy_update_timeout"),
                      ("timezone", "policy_timezone"), ("office_start", "policy_office_start"),
                      ("office_end", "policy_office_end")):
        if getattr(args, flag, None) is not None:
            body[key] = getattr(args, flag)
    for flag, key in (("office_hours", "policy_office_hours"), ("safe_mode", "policy_safe_mode")):
        value = getattr(args, flag, None)
        if value is not None:
            body[key] = value == "on"
    return body


def run(args: argparse.Namespace, client: Client) -> None:
    cmd = args.command
    if cmd == "apps":
        if args.create:
            body = {"name": args.create, **({"id": args.id} if args.id else {})}
            emit(args, client.call("POST", "/api/apps", body), "applications")
        else:
            emit(args, client.call("GET", "/api/apps?perpage=1000")["applications"],
                 "applications")
        return
    app = client.app(args.app)
    base = f"/api/apps/{app['id']}"
    if cmd == "groups":
        emit(args, client.call("GET", base + "/groups?perpage=1000")["groups"], "groups")
    elif cmd == "group-create":
        body = {"name": args.name, "track": args.track or args.name.lower(),
                "policy_max_updates_per_period": 999999, "policy_period_interval": "1 minutes",
                "policy_timezone": "UTC", "policy_update_timeout": "60 minutes",
                **_policy(args)}
        if args.channel:
            body["channel_id"] = client.channel(app["id"], args.channel)["id"]
        emit(args, client.call("POST", base + "/groups", body), "groups")
    elif cmd in ("group-update", "pause", "resume"):
        group = client.group(app["id"], args.group)
        body = _policy(args) if cmd == "group-update" else {
            "policy_updates_enabled": cmd == "resume"}
        if cmd == "group-update" and args.channel:
            body["channel_id"] = client.channel(app["id"], args.channel)["id"]
        emit(args, client.call("PUT", f"{base}/groups/{group['id']}", body), "groups")
    elif cmd == "channels":
        emit(args, client.call("GET", base + "/channels?perpage=1000")["channels"], "channels")
    elif cmd == "channel-create":
        body: dict[str, Any] = {"name": args.name}
        if args.package:
            body["package_id"] = client.package(app["id"], args.package)["id"]
        emit(args, client.call("POST", base + "/channels", body), "channels")
    elif cmd == "channel-set":
        channel = client.channel(app["id"], args.channel)
        package = client.package(app["id"], args.package)
        emit(args, client.call("PUT", f"{base}/channels/{channel['id']}",
                               {"package_id": package["id"]}), "channels")
    elif cmd == "packages":
        emit(args, client.call("GET", base + "/packages?perpage=1000")["packages"], "packages")
    elif cmd == "package-create":
        body = {"version": args.version, "filename": args.filename or
                (Path(args.file).name if args.file else "update.gz")}
        if args.url:
            body.update(url=args.url, size=args.size, hash=args.sha1 or "",
                        flatcar_action={"sha256": args.sha256 or ""})
        package = client.call("POST", base + "/packages", body)
        if args.file:
            package = client.call("PUT", f"{base}/packages/{package['id']}/payload",
                                  data=Path(args.file).read_bytes())
        emit(args, package, "packages")
    elif cmd == "instances":
        group = client.group(app["id"], args.group)
        query = f"?perpage={args.limit}" + (f"&status={args.status}" if args.status else "")
        listing = client.call("GET", f"{base}/groups/{group['id']}/instances{query}")
        rows = [{"id": i["id"], **i["application"]} for i in listing["instances"]]
        emit(args, rows if args.output != "json" else listing, "instances")
    elif cmd == "activity":
        emit(args, client.call("GET", f"/api/activity?perpage={args.limit}&app={app['id']}")
             ["activities"], "activities")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="flotilla-updatectl",
                                     description="Manage a flotilla-update-server")
    parser.add_argument("--server", default=os.environ.get("FLOTILLA_UPDATE_SERVER",
                                                           DEFAULT_SERVER))
    parser.add_argument("--token-file", type=Path, help="file holding the API token")
    parser.add_argument("--output", choices=("table", "json"), default="table")
    sub = parser.add_subparsers(dest="command", required=True)
    apps = sub.add_parser("apps", help="list applications, or --create NAME")
    apps.add_argument("--create", metavar="NAME")
    apps.add_argument("--id", help="the app id for --create (e.g. the OS image's)")

    def with_app(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--app", required=True, help="application id or name")
        return p

    def policy_flags(p: argparse.ArgumentParser) -> None:
        p.add_argument("--max-updates", type=int, dest="max_updates")
        p.add_argument("--period", help="e.g. '15 minutes'")
        p.add_argument("--update-timeout", dest="update_timeout", help="e.g. '60 minutes'")
        p.add_argument("--timezone")
        p.add_argument("--office-hours", dest="office_hours", choices=("on", "off"))
        p.add_argument("--office-start", dest="office_start", help="HH:MM")
        p.add_argument("--office-end", dest="office_end", help="HH:MM")
        p.add_argument("--safe-mode", dest="safe_mode", choices=("on", "off"))
        p.add_argument("--channel", help="channel id or name")

    with_app("groups", "list groups")
    p = with_app("group-create", "create a group")
    p.add_argument("name")
    p.add_argument("--track")
    policy_flags(p)
    p = with_app("group-update", "change a group's channel or policy")
    p.add_argument("group")
    policy_flags(p)
    for name in ("pause", "resume"):
        with_app(name, f"{name} a group's updates").add_argument("group")
    with_app("channels", "list channels")
    p = with_app("channel-create", "create a channel")
    p.add_argument("name")
    p.add_argument("--package", help="package id or version")
    p = with_app("channel-set", "point a channel at a package")
    p.add_argument("channel")
    p.add_argument("package")
    with_app("packages", "list packages")
    p = with_app("package-create", "register a package (--url) or upload one (--file)")
    p.add_argument("version")
    p.add_argument("--file", help="payload file to upload and serve")
    p.add_argument("--url", help="external codebase URL instead of a stored file")
    p.add_argument("--filename")
    p.add_argument("--size", type=int)
    p.add_argument("--sha1", help="base64 SHA-1 (with --url)")
    p.add_argument("--sha256", help="base64 SHA-256 (with --url)")
    p = with_app("instances", "list a group's instances with their last decision")
    p.add_argument("group")
    p.add_argument("--status", type=int)
    p.add_argument("--limit", type=int, default=100)
    p = with_app("activity", "the activity feed")
    p.add_argument("--limit", type=int, default=50)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    token = args.token_file.read_text().strip() if args.token_file else None
    try:
        run(args, Client(args.server, token))
    except Refused as err:
        print(f"flotilla-updatectl: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
