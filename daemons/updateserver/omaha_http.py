"""The public side of the server: ``POST /v1/update/`` and stored payload downloads.

The Omaha endpoint never needs a token (machines cannot hold one), reads at most 64 KiB of
a body whatever ``Content-Length`` claims, and answers a refused request with 400 and the
reason in plain text. Each app of a request is one store transaction, run on the check
thread so the event loop keeps serving: one thread, because the store lets one writer in at
a time anyway, and because it takes every check queued since its last round and hands all
their answers back to the loop with one wake-up (a pool thread per check cost two thread
hand-overs and a self-pipe write each, a fifth of the server's time under load). A round
is one transaction with a savepoint per check (see Store.check_batch), and no check of it
is answered before that transaction committed. Payload files are served with HTTP ranges (aiohttp's
FileResponse), which is how update_engine resumes a broken download.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from aiohttp import web

from .model import Package
from .omaha_wire import (
    MAX_REQUEST_BYTES,
    AppAnswer,
    AppRequest,
    RequestError,
    build_response,
    parse_request,
)
from .schema import packages as packages_table
from .store import NotFound, Store

Clock = Callable[[], float]

#: At most this many checks share a transaction, so one round's latency stays bounded.
MAX_ROUND = 64


def client_ip(request: web.Request) -> str:
    """The first ``X-Forwarded-For`` entry (as Nebraska does behind a proxy), else the peer."""
    forwarded = request.headers.get("X-Forwarded-For", "")
    first = forwarded.split(",")[0].strip()
    return first or (request.remote or "")


class OmahaEndpoint:
    """Handlers for the Omaha endpoint and payload files, sharing the store's thread pool."""

    def __init__(self, store: Store, executor: ThreadPoolExecutor, *, payload_dir: Path | None,
                 public_url: str = "", clock: Clock = time.time) -> None:
        self.store = store
        self.executor = executor
        self.payload_dir = payload_dir
        self.public_url = public_url.rstrip("/")
        self.clock = clock
        self.checks = 0
        self._queue: queue.SimpleQueue[_Check | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def close(self) -> None:
        """Stops the check thread once the checks already queued are answered."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None

    async def cleanup(self, _app: web.Application) -> None:
        """The application's cleanup step: the check thread ends without blocking the loop."""
        await asyncio.get_running_loop().run_in_executor(self.executor, self.close)

    def check(self, app: AppRequest, ip: str) -> asyncio.Future[AppAnswer]:
        """Queues one app's exchange for the check thread; the future holds its answer."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="omaha-checks", daemon=True)
            self._thread.start()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[AppAnswer] = loop.create_future()
        self._queue.put(_Check(loop, future, app, ip))
        return future

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < MAX_ROUND:  # whatever queued meanwhile goes in this round
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._queue.put(None)
                    break
                batch.append(more)
            try:
                outcomes = self.store.check_batch(self.clock, [(i.app, i.ip) for i in batch])
            except Exception as err:  # the commit failed: every check of the round did
                outcomes = [(err, True)] * len(batch)
            done: dict[asyncio.AbstractEventLoop, list[tuple[_Check, Any, bool]]] = {}
            for item, (outcome, failed) in zip(batch, outcomes, strict=True):
                done.setdefault(item.loop, []).append((item, outcome, failed))
            for loop, results in done.items():
                with contextlib.suppress(RuntimeError):  # a closed loop waits for none
                    loop.call_soon_threadsafe(_settle, results)

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/v1/update/", self.update), web.post("/v1/update", self.update),
                web.get("/v1/payloads/{package}/{filename}", self.payload)]

    def codebase(self, request: web.Request) -> Callable[[Package], str]:
        base = self.public_url or f"{request.scheme}://{request.host}"

        def url(package: Package) -> str:
            if package.url:
                return package.url
            return f"{base}/v1/payloads/{package.id}/"
        return url

    async def update(self, request: web.Request) -> web.Response:
        body = await read_capped(request, MAX_REQUEST_BYTES + 1)
        try:
            parsed = parse_request(body)
        except RequestError as err:
            return web.Response(status=400, text=f"{err}\n")
        ip = client_ip(request)
        answers = []
        for app in parsed.apps:
            answers.append(await self.check(app, ip))
            if app.updatecheck:
                self.checks += 1
        return web.Response(body=build_response(answers, self.codebase(request)),
                            content_type="text/xml", charset="utf-8")

    async def payload(self, request: web.Request) -> web.StreamResponse:
        if self.payload_dir is None:
            raise web.HTTPNotFound(text="this server stores no payloads\n")
        package_id = request.match_info["package"]
        filename = request.match_info["filename"]
        loop = asyncio.get_running_loop()
        try:
            row = await loop.run_in_executor(self.executor, self.store.get, packages_table,
                                             package_id)
        except NotFound as err:
            raise web.HTTPNotFound(text=f"{err}\n") from err
        if not row["stored"] or filename != row["filename"]:
            raise web.HTTPNotFound(text=f"package {package_id} has no stored {filename}\n")
        path = payload_path(self.payload_dir, package_id, filename)
        if not path.is_file():
            raise web.HTTPNotFound(text=f"the file of package {package_id} is missing\n")
        return web.FileResponse(path, headers={"Content-Type": "application/octet-stream"})


async def read_capped(request: web.Request, limit: int) -> bytes:
    """The body up to ``limit`` bytes: ``read(n)`` returns what has arrived so far, so a
    body sent in pieces (chunked, or slower than the server) is read until it ends or
    reaches the cap, never cut at its first piece."""
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        chunk = await request.content.read(limit - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


class _Check:
    """One queued exchange and where its answer goes."""

    __slots__ = ("app", "future", "ip", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop, future: asyncio.Future[AppAnswer],
                 app: AppRequest, ip: str) -> None:
        self.loop, self.future, self.app, self.ip = loop, future, app, ip


def _settle(results: list[tuple[_Check, Any, bool]]) -> None:
    """On the loop: every answer of one round of the check thread."""
    for item, outcome, failed in results:
        if item.future.done():  # the client went away and its handler was cancelled
            continue
        if failed:
            item.future.set_exception(outcome)
        else:
            item.future.set_result(outcome)


def payload_path(payload_dir: Path, package_id: str, filename: str) -> Path:
    """Where a stored package's file lives; names are checked before they reach a path."""
    for part in (package_id, filename):
        if not part or "/" in part or part in (".", "..") or "\0" in part:
            raise ValueError(f"unsafe payload name {part!r}")
    return payload_dir / package_id / filename
