"""The etcd v2 client API over HTTP (aiohttp).

Routing is done by hand in one catch-all handler: it is faster than aiohttp's router for
this small table and lets the keys API redirect non-canonical paths (``//a/../b``) with a
301 exactly like Go's ServeMux does for etcd. Every answer carries etcd's CORS headers.
Writes go to the :class:`Proposer`; reads and watches use the local store. A GET first
waits on the proposer's read barrier (linearizable, ReadIndex in a cluster) unless the
request says ``quorum=false``, which asks for a local read that may lag the leader.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import resource
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from aiohttp import web
from flotilla.daemons import __version__
from flotilla.daemons.kv.discovery_service import new_discovery_token
from flotilla.daemons.kv.errors import EVENT_INDEX_CLEARED, EtcdError
from flotilla.daemons.kv.membership import MemberError, parse_member_body, parse_member_id
from flotilla.daemons.kv.proposer import Proposer
from flotilla.daemons.kv.render import error_json, event_json, rfc3339nano
from flotilla.daemons.kv.request import (
    Form,
    go_clean_url_path,
    go_path_unescape,
    parse_form,
    parse_key_request,
)
from flotilla.daemons.kv.store import Event

KEYS_PREFIX = "/v2/keys"
MAX_FORM_BYTES = 10 << 20
STREAM_QUEUE_LIMIT = 1024
ETCD_SERVER_VERSION = "3.4.23"
ETCD_CLUSTER_VERSION = "3.4.0"
CORS_HEADERS = {
    "Access-Control-Allow-Headers": "accept, content-type, authorization",
    "Access-Control-Allow-Methods": "POST, GET, OPTIONS, PUT, DELETE",
    "Access-Control-Allow-Origin": "*",
}
ALLOWED_KEY_METHODS = ("HEAD", "GET", "PUT", "POST", "DELETE")
JSON = "application/json"


@dataclass(slots=True)
class Member:
    id: int
    name: str
    peer_urls: list[str]
    client_urls: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {"id": f"{self.id:x}", "name": self.name, "peerURLs": self.peer_urls,
                "clientURLs": self.client_urls}


@dataclass(slots=True)
class ServerInfo:
    """Identity and counters the informational endpoints report."""

    member: Member
    cluster_id: int
    members: list[Member] = field(default_factory=list)
    start_ns: int = field(default_factory=time.time_ns)
    requests: dict[str, int] = field(default_factory=dict)


def go_duration(ns: int) -> str:
    """Go's ``time.Duration.String`` for positive durations of a second or more."""
    seconds = ns / 1e9
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{secs:.9f}".rstrip("0").rstrip(".") + "s"
    if hours:
        return f"{int(hours)}h{int(minutes)}m{text}"
    if minutes:
        return f"{int(minutes)}m{text}"
    return text


