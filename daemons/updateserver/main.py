"""``flotilla-update-server``: the daemon behind ``flotilla-update-server.service``.

Opens (and migrates) the database, then serves the Omaha endpoint, stored payloads, the
REST API and /metrics on one aiohttp listener until SIGTERM. Readiness is announced only
once the socket is bound, so ``Type=notify`` units ordered after it can check at once.
"""

from __future__ import annotations

import argparse
import logging
import socket
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from aiohttp import web

from .. import journal, service
from .api import Api
from .omaha_http import OmahaEndpoint
from .store import Store

log = logging.getLogger("flotilla-update-server")

DEFAULT_DB = "/var/lib/flotilla-update-server/updates.db"


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` too) into its parts; a bare port means 127.0.0.1."""
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = "127.0.0.1", text
    host = host.strip("[]") or "127.0.0.1"
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"--listen {text!r}: expected HOST:PORT")
    return host, int(port)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="flotilla-update-server",
        description="Omaha update server with groups, channels and rollout policy")
    parser.add_argument("--listen", type=parse_listen, default=("127.0.0.1", 8000),
                        metavar="HOST:PORT", help="address to serve on (default 127.0.0.1:8000)")
    parser.add_argument("--db", default=DEFAULT_DB,
                        help="SQLite file, or a SQLAlchemy URL such as postgresql://... "
                             "(default %(default)s)")
    parser.add_argument("--token-file", type=Path,
                        help="file holding the bearer token API writes need; without it, "
                             "writes are taken from local connections only")
    parser.add_argument("--payload-dir", type=Path,
                        help="directory for payload files this server stores and serves")
    parser.add_argument("--public-url", default="",
                        help="base URL clients reach this server under, for payload URLs "
                             "(default: the Host of each request)")
    parser.add_argument("--workers", type=int, default=4,
                        help="database worker threads (default %(default)s)")
    return parser.parse_args(argv)


def read_token(path: Path | None) -> str | None:
    if path is None:
        return None
    token = path.read_text("utf-8").strip()
    if not token:
        raise ValueError(f"{path} is empty: a token file must hold the token")
    return token


def open_store(db: str) -> Store:
    if "://" in db:
        return Store(db)
    Path(db).parent.mkdir(parents=True, exist_ok=True)
    return Store.open_sqlite(db)


def build_app(store: Store, executor: ThreadPoolExecutor, *, token: str | None,
              payload_dir: Path | None, public_url: str = "") -> web.Application:
    omaha = OmahaEndpoint(store, executor, payload_dir=payload_dir, public_url=public_url)
    api = Api(store, executor, token=token, payload_dir=payload_dir,
              counters=lambda: {"omaha_checks_total": omaha.checks})
    app = web.Application(middlewares=[api.middleware], client_max_size=1 << 20)
    app.add_routes(omaha.routes() + api.routes())
    app.on_cleanup.append(omaha.cleanup)
    # Payload uploads stream, so they are not bound by client_max_size.
    return app


async def serve(svc: service.Service, args: argparse.Namespace) -> int:
    try:
        token = read_token(args.token_file)
        store = open_store(args.db)
        applied = store.migrate(time.time())
    except (OSError, ValueError, RuntimeError) as err:
        log.error("cannot start: %s", err)
        return 1
    if applied:
        log.info("database migrated to schema version %d", applied[-1])
    if args.payload_dir is not None:
        args.payload_dir.mkdir(parents=True, exist_ok=True)
    executor = ThreadPoolExecutor(max_workers=args.workers, thread_name_prefix="db")
    app = build_app(store, executor, token=token, payload_dir=args.payload_dir,
                    public_url=args.public_url)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    host, port = args.listen
    sockets = service.listen_fds()
    try:
        if sockets:
            for sock in sockets:
                await web.SockSite(runner, sock).start()
        else:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            await web.SockSite(runner, sock).start()
            port = sock.getsockname()[1]
    except OSError as err:
        log.error("cannot listen on %s:%d: %s", host, port, err)
        await runner.cleanup()
        executor.shutdown()
        store.close()
        return 1
    where = f"{host}:{port}" if not sockets else "the sockets systemd passed"
    log.info("serving Omaha and the API on %s", where)
    print(f"listening on {where}", file=sys.stderr, flush=True)
    svc.ready(f"serving on {where}")
    await svc.stopping.wait()
    await runner.cleanup()
    executor.shutdown()
    store.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    journal.setup("flotilla-update-server")
    return service.run("flotilla-update-server", lambda svc: serve(svc, args))


if __name__ == "__main__":
    sys.exit(main())
