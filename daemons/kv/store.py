"""The etcd v2 key tree as a pure, deterministic state machine.

Every mutation arrives as a *command* (a plain dict that msgpack can carry through a
replicated log) and :meth:`Store.apply` turns it into an :class:`Event` or an
:class:`EtcdError`. The store never reads a clock: a command carries the wall time its
proposer assigned (``now``, nanoseconds since the epoch), TTLs become absolute expiry times
from it, and keys only expire when an ``expire`` command says what time it is. Every
replica applying the same commands therefore holds the same tree, index and history.

Semantics follow etcd 3.4's v2 store, including its quirks (a ``set`` on a directory is
``Not a file``; history replay does not hide ``_`` keys while live watchers do), because
existing clients depend on them. The one deliberate change is the event history: it is
bounded in bytes rather than to 1,000 events, so far more history survives busy periods.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flotilla.daemons.kv import errors as E
from flotilla.daemons.kv.errors import EtcdError

GET = "get"
CREATE = "create"
SET = "set"
UPDATE = "update"
DELETE = "delete"
COMPARE_AND_SWAP = "compareAndSwap"
COMPARE_AND_DELETE = "compareAndDelete"
EXPIRE = "expire"

DEFAULT_HISTORY_BYTES = 64 * 1024 * 1024
EVENT_OVERHEAD_BYTES = 200
SECOND_NS = 1_000_000_000


def clean_path(raw: str) -> str:
    """Go's ``path.Clean("/" + raw)``: a rooted path without ``.``/``..``/empty parts."""
    parts: list[str] = []
    for part in raw.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts:
                parts.pop()
            continue
        parts.append(part)
    return "/" + "/".join(parts)


def internal_path(raw: str) -> str:
    """Node path for a user key: the root is ``""`` so children read ``/name``."""
    cleaned = clean_path(raw)
    return "" if cleaned == "/" else cleaned


class Node:
    """One key or directory. ``children is None`` marks a file."""

    __slots__ = ("alive", "children", "created", "expire", "modified", "name", "parent",
                 "path", "value")

    def __init__(self, path: str, name: str, parent: Node | None, value: str | None,
                 index: int, expire: int | None) -> None:
        self.path = path
        self.name = name
        self.parent = parent
        self.value = "" if value is None else value
        self.children: dict[str, Node] | None = {} if value is None else None
        self.created = index
        self.modified = index
        self.expire = expire
        self.alive = True

    @property
    def is_dir(self) -> bool:
        return self.children is not None

    @property
    def hidden(self) -> bool:
        return self.name.startswith("_")


class NodeView:
    """A node as a response shows it (etcd's NodeExtern, ttl left to render time)."""

    __slots__ = ("created", "dir", "expire", "key", "modified", "nodes", "ttl", "value")

    def __init__(self, key: str, value: str | None = None, dir: bool = False,
                 expire: int | None = None, nodes: list[NodeView] | None = None,
                 modified: int = 0, created: int = 0, ttl: int | None = None) -> None:
        self.key = key
        self.ttl = ttl  # fixed when the view belongs to an event; None: compute on render
        self.value = value
        self.dir = dir
        self.expire = expire
        self.nodes = nodes
        self.modified = modified
        self.created = created

    def to_list(self) -> list[Any]:
        return [self.key, self.value, self.dir, self.expire, self.modified, self.created,
                self.ttl]

    @classmethod
    def from_list(cls, data: list[Any]) -> NodeView:
        key, value, is_dir, expire, modified, created, ttl = data
        return cls(key, value, bool(is_dir), expire, None, modified, created, ttl)


