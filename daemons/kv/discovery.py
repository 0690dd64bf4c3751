"""Bootstrapping a kvd cluster from an etcd discovery URL (``--discovery``).

The etcd v2 discovery protocol uses any v2 keys store as a meeting point. A discovery
URL names a directory (``.../v2/keys/_etcd/registry/<token>``) whose ``_config/size``
says how many members the new cluster has. Each starting member creates
``<url>/<member id hex>`` holding its ``name=peerURL`` pairs, then waits until ``size``
members have registered; the first ``size`` registrations, in creation order, are the
initial cluster. Later arrivals learn the cluster is full. The member id is computed
with the discovery URL as the cluster token, as etcd does, so every member derives the
same ids and cluster id from the same registrations.

The protocol's decisions (is the size usable, is this member in, who is the cluster)
are pure functions here; :class:`DiscoveryClient` is the thin asyncio shell doing the
HTTP calls, the watches and the bounded retries. Two things differ from etcd on purpose:

* Registering is idempotent: a member that crashed after registering but before it
  saved the result finds its own registration (same key, same value) and carries on,
  where etcd stops with "found duplicate id" (its own code notes this as a wish).
* An unreachable discovery service is retried with exponential backoff for at most
  ``--discovery-timeout`` seconds instead of forever, so a wrong URL fails visibly.

Once discovery succeeds the result is saved in the data directory; a restarted member
reads it back and never contacts the discovery service again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from flotilla.daemons.durable import write_atomic
from flotilla.daemons.kv.config import Config, member_id
from flotilla.daemons.kv.proposer import LOG_NAME, SNAPSHOT_NAME
from flotilla.daemons.service import notify

# etcd's error texts (etcdserver/api/v2discovery), kept so searches for them still help.
ERR_INVALID_URL = "discovery: invalid URL"
ERR_BAD_SIZE_KEY = "discovery: size key is bad"
ERR_SIZE_NOT_FOUND = "discovery: size key not found"
ERR_DUPLICATE_ID = "discovery: found duplicate id"
ERR_DUPLICATE_NAME = "discovery: found duplicate name"
ERR_FULL_CLUSTER = "discovery: cluster is full"
ERR_TOO_MANY_RETRIES = "discovery: too many retries"
ERR_BAD_ENDPOINT = "discovery: bad discovery endpoint"
# kvd's own: the result saved by an earlier run cannot be read back.
ERR_BAD_SAVED = "discovery: saved cluster is unreadable"

CONFIG_KEY = "_config"
#: The saved outcome of discovery, under --data-dir.
STATE_FILE = "discovery.json"
#: Data a member leaves behind once it ran: the Raft directory or the single-node log.
DATA_MARKERS = ("raft", LOG_NAME, SNAPSHOT_NAME)
#: etcd's v2 client gives each plain request this long.
REQUEST_SECONDS = 5.0
#: A watch that saw nothing for this long is renewed from a fresh listing.
WATCH_SECONDS = 30.0
FIRST_RETRY_SECONDS = 0.5
MAX_RETRY_SECONDS = 16.0
ETCD_KEY_NOT_FOUND = 100
ETCD_NODE_EXIST = 105
ETCD_INDEX_CLEARED = 401


class DiscoveryError(Exception):
    """Discovery cannot bootstrap this member; ``reason`` is etcd's error text."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason, detail)
        self.reason = reason
        self.detail = detail

    def __str__(self) -> str:
        text = f"failed to join discovery cluster ({self.reason})"
        return f"{text}: {self.detail}" if self.detail else text

    @property
    def advice(self) -> str:
        """What an operator should do next, as etcd tells them."""
        if self.reason == ERR_DUPLICATE_ID:
            return ("this member registered with the discovery token before, but its data "
                    "directory holds no cluster configuration; check --data-dir if the "
                    "previous bootstrap succeeded, or use a new discovery token")
        if self.reason == ERR_DUPLICATE_NAME:
            return ("a member with the same name is already registered; cURL the discovery "
                    "URL for details and do not reuse the discovery token")
        if self.reason == ERR_TOO_MANY_RETRIES:
            return "check that the discovery URL is right and its service is up"
        return "do not reuse discovery token; generate a new one to bootstrap a cluster"


