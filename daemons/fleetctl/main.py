"""``fleetctl``: drive the cluster's units through the fleet API v1.

Commands, flags, messages, table formats and exit codes (0 on success, 1 on any
error) follow fleet's fleetctl. ``status`` and ``journal`` are answered by the agent
of the machine holding the unit through the API, so no SSH access is needed.
Template instances (``web@1.service``) are created from a ``web@.service`` found in
the cluster or next to the given path.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from flotilla.daemons.fleet import model

from .client import DEFAULT_ENDPOINT, ApiError, FleetClient
from .tables import machine_full_legend, machine_id_legend, render

VERSION = "1.0.0-flotilla"
POLL_INTERVAL = 0.25
ATTEMPT_SECONDS = 2.0


class CommandError(Exception):
    pass


def out(text: str = "") -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def err(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def unit_name_mangle(arg: str) -> str:
    name = os.path.basename(arg)
    if "." not in name:
        name += ".service"
    return name


class Context:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.client = FleetClient(args.endpoint, timeout=args.request_timeout)
        self._machines: dict[str, str] | None = None

    def machine_ips(self) -> dict[str, str]:
        if self._machines is None:
            self._machines = {m["id"]: m.get("primaryIP", "") for m in self.client.machines()}
        return self._machines

    # ------------------------------------------------------------ unit files

    def local_options(self, path: Path, name: str) -> list[dict]:
        try:
            options = model.parse_unit_file(path.read_text())
        except model.UnitError as error:
            raise CommandError(f"failed creating unit {name}: {path}: {error}") from None
        return [o.to_json() for o in options]

    def unit_options_for(self, arg: str) -> list[dict]:
        """Options for a new unit: local file, else its template (cluster, then local)."""
        name = unit_name_mangle(arg)
        path = Path(arg)
        if path.is_file():
            return self.local_options(path, name)
        parts = model.parse_name(name)
        if parts.is_instance:
            template = self.client.unit(parts.template)
            if template is not None:
                return template["options"]
            local_template = path.parent / parts.template
            if local_template.is_file():
                return self.local_options(local_template, name)
        raise CommandError(f"unable to find unit file or template file for {name}")

    def lazy_create(self, args: Sequence[str], replace: bool, command: str) -> list[str]:
        names = []
        for arg in args:
            name = unit_name_mangle(arg)
            try:
                model.validate_name(name)
            except model.UnitError as error:
                raise CommandError(f"invalid unit name {name!r}: {error}") from None
            existing = self.client.unit(name)
            names.append(name)
            if existing is not None and not replace:
                if Path(arg).is_file():
                    local = self.local_options(Path(arg), name)
                    if local != existing.get("options"):
                        err(f"WARNING: Unit {name} in registry differs from local unit file "
                            f"{arg}. Add --replace to override.")
                continue
            if existing is not None:
                check_replace_state(command, existing)
            options = self.unit_options_for(arg)
            desired = existing["desiredState"] if existing is not None else "inactive"
            try:
                self.client.create_unit(name, options, desired)
            except ApiError as error:
                raise CommandError(f"failed creating unit {name}: {error.message}") from None
        return names

    # ------------------------------------------------------------ waiting

    def set_and_wait(self, names: Sequence[str], desired: str) -> None:
        units = {}
        for name in names:
            unit = self.client.unit(name)
            if unit is None:
                raise CommandError(f"unit {name} does not exist")
            units[name] = unit
            self.client.set_desired(name, desired)
        self.wait(units, desired)

    def wait(self, units: dict[str, dict], desired: str) -> None:
        args = self.args
        waiting = []
        for name, unit in units.items():
            if is_global(unit):
                out(f"Triggered global unit {name} {verb(desired)}")
            elif args.no_block:
                out(f"Triggered unit {name} {desired}")
            else:
                waiting.append(name)
        attempts = args.block_attempts
        deadline = None if attempts <= 0 else time.monotonic() + attempts * ATTEMPT_SECONDS
        while waiting:
            still = []
            for name in waiting:
                unit = self.client.unit(name)
                if unit is not None and unit.get("currentState") == desired:
                    machine = unit.get("machineID", "")
                    if desired == "inactive" or not machine:
                        out(f"Unit {name} {desired}")
                    else:
                        legend = machine_full_legend(machine, self.machine_ips(), False)
                        out(f"Unit {name} {desired} on {legend}")
                elif unit is None and desired == "inactive":
                    out(f"Unit {name} {desired}")
                else:
                    still.append(name)
            waiting = still
            if not waiting:
                return
            if deadline is not None and time.monotonic() >= deadline:
                raise CommandError(
                    f"Error waiting for units: timed out waiting for unit(s) "
                    f"{', '.join(waiting)} to reach state {desired}")
            time.sleep(POLL_INTERVAL)


def verb(desired: str) -> str:
    return {"launched": "start", "loaded": "load", "inactive": "unload"}.get(desired, desired)


def is_global(unit: dict) -> bool:
    options = [model.UnitOption(o["section"], o["name"], o["value"])
               for o in unit.get("options", [])]
    try:
        return model.requirements(unit["name"], options).is_global
    except model.UnitError:
        return False


def check_replace_state(command: str, unit: dict) -> None:
    state = unit.get("desiredState", "")
    allowed = {"submit": ("inactive",), "load": ("inactive", "loaded"),
               "start": ("inactive", "loaded", "launched")}[command]
    if state not in allowed:
        raise CommandError(f"cannot replace unit {unit['name']} in state {state} with "
                           f"{command}; stop or unload it first")


# ---------------------------------------------------------------- commands


def cmd_submit(ctx: Context) -> int:
    ctx.lazy_create(ctx.args.units, ctx.args.replace, "submit")
    return 0


def cmd_load(ctx: Context) -> int:
    names = ctx.lazy_create(ctx.args.units, ctx.args.replace, "load")
    ctx.set_and_wait(names, "loaded")
    return 0


def cmd_start(ctx: Context) -> int:
    names = ctx.lazy_create(ctx.args.units, ctx.args.replace, "start")
    ctx.set_and_wait(names, "launched")
    return 0


def _existing(ctx: Context, args: Sequence[str]) -> list[dict]:
    units = []
    for arg in args:
        name = unit_name_mangle(arg)
        unit = ctx.client.unit(name)
        if unit is None:
            raise CommandError(f"unit {name} does not exist")
        units.append(unit)
    return units


def cmd_stop(ctx: Context) -> int:
    units = _existing(ctx, ctx.args.units)
    for unit in units:
        if not is_global(unit) and unit.get("currentState") == "inactive" \
                and unit.get("desiredState") == "inactive":
            raise CommandError(f"Unable to stop unit {unit['name']} in state inactive")
    for unit in units:
        ctx.client.set_desired(unit["name"], "loaded")
    ctx.wait({u["name"]: u for u in units}, "loaded")
    return 0


def cmd_unload(ctx: Context) -> int:
    units = _existing(ctx, ctx.args.units)
    for unit in units:
        ctx.client.set_desired(unit["name"], "inactive")
    ctx.wait({u["name"]: u for u in units}, "inactive")
    return 0


def cmd_restart(ctx: Context) -> int:
    for unit in _existing(ctx, ctx.args.units):
        for desired in ("loaded", "launched"):
            ctx.client.set_desired(unit["name"], desired)
            ctx.wait({unit["name"]: unit}, desired)
    return 0


def cmd_destroy(ctx: Context) -> int:
    for arg in ctx.args.units:
        name = unit_name_mangle(arg)
        if ctx.client.destroy(name):
            out(f"Destroyed {name}")
        else:
            err(f"Unit {name} does not exist")
    return 0


def _fields(text: str, valid: dict[str, Callable], what: str) -> list[str]:
    if not text:
        raise CommandError("Must define output format")
    columns = text.split(",")
    for column in columns:
        if column not in valid:
            raise CommandError(f"Invalid key in output format: {column!r}")
    return columns


def _print_table(ctx: Context, columns: list[str], rows: list[list[str]]) -> None:
    table = [] if ctx.args.no_legend else [[c.upper() for c in columns]]
    sys.stdout.write(render(table + rows))


def cmd_list_units(ctx: Context) -> int:
    full = ctx.args.full

    def machine(s: dict) -> str:
        if not s.get("machineID"):
            return "-"
        return machine_full_legend(s["machineID"], ctx.machine_ips(), full)

    fields: dict[str, Callable[[dict], str]] = {
        "unit": lambda s: s.get("name") or "-",
        "load": lambda s: s.get("systemdLoadState") or "-",
        "active": lambda s: s.get("systemdActiveState") or "-",
        "sub": lambda s: s.get("systemdSubState") or "-",
        "machine": machine,
        "hash": lambda s: (s.get("hash") or "-") if full else (s.get("hash") or "-")[:7],
    }
    columns = _fields(ctx.args.fields, fields, "units")
    rows = [[fields[c](s) for c in columns] for s in ctx.client.states()]
    _print_table(ctx, columns, rows)
    return 0


def cmd_list_unit_files(ctx: Context) -> int:
    full = ctx.args.full

    def options_of(u: dict) -> list[model.UnitOption]:
        return [model.UnitOption(o["section"], o["name"], o["value"])
                for o in u.get("options", [])]

    def target(u: dict) -> str:
        if is_global(u):
            return "global"
        if not u.get("machineID"):
            return "-"
        return machine_full_legend(u["machineID"], ctx.machine_ips(), full)

    def unit_hash(u: dict) -> str:
        value = model.unit_hash(options_of(u))
        return value if full else value[:7]

    fields: dict[str, Callable[[dict], str]] = {
        "unit": lambda u: u["name"],
        "hash": unit_hash,
        "desc": lambda u: model.description(options_of(u)) or "-",
        "dstate": lambda u: u.get("desiredState") or "-",
        "state": lambda u: "-" if is_global(u) else (u.get("currentState") or "-"),
        "target": target,
        "tmachine": target,
        "global": lambda u: "global" if is_global(u) else "-",
    }
    columns = _fields(ctx.args.fields, fields, "unit files")
    rows = [[fields[c](u) for c in columns] for u in ctx.client.units()]
    _print_table(ctx, columns, rows)
    return 0


def cmd_list_machines(ctx: Context) -> int:
    full = ctx.args.full
    fields: dict[str, Callable[[dict], str]] = {
        "machine": lambda m: machine_id_legend(m["id"], full),
        "ip": lambda m: m.get("primaryIP") or "-",
        "metadata": lambda m: ",".join(
            f"{k}={v}" for k, v in sorted((m.get("metadata") or {}).items())) or "-",
    }
    columns = _fields(ctx.args.fields, fields, "machines")
    rows = [[fields[c](m) for c in columns] for m in ctx.client.machines()]
    _print_table(ctx, columns, rows)
    return 0


def cmd_status(ctx: Context) -> int:
    for index, arg in enumerate(ctx.args.units):
        name = unit_name_mangle(arg)
        if index:
            out()
        try:
            reply = ctx.client.status(name)
        except ApiError as error:
            raise CommandError(f"Error retrieving status of {name}: {error.message}") from None
        sys.stdout.write(reply.get("output", ""))
    return 0


def cmd_journal(ctx: Context) -> int:
    name = unit_name_mangle(ctx.args.unit)
    lines = ctx.args.lines
    try:
        reply = ctx.client.journal(name, lines)
    except ApiError as error:
        raise CommandError(f"Error retrieving journal of {name}: {error.message}") from None
    sys.stdout.write(reply.get("output", ""))
    seen = reply.get("output", "")
    while ctx.args.follow:
        time.sleep(1.0)
        current = ctx.client.journal(name, max(lines, 1000)).get("output", "")
        if current != seen:
            new = current[len(seen):] if current.startswith(seen) else current
            sys.stdout.write(new)
            sys.stdout.flush()
            seen = current
    return 0


def cmd_cat(ctx: Context) -> int:
    for index, arg in enumerate(ctx.args.units):
        name = unit_name_mangle(arg)
        unit = ctx.client.unit(name)
        if unit is None:
            raise CommandError(f"Unit {name} not found")
        if index:
            out()
        options = [model.UnitOption(o["section"], o["name"], o["value"])
                   for o in unit.get("options", [])]
        sys.stdout.write(model.serialize_options(options))
    return 0


def cmd_version(ctx: Context | None) -> int:
    out(f"fleetctl version {VERSION}")
    return 0


# ---------------------------------------------------------------- parsing


def build_parser() -> argparse.ArgumentParser:
    def common() -> argparse.ArgumentParser:
        # A fresh parent per parser: argparse shares Action objects with children, and
        # the top-level defaults below must not leak into (and override from) commands.
        shared = argparse.ArgumentParser(add_help=False)
        shared.add_argument("--endpoint", default=argparse.SUPPRESS)
        shared.add_argument("--request-timeout", type=float, default=argparse.SUPPRESS)
        shared.add_argument("--debug", action="store_true", default=argparse.SUPPRESS)
        return shared

    env = os.environ
    parser = argparse.ArgumentParser(prog="fleetctl", parents=[common()],
                                     description="fleetctl: manage units in a fleet cluster")
    parser.set_defaults(endpoint=env.get("FLEETCTL_ENDPOINT", DEFAULT_ENDPOINT),
                        request_timeout=float(env.get("FLEETCTL_REQUEST_TIMEOUT", "3")),
                        debug=False)
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command")

    def command(name: str, handler: Callable[[Context], int], help_text: str
                ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[common()], help=help_text)
        p.set_defaults(handler=handler)
        return p

    def blocking(p: argparse.ArgumentParser, no_block: bool = True) -> None:
        p.add_argument("--block-attempts", type=int, default=0,
                       help="wait this many attempts (~2 s each); 0 waits forever")
        if no_block:
            p.add_argument("--no-block", action="store_true", help="do not wait")
        else:
            p.set_defaults(no_block=False)

    p = command("submit", cmd_submit, "upload units to the cluster")
    p.add_argument("--replace", action="store_true")
    p.add_argument("units", nargs="+")
    for name, handler, text in (("load", cmd_load, "schedule units"),
                                ("start", cmd_start, "start units")):
        p = command(name, handler, text)
        p.add_argument("--replace", action="store_true")
        blocking(p)
        p.add_argument("units", nargs="+")
    for name, handler, text in (("stop", cmd_stop, "stop units"),
                                ("unload", cmd_unload, "unschedule units")):
        p = command(name, handler, text)
        blocking(p)
        p.add_argument("units", nargs="+")
    p = command("restart", cmd_restart, "stop then start units")
    blocking(p, no_block=False)
    p.add_argument("units", nargs="+")
    p = command("destroy", cmd_destroy, "remove units from the cluster")
    p.add_argument("units", nargs="+")
    for name, handler, default in (
        ("list-units", cmd_list_units, "unit,machine,active,sub"),
        ("list-unit-files", cmd_list_unit_files, "unit,hash,dstate,state,target"),
        ("list-machines", cmd_list_machines, "machine,ip,metadata"),
    ):
        p = command(name, handler, f"{name.replace('-', ' ')}")
        p.add_argument("-l", "--full", action="store_true", help="do not ellipsize")
        p.add_argument("--no-legend", action="store_true", help="no column headers")
        p.add_argument("--fields", default=default, help=f"columns (default {default})")
    p = command("status", cmd_status, "systemd status of units, from their machines")
    p.add_argument("units", nargs="+")
    p = command("journal", cmd_journal, "journal of a unit, from its machine")
    p.add_argument("--lines", "-n", type=int, default=10)
    p.add_argument("-f", "--follow", action="store_true")
    p.add_argument("--output", default="short")
    p.add_argument("--sudo", action="store_true")
    p.add_argument("unit")
    p = command("cat", cmd_cat, "print unit files as stored")
    p.add_argument("units", nargs="+")
    command("version", cmd_version, "print the version")
    return parser


def resolve_command(argv: list[str], commands: Sequence[str]) -> list[str]:
    """Accept unique command prefixes (``list-m``), as fleetctl does."""
    for index, word in enumerate(argv):
        if word.startswith("-"):
            continue
        if word not in commands:
            matches = [c for c in commands if c.startswith(word)]
            if len(matches) == 1:
                argv = [*argv[:index], matches[0], *argv[index + 1 :]]
        break
    return argv


COMMANDS = ("submit", "load", "start", "stop", "unload", "restart", "destroy", "list-units",
            "list-unit-files", "list-machines", "status", "journal", "cat", "version")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    raw = resolve_command(list(sys.argv[1:] if argv is None else argv), COMMANDS)
    try:
        args = parser.parse_args(raw)
    except SystemExit as exit_:
        return int(exit_.code or 0) and 1
    if args.version:
        return cmd_version(None)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 1
    try:
        ctx = Context(args)
        return args.handler(ctx)
    except CommandError as error:
        err(str(error))
        return 1
    except ApiError as error:
        err(f"Error: {error.message}")
        return 1
    except ValueError as error:
        err(str(error))
        return 1


if __name__ == "__main__":
    sys.exit(main())
