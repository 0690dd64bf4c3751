"""kvd's D-Bus service: ``org.flotilla.KV1`` on the system bus.

Local tools that already speak D-Bus (and trust its peer credentials instead of a TCP
port) reach the store here. Every call takes the same path as the HTTP API: writes are
validated by :func:`parse_key_request` and handed to the proposer (so they are replicated
through Raft in a cluster), reads wait on the proposer's read barrier and then ask the
store. Answers therefore match ``/v2/keys`` exactly, only typed for D-Bus.

Interface ``org.flotilla.KV1`` at object ``/org/flotilla/KV1`` (see
:data:`INTROSPECTION_XML` for the machine-readable form)::

    NODE = (ssbxtt)  key, value, dir, ttl (seconds left, 0 = none), modifiedIndex,
                     createdIndex. A directory's value is "".

    Get(s key, b recursive, b sorted, b quorum) -> (a(ssbxtt) nodes, t index)
        nodes[0] is the key itself; a directory is followed by its children (all
        descendants when recursive), depth first, each with its full key. quorum=false
        is a local read that may lag the leader; true is linearizable.
    List(s dir, b recursive, b sorted) -> (a(ssbxtt) nodes, t index)
        The children only (linearizable); NotDir for a key.
    Set(s key, s value, t ttl, b dir) -> WRITE
    Delete(s key, b recursive, b dir) -> WRITE
    CompareAndSwap(s key, s value, t ttl, s prev_value, t prev_index, s prev_exist) -> WRITE
        "" / 0 leave a condition out; prev_exist is "", "true" or "false". At least one
        condition is required (IndexOrValueRequired), so a typo never becomes a blind set.
    CompareAndDelete(s key, s prev_value, t prev_index) -> WRITE  (one condition required)
    Watch(s key, b recursive) -> (t index)
    Unwatch(s key, b recursive) -> (b was_watched)

    WRITE = (s action, (ssbxtt) node, a(ssbxtt) prev_node, t index); prev_node holds zero
    or one node. ttl 0 means no TTL. index is etcd's X-Etcd-Index.

    signal Changed(s watched, b recursive, s action, s key, s value, s prev_value,
                   t modified_index)

Watching: call ``Watch(key, recursive)``; from then on every change under it (the key
itself, or its subtree when recursive; hidden ``_`` keys as the HTTP watch treats them)
produces one ``Changed`` signal whose first argument is the watched key as kvd cleaned it
(``a//b/`` becomes ``/a/b``). Add the match rule first, so nothing falls between the call
and the rule::

    type='signal',sender='org.flotilla.KV1',path='/org/flotilla/KV1',
    interface='org.flotilla.KV1',member='Changed',arg0='/the/key'

``Watch`` returns the store index at registration: every change with a higher
``modified_index`` is signalled. Signals are broadcast, so when one key is watched both
recursively and not, both signals arrive and ``recursive`` tells them apart. A watch ends
with ``Unwatch`` or when the caller leaves the bus.

Errors are ``org.flotilla.KV1.Error.<Name>`` named after etcd's codes (KeyNotFound,
TestFailed, NodeExist, NotFile, NotDir, DirNotEmpty, RootROnly, ...); the message is
etcd's JSON error body (``{"errorCode":100,"message":"Key not found","cause":...,
"index":...}``), the same bytes HTTP answers with, so one parser serves both transports.

Who may call what is the bus policy's job (units/dbus/org.flotilla.KV1.conf): only root
may call the writing methods, anyone may read and watch. The bus connection lives beside
the HTTP server and never holds it up: if the bus is missing or goes away, kvd keeps
serving HTTP and reconnects in the background.

dbus-fast's high-level ``ServiceInterface`` does not tell a method who called it, and
watches must be tied to the caller's unique name, so the object is served from one
low-level message handler; the introspection XML is written out here instead.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass
from typing import Any

from flotilla.daemons.kv import errors as E
from flotilla.daemons.kv.errors import EtcdError
from flotilla.daemons.kv.proposer import Proposer
from flotilla.daemons.kv.render import error_json
from flotilla.daemons.kv.request import Form, KeyRequest, parse_key_request
from flotilla.daemons.kv.store import Event, NodeView, Watcher, clean_path, ttl_left
from flotilla.daemons.systemd.served import (
    NameServer,
    bus_address,
    introspect_path,
    introspection_xml,
)

BUS_NAME = "org.flotilla.KV1"
OBJECT_PATH = "/org/flotilla/KV1"
INTERFACE = "org.flotilla.KV1"
ERROR_PREFIX = "org.flotilla.KV1.Error."

NODE = "(ssbxtt)"
WRITE_RESULT = f"s{NODE}a{NODE}t"

#: Keys and values beyond these sizes are refused; HTTP caps its whole form at 10 MiB.
MAX_KEY_BYTES = 64 * 1024
MAX_VALUE_BYTES = 10 << 20
#: Bounds that keep any bus user (reads and watches are open to all) from exhausting kvd.
MAX_WATCHES_PER_CALLER = 64
MAX_WATCHED_KEYS = 4096
MAX_CALLS_IN_FLIGHT = 4096

#: etcd's Go names for its v2 error codes, without the ``Ecode`` prefix.
ERROR_NAMES: dict[int, str] = {
    E.KEY_NOT_FOUND: "KeyNotFound", E.TEST_FAILED: "TestFailed", E.NOT_FILE: "NotFile",
    E.NOT_DIR: "NotDir", E.NODE_EXIST: "NodeExist", E.KEY_IS_PRESERVED: "KeyIsPreserved",
    E.ROOT_READ_ONLY: "RootROnly", E.DIR_NOT_EMPTY: "DirNotEmpty",
    E.UNAUTHORIZED: "Unauthorized", E.VALUE_REQUIRED: "ValueRequired",
    E.PREV_VALUE_REQUIRED: "PrevValueRequired", E.TTL_NAN: "TTLNaN",
    E.INDEX_NAN: "IndexNaN", E.VALUE_OR_TTL_REQUIRED: "ValueOrTTLRequired",
    E.INDEX_OR_VALUE_REQUIRED: "IndexOrValueRequired",
    E.INDEX_VALUE_MUTEX: "IndexValueMutex", E.INVALID_FIELD: "InvalidField",
    E.INVALID_FORM: "InvalidForm", E.REFRESH_VALUE: "RefreshValue",
    E.REFRESH_TTL_REQUIRED: "RefreshTTLRequired", E.RAFT_INTERNAL: "RaftInternal",
    E.LEADER_ELECT: "LeaderElect", E.WATCHER_CLEARED: "WatcherCleared",
    E.EVENT_INDEX_CLEARED: "EventIndexCleared",
}
LIMITS_EXCEEDED = "org.freedesktop.DBus.Error.LimitsExceeded"
INVALID_ARGS = "org.freedesktop.DBus.Error.InvalidArgs"
UNKNOWN_METHOD = "org.freedesktop.DBus.Error.UnknownMethod"
FAILED = "org.freedesktop.DBus.Error.Failed"

_NODE_ARGS = """
      <arg name="nodes" type="a(ssbxtt)" direction="out"/>
      <arg name="index" type="t" direction="out"/>"""
_WRITE_ARGS = """
      <arg name="action" type="s" direction="out"/>
      <arg name="node" type="(ssbxtt)" direction="out"/>
      <arg name="prev_node" type="a(ssbxtt)" direction="out"/>
      <arg name="index" type="t" direction="out"/>"""

INTROSPECTION_XML = introspection_xml(f"""\
  <interface name="{INTERFACE}">
    <method name="Get">
      <arg name="key" type="s" direction="in"/>
      <arg name="recursive" type="b" direction="in"/>
      <arg name="sorted" type="b" direction="in"/>
      <arg name="quorum" type="b" direction="in"/>{_NODE_ARGS}
    </method>
    <method name="List">
      <arg name="dir" type="s" direction="in"/>
      <arg name="recursive" type="b" direction="in"/>
      <arg name="sorted" type="b" direction="in"/>{_NODE_ARGS}
    </method>
    <method name="Set">
      <arg name="key" type="s" direction="in"/>
      <arg name="value" type="s" direction="in"/>
      <arg name="ttl" type="t" direction="in"/>
      <arg name="dir" type="b" direction="in"/>{_WRITE_ARGS}
    </method>
    <method name="Delete">
      <arg name="key" type="s" direction="in"/>
      <arg name="recursive" type="b" direction="in"/>
      <arg name="dir" type="b" direction="in"/>{_WRITE_ARGS}
    </method>
    <method name="CompareAndSwap">
      <arg name="key" type="s" direction="in"/>
      <arg name="value" type="s" direction="in"/>
      <arg name="ttl" type="t" direction="in"/>
      <arg name="prev_value" type="s" direction="in"/>
      <arg name="prev_index" type="t" direction="in"/>
      <arg name="prev_exist" type="s" direction="in"/>{_WRITE_ARGS}
    </method>
    <method name="CompareAndDelete">
      <arg name="key" type="s" direction="in"/>
      <arg name="prev_value" type="s" direction="in"/>
      <arg name="prev_index" type="t" direction="in"/>{_WRITE_ARGS}
    </method>
    <method name="Watch">
      <arg name="key" type="s" direction="in"/>
      <arg name="recursive" type="b" direction="in"/>
      <arg name="index" type="t" direction="out"/>
    </method>
    <method name="Unwatch">
      <arg name="key" type="s" direction="in"/>
      <arg name="recursive" type="b" direction="in"/>
      <arg name="was_watched" type="b" direction="out"/>
    </method>
    <signal name="Changed">
      <arg name="watched" type="s"/>
      <arg name="recursive" type="b"/>
      <arg name="action" type="s"/>
      <arg name="key" type="s"/>
      <arg name="value" type="s"/>
      <arg name="prev_value" type="s"/>
      <arg name="modified_index" type="t"/>
    </signal>
  </interface>
