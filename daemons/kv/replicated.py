"""The v2 store replicated through Raft: a :class:`Proposer` backed by a Raft member.

Every mutation travels as one msgpack map in a Raft log entry and is applied, in log
order, to the store of every member; the member that took the request answers with the
outcome of its own apply. Because the command already carries the wall time it was
proposed at (and ``expire`` commands carry the leader's clock), every replica computes
the same TTLs and expires the same keys at the same log position.

Reads: ``read_barrier`` runs Raft's ReadIndex, so a GET served after it reflects every
write acknowledged before it started, whichever member took that write. The HTTP layer
calls it for every GET unless the request says ``quorum=false``, which serves the
member's local (possibly slightly stale) copy without a round trip to the leader.

Membership as clients see it (``/v2/members``, ``/v2/machines``) is the Raft voter set
joined with the attributes each member publishes through the log once it starts: its
name and client URLs, the way etcd members publish theirs. Raft snapshots hold the store
and those attributes, msgpack-encoded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import msgpack
from flotilla.daemons.kv.config import Config, ConfigError, member_id
from flotilla.daemons.kv.errors import RAFT_INTERNAL, EtcdError
from flotilla.daemons.kv.store import DEFAULT_HISTORY_BYTES, Event, Store
from flotilla.daemons.raft.messages import Role
from flotilla.daemons.raft.node import ProposalTimeout, RaftShell, ShellConfig

log = logging.getLogger(__name__)

#: Command name for a member announcing its name and client URLs; kept out of the store.
PUBLISH_OP = "kvd.publish"
SNAPSHOT_VERSION = 1
#: The Raft log, hard state and snapshots live here under ``--data-dir``.
RAFT_DIR = "raft"
#: Store fields a snapshot restore must leave alone: live watchers and request counters.
_KEEP_ON_RESTORE = frozenset({"watchers", "watcher_count", "stats"})


@dataclass(slots=True)
class MemberAttrs:
    """What a member publishes about itself."""

    name: str
    client_urls: list[str]


def _pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def _unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, strict_map_key=True)


class KvStateMachine:
    """Applies replicated commands to one store; snapshots it for Raft.

    ``apply`` never raises for a bad command: a malformed entry must not stop the Raft
    loop, and every replica turns it into the same error.
    """

    def __init__(self, history_bytes: int = DEFAULT_HISTORY_BYTES,
                 on_members: Callable[[], None] | None = None) -> None:
        self.store = Store(history_bytes)
        self.history_bytes = history_bytes
        self.attrs: dict[int, MemberAttrs] = {}
        self.on_members = on_members

    def apply(self, index: int, data: bytes) -> Event | EtcdError | None:
        try:
            command = _unpack(data)
        except (ValueError, msgpack.UnpackException) as err:
            return EtcdError(RAFT_INTERNAL, f"entry {index}: undecodable command: {err}",
                             self.store.index)
        if not isinstance(command, dict):
            return EtcdError(RAFT_INTERNAL, f"entry {index}: command is not a map",
                             self.store.index)
        if command.get("op") == PUBLISH_OP:
            return self._publish(index, command)
        try:
            return self.store.apply(command)
        except (ValueError, TypeError, KeyError, AttributeError) as err:
            log.warning("entry %d: bad command field: %r", index, err)
            return EtcdError(RAFT_INTERNAL, f"entry {index}: bad command: {err}",
                             self.store.index)

    def _publish(self, index: int, command: dict[str, Any]) -> None:
        try:
            member = int(command["id"])
            attrs = MemberAttrs(str(command["name"]), [str(u) for u in command["clientURLs"]])
        except (KeyError, TypeError, ValueError) as err:
            log.warning("entry %d: bad member attributes: %r", index, err)
            return None
        self.attrs[member] = attrs
        if self.on_members is not None:
            self.on_members()
        return None

    def snapshot(self) -> bytes:
        return _pack({
            "version": SNAPSHOT_VERSION,
            "store": self.store.snapshot(),
            "members": {f"{k:x}": [a.name, a.client_urls] for k, a in self.attrs.items()},
        })

    def restore(self, data: bytes) -> None:
        """Replace the store's contents in place, so the HTTP layer's reference stays valid."""
        obj = _unpack(data)
        if not isinstance(obj, dict) or obj.get("version") != SNAPSHOT_VERSION:
            raise ValueError("raft snapshot: not a kvd store snapshot (bad 'version')")
        fresh = Store.restore(obj["store"], self.history_bytes)
        for name, value in vars(fresh).items():
            if name not in _KEEP_ON_RESTORE:
                setattr(self.store, name, value)
        self.attrs = {int(k, 16): MemberAttrs(str(v[0]), [str(u) for u in v[1]])
                      for k, v in obj.get("members", {}).items()}
        if self.on_members is not None:
            self.on_members()


class RaftProposer:
    """The :class:`~flotilla.daemons.kv.proposer.Proposer` of a kvd cluster member."""

    def __init__(self, shell_config: ShellConfig, attrs: MemberAttrs,
                 peer_urls: dict[int, list[str]],
                 history_bytes: int = DEFAULT_HISTORY_BYTES) -> None:
        self.node_id = shell_config.node_id
        self.own_attrs = attrs
        #: advertised peer URLs by member id (from the static initial cluster)
        self.peer_urls = peer_urls
        self.machine = KvStateMachine(history_bytes)
        self.shell = RaftShell(shell_config, self.machine)
        self._publisher: asyncio.Task[None] | None = None
        self.published = asyncio.Event()

    @property
    def store(self) -> Store:
        return self.machine.store

    async def start(self) -> None:
        await self.shell.start()
        self._publisher = asyncio.get_running_loop().create_task(self._publish())

    async def close(self) -> None:
        if self._publisher is not None:
            self._publisher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._publisher
        await self.shell.stop()

    async def _publish(self) -> None:
        """Announce this member's name and client URLs through the log until it sticks."""
        command = {"op": PUBLISH_OP, "id": self.node_id, "name": self.own_attrs.name,
                   "clientURLs": self.own_attrs.client_urls}
        while True:
            try:
                await self.shell.propose(_pack(command))
            except Exception as err:  # no leader yet, or it changed: try again
                log.info("publishing member attributes: %r; retrying", err)
                await asyncio.sleep(0.2)
                continue
            self.published.set()
            return

    async def propose(self, command: dict[str, Any]) -> Event | EtcdError | None:
        command.setdefault("now", time.time_ns())
        try:
            return await self.shell.propose(_pack(command))
        except ProposalTimeout:
            return EtcdError(RAFT_INTERNAL, "etcdserver: request timed out", self.store.index)

    async def read_barrier(self) -> None:
        try:
            await self.shell.read_index()
        except ProposalTimeout:
            raise EtcdError(RAFT_INTERNAL, "etcdserver: request timed out",
                            self.store.index) from None

    @property
    def applied_index(self) -> int:
        return self.shell.applied

    @property
    def term(self) -> int:
        core = self.shell.core
        return core.term if core is not None else 0

    def is_leader(self) -> bool:
        core = self.shell.core
        return core is not None and core.role is Role.LEADER

    @property
    def leader_id(self) -> int:
        return self.shell.leader

    def members(self) -> list[tuple[int, str, list[str], list[str]]]:
        """(id, name, peer URLs, client URLs) for every voter, in id order.

        A voter that has not published yet shows with an empty name and no client URLs,
        as etcd shows a member that has not started.
        """
        core = self.shell.core
        voters = sorted(core.status().voters) if core is not None else sorted(self.peer_urls)
        out = []
        for member in voters:
            attrs = self.machine.attrs.get(member)
            out.append((member, attrs.name if attrs else "", self.peer_urls.get(member, []),
                        list(attrs.client_urls) if attrs else []))
        return out

    def follower_stats(self) -> dict[str, Any]:
        """etcd's ``/v2/stats/leader`` followers map (match index stands in for counts)."""
        core = self.shell.core
        if core is None or core.role is not Role.LEADER:
            return {}
        followers: dict[str, Any] = {}
        for member, (state, match, _next) in core.status().progress.items():
            if member == self.node_id:
                continue
            followers[f"{member:x}"] = {
                "latency": {"current": 0, "average": 0, "standardDeviation": 0,
                            "minimum": 0, "maximum": 0},
                "counts": {"fail": 0, "success": match},
                "raftState": state,
            }
        return followers