class KeysApi:
    """State shared by the handlers: the proposer, its store and the server identity."""

    def __init__(self, proposer: Proposer, info: ServerInfo) -> None:
        self.proposer = proposer
        self.store = proposer.store
        self.info = info
        self.cluster_id_hex = f"{info.cluster_id:x}"
        # Rendered GET bodies, valid while the store index stays put. Bodies showing a
        # TTL are never cached because their ttl counts down.
        self._get_cache: dict[tuple[str, bool, bool], bytes] = {}
        self._get_cache_index = -1
        self.routes = {
            "/v2/members": self.members,
            "/v2/members/": self.members,
            "/v2/members/leader": self.members_leader,
            "/v2/machines": self.machines,
            "/v2/stats/self": self.stats_self,
            "/v2/stats/leader": self.stats_leader,
            "/v2/stats/store": self.stats_store,
            "/version": self.version,
            "/health": self.health,
            "/metrics": self.metrics,
            "/new": lambda request: new_discovery_token(self, request),
        }
        # etcd answers other methods on these with 405 (members checks its own).
        self.route_methods = {
            "/v2/members/leader": ("GET",), "/v2/machines": ("GET", "HEAD"),
            "/v2/stats/self": ("GET",), "/v2/stats/leader": ("GET",),
            "/v2/stats/store": ("GET",), "/version": ("GET",), "/health": ("GET",),
        }

    # ------------------------------------------------------------ dispatch

    async def dispatch(self, request: web.BaseRequest) -> web.StreamResponse:
        raw_path, _, raw_query = request.raw_path.partition("?")
        path = go_path_unescape(raw_path)
        if path is None:  # Go's server refuses these before any handler runs
            return web.Response(status=400, text="400 Bad Request",
                                headers={"Connection": "close"})
        request["kv_path"] = path
        # The query as sent: aiohttp's ``query_string`` is already percent-decoded, and
        # decoding that again turned ``50%25`` into a bad escape and ``%2541`` into ``A``.
        request["kv_query"] = raw_query
        kind = "keys" if path == KEYS_PREFIX or path.startswith(KEYS_PREFIX + "/") else path
        self.info.requests[request.method] = self.info.requests.get(request.method, 0) + 1
        try:
            if kind == "keys":
                return await self.keys(request)
            if request.method == "OPTIONS":
                return web.Response(status=200, headers=CORS_HEADERS)
            handler = self.routes.get(path)
            if handler is None:
                if path.startswith("/v2/members/"):
                    return await self.member_item(request)
                return web.Response(status=404, text="404 page not found\n",
                                    headers=CORS_HEADERS)
            allowed = self.route_methods.get(path)
            if allowed is not None and request.method not in allowed:
                return web.Response(status=405, text="Method Not Allowed\n", headers={
                    **CORS_HEADERS, "Allow": ",".join(allowed),
                    "X-Content-Type-Options": "nosniff"})
            return await handler(request)
        except (asyncio.CancelledError, ConnectionResetError):
            raise
        except web.HTTPException:
            raise
        except Exception as err:  # an API must answer, never crash on a request
            return self._error(EtcdError(300, f"internal error: {type(err).__name__}",
                                         self.store.index))

    # ----------------------------------------------------------------- keys

    def _headers(self, event_index: int) -> dict[str, str]:
        return {
            **CORS_HEADERS,
            "Content-Type": JSON,
            "X-Etcd-Cluster-Id": self.cluster_id_hex,
            "X-Etcd-Index": str(event_index),
            "X-Raft-Index": str(self.proposer.applied_index),
            "X-Raft-Term": str(self.proposer.term),
        }

    def _error(self, err: EtcdError) -> web.Response:
        headers = {**CORS_HEADERS, "Content-Type": JSON,
                   "X-Etcd-Cluster-Id": self.cluster_id_hex, "X-Etcd-Index": str(err.index)}
        if err.code == EVENT_INDEX_CLEARED:
            # etcd clients must parse the cause for this; a header says it plainly.
            headers["X-Kvd-Oldest-Index"] = str(self.store.start_index)
        return web.Response(status=err.status, body=error_json(err).encode(), headers=headers)

    def _event(self, event: Event, no_value: bool, head: bool = False) -> web.Response:
        status = 201 if event.created else 200
        body = event_json(event, time.time_ns(), no_value).encode()  # aiohttp drops it for HEAD
        return web.Response(status=status, body=body, headers=self._headers(event.index))

    async def keys(self, request: web.BaseRequest) -> web.StreamResponse:
        method = request.method
        if method == "OPTIONS":
            return web.Response(status=200, headers=CORS_HEADERS)
        if method not in ALLOWED_KEY_METHODS:
            return web.Response(status=405, text="Method Not Allowed\n", headers={
                **CORS_HEADERS, "Allow": ",".join(ALLOWED_KEY_METHODS),
                "X-Content-Type-Options": "nosniff"})
        path = request.get("kv_path") or request.path
        canonical = go_clean_url_path(path)
        if canonical != path:
            return self._redirect(request, canonical)
        raw_query = request.get("kv_query", "")
        if method == "GET" and not raw_query:
            try:
                await self.proposer.read_barrier()
            except EtcdError as err:
                return self._error(err)
            return self._cached_get(path[len(KEYS_PREFIX):], False, False)
        pairs: list[tuple[str, str]] = []
        form_error = None
        if method in ("PUT", "POST"):
            body_pairs, form_error = await self._body_form(request)
            pairs.extend(body_pairs)
        query_pairs, query_error = parse_form(raw_query)
        pairs.extend(query_pairs)
        form_error = form_error or query_error
        try:
            req = parse_key_request(method, path[len(KEYS_PREFIX):], Form(pairs), form_error)
        except EtcdError as err:
            return self._error(err)
        if method in ("GET", "HEAD"):
            if req.wait:
                return await self._watch(request, req.key, req.recursive, req.stream,
                                         req.wait_index)
            try:
                local_read = not req.quorum and any(k == "quorum" for k, _ in query_pairs)
                if not local_read:
                    await self.proposer.read_barrier()
                if method == "GET":
                    return self._cached_get(req.key, req.recursive, req.sorted)
                event = self.store.get(req.key, req.recursive, req.sorted)
            except EtcdError as err:
                return self._error(err)
            return self._event(event, False, head=method == "HEAD")
        outcome = await self.proposer.propose(req.command(time.time_ns()))
        if isinstance(outcome, EtcdError):
            return self._error(outcome)
        if outcome is None:
            return self._error(EtcdError(300, "no event for the command", self.store.index))
        return self._event(outcome, req.no_value)

    def _cached_get(self, key: str, recursive: bool, sort: bool) -> web.Response:
        store = self.store
        if self._get_cache_index != store.index or len(self._get_cache) > 4096:
            self._get_cache.clear()
            self._get_cache_index = store.index
        cache_key = (key, recursive, sort)
        body = self._get_cache.get(cache_key)
        if body is None:
            try:
                event = store.get(key, recursive, sort)
            except EtcdError as err:
                return self._error(err)
            body = event_json(event, time.time_ns()).encode()
            if b'"expiration"' not in body:
                self._get_cache[cache_key] = body
        else:
            store.stats["getsSuccess"] += 1
        return web.Response(status=200, body=body, headers=self._headers(store.index))

    def _redirect(self, request: web.BaseRequest, canonical: str) -> web.Response:
        location = quote(canonical, safe="/:@!$&'()*+,;=")
        raw_query = request.get("kv_query", "")
        if raw_query:  # Go's ServeMux redirect keeps RawQuery untouched
            location += "?" + raw_query
        headers = {**CORS_HEADERS, "Location": location}
        if request.method in ("GET", "HEAD"):
            headers["Content-Type"] = "text/html; charset=utf-8"
            body = f'<a href="{location}">Moved Permanently</a>.\n\n'
            return web.Response(status=301, text=None, body=body.encode(), headers=headers)
        return web.Response(status=301, headers=headers)

    async def _body_form(self, request: web.BaseRequest
                         ) -> tuple[list[tuple[str, str]], str | None]:
        """Go's ``parsePostForm``: only url-encoded bodies count, up to 10 MiB."""
        ctype = request.headers.get("Content-Type", "")
        media = ctype.split(";", 1)[0].strip().lower()
        if ctype and not media:
            return [], "mime: no media type"
        if media != "application/x-www-form-urlencoded":
            return [], None  # Go ignores other bodies; aiohttp drains them
        raw = await request.content.read(MAX_FORM_BYTES + 1)
        if len(raw) > MAX_FORM_BYTES:
            return [], "http: POST too large"
        return parse_form(raw)

    async def _watch(self, request: web.BaseRequest, key: str, recursive: bool, stream: bool,
                     since: int) -> web.StreamResponse:
        queue: asyncio.Queue[Event | None] = asyncio.Queue()

        def deliver(event: Event) -> bool:
            if queue.qsize() >= STREAM_QUEUE_LIMIT:
                queue.put_nowait(None)  # consumer too slow: end the stream explicitly
                return False
            queue.put_nowait(event)
            return True

        try:
            started = self.store.watch(key, recursive, stream, since, deliver)
        except EtcdError as err:
            return self._error(err)
        response = web.StreamResponse(status=200, headers=self._headers(started.start_index))
        response.enable_chunked_encoding()
        try:
            await response.prepare(request)
            if started.event is not None:
                await response.write(_watch_body(started.event))
                return response
            for event in started.backlog:
                await response.write(_watch_body(event))
            while True:
                event = await queue.get()
                if event is None:
                    break
                await response.write(_watch_body(event))
                if not stream:
                    break
        finally:
            if started.watcher is not None:
                self.store.unwatch(started.watcher)
        with contextlib.suppress(ConnectionError):
            await response.write_eof()
        return response

    # ---------------------------------------------------------- cluster info

    def _json(self, data: Any, status: int = 200, newline: bool | None = None
              ) -> web.Response:
        """JSON as etcd writes it: errors (``{"message"}``) carry no trailing newline."""
        if newline is None:
            newline = not (status >= 400 and isinstance(data, dict) and "message" in data)
        body = json.dumps(data, separators=(",", ":")) + ("\n" if newline else "")
        return web.Response(status=status, body=body.encode(), headers={
            **CORS_HEADERS, "Content-Type": JSON, "X-Etcd-Cluster-Id": self.cluster_id_hex})

    async def members(self, request: web.BaseRequest) -> web.Response:
        if request.method == "GET":
            return self._json({"members": [m.to_dict() for m in self.info.members]})
        if request.method == "POST":
            return await self._member_add(request)
        return web.Response(status=405, text="Method Not Allowed\n",
                            headers=CORS_HEADERS)

    def _membership(self, method: str) -> Any:
        """The proposer's membership call; a single node has none and says so."""
        call = getattr(self.proposer, method, None)
        if call is None:
            raise MemberError(500, "membership changes need a replicated cluster; this kvd "
                                   "runs as a single node")
        return call

    async def _member_add(self, request: web.BaseRequest) -> web.Response:
        """POST /v2/members: etcd's checks and messages, then a Raft membership change."""
        try:
            urls = parse_member_body(request.headers.get("Content-Type", ""),
                                     await request.read())
            new_id = await self._membership("add_member")(urls)
        except MemberError as err:
            return self._json({"message": err.message}, status=err.status)
        return self._json(Member(new_id, "", urls, []).to_dict(), status=201)

    async def member_item(self, request: web.BaseRequest) -> web.Response:
        """DELETE (remove) and PUT (new peer URLs) on /v2/members/<hex id>, as etcd."""
        hexid = request["kv_path"][len("/v2/members/"):]
        if request.method == "GET":
            return self._json({"message": "Not found"}, status=404)
        if request.method == "POST":
            return await self._member_add(request)
        if request.method not in ("DELETE", "PUT"):
            return web.Response(status=405, text="Method Not Allowed\n",
                                headers={**CORS_HEADERS, "Allow": "GET,POST,DELETE,PUT"})
        try:
            member = parse_member_id(hexid)
            if request.method == "DELETE":
                await self._membership("remove_member")(member)
            else:
                urls = parse_member_body(request.headers.get("Content-Type", ""),
                                         await request.read())
                await self._membership("update_member")(member, urls)
        except MemberError as err:
            return self._json({"message": err.message}, status=err.status)
        return web.Response(status=204, headers={
            **CORS_HEADERS, "X-Etcd-Cluster-Id": self.cluster_id_hex})

    def _leader(self) -> Member | None:
        """The member the proposer knows as leader (this one when not replicated)."""
        leader_id = getattr(self.proposer, "leader_id", self.info.member.id)
        if leader_id == self.info.member.id:
            return self.info.member
        return next((m for m in self.info.members if m.id == leader_id), None)

    async def members_leader(self, request: web.BaseRequest) -> web.Response:
        leader = self._leader()
        if leader is None:
            return self._json({"message": "During leader election"}, status=503, newline=False)
        return self._json(leader.to_dict())

    async def machines(self, request: web.BaseRequest) -> web.Response:
        urls = []
        for member in [self.info.member, *self.info.members]:
            for url in member.client_urls:
                if url not in urls:
                    urls.append(url)
        return web.Response(text=", ".join(urls), content_type="text/plain",
                            charset="utf-8", headers=CORS_HEADERS)

    async def stats_self(self, request: web.BaseRequest) -> web.Response:
        member_hex = f"{self.info.member.id:x}"
        leader_hex = f"{getattr(self.proposer, 'leader_id', self.info.member.id):x}"
        start = rfc3339nano(self.info.start_ns)
        uptime = go_duration(time.time_ns() - self.info.start_ns)
        return self._json({
            "name": self.info.member.name, "id": member_hex,
            "state": "StateLeader" if self.proposer.is_leader() else "StateFollower",
            "startTime": start,
            "leaderInfo": {"leader": leader_hex, "uptime": uptime, "startTime": start},
            "recvAppendRequestCnt": 0, "sendAppendRequestCnt": 0,
        }, newline=False)

    async def stats_leader(self, request: web.BaseRequest) -> web.Response:
        if not self.proposer.is_leader():
            return self._json({"message": "not current leader"}, status=403, newline=False)
        followers = getattr(self.proposer, "follower_stats", dict)()
        return self._json({"leader": f"{self.info.member.id:x}", "followers": followers},
                          newline=False)

    async def stats_store(self, request: web.BaseRequest) -> web.Response:
        return self._json({**self.store.stats, "watchers": self.store.watcher_count},
                          newline=False)

    async def version(self, request: web.BaseRequest) -> web.Response:
        return self._json({"etcdserver": ETCD_SERVER_VERSION,
                           "etcdcluster": ETCD_CLUSTER_VERSION}, newline=False)

    async def health(self, request: web.BaseRequest) -> web.Response:
        # etcd sets no Content-Type here, so Go's sniffing labels the JSON as text.
        return web.Response(body=b'{"health":"true"}', headers={
            **CORS_HEADERS, "Content-Type": "text/plain; charset=utf-8"})

    async def metrics(self, request: web.BaseRequest) -> web.Response:
        store = self.store
        rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        lines = [
            "# HELP etcd_server_has_leader Whether a leader exists (1) or not (0).",
            "# TYPE etcd_server_has_leader gauge",
            "etcd_server_has_leader 1",
            "# HELP etcd_server_is_leader Whether this member is the leader.",
            "# TYPE etcd_server_is_leader gauge",
            f"etcd_server_is_leader {1 if self.proposer.is_leader() else 0}",
            "# HELP kvd_store_index The store's current etcd index.",
            "# TYPE kvd_store_index gauge",
            f"kvd_store_index {store.index}",
            "# HELP kvd_store_watchers Registered watchers.",
            "# TYPE kvd_store_watchers gauge",
            f"kvd_store_watchers {store.watcher_count}",
            "# HELP kvd_history_events Events kept for waitIndex watches.",
            "# TYPE kvd_history_events gauge",
            f"kvd_history_events {len(store.history)}",
            "# HELP kvd_history_bytes Estimated bytes of the event history.",
            "# TYPE kvd_history_bytes gauge",
            f"kvd_history_bytes {store.history_bytes}",
            "# HELP kvd_history_oldest_index Oldest index a watch can start from.",
            "# TYPE kvd_history_oldest_index gauge",
            f"kvd_history_oldest_index {store.start_index}",
            "# HELP kvd_store_operations_total Store operations by name and outcome.",
            "# TYPE kvd_store_operations_total counter",
        ]
        lines += [f'kvd_store_operations_total{{name="{name}"}} {count}'
                  for name, count in store.stats.items()]
        lines += [
            "# HELP kvd_http_requests_total HTTP requests by method.",
            "# TYPE kvd_http_requests_total counter",
        ]
        lines += [f'kvd_http_requests_total{{method="{m}"}} {n}'
                  for m, n in sorted(self.info.requests.items())]
        lines += [
            "# HELP process_max_resident_memory_bytes Peak resident memory.",
            "# TYPE process_max_resident_memory_bytes gauge",
            f"process_max_resident_memory_bytes {rss_kib * 1024}",
            "# HELP kvd_build_info kvd version.",
            "# TYPE kvd_build_info gauge",
            f'kvd_build_info{{version="{__version__}"}} 1',
        ]
        return web.Response(text="\n".join(lines) + "\n",
                            content_type="text/plain", charset="utf-8",
                            headers={"X-Content-Type-Options": "nosniff"})


def _watch_body(event: Event) -> bytes:
    """Event JSON for watchers; its ttls were fixed when it happened, so render once."""
    if event.rendered is None:
        event.rendered = event_json(event, time.time_ns()).encode()
    return event.rendered


def make_server(api: KeysApi) -> web.Server:
    """aiohttp's low-level server: no router or middleware between socket and dispatch."""
    return web.Server(api.dispatch, handler_cancellation=True, access_log=None)
