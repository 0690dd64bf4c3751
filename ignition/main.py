"""``flotilla-ignition``: command line for validation, Butane translation and the stages.

    flotilla-ignition validate FILE|-
    flotilla-ignition butane [--files-dir DIR] [--strict] FILE|-
    flotilla-ignition fetch  [--config FILE|URL] [--config-cache PATH] [--cmdline PATH]
    flotilla-ignition files|passwd|systemd --root DIR [--config FILE | --config-cache PATH]
    flotilla-ignition disks|mount|umount --root DIR [--config FILE | --config-cache PATH]

Every stage takes ``--root`` so it can be pointed at a directory tree in tests and at
/sysroot at first boot. Exit status is 0 on success, 1 on any failure (the unit files turn
that into a failed boot).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from flotilla.ignition import engine, storage
from flotilla.ignition.config import ConfigError
from flotilla.ignition.fetch import FetchError, HttpPolicy

STAGES = ("fetch", "disks", "mount", "files", "passwd", "systemd", "umount")


def _log(message: str) -> None:
    sys.stderr.write(f"flotilla-ignition: {message}\n")


def _load(args: argparse.Namespace) -> dict[str, Any]:
    if args.config:
        with open(args.config, "rb") as handle:
            raw = handle.read()
        parsed = engine.parse_any(raw, args.files_dir)
        for entry in parsed.report.entries:
            _log(str(entry))
        policy = HttpPolicy(max_attempts=args.http_attempts)
        config = engine.resolve_children(parsed.config, policy, _log)
        return engine.merge.merge(engine.base_configs(args.system_dir, args.platform), config)
    return engine.load_cache(args.config_cache)


def _stage_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flotilla-ignition")
    parser.add_argument("stage", choices=STAGES)
    parser.add_argument("--root", "-root", default="/")
    parser.add_argument("--config", "-config", help="config file (Ignition JSON or Butane)")
    parser.add_argument("--config-cache", "-config-cache", default=engine.DEFAULT_CACHE)
    parser.add_argument("--cmdline", default="/proc/cmdline")
    parser.add_argument("--platform", "-platform", default="file")
    parser.add_argument("--system-dir", default=engine.DEFAULT_SYSTEM_DIR)
    parser.add_argument("--files-dir", default=None)
    parser.add_argument("--force", action="store_true", help="run even if provisioned")
    parser.add_argument("--http-attempts", type=int, default=0,
                        help="bound HTTP retries (0: until the total timeout)")
    return parser


def run_stage(argv: list[str]) -> int:
    args = _stage_parser().parse_args(argv)
    policy = HttpPolicy(max_attempts=args.http_attempts)
    try:
        if args.stage == "fetch":
            engine.fetch_stage(
                engine.locate_user_config(args.config, args.cmdline, args.system_dir,
                                          args.platform),
                args.config_cache, args.system_dir, args.platform, policy, args.files_dir,
                _log)
            return 0
        config = _load(args)
        if args.stage in ("files", "passwd", "systemd"):
            parts = ("passwd", "files", "systemd") if args.stage == "files" else (args.stage,)
            engine.files_stage(args.root, config, args.force, policy, parts, _log)
        elif args.stage == "disks":
            storage.disks_stage(config.get("storage", {}), _log)
        elif args.stage == "mount":
            storage.mount_stage(args.root, config.get("storage", {}), _log)
        elif args.stage == "umount":
            storage.umount_stage(args.root, config.get("storage", {}), _log)
    except ConfigError as exc:
        _log(f"invalid config: {exc.message}")
        for entry in exc.report.entries:
            _log(str(entry))
        return 1
    except (engine.EngineError, FetchError, storage.StorageError, OSError,
            engine.filesystem_entries.StageError) as exc:
        _log(f"{args.stage} failed: {exc}")
        return 1
    return 0


def run_butane(argv: list[str]) -> int:
    from flotilla.ignition import butane

    parser = argparse.ArgumentParser(prog="flotilla-ignition butane")
    parser.add_argument("input")
    parser.add_argument("--files-dir", "-d", default=None)
    parser.add_argument("--strict", "-s", action="store_true")
    parser.add_argument("--pretty", "-p", action="store_true")
    args = parser.parse_args(argv)
    if args.input == "-":
        raw = sys.stdin.buffer.read()
    else:
        with open(args.input, "rb") as handle:
            raw = handle.read()
    try:
        translated = butane.translate_bytes(raw, files_dir=args.files_dir, strict=args.strict)
    except butane.ButaneError as exc:
        sys.stderr.write(f"{exc}\n")
        return 1
    sys.stdout.write(json.dumps(translated, indent=2 if args.pretty else None) + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "validate":
        from flotilla.ignition.validate_cli import main as validate_main

        return validate_main(argv[1:])
    if argv and argv[0] == "butane":
        return run_butane(argv[1:])
    return run_stage(argv)


if __name__ == "__main__":
    sys.exit(main())
