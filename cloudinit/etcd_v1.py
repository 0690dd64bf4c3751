"""cloud-config's v1 ``coreos.etcd`` section (etcd 0.4's options) as kvd settings.

CoreOS's first cloud-configs configured etcd 0.4, whose options were host:port addresses
(``addr``, ``peer-addr``, ``bind-addr``, ``peer-bind-addr``) where etcd 2 and kvd take URL
lists. The original wrote them untranslated into ``etcd.service``'s drop-in; kvd would
ignore ``ETCD_ADDR``, so a 2014 config would configure nothing. This module translates each
option into the kvd/etcd 2 setting that means the same, with a note for every option whose
name or meaning differs, and refuses values it cannot translate (naming the field) so the
planner applies nothing instead of starting a kvd that cannot work.

It is pure: the section (already decoded and substituted) comes in, environment lines,
notes and errors go out.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from . import schema

CLIENT_PORT_04, PEER_PORT_04 = 4001, 7001
LOCAL_CLIENT_URL = "http://127.0.0.1:2379"
DISCOVERY_NOTE = ("coreos.etcd.discovery: kvd joins by etcd 2's discovery protocol; the token "
                  "must carry the cluster size (https://discovery.etcd.io/new?size=3)")

# etcd 0.4 option -> (kvd/etcd 2 variable, etcd 2 option name for the note).
_RENAMED = {
    "peer_election_timeout": ("ETCD_ELECTION_TIMEOUT", "election-timeout"),
    "peer_heartbeat_interval": ("ETCD_HEARTBEAT_INTERVAL", "heartbeat-interval"),
}
# Options with the same name and meaning in etcd 0.4 and kvd.
_SAME = ("name", "data_dir", "discovery", "snapshot_count", "cert_file", "key_file",
         "peer_cert_file", "peer_key_file", "force_new_cluster", "initial_cluster",
         "initial_cluster_state", "initial_cluster_token", "election_timeout",
         "heartbeat_interval")
# etcd 2 spellings that the v1 section also accepts; they override nothing silently.
_URL_LISTS = {
    "advertise_client_urls": "addr",
    "listen_client_urls": "bind_addr",
    "initial_advertise_peer_urls": "peer_addr",
    "listen_peer_urls": "peer_bind_addr",
}
# Options that change who the member talks to and that kvd cannot honour.
_REFUSED = {
    "peers": "etcd 0.4 joins the peers it is given by address alone; kvd needs each "
             "member's name (use coreos.etcd2.initial_cluster) or coreos.etcd.discovery",
    "peers_file": "etcd 0.4 reads its peers' addresses from a file; kvd needs each member's "
                  "name (use coreos.etcd2.initial_cluster) or coreos.etcd.discovery",
}
# etcd 0.4 knobs that tune etcd's own internals; kvd has nothing they could set. The
# validator warns about each (schema.ETCD marks them); here they are left out.
IGNORED = ("cluster_active_size", "cluster_remove_delay", "cluster_sync_interval", "cors",
           "graphite_host", "http_read_timeout", "http_write_timeout", "max_result_buffer",
           "max_retry_attempts", "retry_interval", "snapshot", "trace", "verbose",
           "very_verbose", "very_very_verbose", "max_snapshots", "max_wals",
           "discovery_fallback", "discovery_srv", "discovery_proxy", "proxy")

_HOST = re.compile(r"^[A-Za-z0-9_.$-]+$")


@dataclass
class KvdSettings:
    """What the section asks of kvd: ``ETCD_*`` lines in a stable order, notes, errors."""

    env: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def drop_in(self) -> str:
        """The ``[Service]`` drop-in for kvd.service; empty when nothing is set."""
        if not self.env:
            return ""
        lines = ["[Service]", *(f'Environment="{k}={v}"' for k, v in self.env)]
        return "\n".join(lines) + "\n"


def split_host_port(text: str, where: str, need_port: bool) -> tuple[str, int | None]:
    """``host:port`` or ``[v6]:port`` (or a bare host when ``need_port`` is false), the way
    etcd 0.4 read its address options. Raises ValueError naming ``where``."""
    if "://" in text or "/" in text:
        raise ValueError(f"{where}: {text!r} is not host:port (etcd 0.4 takes an address "
                         "without a scheme or path)")
    host, port_text = text, ""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError(f"{where}: {text!r} has an unclosed '['")
        host, rest = text[1:end], text[end + 1:]
        if rest and not rest.startswith(":"):
            raise ValueError(f"{where}: {text!r} is not host:port")
        port_text = rest[1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{where}: {host!r} is not an IPv6 address") from None
        host = f"[{host}]"
    elif ":" in text:
        host, _, port_text = text.rpartition(":")
        if not port_text:
            raise ValueError(f"{where}: {text!r} has no port after ':'")
        if ":" in host:
            raise ValueError(f"{where}: {text!r} has too many colons (write IPv6 as [addr]:port)")
        if not _HOST.match(host):
            raise ValueError(f"{where}: {text!r} has no host" if not host
                             else f"{where}: {host!r} is not a host name or address")
    elif not _HOST.match(host):
        raise ValueError(f"{where}: {text!r} is not a host name or address")
    if not port_text:
        if need_port:
            raise ValueError(f"{where}: {text!r} has no port")
        return host, None
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"{where}: port {port_text!r} is not a number from 1 to 65535")
    return host, int(port_text)


def _positive(value: object, where: str) -> str:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{where}: {value!r} must be a positive number of milliseconds")
    return str(value)


def translate(section: Iterable[tuple[schema.Field, object]]) -> KvdSettings:
    """Map the set fields of a v1 ``coreos.etcd`` section onto kvd's ``ETCD_*`` settings."""
    values = {f.name: v for f, v in section}
    out = KvdSettings()
    if not values:
        return out
    env: dict[str, str] = {}
    setting = env.__setitem__

    for name in _REFUSED:
        if name in values:
            out.errors.append(f"{_key(name)}: {_REFUSED[name]}")
    for name in _SAME:
        if name in values:
            value = values[name]
            if name in ("election_timeout", "heartbeat_interval"):
                try:
                    value = _positive(value, _key(name))
                except ValueError as err:
                    out.errors.append(str(err))
                    continue
            setting("ETCD_" + name.upper(), _text(value))
    if "discovery" in values:
        out.notes.append(DISCOVERY_NOTE)
    for name, (key, new_name) in _RENAMED.items():
        if name not in values:
            continue
        try:
            value = _positive(values[name], _key(name))
        except ValueError as err:
            out.errors.append(str(err))
            continue
        twin = new_name.replace("-", "_")
        if twin in values and str(values[twin]) != value:
            out.errors.append(f"{_key(name)} and {_key(twin)} both set kvd's "
                              f"{new_name}, to different values")
            continue
        setting(key, value)
        out.notes.append(f"{_key(name)} is etcd 0.4's {new_name}; configuring kvd")
    if "ca_file" in values:
        setting("ETCD_TRUSTED_CA_FILE", _text(values["ca_file"]))
        setting("ETCD_CLIENT_CERT_AUTH", "true")
        out.notes.append("coreos.etcd.ca-file is etcd 0.4's trusted-ca-file with "
                         "client-cert-auth; configuring kvd")
    if "peer_ca_file" in values:
        setting("ETCD_PEER_TRUSTED_CA_FILE", _text(values["peer_ca_file"]))
        setting("ETCD_PEER_CLIENT_CERT_AUTH", "true")
        out.notes.append("coreos.etcd.peer-ca-file is etcd 0.4's peer-trusted-ca-file with "
                         "peer-client-cert-auth; configuring kvd")
    client_scheme = "https" if values.get("cert_file") else "http"
    peer_scheme = "https" if values.get("peer_cert_file") else "http"
    _addresses(values, out, setting, "", client_scheme, CLIENT_PORT_04)
    _addresses(values, out, setting, "peer_", peer_scheme, PEER_PORT_04)
    if out.errors:
        out.env, out.notes = [], []
        return out
    out.env = sorted(env.items())
    return out