""")


@dataclass(frozen=True, slots=True)
class MethodSpec:
    in_signature: str
    out_signature: str
    writes: bool


#: What each method accepts and answers; checked against every incoming call.
METHODS: dict[str, MethodSpec] = {
    "Get": MethodSpec("sbbb", f"a{NODE}t", False),
    "List": MethodSpec("sbb", f"a{NODE}t", False),
    "Set": MethodSpec("sstb", WRITE_RESULT, True),
    "Delete": MethodSpec("sbb", WRITE_RESULT, True),
    "CompareAndSwap": MethodSpec("sststs", WRITE_RESULT, True),
    "CompareAndDelete": MethodSpec("sst", WRITE_RESULT, True),
    "Watch": MethodSpec("sb", "t", False),
    "Unwatch": MethodSpec("sb", "b", False),
}


# --------------------------------------------------------------------- pure mapping


def error_name(err: EtcdError) -> str:
    """The D-Bus error name for an etcd error (``...Error.Failed`` for rare codes)."""
    return ERROR_PREFIX + ERROR_NAMES.get(err.code, "Failed")


def error_text(err: EtcdError) -> str:
    """etcd's JSON error body, without the trailing newline HTTP bodies carry."""
    return error_json(err).rstrip("\n")


def node_struct(view: NodeView | None, now: int) -> list[Any]:
    """One NODE ``(ssbxtt)``; the ttl counts down from ``now`` unless the event fixed it."""
    if view is None:
        return ["", "", False, 0, 0, 0]
    ttl = 0
    if view.expire is not None:
        ttl = view.ttl if view.ttl is not None else ttl_left(view.expire, now)
    return [view.key or "/", view.value or "", view.dir, ttl, view.modified, view.created]


