"""kvd's settings: etcd's flag names, one or two dashes, and ``ETCD_*`` variables.

Scripts, unit files and test harnesses written for etcd pass its flags Go-style
(``-name x``, ``--name=x``) and set ``ETCD_NAME`` and friends in the environment; kvd reads
them all the same way so it can stand in for etcd unchanged. Flags win over the
environment. etcd flags that only tune etcd's own internals are accepted and ignored;
anything else is rejected with the flag's name.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from flotilla.daemons.kv.store import DEFAULT_HISTORY_BYTES
from flotilla.daemons.settings import parse_bool

VALUE_FLAGS: dict[str, str] = {
    "name": "default",
    "data-dir": "",
    "listen-client-urls": "http://127.0.0.1:2379",
    "advertise-client-urls": "",
    "listen-peer-urls": "http://127.0.0.1:2380",
    "initial-advertise-peer-urls": "",
    "initial-cluster": "",
    "initial-cluster-state": "new",
    "initial-cluster-token": "etcd-cluster",
    "discovery": "",
    "discovery-timeout": "120",
    "history-bytes": str(DEFAULT_HISTORY_BYTES),
    "cert-file": "",
    "key-file": "",
    "trusted-ca-file": "",
    "ca-file": "",
    "peer-cert-file": "",
    "peer-key-file": "",
    "peer-trusted-ca-file": "",
    "snapshot-count": "10000",
    "heartbeat-interval": "100",  # ms between a leader's heartbeats: one Raft tick
    "election-timeout": "1000",  # ms a follower waits for a leader before campaigning
    "dbus": "auto",  # serve org.flotilla.KV1: system, none, or auto (system if present)
}

# etcd flags with no meaning for kvd; accepted so etcd command lines keep working.
IGNORED_FLAGS = {
    "enable-v2",
    "max-snapshots", "max-wals", "quota-backend-bytes", "auto-compaction-retention",
    "auto-compaction-mode", "logger", "log-outputs", "log-level", "debug",
    "enable-pprof", "metrics", "discovery-fallback",
    "discovery-proxy", "discovery-srv", "proxy", "cors", "experimental-enable-v2v3",
    "listen-metrics-urls", "max-request-bytes", "grpc-keepalive-min-time",
    "pre-vote", "initial-election-tick-advance",
}

BOOL_FLAGS = {"version", "no-fsync", "client-cert-auth", "peer-client-cert-auth",
              "strict-reconfig-check", "force-new-cluster"}


class ConfigError(ValueError):
    """A bad flag or variable; the message names it."""


@dataclass(slots=True)
class ClientTLS:
    """TLS for the client listeners (https:// URLs), optionally requiring client certs."""

    cert_file: str
    key_file: str
    trusted_ca_file: str = ""
    client_cert_auth: bool = False


def _client_tls(listen: list[str], value: Any, boolean: Any) -> ClientTLS | None:
    """etcd's client TLS flags; ``--ca-file`` is etcd 2's spelling and implies client auth."""
    cert, key = value("cert-file"), value("key-file")
    legacy_ca = value("ca-file")
    trusted = value("trusted-ca-file") or legacy_ca
    client_auth = boolean("client-cert-auth", False) or bool(legacy_ca)
    wants_tls = any(url.startswith("https://") for url in listen)
    if not wants_tls:
        if cert or key:
            raise ConfigError("--cert-file/--key-file given but no https:// "
                              "--listen-client-urls")
        return None
    if not (cert and key):
        raise ConfigError("--listen-client-urls: https:// needs --cert-file and --key-file")
    for flag, path in (("cert-file", cert), ("key-file", key), ("trusted-ca-file", trusted)):
        if path and not os.path.isfile(path):
            raise ConfigError(f"--{flag}: {path!r} does not exist")
    if client_auth and not trusted:
        raise ConfigError("--client-cert-auth needs --trusted-ca-file")
    return ClientTLS(cert, key, trusted, client_auth)


@dataclass(slots=True)
class PeerTLS:
    """TLS for Raft traffic between members (https:// peer URLs)."""

    cert_file: str
    key_file: str
    trusted_ca_file: str = ""
    client_cert_auth: bool = False


def _peer_tls(peer_urls: list[str], value: Any, boolean: Any) -> PeerTLS | None:
    """etcd's ``--peer-*`` TLS flags; https:// peer URLs need a certificate and key."""
    cert, key = value("peer-cert-file"), value("peer-key-file")
    trusted = value("peer-trusted-ca-file")
    client_auth = boolean("peer-client-cert-auth", False)
    if not any(url.startswith("https://") for url in peer_urls):
        if cert or key:
            raise ConfigError("--peer-cert-file/--peer-key-file given but no https:// "
                              "--listen-peer-urls")
        return None
    if not (cert and key):
        raise ConfigError("--listen-peer-urls: https:// needs --peer-cert-file and "
                          "--peer-key-file")
    for flag, path in (("peer-cert-file", cert), ("peer-key-file", key),
                       ("peer-trusted-ca-file", trusted)):
        if path and not os.path.isfile(path):
            raise ConfigError(f"--{flag}: {path!r} does not exist")
    if client_auth and not trusted:
        raise ConfigError("--peer-client-cert-auth needs --peer-trusted-ca-file")
    return PeerTLS(cert, key, trusted, client_auth)


@dataclass(slots=True)
class Config:
    name: str
    data_dir: str
    listen_client_urls: list[str]
    advertise_client_urls: list[str]
    listen_peer_urls: list[str]
    initial_advertise_peer_urls: list[str]
    initial_cluster: dict[str, list[str]]
    initial_cluster_state: str
    initial_cluster_token: str
    discovery: str
    history_bytes: int
    fsync: bool = True
    version: bool = False
    snapshot_count: int = 10000  # applied Raft entries between snapshots (clusters only)
    heartbeat_ms: int = 100  # --heartbeat-interval: the Raft tick
    election_ms: int = 1000  # --election-timeout: a whole number of ticks (rounded down)
    strict_reconfig_check: bool = True  # refuse member changes that endanger quorum
    force_new_cluster: bool = False  # make this member's data a one-member cluster
    client_tls: ClientTLS | None = None
    peer_tls: PeerTLS | None = None
    dbus: str = "auto"  # --dbus: system, none or auto
    discovery_timeout: float = 120.0  # seconds an unreachable discovery service is retried
    ignored: list[str] = field(default_factory=list)

    @property
    def member_id(self) -> int:
        return member_id(self.initial_advertise_peer_urls, self.initial_cluster_token)

    @property
    def cluster_id(self) -> int:
        ids = sorted(member_id(urls, self.initial_cluster_token)
                     for urls in self.initial_cluster.values())
        digest = hashlib.sha1(b"".join(struct.pack(">Q", i) for i in ids)).digest()
        return struct.unpack(">Q", digest[:8])[0]


def member_id(peer_urls: Sequence[str], token: str) -> int:
    """etcd's member ID: SHA-1 of the sorted peer URLs and the cluster token."""
    digest = hashlib.sha1(("".join(sorted(peer_urls)) + token).encode()).digest()
    return struct.unpack(">Q", digest[:8])[0]


def _split_urls(flag: str, text: str) -> list[str]:
    urls = [u.strip() for u in text.split(",") if u.strip()]
    for url in urls:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"--{flag}: {url!r} is not an http(s)://host:port URL")
        try:
            parts.port  # noqa: B018  (validates the port)
        except ValueError:
            raise ConfigError(f"--{flag}: {url!r} has a bad port") from None
    return urls


