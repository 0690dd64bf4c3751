"""``fleetd``: the agent, the engine and the API in one process per machine.

Startup order matters for users: the API answers as soon as the process runs (so
``fleetctl`` never hangs on a socket systemd already holds), then the machine
registers, then the agent and the engine start. SIGTERM/SIGINT purge: units are stopped
and unloaded, the engine lease is released and the machine key deleted, so the
cluster moves the work at once instead of waiting for a TTL. SIGUSR1 prints the
agent's and engine's state as JSON on stdout.

SIGHUP reloads the configuration as fleet does: the file, ``FLEET_*`` variables and
flags are read again and the store client, agent and engine are rebuilt from them while
the API listeners stay open and local units keep running (the new agent adopts them).
Unlike fleet, which exits on a bad file, a configuration that does not parse is logged
with the setting it names and the running one is kept, so a typo never takes a machine
out of the cluster. Listener settings (api_socket, api_tcp) need a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

from aiohttp import web
from flotilla.daemons.kvclient import KVClient
from flotilla.daemons.service import listen_fds, notify

from .agent import Agent
from .api import VERSION, FleetApi
from .config import ConfigError, FleetConfig, load_config, machine_id
from .engine import Engine
from .registry import MachineState, Registry
from .systemd_iface import SystemdManager

log = logging.getLogger("fleetd")

def detect_public_ip() -> str:
    """The source address of the default route (a UDP connect sends no packet)."""
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect(("192.0.2.1", 9))
        return sock.getsockname()[0]
    return ""


async def make_systemd(config: FleetConfig) -> SystemdManager:
    if config.systemd == "standin":
        from .standin import StandInSystemd

        return StandInSystemd(state_file=config.standin_state_file or None)
    from .systemd_dbus import DbusSystemd

    return await DbusSystemd.connect(user=config.systemd_user)


class FleetServer:
    def __init__(self, config: FleetConfig) -> None:
        self.config = config
        self.agent: Agent | None = None
        self.engine: Engine | None = None
        self.runner: web.AppRunner | None = None
        self._engine_task: asyncio.Task | None = None
        self._created_socket: Path | None = None
        self._lock = asyncio.Lock()
        self._connect_store(config)

    def _connect_store(self, config: FleetConfig) -> None:
        """The store client, registry and machine description a configuration implies."""
        self.kv = KVClient(config.etcd_servers, cafile=config.etcd_cafile or None,
                           certfile=config.etcd_certfile or None,
                           keyfile=config.etcd_keyfile or None,
                           username=config.etcd_username or None,
                           password=config.etcd_password or None,
                           request_timeout=max(config.etcd_request_timeout, 1.0))
        self.registry = Registry(self.kv, config.etcd_key_prefix)
        self.machine = MachineState(
            id=machine_id(config), public_ip=config.public_ip or detect_public_ip(),
            metadata=dict(config.metadata), version=VERSION,
            api_url=f"http://{config.api_tcp}" if config.api_tcp else "")

    async def start_api(self) -> None:
        api = FleetApi(self.registry, token_limit=self.config.token_limit, agent=None,
                       machine_id=self.machine.id)
        self.api = api
        self.runner = web.AppRunner(api.app(), access_log=None)
        await self.runner.setup()
        inherited = listen_fds()
        for sock in inherited:
            await web.SockSite(self.runner, sock).start()
        if not inherited and self.config.api_socket:
            path = Path(self.config.api_socket)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.unlink(missing_ok=True)
            old_umask = os.umask(0o177)
            try:
                await web.UnixSite(self.runner, str(path)).start()
            finally:
                os.umask(old_umask)
            os.chmod(path, self.config.api_socket_mode)
            self._created_socket = path
        if self.config.api_tcp:
            host, _, port = self.config.api_tcp.rpartition(":")
            await web.TCPSite(self.runner, host or "127.0.0.1", int(port)).start()

    async def start(self) -> None:
        await self.start_api()
        async with self._lock:
            await self._start_components()
        notify("READY=1", "STATUS=fleetd running")
        log.info("fleetd %s running as machine %s", VERSION, self.machine.id)

    async def _start_components(self, previous_registration: str | None = None) -> None:
        systemd = await make_systemd(self.config)
        self.agent = Agent(self.registry, systemd, self.machine,
                           units_dir=self.config.units_directory, ttl=self.config.agent_ttl,
                           previous_registration=previous_registration)
        self.api.agent = self.agent
        await self.agent.start()
        if not self.config.disable_engine:
            self.engine = Engine(self.registry, self.machine.id,
                                 interval=self.config.engine_reconcile_interval,
                                 agent_ttl=self.config.agent_ttl)
            self._engine_task = asyncio.create_task(self.engine.run(), name="engine")

    async def _stop_components(self, purge: bool | None) -> None:
        """Stops engine and agent; ``purge=None`` purges unless systemd is restarting us."""
        if self._engine_task is not None:
            self._engine_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._engine_task
            self._engine_task = None
        if self.engine is not None:
            await self.engine.release()
            self.engine = None
        if self.agent is not None:
            if purge is None:
                restarting = getattr(self.agent.systemd, "restarting_self", None)
                purge = not (restarting is not None and await restarting())
                if not purge:
                    log.info("fleetd restarting: local units keep running for the next "
                             "fleetd")
            self.api.agent = None
            await self.agent.stop(purge=purge)
            await self.agent.systemd.close()
            self.agent = None

    async def reload(self, config: FleetConfig) -> None:
        """Rebuilds store client, agent and engine from ``config``; listeners stay open."""
        async with self._lock:
            notify("RELOADING=1", "STATUS=fleetd reloading its configuration")
            for name in ("api_socket", "api_tcp", "api_socket_mode"):
                if getattr(config, name) != getattr(self.config, name):
                    log.warning("SIGHUP: %s changed; the API keeps its listeners until "
                                "fleetd restarts", name)
            previous = self.machine.to_json()
            await self._stop_components(purge=False)
            await self.kv.close()
            self.config = config
            self._connect_store(config)
            self.api.registry = self.registry
            self.api.token_limit = config.token_limit
            await self._start_components(previous_registration=previous)
            notify("READY=1", "STATUS=fleetd running")
            log.info("fleetd reloaded its configuration (machine %s, metadata %s)",
                     self.machine.id, self.machine.metadata)

    async def stop(self) -> None:
        notify("STOPPING=1")
        async with self._lock:
            await self._stop_components(purge=None)
        if self.runner is not None:
            await self.runner.cleanup()
        if self._created_socket is not None:
            self._created_socket.unlink(missing_ok=True)
        await self.kv.close()

    def dump_state(self) -> None:
        state = {
            "machine": json.loads(self.machine.to_json()),
            "agent": {u: vars(s) for u, s in (self.agent.current if self.agent else {}).items()},
            "engine": {"leader": bool(self.engine and self.engine.is_leader),
                       "reconciles": self.engine.reconciles if self.engine else 0},
        }
        print(json.dumps(state, indent=2), flush=True)


async def reconfigure(server: FleetServer, argv: Sequence[str] | None,
                      started: asyncio.Task) -> None:
    """SIGHUP: read the configuration again and rebuild; a bad one changes nothing."""
    log.info("SIGHUP: reloading configuration")
    try:
        config, _ = load_config(argv)
    except ConfigError as error:
        log.error("SIGHUP: configuration not reloaded, keeping the running one: %s", error)
        return
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await asyncio.shield(started)  # a reload during startup waits for it to finish
    if started.cancelled() or started.exception() is not None:
        return
    try:
        await server.reload(config)
    except Exception:
        log.exception("SIGHUP: reload failed")


async def serve(config: FleetConfig, argv: Sequence[str] | None = None) -> int:
    server = FleetServer(config)
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    reloads: set[asyncio.Task] = set()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    loop.add_signal_handler(signal.SIGUSR1, server.dump_state)

    def on_hup() -> None:
        task = asyncio.create_task(reconfigure(server, argv, starter))
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, on_hup)
    starter = asyncio.create_task(server.start())
    waiter = asyncio.create_task(stopping.wait())
    done, _ = await asyncio.wait({starter, waiter}, return_when=asyncio.FIRST_COMPLETED)
    if starter in done and starter.exception() is not None:
        waiter.cancel()
        await server.stop()
        raise starter.exception()  # type: ignore[misc]
    await stopping.wait()
    if not starter.done():
        starter.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await starter
    log.info("fleetd shutting down")
    for task in list(reloads):
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
    await server.stop()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    try:
        config, args = load_config(argv)
    except ConfigError as error:
        print(f"fleetd: {error}", file=sys.stderr)
        return 1
    if args.version:
        print(f"fleetd version {VERSION}")
        return 0
    logging.basicConfig(
        level=logging.DEBUG if config.verbosity > 0 else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        return asyncio.run(serve(config, argv))
    except ConfigError as error:
        print(f"fleetd: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