@dataclass(slots=True)
class Event:
    """The outcome of an operation: what a client sees and what watchers receive."""

    action: str
    node: NodeView | None
    prev: NodeView | None = None
    index: int = 0  # the store index after the operation (X-Etcd-Index)
    refresh: bool = False
    size: int = field(default=0, compare=False)
    # The JSON a watcher receives, rendered once however many watchers get it.
    rendered: bytes | None = field(default=None, compare=False, repr=False)

    @property
    def created(self) -> bool:
        """etcd answers 201 for creates and for a set that replaced nothing."""
        return self.action == CREATE or (self.action == SET and self.prev is None)

    @property
    def key(self) -> str:
        return self.node.key if self.node is not None else ""

    def to_list(self) -> list[Any]:
        return [self.action, self.index, self.refresh,
                self.node.to_list() if self.node else None,
                self.prev.to_list() if self.prev else None]

    @classmethod
    def from_list(cls, data: list[Any]) -> Event:
        action, index, refresh, node, prev = data
        event = cls(action, NodeView.from_list(node) if node else None,
                    NodeView.from_list(prev) if prev else None, index, bool(refresh))
        event.size = _event_size(event)
        return event


def _event_size(event: Event) -> int:
    size = EVENT_OVERHEAD_BYTES + 2 * len(event.key)
    for view in (event.node, event.prev):
        if view is not None and view.value:
            size += len(view.value)
    return size


def ttl_left(expire: int, now: int) -> int:
    """Seconds left, rounded up, with Go's truncating division for expired keys."""
    left = expire - now
    whole = abs(left) // SECOND_NS
    ttl = whole if left >= 0 else -whole
    if left > 0 and left % SECOND_NS:
        ttl += 1
    return ttl


def event_view(node: Node, now: int) -> NodeView:
    """A node as an event shows it: like etcd, the ttl is the one at event time."""
    view = view_of(node)
    if node.expire is not None:
        view.ttl = ttl_left(node.expire, now)
    return view


def view_of(node: Node, recursive: bool = False, sort: bool = False) -> NodeView:
    """etcd's ``node.Repr``: a directory lists children only when recursive."""
    if not node.is_dir:
        return NodeView(node.path, node.value, False, node.expire, None,
                        node.modified, node.created)
    view = NodeView(node.path, None, True, node.expire, None, node.modified, node.created)
    if recursive:
        view.nodes = _child_views(node, True, sort)
    return view


def _child_views(node: Node, recursive: bool, sort: bool) -> list[NodeView]:
    assert node.children is not None
    views = [view_of(child, recursive, sort) for child in node.children.values()
             if not child.hidden]
    if sort:
        views.sort(key=lambda v: v.key)
    return views


def listing_view(node: Node, recursive: bool, sort: bool) -> NodeView:
    """etcd's ``loadInternalNode``: the node a GET answers, children always listed."""
    if not node.is_dir:
        return view_of(node)
    view = NodeView(node.path, None, True, node.expire, None, node.modified, node.created)
    view.nodes = _child_views(node, recursive, sort)
    return view


class Watcher:
    """A registered watch. ``deliver`` returns False when the consumer cannot keep up."""

    __slots__ = ("deliver", "key", "recursive", "removed", "since", "stream")

    def __init__(self, key: str, recursive: bool, stream: bool, since: int,
                 deliver: Callable[[Event], bool]) -> None:
        self.key = key
        self.recursive = recursive
        self.stream = stream
        self.since = since
        self.deliver = deliver
        self.removed = False


@dataclass(slots=True)
class WatchStart:
    """Result of :meth:`Store.watch`: an event from history, or a registered watcher."""

    start_index: int
    event: Event | None = None
    watcher: Watcher | None = None
    backlog: list[Event] = field(default_factory=list)  # stream watches: history first


def _is_hidden_below(watch_path: str, key_path: str) -> bool:
    """True when the key sits under a ``_`` element below the watched path."""
    if len(watch_path) > len(key_path):
        return False
    return "/_" in clean_path(key_path[len(watch_path):])


STAT_NAMES = (
    "getsSuccess", "getsFail", "setsSuccess", "setsFail", "deleteSuccess", "deleteFail",
    "updateSuccess", "updateFail", "createSuccess", "createFail", "compareAndSwapSuccess",
    "compareAndSwapFail", "compareAndDeleteSuccess", "compareAndDeleteFail", "expireCount",
)

