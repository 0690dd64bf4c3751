"""Raft peer transport: asyncio TCP (optionally mutual TLS), length-prefixed msgpack frames.

Every frame is a 4-byte big-endian length followed by that many bytes of msgpack. The
first frame on a connection is a hello naming the cluster, the sender and the intended
receiver; every later frame is one Raft `Message` in `codec`'s plain form. Each field is
checked on decode. Anything unexpected (wrong cluster, a frame over the size cap, bytes
that are not msgpack, a message claiming another sender) drops that connection with a
log line; the node itself carries on. Nothing is ever unpickled.

A connection may instead open with a query frame (``{"version", "cluster", "query"}``):
the receiver answers it with one frame from its ``on_query`` callback and closes. A
member about to join uses it to learn the member list (and its own id) from the peers it
was told about, the way etcd asks its peers' ``/members``; a member that suspects it was
removed uses it to find out.

Connections are one-way, like etcd's peer streams: a node dials each peer and only
writes on that connection, and only reads on connections peers dialled to it. Each peer
has its own bounded outbound queue drained by its own writer task, so a slow or stuck
peer fills only its own queue; once full, further messages to it are dropped, which Raft
tolerates (it retransmits on the next heartbeat or probe). Broken connections are redialled
with capped exponential backoff and jitter. The dialling side watches its connection for
end-of-file, so a peer that went away is noticed before anything more is written into the
dead socket. What was queued for a broken link is dropped, except forwarded proposals
(``PROP``), which Raft never resends: they wait for the link, up to the proposer's timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgpack

from . import codec
from .messages import Message, MessageType

log = logging.getLogger(__name__)

PROTOCOL_VERSION = 1
DEFAULT_MAX_FRAME_BYTES = 64 * 1024 * 1024
HELLO_TIMEOUT = 5.0
_HELLO_FIELDS = ("version", "cluster", "from", "to")
_QUERY_FIELDS = ("version", "cluster", "query")
QUERY_TIMEOUT = 3.0


class FrameError(Exception):
    """A peer sent something that is not a valid frame; its connection is dropped."""


def encode_frame(obj: Any) -> bytes:
    body = msgpack.packb(obj, use_bin_type=True)
    return len(body).to_bytes(4, "big") + body


def encode_hello(cluster: str, sender: int, receiver: int) -> bytes:
    return encode_frame(
        {"version": PROTOCOL_VERSION, "cluster": cluster, "from": sender, "to": receiver}
    )


def decode_body(body: bytes) -> Any:
    try:
        return msgpack.unpackb(body, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated exception types
        raise FrameError(f"frame: not valid msgpack ({exc})") from None


def check_hello(obj: Any, cluster: str, me: int) -> int:
    """Validate a hello frame; return the sender's id."""
    if not isinstance(obj, dict):
        raise FrameError(f"hello: expected a map, got {type(obj).__name__}")
    for name in _HELLO_FIELDS:
        if name not in obj:
            raise FrameError(f"hello.{name}: missing")
    for key in obj:
        if key not in _HELLO_FIELDS:
            raise FrameError(f"hello.{key}: unknown field")
    if obj["version"] != PROTOCOL_VERSION or type(obj["version"]) is not int:
        raise FrameError(f"hello.version: unsupported {obj['version']!r}")
    if obj["cluster"] != cluster:
        raise FrameError(f"hello.cluster: {obj['cluster']!r} is not this cluster")
    sender = obj["from"]
    if type(sender) is not int or not 0 < sender <= codec.U64_MAX:
        raise FrameError(f"hello.from: invalid node id {sender!r}")
    if obj["to"] != me or type(obj["to"]) is not int:
        raise FrameError(f"hello.to: {obj['to']!r} is not this node ({me})")
    return sender


def check_query(obj: Any, cluster: str) -> str:
    """Validate a query frame; return the query's name."""
    for key in obj:
        if key not in _QUERY_FIELDS:
            raise FrameError(f"query.{key}: unknown field")
    if obj.get("version") != PROTOCOL_VERSION:
        raise FrameError(f"query.version: unsupported {obj.get('version')!r}")
    if obj.get("cluster") != cluster:
        raise FrameError(f"query.cluster: {obj.get('cluster')!r} is not this cluster")
    name = obj.get("query")
    if not isinstance(name, str):
        raise FrameError("query.query: expected a string")
    return name