def flatten(view: NodeView, now: int) -> list[list[Any]]:
    """The node and every listed descendant, depth first, as NODE structs."""
    out = [node_struct(view, now)]
    stack = list(reversed(view.nodes or []))
    while stack:
        child = stack.pop()
        out.append(node_struct(child, now))
        stack.extend(reversed(child.nodes or []))
    return out


def write_result(event: Event, now: int) -> list[Any]:
    """A WRITE answer ``(s(ssbxtt)a(ssbxtt)t)`` for a write's event."""
    prev = [node_struct(event.prev, now)] if event.prev is not None else []
    return [event.action, node_struct(event.node, now), prev, event.index]


def _check_sizes(key: str, value: str = "", prev_value: str = "") -> None:
    if len(key.encode()) > MAX_KEY_BYTES:
        raise EtcdError(E.INVALID_FIELD, f'"key" is longer than {MAX_KEY_BYTES} bytes', 0)
    for name, text in (("value", value), ("prev_value", prev_value)):
        if len(text) > MAX_VALUE_BYTES // 4 and len(text.encode()) > MAX_VALUE_BYTES:
            raise EtcdError(E.INVALID_FIELD, f'"{name}" is larger than {MAX_VALUE_BYTES} '
                                             "bytes", 0)


def _key(key: str) -> str:
    """A D-Bus key as the keys API path below ``/v2/keys`` (always rooted)."""
    return key if key.startswith("/") else "/" + key


