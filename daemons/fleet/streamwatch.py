"""A :class:`Mirror` fed by one streaming watch instead of one long-poll per change.

The v2 keys API (etcd and kvd alike) keeps a watch open with ``stream=true`` and writes
every event as it happens, one JSON object after another. The plain mirror opens a new
request for each event; under a burst of submissions those polls were a third of the
engine's store requests and the reason its watch fell behind and re-listed the whole
job tree over and over (bench/fleet/run.py). One stream per mirror costs one request
(and one list) until the connection drops.

The connection settings (endpoints, TLS, basic auth) are the store client's own: the
stream shares its session so a mirror needs nothing configured twice.
"""

from __future__ import annotations

import asyncio
import codecs
import json
import logging
from typing import Any
from urllib.parse import quote

import aiohttp
from flotilla.daemons.kvclient import (
    ClusterUnavailable,
    EtcdError,
    EventIndexCleared,
    Mirror,
    Node,
    Response,
)

from .tasks import cancel_requested

log = logging.getLogger("fleet.watch")

EVENT_INDEX_CLEARED = 401


def split_events(buffer: str) -> tuple[list[dict[str, Any]], str]:
    """Whole JSON objects at the front of ``buffer``, and the unfinished rest.

    Pure, so the framing (events split across reads, several in one read, newlines or
    none between them) is tested without a store.
    """
    decoder = json.JSONDecoder()
    events: list[dict[str, Any]] = []
    while True:
        buffer = buffer.lstrip()
        if not buffer:
            return events, ""
        try:
            body, end = decoder.raw_decode(buffer)
        except ValueError:
            return events, buffer  # incomplete: wait for the rest
        if not isinstance(body, dict):
            raise ValueError(f"watch stream: expected an event object, got {body!r:.80}")
        events.append(body)
        buffer = buffer[end:]


def event_from_json(body: dict[str, Any]) -> Response:
    """A decoded stream item as the client's Response; store errors raise as such."""
    if "errorCode" in body:
        code = int(body["errorCode"])
        kind = EventIndexCleared if code == EVENT_INDEX_CLEARED else EtcdError
        raise kind(code, str(body.get("message", "")), str(body.get("cause", "")),
                   int(body.get("index", 0) or 0))
    if "action" not in body or not isinstance(body.get("node"), dict):
        raise ValueError(f"watch stream: not an event: {str(body)[:80]}")
    node = Node.from_json(body["node"])
    prev = body.get("prevNode")
    return Response(action=str(body["action"]), node=node,
                    prev_node=Node.from_json(prev) if isinstance(prev, dict) else None,
                    etcd_index=node.modified_index)


class StreamMirror(Mirror):
    """Same contract as :class:`Mirror`; follows the store over one open stream.

    Each connection first opens the stream *without* a start index and only then lists
    the directory: the stream carries every change after the index in its reply header,
    the list every change up to its own (later) index, so nothing falls between them.
    Asking the stream to replay history instead is not portable: etcd's v2 stream sends
    only the first past event and then skips to live ones (kvd sends them all).
    """

    #: the open stream, closed by `resync`
    _reply: aiohttp.ClientResponse | None = None

    def resync(self) -> None:
        """Close the stream so that it is opened again with a fresh list.

        For a caller that knows the store was out of reach: a stream whose packets were
        lost can sit in TCP retransmission for seconds after the store is back, showing
        a copy that no longer moves.
        """
        if self._reply is not None:
            self._reply.close()

    async def run(self) -> None:
        turn = 0
        while True:
            try:
                await self._follow(turn)
            except (TimeoutError, ClusterUnavailable, EtcdError, aiohttp.ClientError,
                    ValueError, UnicodeDecodeError) as error:
                if cancel_requested():
                    raise asyncio.CancelledError from error  # a stop that came back as TimeoutError
                log.debug("stream %s: %r, reconnecting", self.prefix, error)
                turn += 1  # the next attempt tries the next endpoint
                await asyncio.sleep(self.retry_delay)
            # A stream the store closed (a watcher too far behind, a restart) is
            # simply opened again, with a fresh list.

    async def _follow(self, turn: int) -> None:
        client = self.client
        endpoint = client.endpoint(turn)
        url = endpoint + "/v2/keys" + quote(self.prefix, safe="/:@-._~")
        params = {"wait": "true", "recursive": "true", "stream": "true"}
        timeout = aiohttp.ClientTimeout(total=None, connect=client.request_timeout)
        client.request_count += 1
        async with client.session.get(url, params=params, timeout=timeout) as reply:
            self._reply = reply
            try:
                await self._read_stream(reply)
            finally:
                self._reply = None

    async def _read_stream(self, reply: aiohttp.ClientResponse) -> None:
        if reply.status != 200:
            raw = await reply.read()
            try:
                body = json.loads(raw)
            except ValueError:
                body = {}
            if isinstance(body, dict) and "errorCode" in body:
                event_from_json(body)  # raises the store's error
            raise EtcdError(0, f"HTTP {reply.status} on watch", "", 0, reply.status)
        streamed_after = int(reply.headers.get("X-Etcd-Index", "0") or 0)
        await self.relist()
        listed_at = self.index
        if listed_at < streamed_after:
            raise EtcdError(0, f"list at index {listed_at} is older than the stream "
                            f"({streamed_after}); listing again", "", 0, 0)
        decoder = codecs.getincrementaldecoder("utf-8")()
        pending = ""
        async for chunk in reply.content.iter_any():
            events, pending = split_events(pending + decoder.decode(chunk))
            for body in events:
                event = event_from_json(body)
                if event.node.modified_index <= listed_at:
                    continue  # already in the list
                self.index = max(self.index, event.node.modified_index)
                changes = self._apply(event)
                if changes:
                    await self._emit(changes, False)
