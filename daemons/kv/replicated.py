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
joined with two replicated records: each member's peer URLs, which travel inside the
Raft membership change that adds it (so they change at the same log position as the
voter set), and the attributes each member publishes through the log once it starts: its
name and client URLs, the way etcd members publish theirs. Removed ids are remembered,
so a second removal answers 410 and a removed member that missed its own removal finds
out by asking its peers. Raft snapshots hold the store, both records and the removed
ids, msgpack-encoded.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import ssl
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import msgpack
from flotilla.daemons.kv.config import VALUE_FLAGS, Config, ConfigError, PeerTLS, member_id
from flotilla.daemons.kv.errors import RAFT_INTERNAL, EtcdError
from flotilla.daemons.kv.membership import (
    MEMBER_FILE,
    MEMBERS_QUERY,
    Identity,
    MemberError,
    join_identity,
    load_identity,
    members_answer,
    new_member_id,
    peer_address,
    save_identity,
    static_identity,
)
from flotilla.daemons.kv.migrate import (
    has_single_node_data,
    migrate_single_node,
    remove_stale_files,
)
from flotilla.daemons.kv.reconfig import ReconfigRefused, check_add, check_remove
from flotilla.daemons.kv.store import DEFAULT_HISTORY_BYTES, Event, Store
from flotilla.daemons.raft import tls
from flotilla.daemons.raft.messages import NONE, ConfChangeType, NotLeader, ProposalDropped, Role
from flotilla.daemons.raft.node import ProposalTimeout, RaftShell, ShellConfig
from flotilla.daemons.raft.recover import force_new_cluster
from flotilla.daemons.raft.transport import QueryError, query_peer

log = logging.getLogger(__name__)

