"""The complete #cloud-config schema of coreos-cloudinit, as data.

One table drives the validator (kinds, allowed values, deprecations), the decoder and the
drop-in generators (environment names, in the original's declaration order, which is the
order the generated ``Environment=`` lines follow).
"""

from __future__ import annotations

from dataclasses import dataclass

STRING, BOOL, INT, FLOAT = "string", "bool", "int", "float64"
STRINGS, STRUCT, STRUCTS = "[]string", "struct", "[]struct"


@dataclass(frozen=True)
class Field:
    name: str
    kind: str
    env: str = ""
    valid: str = ""  # a regular expression; compiled by ``re`` on first use only
    deprecated: str = ""
    children: tuple[Field, ...] = ()

    def child(self, name: str) -> Field | None:
        for item in self.children:
            if item.name == name:
                return item
        return None


def _env_fields(prefix: str, spec: str, renames: dict[str, str] | None = None,
                deprecated: dict[str, str] | None = None,
                valid: dict[str, str] | None = None) -> tuple[Field, ...]:
    """Build ``NAME:kind`` lines into fields whose env name is PREFIX + NAME upper-cased."""
    renames, deprecated, valid = renames or {}, deprecated or {}, valid or {}
    kinds = {"s": STRING, "b": BOOL, "i": INT, "f": FLOAT}
    out = []
    for item in spec.split():
        name, kind = item.split(":")
        out.append(Field(
            name, kinds[kind], env=renames.get(name, prefix + name.upper()),
            valid=valid.get(name, ""),
            deprecated=deprecated.get(name, ""),
        ))
    return tuple(out)


# Every etcd 0.4 option that kvd has nothing for (cloudinit.etcd_v1.IGNORED). The v1
# section otherwise configures kvd (cloudinit.etcd_v1), etcd 2's spellings included.
_NOTHING_IN_KVD = "etcd 0.4 tuned its own internals with it; kvd has no such setting"
ETCD = _env_fields("ETCD_", """
    addr:s advertise_client_urls:s bind_addr:s ca_file:s cert_file:s cluster_active_size:i
    cluster_remove_delay:f cluster_sync_interval:f cors:s data_dir:s discovery:s
    discovery_fallback:s discovery_srv:s discovery_proxy:s election_timeout:i
    force_new_cluster:b graphite_host:s heartbeat_interval:i http_read_timeout:f
    http_write_timeout:f initial_advertise_peer_urls:s initial_cluster:s
    initial_cluster_state:s initial_cluster_token:s key_file:s listen_client_urls:s
    listen_peer_urls:s max_result_buffer:i max_retry_attempts:i max_snapshots:i max_wals:i
    name:s peer_addr:s peer_bind_addr:s peer_ca_file:s peer_cert_file:s
    peer_election_timeout:i peer_heartbeat_interval:i peer_key_file:s peers:s peers_file:s
    proxy:s retry_interval:f snapshot:b snapshot_count:i trace:s verbose:b very_verbose:b
    very_very_verbose:b
""", renames={"snapshot_count": "ETCD_SNAPSHOTCOUNT"}, deprecated={
    name: _NOTHING_IN_KVD for name in (
        "cluster_active_size", "cluster_remove_delay", "cluster_sync_interval", "cors",
        "graphite_host", "http_read_timeout", "http_write_timeout", "max_result_buffer",
        "max_retry_attempts", "retry_interval", "snapshot", "trace", "verbose",
        "very_verbose", "very_very_verbose", "max_snapshots", "max_wals",
        "discovery_fallback", "discovery_srv", "discovery_proxy", "proxy",
    )
})

ETCD2 = _env_fields("ETCD_", """
    advertise_client_urls:s ca_file:s cert_file:s client_cert_auth:b cors:s data_dir:s
    debug:b discovery:s discovery_fallback:s discovery_srv:s discovery_proxy:s
    election_timeout:i enable_pprof:b force_new_cluster:b heartbeat_interval:i
    initial_advertise_peer_urls:s initial_cluster:s initial_cluster_state:s
    initial_cluster_token:s key_file:s listen_client_urls:s listen_peer_urls:s
    log_package_levels:s max_snapshots:i max_wals:i name:s peer_ca_file:s peer_cert_file:s
    peer_key_file:s peer_client_cert_auth:b peer_trusted_ca_file:s proxy:s
    proxy_dial_timeout:i proxy_failure_wait:i proxy_read_timeout:i proxy_refresh_interval:i
    proxy_write_timeout:i snapshot_count:i strict_reconfig_check:b trusted_ca_file:s wal_dir:s
""", deprecated={
    "ca_file": "ca_file obsoleted by trusted_ca_file and client_cert_auth",
    "peer_ca_file": "peer_ca_file obsoleted peer_trusted_ca_file and peer_client_cert_auth",
}, valid={"proxy": r"^(on|off|readonly)$"})