# ------------------------------------------------------------------ pure protocol


@dataclass(frozen=True, slots=True)
class Registration:
    """One member's entry under the discovery directory."""

    key: str  # last path element: the member id in hex
    value: str  # name=peerURL[,name=peerURL...]
    created_index: int


@dataclass(frozen=True, slots=True)
class Waiting:
    """Fewer than ``size`` members registered so far."""

    found: int
    size: int


@dataclass(frozen=True, slots=True)
class Complete:
    """The first ``size`` registrations, this member among them, as an initial cluster."""

    cluster: dict[str, list[str]]
    registrations: tuple[Registration, ...]


def discovery_endpoint(url: str) -> str:
    """The discovery URL without a trailing slash; it must name a directory on a host."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname \
            or parts.path.strip("/") == "":
        raise DiscoveryError(ERR_INVALID_URL,
                             f"--discovery: {url!r} is not an http(s)://host/path URL")
    try:
        parts.port  # noqa: B018 (validates the port)
    except ValueError:
        raise DiscoveryError(ERR_INVALID_URL, f"--discovery: {url!r} has a bad port") from None
    if parts.query or parts.fragment:
        raise DiscoveryError(ERR_INVALID_URL,
                             f"--discovery: {url!r} must not carry a query or fragment")
    return url.rstrip("/")


def parse_size(value: Any) -> int:
    """The cluster size from ``_config/size``: a positive decimal integer."""
    text = value if isinstance(value, str) else ""
    if not text.isascii() or not text.isdigit() or int(text) < 1:
        raise DiscoveryError(ERR_BAD_SIZE_KEY,
                             f"_config/size is {value!r}, not a positive whole number")
    return int(text)


def member_key(ident: int) -> str:
    """A member id as etcd prints it: lowercase hex without padding."""
    return f"{ident:x}"


def registration_value(name: str, peer_urls: list[str]) -> str:
    """etcd's ``URLsMap.String()`` for one member: sorted ``name=url`` pairs, comma-joined."""
    return ",".join(sorted(f"{name}={url}" for url in peer_urls))


def parse_listing(body: Any) -> list[Registration]:
    """Registrations from the JSON of ``GET <discovery url>``, ``_config`` left out."""
    try:
        node = body["node"]
        children = node.get("nodes", [])
        if not isinstance(children, list):
            raise TypeError("node.nodes is not a list")
        found = []
        for child in children:
            key = child["key"]
            if not isinstance(key, str):
                raise TypeError("node.nodes[].key is not a string")
            base = key.rstrip("/").rsplit("/", 1)[-1]
            if base == CONFIG_KEY:
                continue
            value = child.get("value", "")
            created = child["createdIndex"]
            if not isinstance(value, str) or not isinstance(created, int):
                raise TypeError(f"registration {base!r} has a bad value or createdIndex")
            found.append(Registration(base, value, created))
    except (KeyError, TypeError, AttributeError) as err:
        raise DiscoveryError(ERR_BAD_ENDPOINT, f"unexpected directory listing: {err}") from None
    return found


def parse_cluster(values: list[str]) -> dict[str, list[str]]:
    """Registration values joined into ``--initial-cluster`` form (name -> peer URLs)."""
    cluster: dict[str, list[str]] = {}
    for value in values:
        for pair in value.split(","):
            name, sep, url = pair.partition("=")
            parts = urlsplit(url.strip())
            if not sep or not name.strip() or parts.scheme not in ("http", "https") \
                    or not parts.hostname:
                raise DiscoveryError(ERR_INVALID_URL,
                                     f"registration {value!r}: {pair!r} is not name=URL")
            cluster.setdefault(name.strip(), []).append(url.strip())
    return cluster