#: Command name for a member announcing its name and client URLs; kept out of the store.
PUBLISH_OP = "kvd.publish"
#: Command name for new peer URLs of an existing member (``PUT /v2/members/<id>``).
MEMBER_UPDATE_OP = "kvd.member_update"
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
    loop, and every replica turns it into the same error. ``peers`` starts as the
    membership this member was started with and then follows the log.
    """

    def __init__(self, history_bytes: int = DEFAULT_HISTORY_BYTES,
                 on_members: Callable[[], None] | None = None,
                 peers: dict[int, list[str]] | None = None) -> None:
        self.store = Store(history_bytes)
        self.history_bytes = history_bytes
        self.attrs: dict[int, MemberAttrs] = {}
        #: peer URLs by member id
        self.peers: dict[int, list[str]] = {k: list(v) for k, v in (peers or {}).items()}
        #: ids removed from the cluster; never reused
        self.removed: set[int] = set()
        self.on_members = on_members
        #: called with ``peers`` whenever a member's peer URLs change
        self.on_peers: Callable[[dict[int, list[str]]], None] | None = None
        #: called with the size in bytes of every snapshot taken
        self.on_snapshot: Callable[[int], None] | None = None

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
        if command.get("op") == MEMBER_UPDATE_OP:
            return self._update_peers(index, command)
        try:
            return self.store.apply(command)
        except (ValueError, TypeError, KeyError, AttributeError) as err:
            log.warning("entry %d: bad command field: %r", index, err)
            return EtcdError(RAFT_INTERNAL, f"entry {index}: bad command: {err}",
                             self.store.index)

    def _changed(self, peers: bool) -> None:
        if peers and self.on_peers is not None:
            self.on_peers(self.peers)
        if self.on_members is not None:
            self.on_members()

    def _publish(self, index: int, command: dict[str, Any]) -> None:
        try:
            member = int(command["id"])
            attrs = MemberAttrs(str(command["name"]), [str(u) for u in command["clientURLs"]])
        except (KeyError, TypeError, ValueError) as err:
            log.warning("entry %d: bad member attributes: %r", index, err)
            return None
        if member in self.removed:
            return None  # a late announcement from a member already gone
        self.attrs[member] = attrs
        self._changed(peers=False)
        return None

    def _update_peers(self, index: int, command: dict[str, Any]) -> EtcdError | None:
        try:
            member = int(command["id"])
            urls = _url_list(command["peerURLs"])
        except (KeyError, TypeError, ValueError) as err:
            return EtcdError(RAFT_INTERNAL, f"entry {index}: bad member update: {err}",
                             self.store.index)
        if member not in self.peers:
            return EtcdError(RAFT_INTERNAL, f"entry {index}: no member {member:x} to update",
                             self.store.index)
        self.peers[member] = urls
        self._changed(peers=True)
        return None

    def apply_conf_change(self, index: int, kind: ConfChangeType, node_id: int,
                          app: bytes) -> None:
        """Called by the Raft shell at the log position of a membership change."""
        if kind is ConfChangeType.REMOVE_NODE:
            self.peers.pop(node_id, None)
            self.attrs.pop(node_id, None)
            self.removed.add(node_id)
            self._changed(peers=True)
            return
        urls: list[str] = []
        try:
            urls = _url_list(_unpack(app)["peerURLs"]) if app else []
        except (ValueError, TypeError, KeyError, msgpack.UnpackException) as err:
            log.warning("entry %d: membership change without usable peer URLs: %r",
                        index, err)
        if urls or node_id not in self.peers:
            self.peers[node_id] = urls
        self._changed(peers=True)

    def snapshot(self) -> bytes:
        blob = _pack({
            "version": SNAPSHOT_VERSION,
            "store": self.store.snapshot(),
            "members": {f"{k:x}": [a.name, a.client_urls] for k, a in self.attrs.items()},
            "peers": {f"{k:x}": v for k, v in self.peers.items()},
            "removed": [f"{k:x}" for k in sorted(self.removed)],
        })
        if self.on_snapshot is not None:
            self.on_snapshot(len(blob))
        return blob

    def restore(self, data: bytes) -> None:
        """Replace the store's contents in place, so the HTTP layer's reference stays valid.

        Everything is decoded and checked before anything is replaced, so a bad
        snapshot leaves the member as it was.
        """
        try:
            obj = _unpack(data)
        except (ValueError, msgpack.UnpackException) as err:
            raise ValueError(f"raft snapshot: undecodable ({err})") from None
        if not isinstance(obj, dict) or obj.get("version") != SNAPSHOT_VERSION:
            raise ValueError("raft snapshot: not a kvd store snapshot (bad 'version')")
        try:
            attrs = {int(k, 16): MemberAttrs(str(v[0]), [str(u) for u in v[1]])
                     for k, v in obj.get("members", {}).items()}
            peers = ({int(k, 16): _url_list(v) for k, v in obj["peers"].items()}
                     if "peers" in obj else None)
            removed = {int(k, 16) for k in obj.get("removed", [])}
        except (AttributeError, TypeError, ValueError, IndexError) as err:
            raise ValueError(f"raft snapshot: bad membership data ({err})") from None
        fresh = Store.restore(obj["store"], self.history_bytes)
        for name, value in vars(fresh).items():
            if name not in _KEEP_ON_RESTORE:
                setattr(self.store, name, value)
        self.attrs = attrs
        if peers is not None:  # snapshots written before peer URLs were replicated lack it
            self.peers = peers
        self.removed = removed
        self._changed(peers=True)


#: a snapshot of this many bytes buys one more logged entry before the next snapshot
SNAPSHOT_BYTES_PER_ENTRY = 64
#: snapshots are never spaced more than this many times ``--snapshot-count`` apart
MAX_SNAPSHOT_STRETCH = 10
#: below this size a snapshot is cheap (tens of milliseconds): the count is kept as given
STRETCH_FROM_BYTES = 1 << 20


def snapshot_interval(snapshot_count: int, snapshot_bytes: int) -> int:
    """Applied entries until the next snapshot, given the size of the last one.

    A snapshot serialises the whole store and its event history on the event loop; the
    history alone may reach ``--history-bytes`` (64 MiB by default), which takes
    seconds. Taking one every ``--snapshot-count`` entries regardless would spend more
    time snapshotting than serving under sustained writes. So the next snapshot waits
    for one logged entry per `SNAPSHOT_BYTES_PER_ENTRY` bytes of the last one (a few
    microseconds of snapshot work per write, as the earlier single-node log's
    compaction cost), within 1 to `MAX_SNAPSHOT_STRETCH` times ``--snapshot-count`` so
    the entries held in memory stay bounded too.
    """
    if snapshot_bytes < STRETCH_FROM_BYTES:
        return snapshot_count
    by_size = snapshot_bytes // SNAPSHOT_BYTES_PER_ENTRY
    return max(snapshot_count, min(by_size, MAX_SNAPSHOT_STRETCH * snapshot_count))


def _url_list(value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(u, str) for u in value):
        raise ValueError("peerURLs: expected a list of strings")
    return list(value)


class RaftProposer:
    """The :class:`~flotilla.daemons.kv.proposer.Proposer` of a kvd cluster member."""

    #: seconds without a leader before a member asks its peers whether it was removed
    REMOVAL_CHECK_AFTER = 2.0
    #: seconds a removed member keeps running, so its last answers reach their clients
    REMOVAL_GRACE = 1.0

    #: seconds a peer has to answer the strict reconfiguration check's probe
    PROBE_TIMEOUT = 1.0

    def __init__(self, shell_config: ShellConfig, attrs: MemberAttrs, identity: Identity,
                 history_bytes: int = DEFAULT_HISTORY_BYTES,
                 strict_reconfig_check: bool = True) -> None:
        self.node_id = shell_config.node_id
        self.strict_reconfig_check = strict_reconfig_check
        self.own_attrs = attrs
        self.identity = identity
        self.cluster_id = identity.cluster_id
        self.machine = KvStateMachine(history_bytes, peers=identity.peers)
        self.machine.on_peers = self._sync_addresses
        self.machine.on_snapshot = self._tune_snapshot_interval
        self._base_snapshot_every = shell_config.snapshot_every
        self.shell = self._new_shell(shell_config)
        #: a lone member on the default peer URL may take another port if it is taken
        self.any_peer_port = False
        self._tasks: list[asyncio.Task[None]] = []
        self.published = asyncio.Event()
        #: set once this member knows it was removed from the cluster
        self.removed = asyncio.Event()
        #: called (once, after a short grace) when this member was removed
        self.on_removed: Callable[[], None] | None = None

    @property
    def store(self) -> Store:
        return self.machine.store

    @property
    def peer_urls(self) -> dict[int, list[str]]:
        return self.machine.peers

    def _tune_snapshot_interval(self, snapshot_bytes: int) -> None:
        """Space snapshots by the size of the last one (see `snapshot_interval`)."""
        self.shell.cfg.snapshot_every = snapshot_interval(self._base_snapshot_every,
                                                          snapshot_bytes)

    def _new_shell(self, shell_config: ShellConfig) -> RaftShell:
        shell = RaftShell(shell_config, self.machine)
        shell.on_removed = self._on_removed
        shell.on_query = self._answer_query
        return shell

    async def start(self) -> None:
        try:
            await self.shell.start()
        except OSError as err:
            if not self.any_peer_port or err.errno != errno.EADDRINUSE:
                raise
            await self.shell.stop()
            host, port = self.shell.cfg.listen
            print(f"kvd {self.own_attrs.name}: the default peer address {host}:{port} is "
                  "taken; serving alone on another port (set --listen-peer-urls to add "
                  "members)", file=sys.stderr, flush=True)
            self.shell = self._new_shell(replace(self.shell.cfg, listen=(host, 0)))
            await self.shell.start()
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._publish()),
                       loop.create_task(self._watch_for_removal())]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
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

    # -- removal ---------------------------------------------------------------------

    def _on_removed(self) -> None:
        if self.removed.is_set():
            return
        self.removed.set()
        print(f"kvd {self.own_attrs.name}: the member has been permanently removed from "
              "the cluster; the data-dir used by this member must be removed",
              file=sys.stderr, flush=True)
        if self.on_removed is not None:
            asyncio.get_running_loop().call_later(self.REMOVAL_GRACE, self.on_removed)

    async def _watch_for_removal(self) -> None:
        """Find out about a removal this member never saw committed.

        The leader stops talking to a member as soon as it applies that member's
        removal, often before the member learns the entry is committed. Such a member
        just loses its leader; after a few quiet seconds it asks its peers, the way an
        etcd member learns it from its peers' refusals.
        """
        quiet_since: float | None = None
        while not self.removed.is_set():
            await asyncio.sleep(0.5)
            core = self.shell.core
            if core is None or core.role is Role.LEADER or core.lead != NONE:
                quiet_since = None
                continue
            now = time.monotonic()
            if quiet_since is None:
                quiet_since = now
            if now - quiet_since < self.REMOVAL_CHECK_AFTER:
                continue
            quiet_since = now
            for address in list(self.shell.addresses.values()):
                try:
                    answer = await query_peer(address, self.shell.cfg.cluster, MEMBERS_QUERY,
                                              ssl_context=self.shell.cfg.client_ssl,
                                              timeout=2.0)
                except QueryError:
                    continue
                if isinstance(answer, dict) and self.node_id in answer.get("removed", ()):
                    self._on_removed()
                    return

    def _answer_query(self, query: str) -> Any:
        if query != MEMBERS_QUERY:
            raise KeyError(f"query {query!r}: unknown")
        return members_answer(self.cluster_id, self.members(), self.machine.removed)

    def _sync_addresses(self, peers: dict[int, list[str]]) -> None:
        """Dial every member at its replicated peer URL (added or updated members)."""
        transport = self.shell.transport
        for member, urls in peers.items():
            if member == self.node_id or not urls:
                continue
            address = peer_address(urls[0])
            if self.shell.addresses.get(member) == address:
                continue
            self.shell.addresses[member] = address
            if transport is not None:
                transport.set_peer(member, address)

    # -- membership changes ----------------------------------------------------------

    def _known(self) -> dict[int, list[str]]:
        return {ident: peers for ident, _name, peers, _clients in self.members()}

    def _check_free(self, peer_urls: list[str], known: dict[int, list[str]],
                    exclude: int = 0) -> None:
        taken = {u for ident, urls in known.items() if ident != exclude for u in urls}
        if any(u in taken for u in peer_urls):
            raise MemberError(409, "membership: peerURL exists")

    def _absent(self, member: int) -> MemberError:
        if member in self.machine.removed:
            return MemberError(410, f"Member permanently removed: {member:x}")
        return MemberError(404, f"No such member: {member:x}")

    async def add_member(self, peer_urls: list[str], now_s: int | None = None) -> int:
        """Add a voter through a Raft membership change; its id, as etcd makes it."""
        known = self._known()
        self._check_free(peer_urls, known)
        member = new_member_id(peer_urls, int(time.time()) if now_s is None else now_s)
        if member in known:
            raise MemberError(409, "membership: ID exists")
        if member in self.machine.removed:
            raise MemberError(500, "Internal Server Error")
        if self.strict_reconfig_check:
            voters = set(known)
            await self._strict_check("add", member, lambda connected: check_add(
                voters, set(self.machine.attrs), connected))
        try:
            await self.shell.add_member(member, peer_address(peer_urls[0]),
                                        app=_pack({"peerURLs": list(peer_urls)}),
                                        forward=True)
        except (ProposalTimeout, ProposalDropped, NotLeader, ValueError) as err:
            log.warning("adding member %x: %r", member, err)
            raise MemberError(500, "Internal Server Error") from None
        return member

    async def remove_member(self, member: int) -> None:
        known = self._known()
        if member not in known:
            raise self._absent(member)
        if self.strict_reconfig_check:
            voters = set(known)
            await self._strict_check("remove", member, lambda connected: check_remove(
                voters, set(self.machine.attrs), connected, member))
        try:
            await self.shell.remove_member(member, forward=True)
        except (ProposalTimeout, ProposalDropped, NotLeader, ValueError) as err:
            log.warning("removing member %x: %r", member, err)
            raise MemberError(500, "Internal Server Error") from None

    async def connected_members(self) -> set[int]:
        """This member and every other member that answers a peer query right now.

        etcd counts a member as connected when its peer stream is up; a member that
        answers over the peer port within `PROBE_TIMEOUT` is as good a witness here
        (a stopped or frozen process does not answer).
        """
        async def answers(member: int, address: tuple[str, int]) -> int | None:
            try:
                await query_peer(address, self.shell.cfg.cluster, MEMBERS_QUERY,
                                 ssl_context=self.shell.cfg.client_ssl,
                                 timeout=self.PROBE_TIMEOUT)
            except QueryError:
                return None
            return member

        others = [(m, peer_address(urls[0])) for m, urls in self.machine.peers.items()
                  if m != self.node_id and urls]
        found = await asyncio.gather(*(answers(m, a) for m, a in others))
        return {self.node_id} | {m for m in found if m is not None}

    async def _strict_check(self, change: str, member: int,
                            check: Callable[[set[int]], None]) -> None:
        """Run a strict reconfiguration rule; a refusal is etcd's 500, reason logged."""
        connected = await self.connected_members()
        try:
            check(connected)
        except ReconfigRefused as err:
            print(f"kvd {self.own_attrs.name}: rejecting member {change} {member:x}: {err} "
                  "(--strict-reconfig-check)", file=sys.stderr, flush=True)
            raise MemberError(500, "Internal Server Error") from None

    async def update_member(self, member: int, peer_urls: list[str]) -> None:
        known = self._known()
        if member not in known:
            if member in self.machine.removed:
                raise MemberError(500, "Internal Server Error")
            raise self._absent(member)
        self._check_free(peer_urls, known, exclude=member)
        command = {"op": MEMBER_UPDATE_OP, "id": member, "peerURLs": list(peer_urls)}
        try:
            result = await self.shell.propose(_pack(command))
        except ProposalTimeout as err:
            log.warning("updating member %x: %r", member, err)
            raise MemberError(500, "Internal Server Error") from None
        if result is not None:
            raise MemberError(500, "Internal Server Error")

    # -- reads -----------------------------------------------------------------------

    async def propose(self, command: dict[str, Any]) -> Event | EtcdError | None:
        command.setdefault("now", time.time_ns())
        try:
            return await self.shell.propose(_pack(command))
        except ProposalTimeout:
            return EtcdError(RAFT_INTERNAL, "etcdserver: request timed out", self.store.index)

    async def read_barrier(self) -> None:
        if self._sole_voter_caught_up():
            return
        try:
            await self.shell.read_index()
        except ProposalTimeout:
            raise EtcdError(RAFT_INTERNAL, "etcdserver: request timed out",
                            self.store.index) from None

    def _sole_voter_caught_up(self) -> bool:
        """A leader that is the only voter may serve reads without a ReadIndex round.

        No other member can be elected without its vote, and every write acknowledged
        anywhere was applied here first (acknowledging waits for the apply), so once
        everything committed is applied and it has committed in its own term, its store
        is as new as any acknowledged write. This keeps a lone kvd's GETs as cheap as
        they were before it ran Raft.
        """
        core = self.shell.core
        return (core is not None and core.role is Role.LEADER
                and core.voters == {self.node_id}
                and core.log.committed == self.shell.applied
                and core.log.term(core.log.committed) == core.term)

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
        """(id, name, peer URLs, client URLs) for every member, in id order.

        The replicated peer record, not the Raft core's voter set, is the source: it
        changes while the membership entry is applied, so listeners called from that
        apply already see the new membership. A member that has not published yet shows
        with an empty name and no client URLs, as etcd shows a member not yet started.
        """
        out = []
        for member in sorted(self.machine.peers):
            attrs = self.machine.attrs.get(member)
            out.append((member, attrs.name if attrs else "",
                        list(self.machine.peers.get(member, [])),
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
    """Several members from the start, or joining: the data dir cannot be a lone one's."""
    return len(config.initial_cluster) > 1 or config.initial_cluster_state == "existing"


def peer_ssl_contexts(peer_tls: PeerTLS | None
                      ) -> tuple[ssl.SSLContext | None, ssl.SSLContext | None]:
    """(server, client) contexts for peer traffic; ConfigError names an unusable file."""
    if peer_tls is None:
        return None, None
    try:
        server = tls.server_context(peer_tls.cert_file, peer_tls.key_file,
                                    peer_tls.trusted_ca_file or None,
                                    require_client_cert=peer_tls.client_cert_auth)
        client = tls.client_context(peer_tls.cert_file, peer_tls.key_file,
                                    peer_tls.trusted_ca_file or None)
    except (ssl.SSLError, OSError) as err:
        raise ConfigError(f"--peer-cert-file/--peer-key-file/--peer-trusted-ca-file: "
                          f"{err}") from None
    return server, client


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
    peer_ssl_contexts(config.peer_tls)
    return member_id(config.initial_cluster[config.name], token), peer_urls


def _has_raft_data(data_dir: Path) -> bool:
    raft_dir = data_dir / RAFT_DIR
    return raft_dir.is_dir() and any(raft_dir.iterdir())


async def resolve_identity(config: Config, client_ssl: ssl.SSLContext | None) -> Identity:
    """Who this member is: from ``member.json``, the static cluster, or by asking peers.

    A failed join raises ConfigError before anything is written to ``--data-dir``.
    """
    data_dir = Path(config.data_dir)
    convert_single_node_data(config)
    saved = load_identity(data_dir)
    if saved is not None:
        return saved
    if config.initial_cluster_state == "existing" and not _has_raft_data(data_dir):
        identity = await join_identity(config, client_ssl)
    else:
        identity = static_identity(config)
    save_identity(data_dir, identity)
    return identity


def convert_single_node_data(config: Config) -> None:
    """Move a data dir of the old single-node format into Raft's (once, atomically).

    Only a lone member may take such a directory over: its store would otherwise
    disagree with the other members' from the first entry on.
    """
    data_dir = Path(config.data_dir)
    remove_stale_files(data_dir)
    if not has_single_node_data(data_dir):
        return
    if is_clustered(config) or (data_dir / MEMBER_FILE).exists():
        raise ConfigError(
            f"--data-dir {data_dir}: holds a single-node kvd's data, which only a lone "
            "member (one --initial-cluster entry, --initial-cluster-state new) can take "
            "over; start it alone first, then add members")
    identity = static_identity(config)
    peers = {identity.member_id: sorted(config.initial_advertise_peer_urls)}

    def snapshot_of(store: Store) -> bytes:
        machine = KvStateMachine(config.history_bytes, peers=peers)
        machine.store = store
        return machine.snapshot()

    index = migrate_single_node(data_dir, RAFT_DIR, identity.member_id, snapshot_of,
                                config.history_bytes)
    print(f"kvd {config.name}: converted {data_dir} from the single-node format to a "
          f"one-member Raft cluster at index {index}", file=sys.stderr, flush=True)


def raft_proposer_from_config(config: Config, identity: Identity | None = None
                              ) -> RaftProposer:
    """Build the Raft member from etcd's flags; raises ConfigError naming a bad one."""
    check_cluster_config(config)
    identity = identity or static_identity(config)
    server_ssl, client_ssl = peer_ssl_contexts(config.peer_tls)
    peers = {ident: peer_address(urls[0])
             for ident, urls in identity.peers.items() if ident != identity.member_id and urls}
    shell_config = ShellConfig(
        node_id=identity.member_id,
        data_dir=Path(config.data_dir) / RAFT_DIR,
        listen=_address("listen-peer-urls", config.listen_peer_urls[0]),
        peers=peers,
        cluster=config.initial_cluster_token,
        join=identity.joined,
        snapshot_every=config.snapshot_count,
        tick_seconds=config.heartbeat_ms / 1000,
        election_tick=config.election_ms // config.heartbeat_ms,
        campaign_at_start=True,
        fsync=config.fsync,
        server_ssl=server_ssl,
        client_ssl=client_ssl,
    )
    attrs = MemberAttrs(config.name, list(config.advertise_client_urls))
    proposer = RaftProposer(shell_config, attrs, identity, config.history_bytes,
                            config.strict_reconfig_check)
    # A lone kvd started without peer flags used to need no peer port, and several
    # often share a host (one per loopback address, all defaulting to 127.0.0.1:2380).
    proposer.any_peer_port = (not is_clustered(config) and config.listen_peer_urls
                              == [VALUE_FLAGS["listen-peer-urls"]])
    return proposer


def force_new_cluster_data(config: Config, identity: Identity) -> Identity:
    """``--force-new-cluster``: this member's data becomes a one-member cluster.

    For a cluster that lost its majority for good; see `raft.recover`. Keys, indexes and
    the cluster id are kept; the other members are removed by committed entries, so they
    disappear from ``/v2/members`` too. Without Raft data (a new member) there is
    nothing to rewrite and the member starts as usual.
    """
    data_dir = Path(config.data_dir)
    if not _has_raft_data(data_dir):
        return identity
    try:
        outcome = force_new_cluster(data_dir / RAFT_DIR, identity.member_id,
                                    fsync=config.fsync)
    except ValueError as err:
        raise ConfigError(f"--force-new-cluster: {err}") from None
    removed = ", ".join(f"{m:x}" for m in outcome.removed) or "none"
    print(f"kvd {config.name}: forced a new one-member cluster from {data_dir} at index "
          f"{outcome.commit} (members removed: {removed}; uncommitted entries dropped: "
          f"{outcome.dropped})", file=sys.stderr, flush=True)
    own = identity.peers.get(identity.member_id) or sorted(config.initial_advertise_peer_urls)
    alone = Identity(identity.member_id, identity.cluster_id, {identity.member_id: own},
                     joined=False)
    save_identity(data_dir, alone)
    return alone


async def raft_member(config: Config, info: Any) -> RaftProposer:
    """The Raft member for ``serve``: resolves its identity and sets ``info``'s ids."""
    _server_ssl, client_ssl = peer_ssl_contexts(config.peer_tls)
    identity = await resolve_identity(config, client_ssl)
    if config.force_new_cluster:
        identity = await asyncio.to_thread(force_new_cluster_data, config, identity)
    proposer = raft_proposer_from_config(config, identity)
    info.member.id = identity.member_id
    info.cluster_id = identity.cluster_id
    return proposer


class MemberRemoved(Exception):
    """This member was removed from the cluster; the daemon exits."""
