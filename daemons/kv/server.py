"""The ``kvd`` daemon: configuration, the Raft member (alone or in a cluster), HTTP API, TTL expiry.

The shell owns every clock and socket; the store stays pure. Expiry works the way a
replicated store needs it to: this node, as leader, looks at the store's next expiry time
and proposes an ``expire`` command carrying its wall clock, which every replica applies
identically.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import ssl
import sys
import time
from collections.abc import Sequence
from urllib.parse import urlsplit

from aiohttp import web
from flotilla.daemons import __version__, journal
from flotilla.daemons.kv.config import ClientTLS, Config, ConfigError, member_id, parse_config
from flotilla.daemons.kv.dbus_service import start_dbus_service
from flotilla.daemons.kv.discovery import DiscoveryError, discovered_config
from flotilla.daemons.kv.gctune import tune_for_serving
from flotilla.daemons.kv.http import (
    ETCD_CLUSTER_VERSION,
    KeysApi,
    Member,
    ServerInfo,
    make_server,
)
from flotilla.daemons.kv.proposer import Proposer
from flotilla.daemons.kv.replicated import (
    MemberRemoved,
    RaftProposer,
    check_cluster_config,
    raft_member,
)
from flotilla.daemons.service import notify

EXPIRY_POLL_SECONDS = 0.1


def client_ssl_context(tls: ClientTLS) -> ssl.SSLContext:
    """Server-side TLS for https:// client URLs; client certificates when asked."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(tls.cert_file, tls.key_file)
    except ssl.SSLError as err:
        raise ConfigError(f"--cert-file/--key-file: {err}") from None
    if tls.trusted_ca_file:
        try:
            context.load_verify_locations(tls.trusted_ca_file)
        except ssl.SSLError as err:
            raise ConfigError(f"--trusted-ca-file: {err}") from None
    if tls.client_cert_auth:
        context.verify_mode = ssl.CERT_REQUIRED
    return context


async def expire_loop(proposer: Proposer) -> None:
    """As leader, propose ``expire`` with this node's clock whenever a key is due."""
    while True:
        await asyncio.sleep(EXPIRY_POLL_SECONDS)
        if not proposer.is_leader():
            continue
        due = proposer.store.next_expiry()
        now = time.time_ns()
        if due is not None and due <= now:
            with contextlib.suppress(Exception):
                await proposer.propose({"op": "expire", "now": now})


def server_info(config: Config) -> ServerInfo:
    me = Member(config.member_id, config.name, config.initial_advertise_peer_urls,
                config.advertise_client_urls)
    members = [me]
    for name, urls in sorted(config.initial_cluster.items()):
        if name != config.name:
            members.append(Member(member_id(urls, config.initial_cluster_token), name,
                                  urls, []))
    return ServerInfo(member=me, cluster_id=config.cluster_id, members=members)


def follow_raft_membership(info: ServerInfo, proposer: RaftProposer) -> None:
    """Keep ``info.members`` equal to the Raft voters and their published attributes."""

    def refresh() -> None:
        info.members[:] = [Member(ident, name, peers, clients)
                           for ident, name, peers, clients in proposer.members()]

    proposer.machine.on_members = refresh
    refresh()


async def serve(config: Config, stop: asyncio.Event) -> None:
    info = server_info(config)
    # A lone member is a one-voter Raft cluster, so it can grow with ``member add``.
    proposer = await raft_member(config, info)  # may ask peers who it is (joining)
    follow_raft_membership(info, proposer)
    proposer.on_removed = stop.set
    await proposer.start()
    api = KeysApi(proposer, info)
    runner = web.ServerRunner(make_server(api))
    await runner.setup()
    tls_context = client_ssl_context(config.client_tls) if config.client_tls else None
    for url in config.listen_client_urls:
        parts = urlsplit(url)
        site = web.TCPSite(runner, parts.hostname, parts.port or 2379, backlog=1024,
                           reuse_address=True,
                           ssl_context=tls_context if parts.scheme == "https" else None)
        await site.start()
    expiry = asyncio.get_running_loop().create_task(expire_loop(proposer))
    bus_service = start_dbus_service(config.dbus, proposer)  # in the background, never blocks
    print(f"kvd {config.name}: ready to serve client requests on "
          f"{', '.join(config.listen_client_urls)} (index {proposer.store.index})",
          file=sys.stderr, flush=True)
    notify("READY=1", "STATUS=serving client requests")
    await stop.wait()
    notify("STOPPING=1")
    expiry.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await expiry
    if bus_service is not None:
        await bus_service.close()
    await runner.cleanup()
    await proposer.close()
    if proposer.removed.is_set():
        raise MemberRemoved


def main(argv: Sequence[str] | None = None) -> int:
    try:
        config = parse_config(sys.argv[1:] if argv is None else argv)
        check_cluster_config(config)
        if config.client_tls is not None:
            client_ssl_context(config.client_tls)  # bad or weak certificates fail here
    except ConfigError as err:
        print(f"kvd: {err}", file=sys.stderr)
        return 2
    if config.version:
        print(f"kvd Version: {__version__}\nAPI: etcd v2 (cluster version "
              f"{ETCD_CLUSTER_VERSION})")
        return 0
    if config.discovery:
        try:
            config = discovered_config(config)  # waits until the whole cluster registered
            check_cluster_config(config)
        except (DiscoveryError, ConfigError) as err:
            print(f"kvd: {err}", file=sys.stderr)
            if isinstance(err, DiscoveryError):
                print(f"kvd: {err.advice}", file=sys.stderr)
            return 1

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(config, stop)

    journal.setup("kvd")  # elections and lost peers, to the journal under systemd
    tune_for_serving()
    try:
        asyncio.run(run())
    except ConfigError as err:  # e.g. a join that found no member to ask
        print(f"kvd: {err}", file=sys.stderr)
        return 2
    except MemberRemoved:
        print("kvd: exiting: this member was removed from the cluster", file=sys.stderr)
        return 1
    except OSError as err:
        print(f"kvd: {err}", file=sys.stderr)
        return 1
    except ValueError as err:
        print(f"kvd: bad data directory: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
