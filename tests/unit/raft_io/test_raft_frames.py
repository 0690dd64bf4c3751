"""Peer frame checks: hello validation, size cap, garbage bodies, backoff bounds."""

from __future__ import annotations

import asyncio
import random

import pytest
from flotilla.daemons.raft import transport
from flotilla.daemons.raft.transport import Backoff, FrameError, check_hello, decode_body


def hello(**over):
    base = {"version": 1, "cluster": "c1", "from": 2, "to": 1}
    base.update(over)
    return base


def test_good_hello_names_the_sender() -> None:
    assert check_hello(hello(), "c1", 1) == 2


@pytest.mark.parametrize(
    ("obj", "field"),
    [
        (hello(cluster="other"), "hello.cluster"),
        (hello(to=3), "hello.to"),
        (hello(**{"from": 0}), "hello.from"),
        (hello(**{"from": "2"}), "hello.from"),
        (hello(version=9), "hello.version"),
        (hello(extra=1), "hello.extra"),
        ({"version": 1, "cluster": "c1", "to": 1}, "hello.from"),
        ([1, 2], "hello"),
    ],
)
def test_bad_hello_is_refused_naming_the_field(obj, field: str) -> None:
    with pytest.raises(FrameError, match=field.replace(".", r"\.")):
        check_hello(obj, "c1", 1)


def test_garbage_body_is_a_frame_error() -> None:
    with pytest.raises(FrameError, match="not valid msgpack"):
        decode_body(b"\xc1\xff\x00garbage")


def test_frame_over_the_cap_is_refused_before_reading_it() -> None:
    async def go() -> None:
        reader = asyncio.StreamReader()
        reader.feed_data((10_000).to_bytes(4, "big") + b"x" * 10)
        with pytest.raises(FrameError, match="exceeds the cap"):
            await transport.read_frame(reader, 1000)

    asyncio.run(go())


def test_frame_round_trip() -> None:
    async def go() -> None:
        reader = asyncio.StreamReader()
        reader.feed_data(transport.encode_frame({"a": b"b"}))
        assert decode_body(await transport.read_frame(reader, 100)) == {"a": b"b"}

    asyncio.run(go())


def test_backoff_grows_is_jittered_and_capped() -> None:
    rng = random.Random(7)
    b = Backoff(initial=0.1, maximum=1.0)
    delays = [b.next_delay(rng) for _ in range(10)]
    assert 0.05 <= delays[0] <= 0.1
    assert all(d <= 1.0 for d in delays)
    assert delays[-1] >= 0.5  # reached the cap's range
    assert len(set(delays)) == len(delays)  # jittered
    b.reset()
    assert b.next_delay(rng) <= 0.1