def _parse_cluster(text: str) -> dict[str, list[str]]:
    cluster: dict[str, list[str]] = {}
    for item in [i for i in text.split(",") if i.strip()]:
        name, sep, url = item.partition("=")
        if not sep or not name.strip():
            raise ConfigError(f"--initial-cluster: {item!r} is not name=url")
        cluster.setdefault(name.strip(), []).extend(_split_urls("initial-cluster", url))
    return cluster


MAX_ELECTION_MS = 50_000  # etcd's upper bound for --election-timeout


def _raft_timing(heartbeat: str, election: str) -> tuple[int, int]:
    """``--heartbeat-interval`` and ``--election-timeout`` in milliseconds, with etcd's
    rules: positive integers, the election timeout at least five heartbeats (a follower
    must be able to miss a few before it campaigns) and at most 50 s."""
    values = []
    for flag, text in (("heartbeat-interval", heartbeat), ("election-timeout", election)):
        try:
            number = int(text)
            if number < 1:
                raise ValueError
        except ValueError:
            raise ConfigError(f"--{flag}: {text!r} is not a positive number of "
                              "milliseconds") from None
        values.append(number)
    heartbeat_ms, election_ms = values
    if 5 * heartbeat_ms > election_ms:
        raise ConfigError(f"--election-timeout[{election_ms}ms] should be at least as 5 "
                          f"times as --heartbeat-interval[{heartbeat_ms}ms]")
    if election_ms > MAX_ELECTION_MS:
        raise ConfigError(f"--election-timeout[{election_ms}ms] is too long, and should be "
                          f"set less than {MAX_ELECTION_MS}ms")
    return heartbeat_ms, election_ms