def write_request(member: str, args: list[Any]) -> KeyRequest:
    """Validate a writing call exactly as the HTTP form with the same parameters would be.

    Empty strings and zero indexes mean "not given"; raises :class:`EtcdError`.
    """
    pairs: list[tuple[str, str]] = []
    if member == "Set":
        key, value, ttl, is_dir = args
        _check_sizes(key, value)
        method = "PUT"
        pairs.append(("value", value))
        if ttl:
            pairs.append(("ttl", str(ttl)))
        if is_dir:
            pairs.append(("dir", "true"))
    elif member == "Delete":
        key, recursive, is_dir = args
        _check_sizes(key)
        method = "DELETE"
        if recursive:
            pairs.append(("recursive", "true"))
        if is_dir:
            pairs.append(("dir", "true"))
    elif member == "CompareAndSwap":
        key, value, ttl, prev_value, prev_index, prev_exist = args
        _check_sizes(key, value, prev_value)
        if not (prev_value or prev_index or prev_exist):
            raise EtcdError(E.INDEX_OR_VALUE_REQUIRED,
                            "CompareAndSwap needs prev_value, prev_index or prev_exist", 0)
        method = "PUT"
        pairs.append(("value", value))
        if ttl:
            pairs.append(("ttl", str(ttl)))
        if prev_value:
            pairs.append(("prevValue", prev_value))
        if prev_index:
            pairs.append(("prevIndex", str(prev_index)))
        if prev_exist:
            pairs.append(("prevExist", prev_exist))
    elif member == "CompareAndDelete":
        key, prev_value, prev_index = args
        _check_sizes(key, prev_value=prev_value)
        if not (prev_value or prev_index):
            raise EtcdError(E.INDEX_OR_VALUE_REQUIRED,
                            "CompareAndDelete needs prev_value or prev_index", 0)
        method = "DELETE"
        if prev_value:
            pairs.append(("prevValue", prev_value))
        if prev_index:
            pairs.append(("prevIndex", str(prev_index)))
    else:
        raise ValueError(f"{member} is not a writing method")
    return parse_key_request(method, _key(key), Form(pairs))


def changed_body(watched: str, recursive: bool, event: Event) -> list[Any]:
    """The ``Changed`` signal's arguments for one store event."""
    value = event.node.value if event.node is not None and event.node.value else ""
    prev_value = event.prev.value if event.prev is not None and event.prev.value else ""
    return [watched, recursive, event.action, event.key or "/", value, prev_value,
            event.index]


class WatchLimitError(Exception):
    """A caller asked for more watches than a single bus client may hold."""


class WatchRegistry:
    """Which bus callers watch which keys; says when a store watcher must come or go.

    Pure bookkeeping: a ``(key, recursive)`` pair needs one store watcher while at least
    one caller holds it, and the signal it produces serves every one of them.
    """

    def __init__(self, per_caller: int = MAX_WATCHES_PER_CALLER,
                 total: int = MAX_WATCHED_KEYS) -> None:
        self.per_caller = per_caller
        self.total = total
        self.holders: dict[tuple[str, bool], set[str]] = {}
        self.by_caller: dict[str, set[tuple[str, bool]]] = {}

    def add(self, caller: str, key: str, recursive: bool) -> bool:
        """Record the watch; True when the pair is new and needs a store watcher."""
        pair = (key, recursive)
        mine = self.by_caller.get(caller, set())
        if pair in mine:
            return False
        if len(mine) >= self.per_caller:
            raise WatchLimitError(f"a caller may hold at most {self.per_caller} watches")
        if pair not in self.holders and len(self.holders) >= self.total:
            raise WatchLimitError(f"kvd serves at most {self.total} watched keys on D-Bus")
        self.by_caller.setdefault(caller, set()).add(pair)
        holders = self.holders.setdefault(pair, set())
        holders.add(caller)
        return len(holders) == 1

    def remove(self, caller: str, key: str, recursive: bool) -> tuple[bool, bool]:
        """Forget one watch: (it existed, the pair is now unwatched by anyone)."""
        pair = (key, recursive)
        mine = self.by_caller.get(caller)
        if not mine or pair not in mine:
            return False, False
        mine.discard(pair)
        if not mine:
            del self.by_caller[caller]
        holders = self.holders[pair]
        holders.discard(caller)
        if holders:
            return True, False
        del self.holders[pair]
        return True, True

    def drop_caller(self, caller: str) -> list[tuple[str, bool]]:
        """The caller left the bus: the pairs nobody watches any more."""
        gone = []
        for key, recursive in sorted(self.by_caller.get(caller, ())):
            if self.remove(caller, key, recursive)[1]:
                gone.append((key, recursive))
        return gone

    def clear(self) -> list[tuple[str, bool]]:
        pairs = sorted(self.holders)
        self.holders.clear()
        self.by_caller.clear()
        return pairs