def assess(registrations: list[Registration], size: int, self_key: str
           ) -> Waiting | Complete:
    """Decide from a listing: keep waiting, or the cluster; raises when it cannot work.

    Creation order decides who is in. A member not among the first ``size`` is refused
    with "cluster is full", whether or not it has registered yet (so a latecomer does not
    even register). Names must be unique across the chosen registrations.
    """
    ordered = sorted(registrations, key=lambda r: r.created_index)
    chosen = ordered[:size]
    if len(ordered) >= size and all(r.key != self_key for r in chosen):
        names = ", ".join(r.value for r in chosen)
        raise DiscoveryError(ERR_FULL_CLUSTER, f"{size} members already registered: {names}")
    if len(chosen) < size:
        return Waiting(len(chosen), size)
    cluster = parse_cluster([r.value for r in chosen])
    if len(cluster) != size:
        raise DiscoveryError(ERR_DUPLICATE_NAME,
                             f"registrations {[r.value for r in chosen]} share a name")
    return Complete(cluster, tuple(chosen))


def retry_delay(attempt: int) -> float:
    """Exponential backoff: 0.5 s, 1 s, 2 s ... capped at 16 s."""
    return min(FIRST_RETRY_SECONDS * (2 ** min(attempt, 16)), MAX_RETRY_SECONDS)


def with_cluster(config: Config, cluster: dict[str, list[str]], token: str) -> Config:
    """``config`` bootstrapping the static cluster that discovery found."""
    return dataclasses.replace(config, initial_cluster={k: list(v) for k, v in cluster.items()},
                               initial_cluster_token=token, initial_cluster_state="new")


# --------------------------------------------------------------- saved outcome


@dataclass(frozen=True, slots=True)
class SavedDiscovery:
    """What a member needs to restart without the discovery service."""

    discovery: str
    cluster: dict[str, list[str]]

    def to_json(self) -> str:
        return json.dumps({"discovery": self.discovery, "initialCluster": self.cluster},
                          indent=1, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str, where: str) -> SavedDiscovery:
        try:
            data = json.loads(text)
            discovery = data["discovery"]
            cluster = data["initialCluster"]
            if not isinstance(discovery, str) or not isinstance(cluster, dict) or not all(
                    isinstance(k, str) and isinstance(v, list)
                    and all(isinstance(u, str) for u in v) for k, v in cluster.items()):
                raise TypeError("'discovery' must be a string and 'initialCluster' a map "
                                "of name to URL list")
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(f"{where}: not a saved discovery result: {err}") from None
        return cls(discovery, cluster)


def load_saved(data_dir: Path) -> SavedDiscovery | None:
    path = data_dir / STATE_FILE
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    return SavedDiscovery.from_json(text, str(path))


def save(data_dir: Path, saved: SavedDiscovery) -> None:
    """Atomic write: temp file, fsync, rename, fsync the directory."""
    data_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(data_dir / STATE_FILE, saved.to_json().encode())


def has_member_data(data_dir: Path) -> bool:
    """True once this member has run: its Raft directory or single-node log exists."""
    return any((data_dir / marker).exists() for marker in DATA_MARKERS)


# -------------------------------------------------------------------- the shell


class _Unreachable(Exception):
    """One failed attempt to reach the discovery service."""


Log = Callable[[str], None]