def _address(flag: str, url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    if parts.hostname is None:
        raise ConfigError(f"--{flag}: {url!r} has no host")
    return parts.hostname, parts.port or 2380


def is_clustered(config: Config) -> bool:
    """Static ``--initial-cluster`` naming more than this member selects Raft."""
    return len(config.initial_cluster) > 1


def check_cluster_config(config: Config) -> tuple[int, dict[int, list[str]]]:
    """This member's id and every member's peer URLs; raises ConfigError naming a bad flag."""
    if config.name not in config.initial_cluster:
        raise ConfigError(f"--initial-cluster: this member's --name {config.name!r} is "
                          "not in it")
    if sorted(config.initial_cluster[config.name]) != sorted(
            config.initial_advertise_peer_urls):
        raise ConfigError(
            f"--initial-advertise-peer-urls: {','.join(config.initial_advertise_peer_urls)} "
            f"differs from --initial-cluster's {config.name}="
            f"{','.join(config.initial_cluster[config.name])}")
    token = config.initial_cluster_token
    peer_urls = {member_id(urls, token): urls for urls in config.initial_cluster.values()}
    if len(peer_urls) != len(config.initial_cluster):
        raise ConfigError("--initial-cluster: two members share the same peer URLs")
    _address("listen-peer-urls", config.listen_peer_urls[0])
    return member_id(config.initial_cluster[config.name], token), peer_urls


def raft_proposer_from_config(config: Config) -> RaftProposer:
    """Build the Raft member from etcd's flags; raises ConfigError naming a bad one."""
    own_id, peer_urls = check_cluster_config(config)
    peers = {ident: _address("initial-cluster", urls[0])
             for ident, urls in peer_urls.items() if ident != own_id}
    shell_config = ShellConfig(
        node_id=own_id,
        data_dir=Path(config.data_dir) / RAFT_DIR,
        listen=_address("listen-peer-urls", config.listen_peer_urls[0]),
        peers=peers,
        cluster=config.initial_cluster_token,
        snapshot_every=config.snapshot_count,
        fsync=config.fsync,
    )
    attrs = MemberAttrs(config.name, list(config.advertise_client_urls))
    return RaftProposer(shell_config, attrs, peer_urls, config.history_bytes)