class QueryError(Exception):
    """A peer could not be asked, or refused the question; the message says which."""


async def query_peer(address: tuple[str, int], cluster: str, query: str, *,
                     ssl_context: ssl.SSLContext | None = None,
                     timeout: float = QUERY_TIMEOUT) -> Any:
    """Ask one peer a question over the peer port; return its answer's ``result``."""
    host, port = address

    async def ask() -> Any:
        reader, writer = await asyncio.open_connection(host, port, ssl=ssl_context)
        try:
            writer.write(encode_frame({"version": PROTOCOL_VERSION, "cluster": cluster,
                                       "query": query}))
            await writer.drain()
            return decode_body(await read_frame(reader, DEFAULT_MAX_FRAME_BYTES))
        finally:
            writer.transport.abort()

    try:
        answer = await asyncio.wait_for(ask(), timeout)
    except (OSError, TimeoutError, asyncio.IncompleteReadError, ssl.SSLError,
            FrameError) as exc:
        raise QueryError(f"peer {host}:{port}: {type(exc).__name__}: {exc}") from None
    if not isinstance(answer, dict) or "ok" not in answer:
        raise QueryError(f"peer {host}:{port}: malformed answer")
    if not answer["ok"]:
        raise QueryError(f"peer {host}:{port}: {answer.get('error')}")
    return answer.get("result")


async def read_frame(reader: asyncio.StreamReader, max_bytes: int) -> bytes:
    header = await reader.readexactly(4)
    length = int.from_bytes(header, "big")
    if length > max_bytes:
        raise FrameError(f"frame: length {length} exceeds the cap of {max_bytes} bytes")
    return await reader.readexactly(length)


@dataclass(slots=True)
class TransportStats:
    sent: int = 0
    received: int = 0
    dropped_queue_full: int = 0
    rejected_connections: int = 0
    reconnects: int = 0
    stale_proposals: int = 0  # forwarded proposals dropped for waiting too long
    per_peer_dropped: dict[int, int] = field(default_factory=dict)


@dataclass(slots=True)
class Backoff:
    """Capped exponential backoff with full jitter (delays in seconds)."""

    initial: float = 0.05
    maximum: float = 2.0
    attempt: int = 0

    def next_delay(self, rng: random.Random) -> float:
        ceiling = min(self.maximum, self.initial * (2**self.attempt))
        self.attempt += 1
        return ceiling / 2 + rng.uniform(0, ceiling / 2)

    def reset(self) -> None:
        self.attempt = 0