def _addresses(values: dict[str, object], out: KvdSettings,
               setting: Callable[[str, str], None], prefix: str, scheme: str,
               default_port: int) -> None:
    """``addr``/``bind-addr`` (or their ``peer-`` forms) as kvd's advertised and listening
    URLs. etcd 0.4 listened on every interface at the advertised port when no bind address
    was given, and local tools reached it at 127.0.0.1; the listening URLs say the same."""
    addr_name, bind_name = prefix + "addr", prefix + "bind_addr"
    advertise_var = "ETCD_INITIAL_ADVERTISE_PEER_URLS" if prefix else "ETCD_ADVERTISE_CLIENT_URLS"
    listen_var = "ETCD_LISTEN_PEER_URLS" if prefix else "ETCD_LISTEN_CLIENT_URLS"
    advertise_opt = "initial-advertise-peer-urls" if prefix else "advertise-client-urls"
    listen_opt = "listen-peer-urls" if prefix else "listen-client-urls"
    for etcd2_name, v1_name in _URL_LISTS.items():
        if v1_name in (addr_name, bind_name) and etcd2_name in values:
            if v1_name in values:
                out.errors.append(f"{_key(v1_name)} and {_key(etcd2_name)} both "
                                  f"set kvd's {etcd2_name.replace('_', '-')}; keep one")
            else:
                setting("ETCD_" + etcd2_name.upper(), _text(values[etcd2_name]))
    port = None
    if addr_name in values:
        where = _key(addr_name)
        try:
            host, port = split_host_port(_text(values[addr_name]), where, need_port=True)
        except ValueError as err:
            out.errors.append(str(err))
            return
        setting(advertise_var, f"{scheme}://{host}:{port}")
        out.notes.append(f"{_key(addr_name)} is etcd 0.4's "
                         f"{advertise_opt}; configuring kvd")
    if bind_name in values:
        where = _key(bind_name)
        try:
            host, bind_port = split_host_port(_text(values[bind_name]), where, need_port=False)
        except ValueError as err:
            out.errors.append(str(err))
            return
        listen = f"{scheme}://{host}:{bind_port or port or default_port}"
        why = f"{_key(bind_name)} is etcd 0.4's {listen_opt}"
    elif port is not None:
        listen = f"{scheme}://0.0.0.0:{port}"
        why = (f"{_key(addr_name)}: etcd 0.4 listened on every "
               f"address at its port")
    else:
        return
    if not prefix and not listen.endswith(":2379"):
        # Local tools (kvctl, locksmithd, flanneld) look for the store at 127.0.0.1:2379,
        # where etcd 2 also listened by default next to etcd 0.4's port.
        listen += "," + LOCAL_CLIENT_URL.replace("http", scheme, 1)
    setting(listen_var, listen)
    out.notes.append(f"{why}; kvd's {listen_opt} is {listen}")


def _key(name: str) -> str:
    """A field as users write it in YAML (both spellings are read; CoreOS's docs used this)."""
    return "coreos.etcd." + name.replace("_", "-")


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
