"""The ``flannel`` CNI plugin's decisions, pure: its config, subnet.env, the delegate config.

As flannel-io/cni-plugin: the network config (``{"name": "mynet", "type": "flannel"}``)
may carry ``subnetFile`` (default ``/run/flannel/subnet.env``), ``dataDir`` (default
``/var/lib/cni/flannel``, where the delegate config is kept for DEL), ``delegate`` and
``ipam``. The delegate (``bridge`` unless told otherwise) gets the network's name, an
``ipam`` of type ``host-local`` (unless given) for this host's flannel subnet with a route
to the whole flannel network, ``ipMasq`` = the opposite of ``FLANNEL_IPMASQ`` (flanneld
already masquerades when that is true) and ``mtu`` = ``FLANNEL_MTU``, each unless the
delegate sets it, and for ``bridge`` ``isGateway: true``. Error strings are the plugin's.

One difference: the route to the flannel network names its gateway (the subnet's first
address, which the bridge plugin would use anyway). flannel's plugin leaves ``gw`` out,
and the bridge plugin before v1.3.0 (Debian ships 1.1.1) then fails every CHECK with
"Expected Route … GW:<nil> not found" (containernetworking/plugins#886, fixed by #887).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from ipaddress import IPv4Interface, IPv4Network
from typing import Any

DEFAULT_SUBNET_FILE = "/run/flannel/subnet.env"
DEFAULT_DATA_DIR = "/var/lib/cni/flannel"
SUPPORTED_VERSIONS = ("0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0")
ENV_KEYS = ("FLANNEL_NETWORK", "FLANNEL_SUBNET", "FLANNEL_MTU", "FLANNEL_IPMASQ")
# CNI's well-known error codes (SPEC.md "Error"); 999 is libcni's "internal".
ERR_INCOMPATIBLE_VERSION = 1
ERR_DECODING = 6
ERR_INVALID_ENV = 4
ERR_INTERNAL = 999


class CNIError(Exception):
    """An error the plugin reports as CNI's JSON error object."""

    def __init__(self, code: int, msg: str, details: str = "") -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.details = details

    def to_json(self, cni_version: str) -> str:
        body: dict[str, Any] = {"cniVersion": cni_version, "code": self.code, "msg": self.msg}
        if self.details:
            body["details"] = self.details
        return json.dumps(body)


@dataclass(frozen=True)
class NetConf:
    raw: dict[str, Any]
    name: str
    cni_version: str
    subnet_file: str
    data_dir: str
    delegate: dict[str, Any]
    ipam: dict[str, Any]


@dataclass(frozen=True)
class SubnetEnv:
    network: IPv4Network
    subnet: IPv4Network
    mtu: int
    ipmasq: bool


def parse_netconf(text: bytes | str) -> NetConf:
    try:
        raw = json.loads(text)
    except ValueError as error:
        raise CNIError(ERR_DECODING, f"failed to load netconf: {error}") from None
    if not isinstance(raw, dict):
        raise CNIError(ERR_DECODING, "failed to load netconf: not a JSON object")
    for key in ("delegate", "ipam"):
        if key in raw and not isinstance(raw[key], dict):
            raise CNIError(ERR_DECODING, f"failed to load netconf: {key} must be an object")
    return NetConf(raw=raw, name=str(raw.get("name", "")),
                   cni_version=str(raw.get("cniVersion", "0.1.0") or "0.1.0"),
                   subnet_file=str(raw.get("subnetFile") or DEFAULT_SUBNET_FILE),
                   data_dir=str(raw.get("dataDir") or DEFAULT_DATA_DIR),
                   delegate=copy.deepcopy(raw.get("delegate") or {}),
                   ipam=copy.deepcopy(raw.get("ipam") or {}))


def parse_subnet_env(path: str, text: str) -> SubnetEnv:
    """subnet.env's four values; the plugin's errors for missing or malformed ones."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition("=")
        if sep:
            values[key] = value
    missing = [key for key in ENV_KEYS if key not in values]
    if missing:
        raise CNIError(ERR_INTERNAL, f"{path} is missing {', '.join(missing)}")
    try:
        network = IPv4Network(values["FLANNEL_NETWORK"])
        subnet = IPv4Interface(values["FLANNEL_SUBNET"]).network
        mtu = int(values["FLANNEL_MTU"])
    except ValueError as error:
        raise CNIError(ERR_INTERNAL, f"{path}: {error}") from None
    return SubnetEnv(network, subnet, mtu, values["FLANNEL_IPMASQ"] == "true")


def delegate_conf(conf: NetConf, env: SubnetEnv) -> dict[str, Any]:
    """The config handed to the delegate plugin for ADD (and saved for DEL)."""
    delegate = copy.deepcopy(conf.delegate)
    delegate.setdefault("name", conf.name)
    delegate.setdefault("type", "bridge")
    delegate.setdefault("ipMasq", not env.ipmasq)
    delegate.setdefault("mtu", env.mtu)
    if delegate["type"] == "bridge":
        delegate.setdefault("isGateway", True)
    delegate["cniVersion"] = conf.cni_version
    ipam = copy.deepcopy(conf.ipam)
    ipam.setdefault("type", "host-local")
    ipam["subnet"] = str(env.subnet)
    routes = list(ipam.get("routes") or [])
    gateway = str(env.subnet.network_address + 1)
    routes.append({"dst": str(env.network), "gw": gateway})
    ipam["routes"] = routes
    delegate["ipam"] = ipam
    return delegate


def with_prev_result(delegate: dict[str, Any], conf: NetConf) -> dict[str, Any]:
    """The saved delegate config for CHECK/DEL, carrying the runtime's prevResult and the
    config version the runtime speaks now."""
    out = dict(delegate)
    if "cniVersion" in conf.raw:
        out["cniVersion"] = conf.cni_version
    if "prevResult" in conf.raw:
        out["prevResult"] = conf.raw["prevResult"]
    return out


def version_reply(cni_version: str = "1.0.0") -> str:
    return json.dumps({"cniVersion": cni_version,
                       "supportedVersions": list(SUPPORTED_VERSIONS)})