class _Peer:
    """Outbound side of one peer: queue + writer task that (re)dials."""

    def __init__(self, transport: PeerTransport, peer_id: int, address: tuple[str, int]) -> None:
        self.transport = transport
        self.peer_id = peer_id
        self.address = address
        #: (when queued, message): the time lets a proposal that waited out a long
        #: outage be dropped instead of applied long after its client gave up
        self.queue: asyncio.Queue[tuple[float, Message]] = asyncio.Queue(transport.queue_size)
        self.backoff = Backoff(transport.backoff_initial, transport.backoff_max)
        self.task = asyncio.get_running_loop().create_task(self._run())
        self.connected = False

    async def _run(self) -> None:
        t = self.transport
        while True:
            writer: asyncio.StreamWriter | None = None
            try:
                host, port = self.address
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(
                        host,
                        port,
                        ssl=t.client_ssl,
                        local_addr=(t.source_host, 0) if t.source_host else None,
                    ),
                    timeout=t.connect_timeout,
                )
                writer.write(encode_hello(t.cluster, t.node_id, self.peer_id))
                await writer.drain()
                self.connected = True
                self.backoff.reset()
                await self._pump_until_closed(reader, writer)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self.connected:
                    log.info("peer %d at %s: connection lost (%s)", self.peer_id, self.address, exc)
                self.connected = False
                self._discard_queued()
                t.stats.reconnects += 1
                await asyncio.sleep(self.backoff.next_delay(t.rng))
            finally:
                self.connected = False
                if writer is not None:
                    # Abort rather than close: a stuck peer would never let a graceful
                    # close flush, and nothing queued for a broken link is worth keeping.
                    writer.transport.abort()

    async def _pump_until_closed(self, reader: asyncio.StreamReader,
                                 writer: asyncio.StreamWriter) -> None:
        """Write queued messages until the connection breaks; raise when it does.

        Nothing is ever read on this connection, so a peer that went away (restarted,
        was killed, dropped us after a bad frame) shows only as end-of-file on the read
        side. Without watching for it, the next batch would be written into a dead
        socket and lost, and only the write after that would fail.
        """
        pump = asyncio.ensure_future(self._pump(writer))
        closed = asyncio.ensure_future(reader.read(1))
        try:
            await asyncio.wait((pump, closed), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (pump, closed):
                task.cancel()
            await asyncio.gather(pump, closed, return_exceptions=True)
        if pump.done() and not pump.cancelled() and pump.exception() is not None:
            raise pump.exception()  # type: ignore[misc]
        raise ConnectionError("the peer closed the connection")

    async def _pump(self, writer: asyncio.StreamWriter) -> None:
        t = self.transport
        while True:
            batch = [await self.queue.get()]
            while not self.queue.empty() and len(batch) < 1024:
                batch.append(self.queue.get_nowait())
            fresh = self._fresh(batch)
            if not fresh:
                continue
            writer.write(b"".join(encode_frame(codec.encode_message(m)) for m in fresh))
            t.stats.sent += len(fresh)
            await writer.drain()

    def _discard_queued(self) -> None:
        """Drop what is queued for an unreachable peer, except proposals.

        Appends, heartbeats and votes are stale by the time the peer is back, and Raft
        sends fresh ones. A forwarded proposal (``PROP``) is sent once and never again:
        dropping it here would leave its client waiting for the proposal timeout. One
        still queued was never written, so keeping it cannot deliver it twice. It is
        kept only while its proposer may still be waiting (`PeerTransport.proposal_ttl`).
        """
        kept = []
        while not self.queue.empty():
            item = self.queue.get_nowait()
            if item[1].type is MessageType.PROP:
                kept.append(item)
        for item in kept:
            self.queue.put_nowait(item)

    def _fresh(self, batch: list[tuple[float, Message]]) -> list[Message]:
        """The batch's messages, without proposals older than the proposer's timeout:
        their clients were told the outcome is unknown, and a write applied long after
        that could overwrite a newer one they made since."""
        oldest = time.monotonic() - self.transport.proposal_ttl
        fresh = [m for queued, m in batch if queued >= oldest or m.type is not MessageType.PROP]
        self.transport.stats.stale_proposals += len(batch) - len(fresh)
        return fresh

    def enqueue(self, message: Message) -> bool:
        try:
            self.queue.put_nowait((time.monotonic(), message))
        except asyncio.QueueFull:
            return False
        return True

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self.task


class PeerTransport:
    """Sends Raft messages to peers and delivers theirs to ``on_message``.

    ``on_message`` is called from the event loop for every checked inbound message; it
    must not block (the node shell just queues it).
    """

    def __init__(
        self,
        *,
        node_id: int,
        cluster: str,
        listen: tuple[str, int],
        on_message: Callable[[Message], None],
        on_query: Callable[[str], Any] | None = None,
        server_ssl: ssl.SSLContext | None = None,
        client_ssl: ssl.SSLContext | None = None,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        queue_size: int = 4096,
        proposal_ttl: float = 5.0,
        backoff_initial: float = 0.05,
        backoff_max: float = 2.0,
        connect_timeout: float = 2.0,
        rng: random.Random | None = None,
    ) -> None:
        self.node_id = node_id
        self.cluster = cluster
        self.listen = listen
        self.on_message = on_message
        self.on_query = on_query
        self.server_ssl = server_ssl
        self.client_ssl = client_ssl
        self.max_frame_bytes = max_frame_bytes
        self.queue_size = queue_size
        #: a forwarded proposal still queued after this many seconds is dropped
        self.proposal_ttl = proposal_ttl
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.connect_timeout = connect_timeout
        self.rng = rng or random.Random()
        # Dial from our own loopback address so peers see who we are on 127.0.0.x.
        self.source_host = listen[0] if listen[0].startswith("127.") else None
        self.stats = TransportStats()
        self._peers: dict[int, _Peer] = {}
        self._server: asyncio.base_events.Server | None = None
        self._inbound: dict[asyncio.Task[None], asyncio.StreamWriter] = {}

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._accept, self.listen[0], self.listen[1], ssl=self.server_ssl
        )

    @property
    def bound_port(self) -> int:
        assert self._server is not None
        return self._server.sockets[0].getsockname()[1]

    def set_peer(self, peer_id: int, address: tuple[str, int]) -> None:
        """Add a peer or change its address (a changed address redials)."""
        if peer_id == self.node_id:
            return
        current = self._peers.get(peer_id)
        if current is not None and current.address == tuple(address):
            return
        if current is not None:
            current.task.cancel()
        self._peers[peer_id] = _Peer(self, peer_id, (address[0], int(address[1])))

    def remove_peer(self, peer_id: int) -> None:
        peer = self._peers.pop(peer_id, None)
        if peer is not None:
            peer.task.cancel()

    def is_connected(self, peer_id: int) -> bool:
        """Whether the connection to ``peer_id`` is up (as far as this side can tell)."""
        peer = self._peers.get(peer_id)
        return peer is not None and peer.connected

    def peers(self) -> dict[int, tuple[str, int]]:
        return {pid: p.address for pid, p in self._peers.items()}

    def send(self, message: Message) -> None:
        """Queue ``message`` for its receiver; never blocks, drops when the queue is full."""
        peer = self._peers.get(message.to)
        if peer is None:
            return
        if not peer.enqueue(message):
            self.stats.dropped_queue_full += 1
            self.stats.per_peer_dropped[message.to] = (
                self.stats.per_peer_dropped.get(message.to, 0) + 1
            )

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for peer in list(self._peers.values()):
            await peer.stop()
        self._peers.clear()
        # Abort inbound connections rather than cancelling their handler tasks: the
        # handlers then end normally (asyncio logs cancelled stream handlers as errors).
        for task, writer in list(self._inbound.items()):
            writer.transport.abort()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(asyncio.shield(task), 1.0)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)

    # -- inbound ---------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._inbound[task] = writer
        peername = writer.get_extra_info("peername")
        try:
            await self._serve(reader, writer, peername)
        except asyncio.IncompleteReadError:
            pass  # the peer closed or restarted; it will dial again
        except (FrameError, ValueError) as exc:
            self.stats.rejected_connections += 1
            log.warning("peer connection from %s dropped: %s", peername, exc)
        except (ConnectionError, OSError, TimeoutError, ssl.SSLError) as exc:
            log.info("peer connection from %s closed: %s", peername, exc)
        finally:
            self._inbound.pop(task, None)
            writer.close()

    async def _answer(self, query: str, writer: asyncio.StreamWriter) -> None:
        if self.on_query is None:
            answer = {"ok": False, "error": f"query {query!r}: not served here"}
        else:
            try:
                answer = {"ok": True, "result": self.on_query(query)}
            except (KeyError, ValueError) as exc:
                answer = {"ok": False, "error": str(exc)}
        writer.write(encode_frame(answer))
        await writer.drain()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     peername: Any) -> None:
        limit = self.max_frame_bytes
        hello = decode_body(await asyncio.wait_for(read_frame(reader, 1024), HELLO_TIMEOUT))
        if isinstance(hello, dict) and "query" in hello:
            await self._answer(check_query(hello, self.cluster), writer)
            return
        sender = check_hello(hello, self.cluster, self.node_id)
        while True:
            obj = decode_body(await read_frame(reader, limit))
            message = codec.decode_message(obj)
            if message.from_ != sender or message.to != self.node_id:
                raise FrameError(
                    f"message.from/to: {message.from_}->{message.to} on a connection "
                    f"from {sender} to {self.node_id}"
                )
            self.stats.received += 1
            self.on_message(message)