_STAT_PREFIX = {
    "set": "sets", "create": "create", "post": "create", "update": "update",
    "cas": "compareAndSwap", "delete": "delete", "cad": "compareAndDelete",
}


class Store:
    """The v2 key tree, its TTL heap, the byte-bounded event history and the watchers."""

    def __init__(self, history_bytes: int = DEFAULT_HISTORY_BYTES) -> None:
        self.root = Node("", "", None, None, 0, None)
        self.index = 0
        self.history: deque[Event] = deque()
        self.history_bytes = 0
        self.history_limit = history_bytes
        self._ttl_heap: list[tuple[int, int, Node]] = []
        self._ttl_seq = 0
        self.watchers: dict[str, list[Watcher]] = {}
        self.watcher_count = 0
        self.stats = dict.fromkeys(STAT_NAMES, 0)

    # ----------------------------------------------------------------- commands

    def apply(self, command: dict[str, Any]) -> Event | EtcdError | None:
        """Apply one replicated command; errors are returned, never raised.

        Commands are ``{"op", "key", "params", "now"}`` with ``now`` in ns:

        - ``put``: params ``value, dir, ttl, refresh, prevExist, prevValue, prevIndex``,
          dispatched like etcd's apply_v2 to set, create, update or compareAndSwap;
        - ``post``: params ``value, dir, ttl`` (an in-order key under ``key``);
        - ``delete``: params ``dir, recursive, prevValue, prevIndex`` (compareAndDelete
          when a condition is given);
        - ``expire``: no key; removes every key due at ``now``.

        Returning the error keeps replicas in lockstep: a failed command changes nothing
        and every replica reports the same failure.
        """
        op = command.get("op")
        try:
            params = command.get("params") or {}
            key = str(command.get("key", "/"))
            now = int(command.get("now", 0))
            if not isinstance(params, dict):
                raise TypeError("params is not a map")
            if op == "expire":
                return self._expire(now)
            handler = _OPS.get(op)  # type: ignore[arg-type]
            if handler is None:
                raise EtcdError(E.RAFT_INTERNAL, f"unknown command {op!r}", self.index)
            kind, event = handler(self, key, params, now)
        except (TypeError, ValueError, AttributeError) as err:
            # A command of the wrong shape must not stop the apply loop; every replica
            # rejects it the same way, and parameters are converted before any change.
            return EtcdError(E.RAFT_INTERNAL, f"malformed command: {err}", self.index)
        except EtcdError as err:
            kind = self._stat_kind(op, params)
            if kind:
                self.stats[_fail_stat(kind)] += 1
            return err
        self.stats[_ok_stat(kind)] += 1
        return event

    def _stat_kind(self, op: Any, params: dict[str, Any]) -> str:
        if op == "put":
            return _put_kind(params)
        if op == "delete":
            return "cad" if _has_compare(params) else "delete"
        return str(op) if op in _STAT_PREFIX else ""

    def _op_put(self, key: str, p: dict[str, Any], now: int) -> tuple[str, Event]:
        kind = _put_kind(p)
        expire = _expire_time(p, now)
        refresh = bool(p.get("refresh"))
        value = str(p.get("value", ""))
        if kind == "update":
            return kind, self.update(key, value, expire, refresh, now)
        if kind == "cas":
            return kind, self.compare_and_swap(key, str(p.get("prevValue", "")),
                                               int(p.get("prevIndex", 0)), value, expire,
                                               refresh, now)
        if kind == "create":
            return kind, self.create(key, bool(p.get("dir")), value, False, expire, now)
        return kind, self.set(key, bool(p.get("dir")), value, expire, refresh, now)

    def _op_post(self, key: str, p: dict[str, Any], now: int) -> tuple[str, Event]:
        return "create", self.create(key, bool(p.get("dir")), str(p.get("value", "")), True,
                                     _expire_time(p, now), now)

    def _op_delete(self, key: str, p: dict[str, Any], now: int) -> tuple[str, Event]:
        if _has_compare(p):
            return "cad", self.compare_and_delete(key, str(p.get("prevValue", "")),
                                                  int(p.get("prevIndex", 0)), now)
        return "delete", self.delete(key, bool(p.get("dir")), bool(p.get("recursive")), now)

    # ------------------------------------------------------------------- reads

    def get(self, key: str, recursive: bool = False, sort: bool = False) -> Event:
        """A read; raises :class:`EtcdError` (100/104) when the key cannot be reached."""
        try:
            node = self._lookup(internal_path(key))
        except EtcdError:
            self.stats["getsFail"] += 1
            raise
        self.stats["getsSuccess"] += 1
        return Event(GET, listing_view(node, recursive, sort), None, self.index)

    def _lookup(self, path: str) -> Node:
        node = self.root
        if not path:
            return node
        for name in path[1:].split("/"):
            if node.children is None:
                raise EtcdError(E.NOT_DIR, node.path, self.index)
            child = node.children.get(name)
            if child is None:
                raise EtcdError(E.KEY_NOT_FOUND, f"{node.path}/{name}", self.index)
            node = child
        return node

    # --------------------------------------------------------------- mutations

    def set(self, key: str, is_dir: bool, value: str, expire: int | None,
            refresh: bool = False, now: int = 0) -> Event:
        path = internal_path(key)
        prev: Node | None
        try:
            prev = self._lookup(path)
        except EtcdError as err:
            if err.code != E.KEY_NOT_FOUND or refresh:
                raise
            prev = None
        if refresh and prev is not None:
            value = prev.value
        event = self._create_node(path, is_dir, value, False, True, expire, SET, now)
        if prev is not None:
            event.prev = listing_view(prev, False, False)
            if prev.expire is not None:
                event.prev.ttl = ttl_left(prev.expire, now)
        self._publish(event, refresh)
        return event

    def create(self, key: str, is_dir: bool, value: str, unique: bool,
               expire: int | None, now: int = 0) -> Event:
        event = self._create_node(internal_path(key), is_dir, value, unique, False, expire,
                                  CREATE, now)
        self._publish(event, False)
        return event

    def _create_node(self, path: str, is_dir: bool, value: str, unique: bool, replace: bool,
                     expire: int | None, action: str, now: int) -> Event:
        next_index = self.index + 1
        if unique:
            path = internal_path(f"{path}/{next_index:020d}")
        if not path:
            raise EtcdError(E.ROOT_READ_ONLY, "/", self.index)
        parent_path, _, name = path.rpartition("/")
        parent = self._make_dirs(parent_path, next_index)
        assert parent.children is not None
        existing = parent.children.get(name)
        prev_view = None
        if existing is not None:
            if not replace:
                raise EtcdError(E.NODE_EXIST, path, self.index)
            if existing.is_dir:
                raise EtcdError(E.NOT_FILE, path, self.index)
            prev_view = event_view(existing, now)
            self._detach(existing, None)
        node = Node(path, name, parent, None if is_dir else value, next_index, expire)
        parent.children[name] = node
        if expire is not None:
            self._push_ttl(node)
        self.index = next_index
        return Event(action, event_view(node, now), prev_view, next_index)

    def _make_dirs(self, dir_path: str, next_index: int) -> Node:
        node = self.root
        if not dir_path:
            return node
        for name in dir_path[1:].split("/"):
            assert node.children is not None
            child = node.children.get(name)
            if child is None:
                child = Node(f"{node.path}/{name}", name, node, None, next_index, None)
                node.children[name] = child
            elif not child.is_dir:
                raise EtcdError(E.NOT_DIR, child.path, self.index)
            node = child
        return node

    def update(self, key: str, value: str, expire: int | None, refresh: bool = False,
               now: int = 0) -> Event:
        path = internal_path(key)
        if not path:
            raise EtcdError(E.ROOT_READ_ONLY, "/", self.index)
        node = self._lookup(path)
        if node.is_dir and value:
            raise EtcdError(E.NOT_FILE, path, self.index)
        if refresh:
            value = node.value
        next_index = self.index + 1
        prev_view = event_view(node, now)
        if not node.is_dir:  # etcd never moves a directory's modifiedIndex on update
            node.value = value
            node.modified = next_index
        self._set_ttl(node, expire)
        view = NodeView(path, None if node.is_dir else value, node.is_dir, node.expire, None,
                        next_index, node.created,
                        None if node.expire is None else ttl_left(node.expire, now))
        self.index = next_index
        event = Event(UPDATE, view, prev_view, next_index)
        self._publish(event, refresh)
        return event

    def compare_and_swap(self, key: str, prev_value: str, prev_index: int, value: str,
                         expire: int | None, refresh: bool = False, now: int = 0) -> Event:
        path = internal_path(key)
        if not path:
            raise EtcdError(E.ROOT_READ_ONLY, "/", self.index)
        node = self._lookup(path)
        if node.is_dir:
            raise EtcdError(E.NOT_FILE, path, self.index)
        self._compare(node, prev_value, prev_index)
        if refresh:
            value = node.value
        self.index += 1
        prev_view = event_view(node, now)
        node.value = value
        node.modified = self.index
        self._set_ttl(node, expire)
        event = Event(COMPARE_AND_SWAP, event_view(node, now), prev_view, self.index)
        self._publish(event, refresh)
        return event

    def compare_and_delete(self, key: str, prev_value: str, prev_index: int,
                           now: int = 0) -> Event:
        path = internal_path(key)
        node = self._lookup(path)
        if node.is_dir:
            raise EtcdError(E.NOT_FILE, path, self.index)
        self._compare(node, prev_value, prev_index)
        self.index += 1
        event = Event(COMPARE_AND_DELETE, NodeView(path, modified=self.index,
                                                   created=node.created),
                      event_view(node, now), self.index)
        self._detach(node, event)
        self._publish(event, False)
        return event

    def delete(self, key: str, is_dir: bool, recursive: bool, now: int = 0) -> Event:
        path = internal_path(key)
        if not path:
            raise EtcdError(E.ROOT_READ_ONLY, "/", self.index)
        node = self._lookup(path)
        if node.is_dir:
            if not (is_dir or recursive):
                raise EtcdError(E.NOT_FILE, path, self.index)
            if node.children and not recursive:
                raise EtcdError(E.DIR_NOT_EMPTY, path, self.index)
        next_index = self.index + 1
        event = Event(DELETE, NodeView(path, dir=node.is_dir, modified=next_index,
                                       created=node.created),
                      event_view(node, now), next_index)
        self._detach(node, event)
        self.index = next_index
        self._publish(event, False)
        return event

    def _expire(self, now: int) -> Event | None:
        """Remove every key whose expiry time is at or before ``now``, oldest first.

        Returns the last expire event (None when nothing was due); every one of them is
        in the history and went to the watchers.
        """
        last: Event | None = None
        while True:
            node = self._ttl_top()
            if node is None or node.expire is None or node.expire > now:
                return last
            heapq.heappop(self._ttl_heap)
            self.index += 1
            event = Event(EXPIRE, NodeView(node.path, dir=node.is_dir, modified=self.index,
                                           created=node.created),
                          event_view(node, now), self.index)
            self._detach(node, event)
            self.stats["expireCount"] += 1
            self._publish(event, False)
            last = event

    def _compare(self, node: Node, prev_value: str, prev_index: int) -> None:
        index_ok = prev_index == 0 or node.modified == prev_index
        value_ok = prev_value == "" or node.value == prev_value
        if index_ok and value_ok:
            return
        if index_ok:
            cause = f"[{prev_value} != {node.value}]"
        elif value_ok:
            cause = f"[{prev_index} != {node.modified}]"
        else:
            cause = f"[{prev_value} != {node.value}] [{prev_index} != {node.modified}]"
        raise EtcdError(E.TEST_FAILED, cause, self.index)

    # ------------------------------------------------------------------- TTLs

    def _set_ttl(self, node: Node, expire: int | None) -> None:
        node.expire = expire
        if expire is not None:
            self._push_ttl(node)

    def _push_ttl(self, node: Node) -> None:
        assert node.expire is not None
        self._ttl_seq += 1
        heapq.heappush(self._ttl_heap, (node.expire, self._ttl_seq, node))

    def _ttl_top(self) -> Node | None:
        """The node expiring first, dropping heap entries made stale by later writes."""
        while self._ttl_heap:
            expire, _, node = self._ttl_heap[0]
            if node.alive and node.expire == expire:
                return node
            heapq.heappop(self._ttl_heap)
        return None

    def next_expiry(self) -> int | None:
        """When the next key expires (ns), so the leader knows when to propose ``expire``."""
        node = self._ttl_top()
        return None if node is None else node.expire

    # --------------------------------------------------------- tree surgery

    def _detach(self, node: Node, event: Event | None) -> None:
        """Unlink a subtree; with an event, watchers inside it hear about the removal."""
        if node.children:
            for child in list(node.children.values()):
                self._detach(child, event)
        node.alive = False
        parent = node.parent
        if parent is not None and parent.children is not None \
                and parent.children.get(node.name) is node:
            del parent.children[node.name]
        if event is not None:
            self._notify_at(event, node.path, deleted=True)

    # ------------------------------------------------------ history, watchers

    def _publish(self, event: Event, refresh: bool) -> None:
        event.refresh = refresh
        self._remember(event)
        if refresh:
            return
        key = event.key
        self._notify_at(event, "", deleted=False)
        if key:
            end = 0
            while True:
                end = key.find("/", end + 1)
                if end == -1:
                    self._notify_at(event, key, deleted=False)
                    break
                self._notify_at(event, key[:end], deleted=False)

    def _remember(self, event: Event) -> None:
        event.size = _event_size(event)
        self.history.append(event)
        self.history_bytes += event.size
        while self.history_bytes > self.history_limit and len(self.history) > 1:
            self.history_bytes -= self.history.popleft().size

    def _notify_at(self, event: Event, path: str, deleted: bool) -> None:
        watchers = self.watchers.get(path)
        if not watchers:
            return
        original = event.key == path
        if not original and _is_hidden_below(path, event.key):
            return
        keep: list[Watcher] = []
        for watcher in watchers:
            if (watcher.recursive or original or deleted) and event.index >= watcher.since:
                accepted = watcher.deliver(event)
                if watcher.stream and accepted:
                    keep.append(watcher)
                else:
                    watcher.removed = True
                    self.watcher_count -= 1
            else:
                keep.append(watcher)
        if keep:
            self.watchers[path] = keep
        else:
            del self.watchers[path]

    @property
    def start_index(self) -> int:
        """The oldest index the history can still answer a watch for."""
        if self.history:
            return self.history[0].index
        return self.index + 1 if self.index else 0

    def watch(self, key: str, recursive: bool, stream: bool, since: int,
              deliver: Callable[[Event], bool]) -> WatchStart:
        """Start a watch: answer from history when possible, else register a watcher.

        Raises 401 when ``since`` is older than the history; the cause names the oldest
        index still served so the client can resume without guessing.
        """
        path = internal_path(key)
        if since == 0:
            since = self.index + 1
        start = self.index
        if stream:
            # Unlike etcd (which answers one old event and then stalls, etcd-io/etcd#1186),
            # a stream replays every matching event it missed and then goes live.
            backlog = self._scan(path, recursive, since, every=True)
            watcher = Watcher(path, recursive, True, max(since, self.index + 1), deliver)
            self.watchers.setdefault(path, []).append(watcher)
            self.watcher_count += 1
            return WatchStart(start, watcher=watcher, backlog=backlog)
        found = self._scan(path, recursive, since)
        if found:
            return WatchStart(start, event=found[0])
        watcher = Watcher(path, recursive, stream, since, deliver)
        self.watchers.setdefault(path, []).append(watcher)
        self.watcher_count += 1
        return WatchStart(start, watcher=watcher)

    def _scan(self, path: str, recursive: bool, since: int, every: bool = False
              ) -> list[Event]:
        """Matching history events from ``since``: the first one, or ``every`` one."""
        oldest = self.start_index
        if since < oldest:
            raise EtcdError(E.EVENT_INDEX_CLEARED,
                            f"the requested history has been cleared [{oldest}/{since}]",
                            self.index)
        found: list[Event] = []
        if not self.history or since > self.history[-1].index:
            return found
        prefix = path + "/"
        for offset in range(since - oldest, len(self.history)):
            event = self.history[offset]
            if event.refresh:
                continue
            key = event.key
            if key == path or (recursive and key.startswith(prefix)) or (
                    event.action in (DELETE, EXPIRE) and event.prev is not None
                    and event.prev.dir and path.startswith(event.prev.key)):
                found.append(event)
                if not every:
                    break
        return found

    def unwatch(self, watcher: Watcher) -> None:
        """Drop a watcher whose client went away."""
        if watcher.removed:
            return
        watcher.removed = True
        watchers = self.watchers.get(watcher.key)
        if watchers and watcher in watchers:
            watchers.remove(watcher)
            self.watcher_count -= 1
            if not watchers:
                del self.watchers[watcher.key]

    # ---------------------------------------------------------- snapshots

    def snapshot(self) -> dict[str, Any]:
        """Everything that defines the store's state, as msgpack-friendly data."""
        nodes: list[list[Any]] = []
        stack = list(reversed(list((self.root.children or {}).values())))
        while stack:
            node = stack.pop()
            nodes.append([node.path, None if node.is_dir else node.value, node.created,
                          node.modified, node.expire])
            if node.children:
                stack.extend(reversed(list(node.children.values())))
        return {"version": 1, "index": self.index, "nodes": nodes,
                "history": [event.to_list() for event in self.history]}

    @classmethod
    def restore(cls, data: dict[str, Any], history_bytes: int = DEFAULT_HISTORY_BYTES) -> Store:
        """Rebuild a store from :meth:`snapshot` output, checking its shape as it goes."""
        if not isinstance(data, dict) or data.get("version") != 1:
            raise ValueError("snapshot: unsupported or missing 'version'")
        store = cls(history_bytes)
        store.index = int(data["index"])
        by_path = {"": store.root}
        for entry in data["nodes"]:
            path, value, created, modified, expire = entry
            parent_path, _, name = str(path).rpartition("/")
            parent = by_path.get(parent_path)
            if parent is None or parent.children is None:
                raise ValueError(f"snapshot: node {path!r} has no parent directory")
            node = Node(path, name, parent, value, int(created),
                        None if expire is None else int(expire))
            node.modified = int(modified)
            parent.children[name] = node
            if node.is_dir:
                by_path[path] = node
            if node.expire is not None:
                store._push_ttl(node)
        for item in data.get("history", []):
            store._remember(Event.from_list(item))
        return store


_OPS: dict[str, Callable[[Store, str, dict[str, Any], int], tuple[str, Event]]] = {
    "put": Store._op_put,
    "post": Store._op_post,
    "delete": Store._op_delete,
}


def _has_compare(p: dict[str, Any]) -> bool:
    return bool(p.get("prevIndex")) or bool(p.get("prevValue"))


def _put_kind(p: dict[str, Any]) -> str:
    """etcd's apply_v2 Put dispatch: update, cas, create or set."""
    prev_exist = p.get("prevExist")
    if prev_exist is True:
        return "cas" if _has_compare(p) else "update"
    if prev_exist is False:
        return "create"
    return "cas" if _has_compare(p) else "set"


def _expire_time(p: dict[str, Any], now: int) -> int | None:
    ttl = p.get("ttl")
    return None if ttl is None else now + int(ttl) * SECOND_NS


def _ok_stat(kind: str) -> str:
    prefix = _STAT_PREFIX[kind]
    return f"{prefix}Success"


def _fail_stat(kind: str) -> str:
    prefix = _STAT_PREFIX[kind]
    return f"{prefix}Fail"
