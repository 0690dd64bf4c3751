"""``flotilla-cloudinit``: read user-data from the first available source and apply it.

The run follows the original: pick a datasource, fetch, gunzip, validate the raw text,
substitute ``$public_ipv4``-style tokens, parse, merge the metadata's hostname and keys,
apply, then run a ``#!`` script as a transient unit. Unlike the original, a config with an
error (or a value of the wrong type) applies nothing, and a second run with the same
input changes nothing and says so.

Exit codes: 0 success, 1 failure or validation problems, 2 usage.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

from . import LOADED_AT, plan
from .config import CloudConfig, from_tree
from .decode import ContentError
from .rawyaml import YamlSyntaxError, load
from .substitute import substitute, values_from
from .userdata import Kind, UserDataError, classify, unpack
from .validate import validate_text

DEFAULT_DEADLINE = 300.0
WORKSPACE = "/var/lib/flotilla-cloudinit"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="flotilla-cloudinit", description=__doc__.split("\n")[0])
    p.add_argument("--validate", nargs="?", const="", metavar="FILE",
                   help="only validate (FILE, or the datasource's user-data); exit 1 if any "
                        "problem is reported")
    p.add_argument("--from-file", metavar="PATH")
    p.add_argument("--from-url", metavar="URL")
    p.add_argument("--from-configdrive", nargs="?", const="", metavar="DIR",
                   help="a mounted config drive, or find the config-2 device through udev")
    p.add_argument("--from-ec2-metadata", metavar="URL")
    p.add_argument("--from-proc-cmdline", action="store_true")
    p.add_argument("--cmdline-path", default="/proc/cmdline", help=argparse.SUPPRESS)
    p.add_argument("--timeout", type=float, default=DEFAULT_DEADLINE,
                   help="total seconds to wait for a datasource (default 300)")
    p.add_argument("--http-timeout", type=float, default=10.0)
    p.add_argument("--http-attempts", type=int, default=15)
    p.add_argument("--dry-run", action="store_true",
                   help="print the planned steps (change/ok) and apply nothing")
    p.add_argument("--root", default="/",
                   help="apply to this root directory instead of the running system; "
                        "systemd calls are then recorded, not made")
    p.add_argument("--workspace", default=WORKSPACE)
    p.add_argument("--ssh-key-name", default=plan.SSH_KEY_NAME)
    p.add_argument("--ignore-failure", action="store_true",
                   help="exit 0 even if fetching or parsing failed")
    return p


def _sources(args: argparse.Namespace) -> list:  # type: ignore[type-arg]
    from . import datasource as ds

    policy = ds.HttpPolicy(timeout=args.http_timeout, attempts=args.http_attempts)
    out: list = []  # type: ignore[type-arg]
    if args.from_file:
        out.append(ds.FileSource(Path(args.from_file)))
    if args.from_url:
        out.append(ds.UrlSource(args.from_url, policy))
    if args.from_configdrive is not None:
        out.append(ds.ConfigDriveSource(Path(args.from_configdrive)) if args.from_configdrive
                   else ds.MountedConfigDrive())
    if args.from_ec2_metadata:
        out.append(ds.Ec2MetadataSource(args.from_ec2_metadata, policy))
    if args.from_proc_cmdline:
        out.append(ds.ProcCmdlineSource(Path(args.cmdline_path), policy))
    return out


def _say(line: str) -> None:
    print(line, flush=True)


def _err(line: str) -> None:
    print(f"flotilla-cloudinit: {line}", file=sys.stderr, flush=True)


def validate_command(path: str) -> int:
    try:
        text = unpack(Path(path).read_bytes())
    except OSError as err:
        _err(f"{path}: {err.strerror}")
        return 1
    except UserDataError as err:
        _err(str(err))
        return 1
    entries = validate_text(text)
    for entry in entries:
        _say(str(entry))
    return 1 if entries else 0


def _hosts(root: Path):  # type: ignore[no-untyped-def]
    """systemd/hostnamed for the running system, or recording stand-ins for a root dir."""
    if root == Path("/") and not os.environ.get("FLOTILLA_CLOUDINIT_OFFLINE"):
        from .dbus_adapter import connect

        return connect
    from .offline import OfflineHostname, OfflineSystemd

    async def offline():  # type: ignore[no-untyped-def]
        return OfflineSystemd(root), OfflineHostname(root)

    return offline


def parse_config(text: str, addresses: dict[str, str]) -> CloudConfig:
    """Validate, substitute, decode. Raises ValueError with every blocking problem."""
    entries = validate_text(text)
    for entry in entries:
        _err(str(entry))
    blocking = [e for e in entries if e.blocking]
    if blocking:
        raise ValueError(f"refusing to apply: {len(blocking)} problem(s) in the cloud-config, "
                         "nothing was changed")
    try:
        return from_tree(load(substitute(text, addresses)))
    except (YamlSyntaxError, ContentError) as err:
        raise ValueError(f"after substitution: {err}") from err


async def run(args: argparse.Namespace) -> int:
    from .datasource import Metadata, first_available, merge_metadata_keys

    sources = _sources(args)
    if not sources:
        _err("no datasource given (use --from-file, --from-url, --from-configdrive, "
             "--from-ec2-metadata or --from-proc-cmdline)")
        return 2
    if len(sources) == 1 and getattr(sources[0], "name", "") == "file":
        source = sources[0] if sources[0].available() else None
    else:
        source = await asyncio.to_thread(first_available, sources, args.timeout)
    if source is None:
        _err("no datasources available in time")
        return 1
    failure = 0
    try:
        if source.name == "file":  # a local read: no worker thread needed
            raw, meta = source.fetch()
        else:
            raw, meta = await asyncio.to_thread(source.fetch)
        text = unpack(raw)
    except (UserDataError, RuntimeError) as err:
        _err(f"{source.name}: {err}")
        return 0 if args.ignore_failure else 1
    kind = classify(text)
    if args.validate is not None:
        entries = validate_text(text)
        for entry in entries:
            _say(str(entry))
        return 1 if entries else 0
    if kind is Kind.IGNITION:
        _say("Detected an Ignition config. Exiting...")
        return 0
    if kind is Kind.UNKNOWN:
        _err("unrecognized user-data format (neither #cloud-config, #! script nor Ignition); "
             "nothing was changed")
        return 0 if args.ignore_failure else 1
    addresses = values_from(meta.addresses() if isinstance(meta, Metadata) else {})
    cfg = CloudConfig()
    if kind is Kind.CLOUD_CONFIG:
        try:
            cfg = parse_config(text, addresses)
        except ValueError as err:
            _err(str(err))
            return 1
    if meta.hostname:
        if cfg.hostname and cfg.hostname != meta.hostname:
            _err(f"warning: user-data hostname {cfg.hostname} overrides metadata hostname "
                 f"{meta.hostname}")
        cfg.hostname = cfg.hostname or meta.hostname
    cfg.ssh_authorized_keys = merge_metadata_keys(cfg.ssh_authorized_keys, meta)

    from .execute import ApplyError, Host, apply, observe

    root = Path(args.root)
    try:
        systemd, hostnamed = await _hosts(root)()
    except RuntimeError as err:  # SystemdError: no bus, or the bus refused us
        _err(f"cannot reach systemd over D-Bus: {err}; nothing was changed")
        return 1
    host = Host(root, systemd, hostnamed)
    actions = plan.desired_actions(cfg, addresses, args.ssh_key_name)
    try:
        steps = plan.reconcile(actions, await observe(actions, host))
    except plan.PlanError as err:
        _err(f"{err}; nothing was changed")
        return 1
    except (OSError, RuntimeError) as err:  # SystemdError is a RuntimeError
        _err(f"reading the machine's state: {err}; nothing was changed")
        return 1
    changes = sum(step.change for step in steps)
    if args.dry_run:
        for step in steps:
            _say(step.describe())
        _say(f"{changes} change(s) planned" if changes else "no changes")
        return failure
    try:
        applied = await apply(steps, host, _say)
    except ApplyError as err:
        _err(f"failed: {err}")
        return 0 if args.ignore_failure else 1
    if kind is Kind.SCRIPT:
        try:
            await run_script(substitute(text, addresses), host, Path(args.workspace))
        except Exception as err:  # the script's own failure is reported, not raised
            _err(f"script failed: {err}")
            return 0 if args.ignore_failure else 1
    own = time.perf_counter() - LOADED_AT - host.systemd_seconds - host.tool_seconds
    timing = (f"(own {own * 1000:.0f} ms, systemd {host.systemd_seconds * 1000:.0f} ms, "
              f"useradd/usermod {host.tool_seconds * 1000:.0f} ms, "
              f"cpu {time.process_time() * 1000:.0f} ms, "
              f"file sync {host.writes.commit_seconds * 1000:.0f} ms)")
    if applied:
        _say(f"applied {applied} change(s) {timing}")
    else:
        _say(f"no changes: the machine already matches the config {timing}")
    return failure


async def run_script(text: str, host, workspace: Path) -> str:  # type: ignore[no-untyped-def]
    """Save the script (mode 0744) and run it as a transient unit after the config."""
    from flotilla.daemons.durable import write_atomic

    scripts = host.path(str(workspace / "scripts"))
    name = os.urandom(6).hex()
    write_atomic(scripts / name, text.encode(), mode=0o744)
    unit = f"flotilla-cloudinit-{name}.service"
    write_atomic(scripts / "unit-name", f"{unit}\n".encode(), mode=0o644)
    _say(f"[change] run script as {unit}")
    await host.systemd.start_transient_service(unit, ["/bin/bash", str(workspace / "scripts" /
                                                                     name)])
    return unit


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.validate and not any((args.from_file, args.from_url, args.from_ec2_metadata,
                                  args.from_proc_cmdline, args.from_configdrive is not None)):
        return validate_command(args.validate)
    try:
        return asyncio.run(run(args))
    except KeyboardInterrupt:
        return 1


if __name__ == "__main__":
    sys.exit(main())