class DiscoveryClient:
    """HTTP calls to one discovery URL with bounded retries while it is unreachable."""

    def __init__(self, url: str, session: aiohttp.ClientSession, *, give_up_after: float,
                 log: Log, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.url = discovery_endpoint(url)
        self.session = session
        self.give_up_after = give_up_after
        self.log = log
        self.sleep = sleep
        self.clock = clock

    async def _once(self, method: str, url: str, params: dict[str, str] | None,
                    data: dict[str, str] | None, seconds: float, quiet_ok: bool
                    ) -> tuple[int, int | None, Any]:
        try:
            async with self.session.request(
                    method, url, params=params, data=data,
                    timeout=aiohttp.ClientTimeout(total=seconds)) as reply:
                raw = await reply.read()
                index = reply.headers.get("X-Etcd-Index")
                status = reply.status
        except TimeoutError:
            if quiet_ok:  # a long poll that saw nothing
                return 0, None, None
            raise _Unreachable(f"no answer within {seconds:g}s") from None
        except (aiohttp.ClientError, OSError) as err:
            raise _Unreachable(f"{type(err).__name__}: {err}") from None
        if status >= 500:  # no leader, a timed-out proposal, a proxy without backend
            raise _Unreachable(f"HTTP {status}: {raw[:120]!r}")
        try:
            body = json.loads(raw)
        except ValueError:
            raise DiscoveryError(ERR_BAD_ENDPOINT,
                                 f"{url} answered HTTP {status} with non-JSON "
                                 f"{raw[:80]!r}") from None
        return status, int(index) if index and index.isdigit() else None, body

    async def request(self, method: str, path: str = "", *,
                      params: dict[str, str] | None = None,
                      data: dict[str, str] | None = None,
                      seconds: float = REQUEST_SECONDS, quiet_ok: bool = False
                      ) -> tuple[int, int | None, Any]:
        """One call; while unreachable, back off and retry until ``give_up_after``."""
        url = self.url + path
        first_failure: float | None = None
        attempt = 0
        while True:
            try:
                return await self._once(method, url, params, data, seconds, quiet_ok)
            except _Unreachable as err:
                now = self.clock()
                first_failure = now if first_failure is None else first_failure
                waited = now - first_failure
                if waited >= self.give_up_after:
                    raise DiscoveryError(
                        ERR_TOO_MANY_RETRIES,
                        f"{self.url} unreachable for {waited:.1f}s ({attempt + 1} attempts); "
                        f"last error: {err}") from None
                delay = min(retry_delay(attempt), self.give_up_after - waited)
                self.log(f"discovery service {self.url} unreachable ({err}); "
                         f"retrying in {delay:.1f}s")
                attempt += 1
                await self.sleep(max(delay, 0.0))

    async def size(self) -> int:
        status, _, body = await self.request("GET", f"/{CONFIG_KEY}/size")
        if status == 404 or _error_code(body) == ETCD_KEY_NOT_FOUND:
            raise DiscoveryError(ERR_SIZE_NOT_FOUND, f"{self.url}/{CONFIG_KEY}/size does not "
                                                     "exist; is this a discovery URL?")
        node = body.get("node") if isinstance(body, dict) else None
        if status != 200 or not isinstance(node, dict):
            raise DiscoveryError(ERR_BAD_ENDPOINT, f"size lookup answered HTTP {status}: "
                                                   f"{str(body)[:120]}")
        return parse_size(node.get("value"))

    async def listing(self) -> tuple[list[Registration], int]:
        status, index, body = await self.request("GET", "", params={"quorum": "true"})
        if status != 200:
            raise DiscoveryError(ERR_BAD_ENDPOINT, f"listing {self.url} answered HTTP "
                                                   f"{status}: {str(body)[:120]}")
        return parse_listing(body), index or 0

    async def register(self, key: str, value: str) -> None:
        """Create ``<url>/<key>`` once; an identical existing value is our own earlier try."""
        status, _, body = await self.request("PUT", f"/{key}", params={"prevExist": "false"},
                                             data={"value": value})
        if _error_code(body) == ETCD_NODE_EXIST:
            status, _, body = await self.request("GET", f"/{key}", params={"quorum": "true"})
            existing = body.get("node", {}).get("value") if isinstance(body, dict) else None
            if existing != value:
                raise DiscoveryError(ERR_DUPLICATE_ID,
                                     f"{self.url}/{key} is already registered as "
                                     f"{existing!r}, not {value!r}")
            self.log(f"discovery: found this member's earlier registration {key}={value}")
            return
        if status not in (200, 201):
            raise DiscoveryError(ERR_BAD_ENDPOINT, f"registering {key} answered HTTP "
                                                   f"{status}: {str(body)[:120]}")

    async def wait_change(self, after_index: int) -> None:
        """Return once anything under the directory changed after ``after_index``.

        A quiet watch ends after ``WATCH_SECONDS`` and so does a history that moved past
        the index (401); either way the caller lists again, so no change can be missed.
        """
        await self.request("GET", "", params={
            "wait": "true", "recursive": "true", "waitIndex": str(after_index + 1)},
            seconds=WATCH_SECONDS, quiet_ok=True)


def _error_code(body: Any) -> int | None:
    code = body.get("errorCode") if isinstance(body, dict) else None
    return code if isinstance(code, int) else None


async def join_cluster(client: DiscoveryClient, self_key: str, value: str
                       ) -> dict[str, list[str]]:
    """etcd's ``joinCluster``: check, register, then wait for ``size`` members."""
    size = await client.size()
    registrations, _ = await client.listing()
    assess(registrations, size, self_key)  # a full cluster refuses us before we register
    await client.register(self_key, value)
    announced = -1
    while True:
        registrations, index = await client.listing()
        outcome = assess(registrations, size, self_key)
        if isinstance(outcome, Complete):
            client.log(f"discovery: found all {size} members: "
                       + ",".join(r.value for r in outcome.registrations))
            return outcome.cluster
        if outcome.found != announced:
            client.log(f"discovery: found {outcome.found} of {size} members; "
                       "waiting for more")
            announced = outcome.found
        await client.wait_change(index)


async def discover(url: str, self_key: str, value: str, *, give_up_after: float,
                   log: Log) -> dict[str, list[str]]:
    async with aiohttp.ClientSession() as session:
        client = DiscoveryClient(url, session, give_up_after=give_up_after, log=log)
        return await join_cluster(client, self_key, value)


def discovered_config(config: Config, log: Log | None = None) -> Config:
    """The member's config after discovery, or the saved one on a restart.

    Blocks until the cluster is complete. Raises :class:`DiscoveryError`.
    """
    if log is None:
        def log(text: str) -> None:
            print(f"kvd {config.name}: {text}", file=sys.stderr, flush=True)
            notify(f"STATUS={text}")  # systemctl status shows what the member waits for
    url = discovery_endpoint(config.discovery)
    data_dir = Path(config.data_dir)
    try:
        saved = load_saved(data_dir)
    except ValueError as err:
        raise DiscoveryError(ERR_BAD_SAVED, str(err)) from None
    if saved is not None:
        log(f"discovery token is ignored since cluster already initialized; using the "
            f"cluster saved in {data_dir / STATE_FILE}")
        return with_cluster(config, saved.cluster, saved.discovery)
    if has_member_data(data_dir):
        log(f"discovery token is ignored since cluster already initialized; valid logs "
            f"are found in {data_dir}")
        return config
    peer_urls = list(config.initial_advertise_peer_urls)
    self_key = member_key(member_id(peer_urls, url))
    value = registration_value(config.name, peer_urls)
    log(f"discovery: registering {self_key}={value} at {url}")
    cluster = asyncio.run(discover(url, self_key, value,
                                   give_up_after=config.discovery_timeout, log=log))
    if sorted(cluster.get(config.name, [])) != sorted(peer_urls):
        raise DiscoveryError(ERR_DUPLICATE_NAME,
                             f"the cluster names {config.name!r} with peer URLs "
                             f"{cluster.get(config.name)}, not this member's {peer_urls}")
    try:
        save(data_dir, SavedDiscovery(url, cluster))
    except OSError as err:
        raise DiscoveryError(ERR_BAD_SAVED, f"cannot save it under --data-dir: {err}") from None
    return with_cluster(config, cluster, url)
