"""Async client for the etcd v2 keys API, shared by every daemon that uses the store.

It speaks to kvd and to Debian's etcd (``--enable-v2``) alike: plain HTTP(S) with the
v2 form encoding, conditional writes (prevValue/prevIndex/prevExist), TTL keys with
refresh, recursive listing, and long-poll watches from a ``waitIndex``. Errors come
back as typed exceptions carrying etcd's own ``errorCode``, message, cause and index,
so callers branch on meaning rather than on HTTP status.

Written on aiohttp rather than an existing etcd library because the maintained Python
etcd clients speak only v3 (gRPC), and fleet and locksmith keep the v2 key layout.

``Mirror`` keeps a local copy of a subtree current from one watch, re-listing only when
the store has compacted past the watch (error 401) or the watch has fallen far behind;
a change to one key costs every watcher one small event, never a full re-read.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import aiohttp

log = logging.getLogger(__name__)

# etcd v2 error codes used by callers.
KEY_NOT_FOUND = 100
TEST_FAILED = 101
NOT_FILE = 102
NOT_DIR = 104
NODE_EXIST = 105
ROOT_READ_ONLY = 107
DIR_NOT_EMPTY = 108
EVENT_INDEX_CLEARED = 401


class KVError(Exception):
    """Base of everything this client raises."""


class ClusterUnavailable(KVError):
    """No endpoint answered."""


class EtcdError(KVError):
    """An error reply from the store: etcd's errorCode, message, cause and index."""

    def __init__(self, error_code: int, message: str, cause: str = "", index: int = 0,
                 status: int = 0) -> None:
        super().__init__(f"{error_code}: {message} ({cause}) [{index}]")
        self.error_code = error_code
        self.message = message
        self.cause = cause
        self.index = index
        self.status = status


class KeyNotFound(EtcdError):
    pass


class TestFailed(EtcdError):
    __test__ = False  # not a pytest test class


class NodeExist(EtcdError):
    pass


class NotFile(EtcdError):
    pass


class NotDir(EtcdError):
    pass


class DirNotEmpty(EtcdError):
    pass


class EventIndexCleared(EtcdError):
    """The watch asked for history the store no longer keeps; re-list and watch again."""


_ERROR_TYPES: dict[int, type[EtcdError]] = {
    KEY_NOT_FOUND: KeyNotFound,
    TEST_FAILED: TestFailed,
    NOT_FILE: NotFile,
    NOT_DIR: NotDir,
    NODE_EXIST: NodeExist,
    DIR_NOT_EMPTY: DirNotEmpty,
    EVENT_INDEX_CLEARED: EventIndexCleared,
}


@dataclass
class Node:
    key: str
    value: str | None = None
    dir: bool = False
    ttl: int | None = None
    expiration: str | None = None
    modified_index: int = 0
    created_index: int = 0
    nodes: list[Node] = field(default_factory=list)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Node:
        return cls(
            key=data.get("key", "/"),
            value=data.get("value"),
            dir=bool(data.get("dir", False)),
            ttl=data.get("ttl"),
            expiration=data.get("expiration"),
            modified_index=int(data.get("modifiedIndex", 0)),
            created_index=int(data.get("createdIndex", 0)),
            nodes=[cls.from_json(child) for child in data.get("nodes", []) or []],
        )

    def leaves(self) -> list[Node]:
        """Every non-directory node below (and including) this one."""
        if not self.dir:
            return [self]
        out: list[Node] = []
        for child in self.nodes:
            out.extend(child.leaves())
        return out


@dataclass
class Response:
    action: str
    node: Node
    prev_node: Node | None
    etcd_index: int


def _error_from(status: int, body: Any, fallback: str) -> EtcdError:
    if isinstance(body, dict) and "errorCode" in body:
        code = int(body["errorCode"])
        kind = _ERROR_TYPES.get(code, EtcdError)
        return kind(code, str(body.get("message", "")), str(body.get("cause", "")),
                    int(body.get("index", 0) or 0), status)
    return EtcdError(0, fallback or f"HTTP {status}", "", 0, status)


