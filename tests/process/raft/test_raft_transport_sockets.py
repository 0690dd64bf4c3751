"""Peer transport over real loopback sockets: delivery, garbage peers, slow peers, TLS."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from flotilla.daemons.raft import tls
from flotilla.daemons.raft.messages import Entry, Message, MessageType
from flotilla.daemons.raft.transport import PeerTransport, encode_frame, encode_hello

from tests.conditions import free_port

from .harness import make_ca_and_cert


async def wait_for(cond: Callable[[], bool], timeout: float = 5.0, what: str = "") -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def msg(to: int, frm: int, n: int, size: int = 0) -> Message:
    ents = (Entry(term=1, index=n + 1, data=b"x" * size),) if size else ()
    return Message(type=MessageType.APP, to=to, from_=frm, term=1, index=n, entries=ents)


class Node:
    def __init__(self, node_id: int, host: str, **kw) -> None:
        self.got: list[Message] = []
        self.t = PeerTransport(
            node_id=node_id,
            cluster="test-cluster",
            listen=(host, free_port(host)),
            on_message=self.got.append,
            backoff_initial=0.02,
            backoff_max=0.2,
            **kw,
        )


def run(coro_fn: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(coro_fn(), 30))


@pytest.mark.timeout(40)
def test_messages_flow_both_ways() -> None:
    async def go() -> None:
        a, b = Node(1, "127.0.0.1"), Node(2, "127.0.0.2")
        await a.t.start()
        await b.t.start()
        a.t.set_peer(2, b.t.listen)
        b.t.set_peer(1, a.t.listen)
        for i in range(100):
            a.t.send(msg(2, 1, i))
            b.t.send(msg(1, 2, i))
        await wait_for(lambda: len(a.got) == 100 and len(b.got) == 100, what="delivery")
        assert [m.index for m in b.got] == list(range(100))
        assert all(m.from_ == 1 and m.to == 2 for m in b.got)
        await a.t.close()
        await b.t.close()

    run(go)


async def raw_connect(node: Node, payload: bytes) -> bool:
    """Send ``payload`` on a fresh connection; True if the node then closed it."""
    reader, writer = await asyncio.open_connection(*node.t.listen)
    writer.write(payload)
    await writer.drain()
    try:
        data = await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()
    return data == b""


@pytest.mark.timeout(40)
@pytest.mark.parametrize(
    "payload",
    [
        b"\x00\x00\x00\x05garbage and more garbage",
        b"\xff\xff\xff\xff",  # over the cap
        encode_hello("another-cluster", 3, 2),
        encode_hello("test-cluster", 3, 2) + encode_frame({"type": 5, "to": 2}),
        # A well-formed message that lies about its sender.
        encode_hello("test-cluster", 3, 2)
        + encode_frame(
            {
                "type": 5, "to": 2, "from": 1, "term": 1, "log_term": 0, "index": 0,
                "entries": [], "commit": 0, "reject": False, "reject_hint": 0,
                "snapshot": None, "context": b"",
            }
        ),
    ],
    ids=["garbage", "over-cap", "wrong-cluster", "missing-fields", "forged-sender"],
)
def test_garbage_peer_is_dropped_and_traffic_carries_on(payload: bytes) -> None:
    async def go() -> None:
        a, b = Node(1, "127.0.0.1", max_frame_bytes=1 << 20), Node(2, "127.0.0.2")
        await a.t.start()
        await b.t.start()
        a.t.set_peer(2, b.t.listen)
        assert await raw_connect(b, payload), "connection was not dropped"
        await wait_for(lambda: b.t.stats.rejected_connections == 1, what="rejection count")
        for i in range(10):
            a.t.send(msg(2, 1, i))
        await wait_for(lambda: len(b.got) == 10, what="delivery after garbage")
        assert all(m.from_ == 1 for m in b.got)
        await a.t.close()
        await b.t.close()

    run(go)


@pytest.mark.timeout(40)
def test_stuck_peer_does_not_stall_the_others() -> None:
    async def go() -> None:
        # Peer 3 accepts connections and never reads: its socket buffers fill up.
        stuck_port = free_port("127.0.0.3")
        held: list[asyncio.StreamWriter] = []

        async def never_read(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            held.append(w)

        stuck = await asyncio.start_server(never_read, "127.0.0.3", stuck_port)
        a = Node(1, "127.0.0.1", queue_size=64)
        b = Node(2, "127.0.0.2")
        await a.t.start()
        await b.t.start()
        a.t.set_peer(2, b.t.listen)
        a.t.set_peer(3, ("127.0.0.3", stuck_port))
        n = 300
        for i in range(n):
            a.t.send(msg(3, 1, i, size=64 * 1024))
            a.t.send(msg(2, 1, i, size=64 * 1024))
            await asyncio.sleep(0)
        await wait_for(lambda: len(b.got) == n, timeout=10, what="healthy peer delivery")
        assert a.t.stats.per_peer_dropped.get(3, 0) > 0
        assert a.t.stats.per_peer_dropped.get(2, 0) == 0
        await a.t.close()
        await b.t.close()
        for w in held:
            w.close()
        stuck.close()

    run(go)


@pytest.mark.timeout(40)
def test_reconnects_after_the_peer_restarts() -> None:
    async def go() -> None:
        a, b = Node(1, "127.0.0.1"), Node(2, "127.0.0.2")
        await a.t.start()
        await b.t.start()
        a.t.set_peer(2, b.t.listen)
        a.t.send(msg(2, 1, 0))
        await wait_for(lambda: len(b.got) == 1, what="first delivery")
        await b.t.close()
        b2 = Node(2, "127.0.0.2")
        b2.t.listen = b.t.listen
        await b2.t.start()

        async def keep_sending() -> None:
            i = 1
            while not b2.got:
                a.t.send(msg(2, 1, i))
                i += 1
                await asyncio.sleep(0.02)

        await asyncio.wait_for(keep_sending(), 10)
        assert a.t.stats.reconnects >= 1
        await a.t.close()
        await b2.t.close()

    run(go)


@pytest.mark.timeout(40)
def test_mutual_tls_delivers_and_refuses_strangers(tmp_path: Path) -> None:
    make_ca_and_cert(tmp_path, "good")
    make_ca_and_cert(tmp_path, "evil")

    def ctxs(name: str, ca: str) -> dict[str, ssl.SSLContext]:
        files = (tmp_path / f"{name}.pem", tmp_path / f"{name}.key", tmp_path / f"{ca}-ca.pem")
        return {"server_ssl": tls.server_context(*files), "client_ssl": tls.client_context(*files)}

    async def go() -> None:
        a = Node(1, "127.0.0.1", **ctxs("good", "good"))
        b = Node(2, "127.0.0.2", **ctxs("good", "good"))
        c = Node(3, "127.0.0.3", **ctxs("evil", "good"))  # trusts us, but we don't trust it
        for n in (a, b, c):
            await n.t.start()
        a.t.set_peer(2, b.t.listen)
        c.t.set_peer(2, b.t.listen)
        for i in range(20):
            a.t.send(msg(2, 1, i))
            c.t.send(msg(2, 3, i))
        await wait_for(lambda: len(b.got) >= 20, what="TLS delivery")

        async def until_refused_twice() -> None:
            # The witness that the stranger's window has passed: c has seen b end two of
            # its connections, each carrying its messages (c keeps writing, or its writer
            # would never notice the refusal); a message from it ends the wait at once.
            i = 20
            while c.t.stats.reconnects < 2 and not any(m.from_ == 3 for m in b.got):
                c.t.send(msg(2, 3, i))
                i += 1
                await asyncio.sleep(0.02)

        await asyncio.wait_for(until_refused_twice(), 10)
        assert {m.from_ for m in b.got} == {1}
        assert len(b.got) == 20 and b.t.stats.received == 20
        # A plaintext client gets nowhere either.
        reader, writer = await asyncio.open_connection(*b.t.listen)
        writer.write(encode_hello("test-cluster", 1, 2))
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
        for n in (a, b, c):
            await n.t.close()

    run(go)


def prop(to: int, frm: int, data: bytes) -> Message:
    return Message(type=MessageType.PROP, to=to, from_=frm, entries=(Entry(0, 1, data=data),))


@pytest.mark.timeout(40)
def test_a_peer_that_goes_away_is_noticed_without_writing_to_it() -> None:
    async def go() -> None:
        a, b = Node(1, "127.0.0.1"), Node(2, "127.0.0.2")
        await a.t.start()
        await b.t.start()
        a.t.set_peer(2, b.t.listen)
        a.t.send(msg(2, 1, 0))
        await wait_for(lambda: len(b.got) == 1, what="first delivery")
        assert a.t.is_connected(2)
        sent = a.t.stats.sent
        await b.t.close()
        # Nothing more is sent: only the end-of-file on the read side can tell.
        await wait_for(lambda: not a.t.is_connected(2), what="a to notice b went away")
        assert a.t.stats.sent == sent
        await a.t.close()

    run(go)


@pytest.mark.timeout(40)
def test_a_forwarded_proposal_waits_out_failed_dials() -> None:
    async def go() -> None:
        a, b = Node(1, "127.0.0.1"), Node(2, "127.0.0.2")
        await a.t.start()
        a.t.set_peer(2, b.t.listen)  # nobody listens there yet
        a.t.send(msg(2, 1, 0))
        a.t.send(prop(2, 1, b"keep me"))
        # Dials fail with the proposal queued; the append may go, the proposal may not.
        await wait_for(lambda: a.t.stats.reconnects >= 2, what="failed dials")
        await b.t.start()
        await wait_for(lambda: any(m.type is MessageType.PROP for m in b.got), 10,
                       what="the proposal once b listens")
        assert [(m.type, m.entries[0].data) for m in b.got] == [(MessageType.PROP, b"keep me")]
        await a.t.close()
        await b.t.close()

    run(go)


@pytest.mark.timeout(40)
def test_a_forwarded_proposal_older_than_its_timeout_is_dropped() -> None:
    async def go() -> None:
        a, b = Node(1, "127.0.0.1", proposal_ttl=0.3), Node(2, "127.0.0.2")
        await a.t.start()
        a.t.set_peer(2, b.t.listen)  # nobody listens there yet
        a.t.send(prop(2, 1, b"too late"))
        queued = asyncio.get_running_loop().time()
        await wait_for(lambda: a.t.stats.reconnects >= 2
                       and asyncio.get_running_loop().time() > queued + 0.5, what="failed dials")
        await b.t.start()
        a.t.send(msg(2, 1, 7))  # the witness that the link is up again
        await wait_for(lambda: bool(b.got), 10, what="delivery once b listens")
        assert [m.type for m in b.got] == [MessageType.APP]
        assert a.t.stats.stale_proposals == 1
        await a.t.close()
        await b.t.close()

    run(go)