FLEET = _env_fields("FLEET_", """
    agent_ttl:s authorized_keys_file:s disable_engine:b engine_reconcile_interval:f
    etcd_cafile:s etcd_certfile:s etcd_keyfile:s etcd_key_prefix:s etcd_request_timeout:f
    etcd_servers:s etcd_username:s etcd_password:s metadata:s public_ip:s token_limit:i
    verbosity:i verify_units:b
""")

FLANNEL = _env_fields("FLANNELD_", """
    etcd_endpoints:s etcd_cafile:s etcd_certfile:s etcd_keyfile:s etcd_prefix:s
    etcd_username:s etcd_password:s ip_masq:s subnet_file:s interface:s public_ip:s
""", renames={"interface": "FLANNELD_IFACE"})

LOCKSMITH = _env_fields("LOCKSMITHD_", """
    endpoint:s etcd_cafile:s etcd_certfile:s etcd_keyfile:s etcd_username:s etcd_password:s
    group:s window_start:s window_length:s
""", renames={"window_start": "REBOOT_WINDOW_START", "window_length": "REBOOT_WINDOW_LENGTH"},
    valid={
        "window_start": r"^((?i:sun|mon|tue|wed|thu|fri|sat|sun) )?0*([0-9]|1[0-9]|2[0-3])"
                        r":0*([0-9]|[1-5][0-9])$",
        "window_length": r"^[-+]?([0-9]*(\.[0-9]*)?[a-z]+)+$",
    })

UPDATE = (
    Field("reboot_strategy", STRING, env="REBOOT_STRATEGY",
          valid=r"^(etcd-lock|reboot|off)$"),
    Field("group", STRING, env="GROUP"),
    Field("server", STRING, env="SERVER"),
)

OEM = tuple(Field(n, STRING) for n in ("id", "name", "version_id", "home_url", "bug_report_url"))

_REMOTE = "trying to fetch from a remote endpoint introduces too many intermittent errors"
USER = (
    Field("name", STRING),
    Field("passwd", STRING),
    Field("ssh_authorized_keys", STRINGS),
    Field("coreos_ssh_import_github", STRING, deprecated=_REMOTE),
    Field("coreos_ssh_import_github_users", STRINGS, deprecated=_REMOTE),
    Field("coreos_ssh_import_url", STRING, deprecated=_REMOTE),
    Field("gecos", STRING),
    Field("homedir", STRING),
    Field("no_create_home", BOOL),
    Field("primary_group", STRING),
    Field("groups", STRINGS),
    Field("no_user_group", BOOL),
    Field("system", BOOL),
    Field("no_log_init", BOOL),
    Field("shell", STRING),
)

FILE = (
    Field("encoding", STRING, valid=(
        r"^(base64|b64|gz|gzip|gz\+base64|gzip\+base64|gz\+b64|gzip\+b64)$")),
    Field("content", STRING),
    Field("owner", STRING),
    Field("path", STRING),
    Field("permissions", STRING, valid=r"^0?[0-7]{3,4}$"),
)

UNIT_COMMANDS = ("start", "stop", "restart", "reload", "try-restart", "reload-or-restart",
                 "reload-or-try-restart")
UNIT = (
    Field("name", STRING),
    Field("mask", BOOL),
    Field("enable", BOOL),
    Field("runtime", BOOL),
    Field("content", STRING),
    Field("command", STRING, valid=(
        r"^(start|stop|restart|reload|try-restart|reload-or-restart|reload-or-try-restart)$")),
    Field("drop_ins", STRUCTS, children=(Field("name", STRING), Field("content", STRING))),
)


# Container Linux stopped shipping etcd, etcd2 and fleet, and the original validator warns
# that their sections are deprecated. Here each configures a service Flotilla ships (etcd
# and etcd2 configure kvd, fleet configures fleetd), so none of them is deprecated.
COREOS = (
    Field("etcd", STRUCT, children=ETCD),
    Field("etcd2", STRUCT, children=ETCD2),
    Field("flannel", STRUCT, children=FLANNEL),
    Field("fleet", STRUCT, children=FLEET),
    Field("locksmith", STRUCT, children=LOCKSMITH),
    Field("oem", STRUCT, children=OEM),
    Field("update", STRUCT, children=UPDATE),
    Field("units", STRUCTS, children=UNIT),
)

CLOUD_CONFIG = Field("", STRUCT, children=(
    Field("ssh_authorized_keys", STRINGS),
    Field("coreos", STRUCT, children=COREOS),
    Field("write_files", STRUCTS, children=FILE),
    Field("hostname", STRING),
    Field("users", STRUCTS, children=USER),
    Field("manage_etc_hosts", STRING),
))
