"""``flannelctl``: see the leases and the network config flanneld works from.

flannel itself shipped no such tool (operators ran ``etcdctl ls /coreos.com/network/
subnets`` and read the JSON by eye). Commands:

* ``leases`` — one line per lease: subnet, the PublicIP of the machine holding it, the
  backend, the VTEP MAC and the seconds left (``reserved`` for a lease with no TTL);
* ``config`` — the stored config with flanneld's defaults filled in, or the error that
  makes flanneld refuse it (exit 1);
* ``check-config FILE`` — the same check on a file (``-`` for stdin), before storing it.

Store flags are flanneld's (``-etcd-endpoints``, ``-etcd-prefix``, TLS and auth), also
from the same ``FLANNELD_*`` variables.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..kvclient import KVClient, KVError
from ..settings import SettingsError, resolve
from .config import ConfigError, NetworkConfig, parse
from .main import ENV_PREFIX, OPTIONS
from .store import LeaseStore, leases_from

PROG = "flannelctl"
_STORE_OPTIONS = tuple(opt for opt in OPTIONS if opt.name.startswith("etcd-"))
USAGE = f"""Usage: {PROG} [flags] leases | config | check-config FILE

  leases              list the leases: subnet, holder's PublicIP, backend, VTEP MAC, TTL
  config              show the stored network config with defaults, or why it is refused
  check-config FILE   check a network config file (- for stdin) without storing it

Flags (also {ENV_PREFIX}<FLAG>): {' '.join('-' + o.name for o in _STORE_OPTIONS)}
"""


def describe(config: NetworkConfig) -> str:
    backend = config.backend
    lines = [f"Network:   {config.network}", f"SubnetLen: {config.subnet_len}",
             f"SubnetMin: {config.subnet_min}", f"SubnetMax: {config.subnet_max}",
             f"Backend:   {backend.type}"]
    if backend.type == "vxlan":
        lines.append(f"  VNI: {backend.vni}  Port: {backend.port}  "
                     f"DirectRouting: {str(backend.direct_routing).lower()}")
    return "\n".join(lines) + "\n"


def lease_table(nodes: list[Any]) -> str:
    leases, bad = leases_from(nodes)
    rows = [("SUBNET", "PUBLIC_IP", "BACKEND", "VTEP_MAC", "TTL")]
    for lease in sorted(leases, key=lambda item: item.subnet):
        rows.append((str(lease.subnet), str(lease.public_ip), lease.backend_type or "-",
                     lease.vtep_mac or "-", "reserved" if lease.ttl is None else str(lease.ttl)))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    text = "".join("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:4]))
                   + "  " + row[4] + "\n" for row in rows)
    return text + "".join(f"unreadable: {message}\n" for message in bad)


async def _run(command: str, opts: dict[str, Any]) -> int:
    async with KVClient(opts["etcd_endpoints"], cafile=opts["etcd_cafile"] or None,
                        certfile=opts["etcd_certfile"] or None,
                        keyfile=opts["etcd_keyfile"] or None,
                        username=opts["etcd_username"] or None,
                        password=opts["etcd_password"] or None) as client:
        store = LeaseStore(client, opts["etcd_prefix"])
        if command == "config":
            sys.stdout.write(describe(parse(await store.config_text())))
            return 0
        try:
            reply = await client.get(store.subnets_dir, recursive=True, quorum=True)
            nodes = reply.node.leaves() if reply.node.dir else []
        except KVError as error:
            if getattr(error, "error_code", 0) != 100:
                raise
            nodes = []
        sys.stdout.write(lease_table(nodes))
        return 0


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    environ = os.environ if environ is None else environ
    if any(arg in ("-h", "-help", "--help", "help") for arg in argv):
        sys.stdout.write(USAGE)
        return 0
    words = [arg for arg in argv if arg in ("leases", "config", "check-config")]
    if not words:
        sys.stderr.write(USAGE)
        return 2
    at = argv.index(words[0])
    command, flags, rest = words[0], argv[:at], argv[at + 1:]
    try:
        if command == "check-config":
            if len(rest) != 1:
                raise SettingsError("check-config needs one FILE (- for stdin)")
            text = sys.stdin.read() if rest[0] == "-" else Path(rest[0]).read_text()
            sys.stdout.write(describe(parse(text)))
            return 0
        if rest:
            raise SettingsError(f"unexpected argument {rest[0]!r}")
        opts = resolve(_STORE_OPTIONS, flags, environ=environ, env_prefix=ENV_PREFIX)
        return asyncio.run(_run(command, opts))
    except ConfigError as error:
        sys.stderr.write(f"{PROG}: invalid network config: {error}\n")
        return 1
    except (SettingsError, OSError) as error:
        sys.stderr.write(f"{PROG}: {error}\n")
        return 2
    except KVError as error:
        sys.stderr.write(f"{PROG}: {error}\n")
        return 1


if __name__ == "__main__":
    sys.exit(main())
