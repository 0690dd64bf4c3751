"""Acquiring the config and running the stages against a target root.

The fetch stage finds the user config (an explicit file or URL, ``ignition.config.url`` on
the kernel command line, the system ``user.ign``, or the file platform's
``$IGNITION_CONFIG_FILE``), resolves ``config.replace`` and then ``config.merge`` children
depth-first, merges base configs underneath, validates the result and caches it. The later
stages read that cache. The files stage fetches and verifies every resource before it
writes anything, applies groups, users, SSH keys, files and units, and records
/etc/.ignition-result.json, which doubles as the first-boot marker: a second run is refused
unless forced.
"""

from __future__ import annotations

import datetime
import glob
import json
import os
from collections.abc import Callable
from typing import Any

from flotilla.daemons.durable import write_atomic
from flotilla.ignition import (
    config as cfgmod,
)
from flotilla.ignition import (
    filesystem_entries,
    merge,
    passwd,
    units,
    validate,
)
from flotilla.ignition.fetch import Fetcher, FetchError, HttpPolicy, read_cmdline_url

RESULT_PATH = "etc/.ignition-result.json"
DEFAULT_CACHE = "/run/flotilla-ignition/config.json"
DEFAULT_SYSTEM_DIR = "/usr/lib/flotilla-ignition"


class EngineError(Exception):
    pass


def parse_any(raw: bytes, files_dir: str | None = None) -> cfgmod.Parsed:
    """Parse an Ignition JSON config, or a Butane YAML config translated on the fly."""
    stripped = raw.lstrip()
    if stripped[:1] not in (b"{", b"[") and stripped:
        from flotilla.ignition import butane  # YAML only when needed

        try:
            translated = butane.translate_bytes(raw, files_dir=files_dir)
        except butane.ButaneError as exc:
            raise cfgmod.ConfigError(str(exc)) from None
        return cfgmod.parse(json.dumps(translated))
    return cfgmod.parse(raw)


def resolve_children(config: dict[str, Any], policy: HttpPolicy | None = None,
                     log: Callable[[str], None] = lambda m: None, depth: int = 0) -> dict[str, Any]:
    """Apply ``config.replace`` and ``config.merge`` recursively, children in order."""
    if depth > 10:
        raise EngineError("config.merge/replace nested too deeply")
    fetcher = Fetcher.for_config(config, policy=policy, log=log)
    section = config.get("ignition", {}).get("config", {})
    replace = section.get("replace", {})
    if replace.get("source"):
        child = cfgmod.parse(fetcher.fetch(replace)).config
        return resolve_children(child, policy, log, depth + 1)
    result = config
    for res in section.get("merge", []):
        child = cfgmod.parse(fetcher.fetch(res)).config
        result = merge.merge(result, resolve_children(child, policy, log, depth + 1))
    return result


def base_configs(system_dir: str, platform: str) -> dict[str, Any]:
    """Merge ``base.d/*.ign`` then ``base.platform.d/<platform>/*.ign``, by filename."""
    base = cfgmod.empty_config()
    for pattern in ("base.d/*.ign", f"base.platform.d/{platform}/*.ign"):
        for path in sorted(glob.glob(os.path.join(system_dir, pattern))):
            with open(path, "rb") as handle:
                base = merge.merge(base, cfgmod.parse(handle.read()).config)
    return base


def locate_user_config(explicit: str | None, cmdline: str, system_dir: str,
                       platform: str) -> str | None:
    """The config's URL or path, in Ignition's order of precedence."""
    if explicit:
        return explicit
    url = read_cmdline_url(cmdline)
    if url:
        return url
    user_ign = os.path.join(system_dir, "user.ign")
    if os.path.exists(user_ign):
        return user_ign
    if platform == "file":
        return os.environ.get("IGNITION_CONFIG_FILE", "config.ign")
    return None


def fetch_stage(location: str | None, cache: str, system_dir: str = DEFAULT_SYSTEM_DIR,
                platform: str = "file", policy: HttpPolicy | None = None,
                files_dir: str | None = None,
                log: Callable[[str], None] = lambda m: None) -> dict[str, Any]:
    """Acquire, resolve, merge with base configs, validate and cache the config."""
    user = cfgmod.empty_config()
    provided = False
    if location:
        raw_fetcher = Fetcher(policy=policy or HttpPolicy(), allow_file=True, log=log)
        url = location if ":" in location.split("/", 1)[0] else "file://" + os.path.abspath(
            location)
        try:
            raw = raw_fetcher.fetch_url(url)
        except FetchError as exc:
            raise EngineError(f"fetching config: {exc}") from None
        user = resolve_children(parse_any(raw, files_dir).config, policy, log)
        provided = True
    final = merge.merge(base_configs(system_dir, platform), user)
    report = validate.validate(final, 6)
    if report.fatal:
        raise EngineError(f"merging configs resulted in an invalid config:\n{report}")
    final.setdefault("ignition", {})["version"] = cfgmod.schema.LATEST
    final["__userConfigProvided"] = provided
    write_json_atomic(cache, final, 0o640)
    return final


def write_json_atomic(path: str, data: Any, mode: int) -> None:
    write_atomic(os.path.abspath(path), json.dumps(data, indent=2, sort_keys=True) + "\n",
                 mode=mode)


def load_cache(cache: str) -> dict[str, Any]:
    try:
        with open(cache, "rb") as handle:
            return json.loads(handle.read())
    except (OSError, ValueError) as exc:
        raise EngineError(f"reading cached config {cache}: {exc}") from None


def check_first_boot(root: str, force: bool) -> None:
    marker = os.path.join(root, RESULT_PATH)
    if os.path.exists(marker) and not force:
        raise EngineError(f"already provisioned ({marker} exists); use --force to run again")


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as handle:
            return handle.read().strip()
    except OSError:
        return ""


def write_result(root: str, config: dict[str, Any], now: datetime.datetime) -> None:
    result = {"provisioningBootID": _boot_id(),
              "provisioningDate": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
              "userConfigProvided": bool(config.get("__userConfigProvided", True))}
    os.makedirs(os.path.join(root, "etc"), exist_ok=True)
    write_json_atomic(os.path.join(root, RESULT_PATH), result, 0o600)


def files_stage(root: str, config: dict[str, Any], force: bool = False,
                policy: HttpPolicy | None = None, parts: tuple[str, ...] = (
                    "passwd", "files", "systemd"),
                log: Callable[[str], None] = lambda m: None) -> None:
    """Groups, users, SSH keys, files, units; everything fetched before any write."""
    root = os.path.abspath(root)
    check_first_boot(root, force)
    if "passwd" in parts:
        passwd.check(root, config.get("passwd", {}))  # before any download or write
    fetcher = Fetcher.for_config(config, policy=policy, log=log)
    storage = config.get("storage", {})
    fetched = filesystem_entries.prefetch(storage, fetcher) if "files" in parts else []
    if "passwd" in parts:
        passwd.apply(root, config.get("passwd", {}))
    if "files" in parts:
        filesystem_entries.apply(root, storage, fetched)
    if "systemd" in parts:
        units.apply(root, config.get("systemd", {}))
    os.sync()
    if parts == ("passwd", "files", "systemd"):
        write_result(root, config, datetime.datetime.now(datetime.UTC))
