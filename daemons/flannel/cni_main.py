"""``flannel``: the CNI plugin executable (ADD, DEL, CHECK, VERSION).

The runtime runs it with ``CNI_COMMAND``, ``CNI_CONTAINERID``, ``CNI_NETNS``,
``CNI_IFNAME``, ``CNI_PATH`` in the environment and the network config on stdin. It reads
``subnet.env``, writes the delegate config to ``<dataDir>/<container id>`` (atomically,
through :mod:`..durable`, so DEL finds exactly what ADD used), and runs the delegate
(``bridge`` from ``CNI_PATH``) with the same environment, passing its reply and exit
status through. DEL of a container it never saw succeeds, as the CNI spec asks.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from .. import durable
from .cni import (
    ERR_INTERNAL,
    ERR_INVALID_ENV,
    CNIError,
    NetConf,
    delegate_conf,
    parse_netconf,
    parse_subnet_env,
    version_reply,
    with_prev_result,
)


def find_plugin(name: str, cni_path: str) -> str:
    for directory in cni_path.split(":"):
        candidate = Path(directory, name)
        if directory and candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    raise CNIError(ERR_INTERNAL, f'failed to find plugin "{name}" in path [{cni_path}]')


def run_delegate(conf: dict, environ: Mapping[str, str], command: str) -> tuple[int, str]:
    plugin = find_plugin(str(conf.get("type", "")), environ.get("CNI_PATH", ""))
    env = {**environ, "CNI_COMMAND": command}
    done = subprocess.run([plugin], input=json.dumps(conf).encode(), env=env,
                          capture_output=True, check=False, timeout=60)
    sys.stderr.write(done.stderr.decode(errors="replace"))
    return done.returncode, done.stdout.decode(errors="replace")


def saved_path(conf: NetConf, container_id: str) -> Path:
    return Path(conf.data_dir, container_id)


def add(conf: NetConf, environ: Mapping[str, str], container_id: str) -> tuple[int, str]:
    try:
        text = Path(conf.subnet_file).read_text()
    except OSError as error:
        raise CNIError(ERR_INTERNAL, f"loadFlannelSubnetEnv failed: open {conf.subnet_file}: "
                       f"{os.strerror(error.errno or 0).lower()}") from None
    delegate = delegate_conf(conf, parse_subnet_env(conf.subnet_file, text))
    path = saved_path(conf, container_id)
    durable.write_atomic(path, json.dumps(delegate), mode=0o600)
    status, out = run_delegate(delegate, environ, "ADD")
    if status != 0:
        path.unlink(missing_ok=True)
    return status, out


def dispatch(command: str, conf: NetConf, environ: Mapping[str, str]) -> tuple[int, str]:
    container_id = environ.get("CNI_CONTAINERID", "")
    if not container_id or "/" in container_id or container_id in (".", ".."):
        raise CNIError(ERR_INVALID_ENV, "required env variables [CNI_CONTAINERID] missing")
    if command == "ADD":
        return add(conf, environ, container_id)
    path = saved_path(conf, container_id)
    try:
        saved = json.loads(path.read_text())
    except FileNotFoundError:
        if command == "DEL":
            return 0, ""  # nothing was set up, so nothing is left to undo
        raise CNIError(ERR_INTERNAL, f"no saved delegate config for {container_id}") from None
    status, out = run_delegate(with_prev_result(saved, conf), environ, command)
    if command == "DEL" and status == 0:
        path.unlink(missing_ok=True)
    return status, out


def main(environ: Mapping[str, str] | None = None) -> int:
    environ = os.environ if environ is None else environ
    command = environ.get("CNI_COMMAND", "")
    if command == "VERSION":
        sys.stdout.write(version_reply())
        return 0
    cni_version = "1.0.0"
    try:
        if command not in ("ADD", "DEL", "CHECK"):
            raise CNIError(ERR_INVALID_ENV, f"unknown CNI_COMMAND: {command!r}")
        conf = parse_netconf(sys.stdin.buffer.read())
        cni_version = conf.cni_version
        status, out = dispatch(command, conf, environ)
    except CNIError as error:
        sys.stdout.write(error.to_json(cni_version))
        return 1
    except OSError as error:
        sys.stdout.write(CNIError(ERR_INTERNAL, str(error)).to_json(cni_version))
        return 1
    sys.stdout.write(out)
    return status


if __name__ == "__main__":
    sys.exit(main())