def _flag(value: bool) -> str:
    return "true" if value else "false"


class KVClient:
    """One client for a list of endpoints; a request moves to the next on connection failure."""

    def __init__(
        self,
        endpoints: Sequence[str] | str,
        *,
        cafile: str | None = None,
        certfile: str | None = None,
        keyfile: str | None = None,
        username: str | None = None,
        password: str | None = None,
        request_timeout: float = 5.0,
    ) -> None:
        if isinstance(endpoints, str):
            endpoints = [e for e in endpoints.split(",") if e]
        if not endpoints:
            raise ValueError("endpoints: at least one etcd URL is required")
        self.endpoints = [e.rstrip("/") for e in endpoints]
        self.request_timeout = request_timeout
        self.request_count = 0
        self._current = 0
        self._ssl: ssl.SSLContext | None = None
        if cafile or certfile:
            context = ssl.create_default_context(cafile=cafile or None)
            if certfile:
                context.load_cert_chain(certfile, keyfile or None)
            self._ssl = context
        self._auth = aiohttp.BasicAuth(username, password or "") if username else None
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> KVClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=64, ssl=self._ssl if self._ssl else True)
            self._session = aiohttp.ClientSession(connector=connector, auth=self._auth)
        return self._session

    @property
    def session(self) -> aiohttp.ClientSession:
        """The shared HTTP session (TLS, auth), for callers that hold a stream open."""
        return self._get_session()

    def endpoint(self, turn: int = 0) -> str:
        """The endpoint ``turn`` places after the one that answered last.

        Long-lived streams rotate through the endpoints this way, starting from the one
        known to work, as ``_request`` does for single requests.
        """
        return self.endpoints[(self._current + turn) % len(self.endpoints)]

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # ------------------------------------------------------------------ transport

    async def _request(
        self,
        method: str,
        key: str,
        *,
        params: dict[str, str] | None = None,
        form: dict[str, str] | None = None,
        long_poll: bool = False,
    ) -> Response:
        path = "/v2/keys" + quote("/" + key.lstrip("/"), safe="/:@-._~")
        session = self._get_session()
        total = None if long_poll else self.request_timeout
        client_timeout = aiohttp.ClientTimeout(total=total, connect=self.request_timeout)
        last_error: Exception | None = None
        for attempt in range(len(self.endpoints)):
            index = (self._current + attempt) % len(self.endpoints)
            url = self.endpoints[index] + path
            self.request_count += 1
            try:
                async with session.request(
                    method, url, params=params, data=form, timeout=client_timeout,
                    allow_redirects=True,
                ) as reply:
                    raw = await reply.read()
                    etcd_index = int(reply.headers.get("X-Etcd-Index", "0") or 0)
                    status = reply.status
            except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as error:
                last_error = error
                continue
            except TimeoutError as error:
                last_error = error
                continue
            self._current = index
            return self._decode(status, raw, etcd_index)
        raise ClusterUnavailable(f"no etcd endpoint answered ({last_error!r})")

    @staticmethod
    def _decode(status: int, raw: bytes, etcd_index: int) -> Response:
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = None
        if status >= 400 or not isinstance(body, dict) or "action" not in body:
            raise _error_from(status, body, raw[:200].decode(errors="replace"))
        prev = body.get("prevNode")
        return Response(
            action=body["action"],
            node=Node.from_json(body.get("node") or {}),
            prev_node=Node.from_json(prev) if prev else None,
            etcd_index=etcd_index,
        )

    # ------------------------------------------------------------------ keys API

    async def get(self, key: str, *, recursive: bool = False, sort: bool = False,
                  quorum: bool = False) -> Response:
        params = {}
        if recursive:
            params["recursive"] = "true"
        if sort:
            params["sorted"] = "true"
        if quorum:
            params["quorum"] = "true"
        return await self._request("GET", key, params=params)

    async def set(
        self,
        key: str,
        value: str,
        *,
        ttl: int | None = None,
        prev_value: str | None = None,
        prev_index: int | None = None,
        prev_exist: bool | None = None,
        refresh: bool = False,
    ) -> Response:
        form = {"value": value}
        if ttl is not None:
            form["ttl"] = str(int(ttl))
        if prev_value is not None:
            form["prevValue"] = prev_value
        if prev_index is not None:
            form["prevIndex"] = str(prev_index)
        if prev_exist is not None:
            form["prevExist"] = _flag(prev_exist)
        if refresh:
            form["refresh"] = "true"
            del form["value"]
        return await self._request("PUT", key, form=form)

    async def create(self, key: str, value: str, *, ttl: int | None = None) -> Response:
        """Write ``key`` only if it does not exist (NodeExist otherwise)."""
        return await self.set(key, value, ttl=ttl, prev_exist=False)

    async def update(self, key: str, value: str, *, ttl: int | None = None) -> Response:
        """Write ``key`` only if it exists (KeyNotFound otherwise)."""
        return await self.set(key, value, ttl=ttl, prev_exist=True)

    async def refresh(self, key: str, ttl: int) -> Response:
        """Push out a key's TTL without changing its value or waking watchers."""
        return await self.set(key, "", ttl=ttl, prev_exist=True, refresh=True)

    async def mkdir(self, key: str, *, ttl: int | None = None) -> Response:
        form = {"dir": "true"}
        if ttl is not None:
            form["ttl"] = str(int(ttl))
        return await self._request("PUT", key, form=form)

    async def compare_and_swap(self, key: str, value: str, *, prev_value: str | None = None,
                               prev_index: int | None = None, ttl: int | None = None) -> Response:
        if prev_value is None and prev_index is None:
            raise ValueError("compare_and_swap needs prev_value or prev_index")
        return await self.set(key, value, ttl=ttl, prev_value=prev_value, prev_index=prev_index)

    async def delete(
        self,
        key: str,
        *,
        recursive: bool = False,
        dir: bool = False,
        prev_value: str | None = None,
        prev_index: int | None = None,
    ) -> Response:
        params = {}
        if recursive:
            params["recursive"] = "true"
        if dir:
            params["dir"] = "true"
        if prev_value is not None:
            params["prevValue"] = prev_value
        if prev_index is not None:
            params["prevIndex"] = str(prev_index)
        return await self._request("DELETE", key, params=params)

    async def compare_and_delete(self, key: str, *, prev_value: str | None = None,
                                 prev_index: int | None = None) -> Response:
        if prev_value is None and prev_index is None:
            raise ValueError("compare_and_delete needs prev_value or prev_index")
        return await self.delete(key, prev_value=prev_value, prev_index=prev_index)

    async def wait(self, key: str, *, wait_index: int | None = None, recursive: bool = False,
                   ) -> Response:
        """One long-poll watch: the first change at or after ``wait_index``."""
        params = {"wait": "true"}
        if recursive:
            params["recursive"] = "true"
        if wait_index is not None:
            params["waitIndex"] = str(wait_index)
        return await self._request("GET", key, params=params, long_poll=True)

    async def watch(self, key: str, *, after_index: int, recursive: bool = False):
        """Yield every change after ``after_index``; raises EventIndexCleared if compacted."""
        next_index = after_index + 1
        while True:
            event = await self.wait(key, wait_index=next_index, recursive=recursive)
            next_index = event.node.modified_index + 1
            yield event