def _normalise_argv(argv: Sequence[str]) -> list[str]:
    """Accept Go-style ``-flag`` by rewriting it to ``--flag``."""
    out = []
    for arg in argv:
        if arg.startswith("-") and not arg.startswith("--") and len(arg) > 2:
            arg = "-" + arg
        out.append(arg)
    return out


def parse_config(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> Config:
    environ = os.environ if environ is None else environ
    parser = argparse.ArgumentParser(prog="kvd", add_help=True, allow_abbrev=False,
                                     description="etcd v2 compatible key-value daemon")
    for flag in VALUE_FLAGS:
        parser.add_argument(f"--{flag}", dest=flag.replace("-", "_"), default=None)
    for flag in BOOL_FLAGS:
        parser.add_argument(f"--{flag}", dest=flag.replace("-", "_"), nargs="?",
                            const="true", default=None)
    for flag in IGNORED_FLAGS:
        parser.add_argument(f"--{flag}", dest="ignored_" + flag.replace("-", "_"),
                            nargs="?", const="true", default=None)
    args, unknown = parser.parse_known_args(_normalise_argv(argv))
    if unknown:
        raise ConfigError(f"unknown flag or argument: {unknown[0]}")

    def value(flag: str) -> str:
        given = getattr(args, flag.replace("-", "_"))
        if given is not None:
            return str(given)
        env = environ.get("ETCD_" + flag.upper().replace("-", "_"))
        return env if env is not None else VALUE_FLAGS[flag]

    def boolean(flag: str, default: bool) -> bool:
        given = getattr(args, flag.replace("-", "_"))
        text = given if given is not None else environ.get(
            "ETCD_" + flag.upper().replace("-", "_"))
        if text is None:
            return default
        try:
            return parse_bool(text, empty=None)
        except ValueError:
            raise ConfigError(f"--{flag}: {text!r} is not a boolean") from None

    name = value("name")
    listen_client = _split_urls("listen-client-urls", value("listen-client-urls"))
    advertise_client = _split_urls("advertise-client-urls",
                                   value("advertise-client-urls") or ",".join(listen_client))
    listen_peer = _split_urls("listen-peer-urls", value("listen-peer-urls"))
    advertise_peer = _split_urls("initial-advertise-peer-urls",
                                 value("initial-advertise-peer-urls") or ",".join(listen_peer))
    cluster = _parse_cluster(value("initial-cluster") or f"{name}={advertise_peer[0]}")
    state = value("initial-cluster-state")
    if state not in ("new", "existing"):
        raise ConfigError(f"--initial-cluster-state: {state!r} is not 'new' or 'existing'")
    try:
        history_bytes = int(value("history-bytes"))
        if history_bytes < 1:
            raise ValueError
    except ValueError:
        raise ConfigError("--history-bytes: must be a positive integer") from None
    try:
        snapshot_count = int(value("snapshot-count"))
        if snapshot_count < 1:
            raise ValueError
    except ValueError:
        raise ConfigError("--snapshot-count: must be a positive integer") from None
    try:
        discovery_timeout = float(value("discovery-timeout"))
        if not discovery_timeout > 0 or discovery_timeout == float("inf"):
            raise ValueError
    except ValueError:
        raise ConfigError("--discovery-timeout: must be a positive number of seconds") from None
    heartbeat_ms, election_ms = _raft_timing(value("heartbeat-interval"),
                                             value("election-timeout"))
    dbus = value("dbus")
    if dbus not in ("system", "none", "auto"):
        raise ConfigError(f"--dbus: {dbus!r} is not 'system', 'none' or 'auto'")
    ignored = [f for f in IGNORED_FLAGS
               if getattr(args, "ignored_" + f.replace("-", "_")) is not None]
    return Config(
        name=name,
        data_dir=value("data-dir") or f"{name}.etcd",
        listen_client_urls=listen_client,
        advertise_client_urls=advertise_client,
        listen_peer_urls=listen_peer,
        initial_advertise_peer_urls=advertise_peer,
        initial_cluster=cluster,
        initial_cluster_state=state,
        initial_cluster_token=value("initial-cluster-token"),
        discovery=value("discovery"),
        discovery_timeout=discovery_timeout,
        history_bytes=history_bytes,
        fsync=not boolean("no-fsync", False),
        snapshot_count=snapshot_count,
        heartbeat_ms=heartbeat_ms,
        election_ms=election_ms,
        strict_reconfig_check=boolean("strict-reconfig-check", True),
        force_new_cluster=boolean("force-new-cluster", False),
        client_tls=_client_tls(listen_client, value, boolean),
        peer_tls=_peer_tls(listen_peer + advertise_peer, value, boolean),
        dbus=dbus,
        version=boolean("version", False),
        ignored=sorted(ignored),
    )
