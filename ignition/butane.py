"""Butane (variant ``fcos``) YAML translated to an Ignition config.

Butane is the human-facing syntax people write for Ignition: YAML, snake_case keys,
``inline``/``local`` file contents and octal modes. Accepting it directly saves a
translation step at the machine. Version mapping (fcos): 1.0->3.0, 1.1->3.1, 1.2->3.2,
1.3->3.2, 1.4->3.3, 1.5->3.4, 1.6->3.5. Inline contents become ``data:`` URLs (the shorter
of percent-encoding and base64); ``local`` reads a file below ``--files-dir`` and may not
escape it. Modes are ordinary YAML integers, so ``0644`` in YAML 1.1 is already octal.
"""

from __future__ import annotations

import base64
import os
import re
import urllib.parse
from typing import Any

import yaml

FCOS_VERSIONS = {"1.0.0": "3.0.0", "1.1.0": "3.1.0", "1.2.0": "3.2.0", "1.3.0": "3.2.0",
                 "1.4.0": "3.3.0", "1.5.0": "3.4.0", "1.6.0": "3.5.0"}
# Butane keys whose Ignition spelling is not the plain camelCase of the snake_case.
_SPECIAL = {"size_mib": "sizeMiB", "start_mib": "startMiB", "type_guid": "typeGuid",
            "http_headers": "httpHeaders", "ssh_authorized_keys": "sshAuthorizedKeys",
            "certificate_authorities": "certificateAuthorities", "no_proxy": "noProxy",
            "http_proxy": "httpProxy", "https_proxy": "httpsProxy",
            "http_response_headers": "httpResponseHeaders", "http_total": "httpTotal"}
_SAFE = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~")
# Keys whose values hold a Resource (so inline/local apply).
_RESOURCE_KEYS = {"contents", "replace", "key_file"}
_RESOURCE_LIST_KEYS = {"append", "merge", "certificate_authorities"}


class ButaneError(ValueError):
    pass


def _camel(key: str) -> str:
    if key in _SPECIAL:
        return _SPECIAL[key]
    head, *rest = key.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def data_url(data: bytes) -> str:
    """The shorter of a percent-encoded and a base64 ``data:`` URL for ``data``."""
    plain = "data:," + "".join(chr(b) if chr(b) in _SAFE else f"%{b:02X}" for b in data)
    encoded = "data:;base64," + base64.b64encode(data).decode()
    return plain if len(plain) <= len(encoded) else encoded


def _local(files_dir: str | None, name: str, where: str) -> bytes:
    if files_dir is None:
        raise ButaneError(f"error at {where}: local file paths are relative to a files "
                          "directory that must be specified with -d/--files-dir")
    base = os.path.realpath(files_dir)
    path = os.path.realpath(os.path.join(base, name))
    if os.path.commonpath([base, path]) != base:
        raise ButaneError(f"error at {where}: local file path traverses outside the "
                          "files directory")
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise ButaneError(f"error at {where}: reading local file {name}: {exc.strerror}") from None


def _resource(value: Any, files_dir: str | None, where: str) -> Any:
    if not isinstance(value, dict):
        return _convert(value, files_dir, where)
    given = [key for key in ("source", "inline", "local") if value.get(key) is not None]
    if len(given) > 1:
        raise ButaneError(f"error at {where}: only one of source, inline or local may be set")
    out = {k: v for k, v in value.items() if k not in ("inline", "local")}
    out = _convert(out, files_dir, where)
    if "inline" in value and value["inline"] is not None:
        out["source"] = data_url(str(value["inline"]).encode())
        out.setdefault("compression", "")
    elif value.get("local") is not None:
        out["source"] = data_url(_local(files_dir, value["local"], f"{where}.local"))
        out.setdefault("compression", "")
    return out


def _convert(value: Any, files_dir: str | None, where: str) -> Any:
    if isinstance(value, list):
        return [_convert(item, files_dir, f"{where}.{i}") for i, item in enumerate(value)]
    if not isinstance(value, dict):
        return value
    out: dict[str, Any] = {}
    for key, item in value.items():
        path = f"{where}.{key}"
        if key in _RESOURCE_KEYS and isinstance(item, dict):
            out[_camel(key)] = _resource(item, files_dir, path)
        elif key in _RESOURCE_LIST_KEYS and isinstance(item, list):
            out[_camel(key)] = [_resource(r, files_dir, f"{path}.{i}") for i, r in
                                enumerate(item)]
        elif key == "contents_local":
            out["contents"] = _local(files_dir, item, path).decode()
        else:
            out[_camel(key)] = _convert(item, files_dir, path)
    return out


def _check_modes(config: dict[str, Any], warnings: list[str]) -> None:
    storage = config.get("storage", {})
    for kind in ("files", "directories"):
        for index, node in enumerate(storage.get(kind, [])):
            mode = node.get("mode")
            # 644 written in decimal would be 0o1204: almost certainly a forgotten zero.
            if isinstance(mode, int) and re.fullmatch(r"[0-7]{3,4}", str(mode)) and mode > 0o777:
                warnings.append(f"warning at $.storage.{kind}.{index}.mode: unreasonable mode "
                                "would be reasonable if specified in octal; remember to add "
                                "a leading zero")


def translate(doc: Any, files_dir: str | None = None, strict: bool = False) -> dict[str, Any]:
    """Translate a loaded Butane document into an Ignition config dict."""
    if not isinstance(doc, dict):
        raise ButaneError("error at $: a Butane config must be a mapping")
    variant, version = doc.get("variant"), doc.get("version")
    if variant != "fcos":
        raise ButaneError(f"error at $.variant: unsupported config variant {variant!r}")
    if version not in FCOS_VERSIONS:
        raise ButaneError(f"error at $.version: unsupported config version {version!r}")
    body = {k: v for k, v in doc.items() if k not in ("variant", "version")}
    config = _convert(body, files_dir, "$")
    config.setdefault("ignition", {})["version"] = FCOS_VERSIONS[version]
    warnings: list[str] = []
    _check_modes(config, warnings)
    if strict and warnings:
        raise ButaneError("\n".join(warnings))
    return config


def translate_bytes(raw: bytes, files_dir: str | None = None,
                    strict: bool = False) -> dict[str, Any]:
    try:
        doc = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1} col {mark.column + 1}" if mark else ""
        raise ButaneError(f"error{where}: invalid YAML: "
                          f"{getattr(exc, 'problem', None) or exc}") from None
    return translate(doc, files_dir, strict)


def percent_decode(url: str) -> bytes:
    return urllib.parse.unquote_to_bytes(url.partition(",")[2])