ChangeCallback = Callable[[dict[str, Node | None], bool], Awaitable[None] | None]


class Mirror:
    """A live local copy of every leaf under ``prefix``, kept current by one watch.

    ``on_change(changes, full)`` gets ``{key: Node or None}`` for what changed (``full``
    when the whole copy was re-listed). Re-lists when the store answers 401 or when the
    watch is more than ``max_lag`` events behind, where one list beats many events.
    """

    def __init__(self, client: KVClient, prefix: str, on_change: ChangeCallback, *,
                 max_lag: int = 300, retry_delay: float = 0.5) -> None:
        self.client = client
        self.prefix = "/" + prefix.strip("/")
        self.on_change = on_change
        self.max_lag = max_lag
        self.retry_delay = retry_delay
        self.nodes: dict[str, Node] = {}
        self.index = 0
        self.ready = asyncio.Event()
        self.relists = 0
        self._tombstones: dict[str, int] = {}

    async def _emit(self, changes: dict[str, Node | None], full: bool) -> None:
        result = self.on_change(changes, full)
        if asyncio.iscoroutine(result):
            await result

    async def relist(self) -> None:
        self.relists += 1
        try:
            # Not a quorum read: the watch that follows starts at the index this reply
            # reports, so even a lagging member's answer is brought current by events.
            reply = await self.client.get(self.prefix, recursive=True)
            leaves = reply.node.leaves() if reply.node.dir else [reply.node]
            index = reply.etcd_index
        except KeyNotFound as missing:
            leaves, index = [], missing.index
        fresh = {node.key: node for node in leaves}
        self._tombstones.clear()
        changes: dict[str, Node | None] = {key: None for key in self.nodes if key not in fresh}
        changes.update(fresh)
        self.nodes = fresh
        self.index = index
        await self._emit(changes, True)
        self.ready.set()

    def local_set(self, key: str, value: str, index: int) -> None:
        """Record our own successful write now, before its watch event arrives."""
        current = self.nodes.get(key)
        if current is None or current.modified_index <= index:
            self.nodes[key] = Node(key=key, value=value, modified_index=index)
            self._tombstones.pop(key, None)

    def local_delete(self, key: str, index: int) -> None:
        """Record our own successful delete; older events for the key are then ignored."""
        self.nodes.pop(key, None)
        self._tombstones[key] = index

    def _stale(self, node: Node) -> bool:
        current = self.nodes.get(node.key)
        if current is not None and node.modified_index < current.modified_index:
            return True
        return node.modified_index <= self._tombstones.get(node.key, -1)

    def _apply(self, event: Response) -> dict[str, Node | None]:
        node = event.node
        changes: dict[str, Node | None] = {}
        if self._stale(node):
            return changes
        if event.action in ("delete", "expire", "compareAndDelete"):
            if node.dir or node.key not in self.nodes:
                base = node.key.rstrip("/") + "/"
                for key in [k for k in self.nodes if k.startswith(base)]:
                    del self.nodes[key]
                    changes[key] = None
            if node.key in self.nodes:
                del self.nodes[node.key]
                changes[node.key] = None
        elif not node.dir:
            self.nodes[node.key] = node
            changes[node.key] = node
        return changes

    async def run(self) -> None:
        """List, then follow the watch until cancelled; retries through store outages."""
        need_list = True
        while True:
            try:
                if need_list:
                    await self.relist()
                    need_list = False
                event = await self.client.wait(self.prefix, wait_index=self.index + 1,
                                               recursive=True)
            except EventIndexCleared:
                need_list = True
                continue
            except (TimeoutError, ClusterUnavailable, EtcdError, aiohttp.ClientError) as error:
                log.debug("mirror %s: %r, retrying", self.prefix, error)
                await asyncio.sleep(self.retry_delay)
                continue
            self.index = max(self.index, event.node.modified_index)
            if event.etcd_index - event.node.modified_index > self.max_lag:
                need_list = True
                continue
            changes = self._apply(event)
            if changes:
                await self._emit(changes, False)

    @contextlib.asynccontextmanager
    async def running(self):
        task = asyncio.create_task(self.run())
        try:
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
