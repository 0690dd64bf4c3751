"""A FleetLock server (zincati's reboot-lock protocol) over the same locksmith semaphore.

``POST /v1/pre-reboot`` takes a slot (recursive: a holder asking again gets 200) and
``POST /v1/steady-state`` gives it back (200 even when not held), both with the header
``fleet-lock-protocol: true`` and the body ``{"client_params":{"id":"...","group":"..."}}``.
Errors are the protocol's JSON, ``{"kind":"...","value":"..."}``, with airlock's kinds:
400 ``invalid_client_identity`` for a missing header or a bad body, 500 ``failed_lock``
when no slot is free (locksmith's words: "semaphore is at 0") and 500 ``failed_sem_init``
when the store does not answer.

FleetLock group ``default`` is locksmith's default semaphore and any other group is the
locksmith group of that name, so Fedora CoreOS machines (zincati), Container Linux
machines (locksmithd) and ``locksmithctl`` share one set of slots.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Sequence

from aiohttp import web

from .. import journal, service
from ..kvclient import KVClient, KVError
from .config import (
    FLAGS,
    HelpRequested,
    UsageError,
    env_fallback,
    flag_usage,
    parse_flags,
    store_settings,
)
from .semaphore import LockError
from .store import Contended, SemaphoreStore

log = logging.getLogger("flotilla-fleetlock")
PROG = "flotilla-fleetlock"
GROUP = re.compile(r"[a-zA-Z0-9.-]+")
MAX_BODY = 64 * 1024


class ProtocolError(Exception):
    def __init__(self, status: int, kind: str, value: str) -> None:
        super().__init__(value)
        self.status, self.kind, self.value = status, kind, value


def parse_request(header: str | None, body: bytes) -> tuple[str, str]:
    """(group, id) from a request, or ProtocolError saying what is wrong. Pure."""
    def refuse(why: str) -> ProtocolError:
        return ProtocolError(400, "invalid_client_identity",
                             f"failed to validate client identity: {why}")

    if header != "true":
        raise refuse("wrong 'fleet-lock-protocol' header")
    try:
        data = json.loads(body)
    except ValueError as err:
        raise refuse(f"body is not JSON: {err}") from None
    params = data.get("client_params") if isinstance(data, dict) else None
    if not isinstance(params, dict):
        raise refuse("missing 'client_params' object")
    group, ident = params.get("group", ""), params.get("id", "")
    if not isinstance(group, str) or not group:
        raise refuse("empty client group")
    if not isinstance(ident, str) or not ident:
        raise refuse("empty client ID")
    if not GROUP.fullmatch(group):
        raise refuse(f"invalid group {group!r} (letters, digits, '.' and '-' only)")
    return group, ident


def locksmith_group(group: str) -> str:
    return "" if group == "default" else group


def error_response(err: ProtocolError) -> web.Response:
    return web.json_response({"kind": err.kind, "value": err.value}, status=err.status)


class FleetLock:
    def __init__(self, client: KVClient) -> None:
        self.client = client

    async def handle(self, request: web.Request, take: bool) -> web.Response:
        try:
            body = await request.content.read(MAX_BODY + 1)
            if len(body) > MAX_BODY:
                raise ProtocolError(400, "invalid_client_identity",
                                    "failed to validate client identity: body too large")
            group, ident = parse_request(request.headers.get("fleet-lock-protocol"), body)
            store = SemaphoreStore(self.client, locksmith_group(group))
            try:
                await store.init()
            except KVError as err:
                raise ProtocolError(500, "failed_sem_init",
                                    f"failed to initialize semaphore manager: {err}") from None
            try:
                if take:
                    await store.lock(ident)
                else:
                    await store.unlock_if_held(ident)
            except (LockError, Contended, KVError) as err:
                raise ProtocolError(500, "failed_lock", str(err)) from None
        except ProtocolError as err:
            log.info("%s refused: %s", request.path, err.value)
            return error_response(err)
        log.info("%s: %s in group %s", request.path, ident, group)
        return web.Response(status=200)

    async def pre_reboot(self, request: web.Request) -> web.Response:
        return await self.handle(request, take=True)

    async def steady_state(self, request: web.Request) -> web.Response:
        return await self.handle(request, take=False)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_post("/v1/pre-reboot", self.pre_reboot)
        app.router.add_post("/v1/steady-state", self.steady_state)
        return app


async def serve(listen: str, client: KVClient, supervisor: service.Service) -> int:
    host, _, port = listen.rpartition(":")
    runner = web.AppRunner(FleetLock(client).app(), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host.strip("[]") or "127.0.0.1", int(port))
        await site.start()
        supervisor.ready(f"FleetLock on {listen}")
        await supervisor.stopping.wait()
    finally:
        await runner.cleanup()
        await client.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    import os
    argv = list(sys.argv[1:] if argv is None else argv)
    journal.setup(PROG)
    known = {**FLAGS, "listen": True}
    try:
        flags = parse_flags(argv, known)
        if flags.args:
            raise UsageError(f"unexpected argument {flags.args[0]!r}")
        env_fallback(flags, known, os.environ, "FLEETLOCK")
        settings = store_settings(flags)
    except HelpRequested:
        print(flag_usage(PROG, known), end="")
        return 0
    except UsageError as err:
        print(f"{PROG}: {err}", file=sys.stderr)
        return 2
    listen = flags.values.get("listen", "127.0.0.1:3333")

    async def run(supervisor: service.Service) -> int:
        client = KVClient(list(settings.endpoints), cafile=settings.cafile,
                          certfile=settings.certfile, keyfile=settings.keyfile,
                          username=settings.username, password=settings.password)
        return await serve(listen, client, supervisor)

    return service.run(PROG, run)


if __name__ == "__main__":
    sys.exit(main())