# ---------------------------------------------------------------------- asyncio shell


class KvBusService(NameServer):
    """Serves ``org.flotilla.KV1`` for one proposer; reconnects when the bus goes away."""

    bus_name = BUS_NAME
    object_path = OBJECT_PATH
    log_prefix = "kvd"

    def __init__(self, proposer: Proposer, address: str) -> None:
        super().__init__(address)
        self.proposer = proposer
        self.registry = WatchRegistry()
        self.store_watchers: dict[tuple[str, bool], Watcher] = {}
        self._calls: set[asyncio.Task[None]] = set()

    async def close(self) -> None:
        for call in list(self._calls):
            call.cancel()
        await super().close()

    async def _connected(self, bus: Any) -> None:
        """Callers that leave the bus are noticed through NameOwnerChanged."""
        from dbus_fast import Message, MessageType

        rule = ("type='signal',sender='org.freedesktop.DBus',path='/org/freedesktop/DBus',"
                "interface='org.freedesktop.DBus',member='NameOwnerChanged'")
        reply = await bus.call(Message(
            destination="org.freedesktop.DBus", path="/org/freedesktop/DBus",
            interface="org.freedesktop.DBus", member="AddMatch", signature="s",
            body=[rule]))
        if reply.message_type == MessageType.ERROR:
            raise RuntimeError(f"AddMatch: {reply.error_name}: {reply.body}")

    def _on_disconnect(self) -> None:
        for pair in self.registry.clear():
            watcher = self.store_watchers.pop(pair, None)
            if watcher is not None:
                self.proposer.store.unwatch(watcher)

    # ---------------------------------------------------------------- dispatch

    def _handle(self, msg: Any) -> Any:
        """dbus-fast's low-level hook: answer our calls, notice callers that left."""
        from dbus_fast import Message, MessageType

        if msg.message_type == MessageType.SIGNAL:
            if msg.sender != "org.freedesktop.DBus":
                return None
            if (msg.member == "NameOwnerChanged" and msg.body[0].startswith(":")
                    and not msg.body[2]):
                self._caller_left(msg.body[0])
            elif msg.member == "NameAcquired" and msg.body == [BUS_NAME]:
                self._acquired()
            elif msg.member == "NameLost" and msg.body == [BUS_NAME]:
                self.owns_name.clear()
                self.log(f"lost {BUS_NAME} to another process; queued for it")
            return None
        if msg.message_type != MessageType.METHOD_CALL:
            return None
        if msg.interface == "org.freedesktop.DBus.Introspectable" \
                and msg.member == "Introspect":
            xml = _parent_xml(msg.path)
            return Message.new_method_return(msg, "s", [xml]) if xml else None
        if msg.path != OBJECT_PATH or msg.interface not in (INTERFACE, None):
            return None
        spec = METHODS.get(msg.member)
        if spec is None:
            return Message.new_error(msg, UNKNOWN_METHOD,
                                     f"{INTERFACE} has no method {msg.member}")
        if msg.signature != spec.in_signature:
            return Message.new_error(msg, INVALID_ARGS,
                                     f"{msg.member} takes ({spec.in_signature}), "
                                     f"not ({msg.signature})")
        if len(self._calls) >= MAX_CALLS_IN_FLIGHT:
            return Message.new_error(msg, LIMITS_EXCEEDED, "too many calls in flight")
        call = asyncio.get_running_loop().create_task(self._answer(msg, spec))
        self._calls.add(call)
        call.add_done_callback(self._calls.discard)
        return True

    async def _answer(self, msg: Any, spec: MethodSpec) -> None:
        from dbus_fast import Message, MessageFlag

        bus = self.bus
        try:
            body = await self._call(msg.member, msg.sender, list(msg.body))
            reply = Message.new_method_return(msg, spec.out_signature, body)
        except EtcdError as err:
            reply = Message.new_error(msg, error_name(err), error_text(err))
        except WatchLimitError as err:
            reply = Message.new_error(msg, LIMITS_EXCEEDED, str(err))
        except asyncio.CancelledError:
            raise
        except Exception as err:  # answer every call; never leave a client hanging
            reply = Message.new_error(msg, FAILED, f"internal error: {type(err).__name__}")
        if msg.flags & MessageFlag.NO_REPLY_EXPECTED or bus is None or not bus.connected:
            return
        bus.send(reply)

    async def _call(self, member: str, sender: str, args: list[Any]) -> list[Any]:
        store = self.proposer.store
        if member in ("Get", "List"):
            key, recursive, sort = args[0], args[1], args[2]
            if member == "List" or args[3]:
                await self.proposer.read_barrier()
            event = store.get(_key(key), recursive, sort)
            nodes = flatten(event.node, time.time_ns()) if event.node is not None else []
            if member == "List":
                if not nodes or not nodes[0][2]:
                    raise EtcdError(E.NOT_DIR, clean_path(key), store.index)
                nodes = nodes[1:]
            return [nodes, event.index]
        if member == "Watch":
            return [self._watch(sender, clean_path(args[0]), args[1])]
        if member == "Unwatch":
            return [self._unwatch(sender, clean_path(args[0]), args[1])]
        request = write_request(member, args)
        outcome = await self.proposer.propose(request.command(time.time_ns()))
        if isinstance(outcome, EtcdError):
            raise outcome
        if outcome is None:
            raise EtcdError(E.RAFT_INTERNAL, "no event for the command", store.index)
        return write_result(outcome, time.time_ns())

    # ----------------------------------------------------------------- watches

    def _watch(self, caller: str, key: str, recursive: bool) -> int:
        _check_sizes(key)
        store = self.proposer.store
        if self.registry.add(caller, key, recursive):
            loop = asyncio.get_running_loop()

            def deliver(event: Event) -> bool:
                # Called inside the store's apply; the signal goes out right after it.
                loop.call_soon(self._emit, key, recursive, event)
                return True

            started = store.watch(key, recursive, True, 0, deliver)
            assert started.watcher is not None
            self.store_watchers[(key, recursive)] = started.watcher
        return store.index

    def _unwatch(self, caller: str, key: str, recursive: bool) -> bool:
        existed, last = self.registry.remove(caller, key, recursive)
        if last:
            self._drop_store_watcher((key, recursive))
        return existed

    def _caller_left(self, caller: str) -> None:
        for pair in self.registry.drop_caller(caller):
            self._drop_store_watcher(pair)

    def _drop_store_watcher(self, pair: tuple[str, bool]) -> None:
        watcher = self.store_watchers.pop(pair, None)
        if watcher is not None:
            self.proposer.store.unwatch(watcher)

    def _emit(self, key: str, recursive: bool, event: Event) -> None:
        from dbus_fast import Message

        bus = self.bus
        if bus is None or not bus.connected or (key, recursive) not in self.store_watchers:
            return
        bus.send(Message.new_signal(OBJECT_PATH, INTERFACE, "Changed", "sbsssst",
                                    changed_body(key, recursive, event)))


def _parent_xml(path: str | None) -> str | None:
    """Introspection for our object and the paths above it, so ``busctl tree`` finds it."""
    return introspect_path(OBJECT_PATH, INTROSPECTION_XML, path)


def start_dbus_service(mode: str, proposer: Proposer) -> KvBusService | None:
    """Start serving on the bus ``--dbus`` chose, in the background; None when off."""
    address = bus_address(mode, os.environ, os.path.exists)
    if address is None:
        return None
    service = KvBusService(proposer, address)
    service.start()
    return service
