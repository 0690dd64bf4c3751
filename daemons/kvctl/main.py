"""``kvctl``: the store's command-line client, with etcdctl v2's commands and habits.

People and scripts already know ``ETCDCTL_API=2 etcdctl``: its command names, its output in
the ``simple``, ``json`` and ``extended`` formats, its ``Error:  <code>: <message>
(<cause>) [<index>]`` lines and its exit codes (1 bad arguments, 2 no endpoint reachable,
4 server error, 5 cluster unhealthy). kvctl keeps all of them so scripts do not change.
It talks HTTP, or HTTPS with etcdctl's TLS flags, to any etcd v2 compatible endpoint, trying
each given endpoint in turn.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

import requests
from flotilla.daemons.kvctl import member
from flotilla.daemons.settings import parse_duration

EXIT_SUCCESS = 0
EXIT_BAD_ARGS = 1
EXIT_BAD_CONNECTION = 2
EXIT_SERVER_ERROR = 4
EXIT_CLUSTER_NOT_HEALTHY = 5
DEFAULT_ENDPOINTS = "http://127.0.0.1:2379,http://127.0.0.1:4001"


class ServerError(Exception):
    """An etcd error answer; ``str()`` is etcdctl's rendering of it."""

    def __init__(self, body: dict[str, Any]) -> None:
        self.body = body
        super().__init__(f"{body.get('errorCode')}: {body.get('message')} "
                         f"({body.get('cause', '')}) [{body.get('index')}]")


class Unreachable(Exception):
    """No endpoint answered."""


@dataclass(frozen=True, slots=True)
class ClientTLS:
    """etcdctl's ``--cert-file``, ``--key-file`` and ``--ca-file``, checked readable."""

    cert_file: str = ""
    key_file: str = ""
    ca_file: str = ""

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ClientTLS | None:
        """None when no TLS flag is given; ValueError naming the flag when one is wrong."""
        tls = cls(args.cert_file, args.key_file, args.ca_file)
        if not (tls.cert_file or tls.key_file or tls.ca_file):
            return None
        if bool(tls.cert_file) != bool(tls.key_file):
            given, missing = (("--cert-file", "--key-file") if tls.cert_file
                              else ("--key-file", "--cert-file"))
            raise ValueError(f"{given} needs {missing}")
        for flag, path in (("--cert-file", tls.cert_file), ("--key-file", tls.key_file),
                           ("--ca-file", tls.ca_file)):
            if path:
                try:
                    with open(path, "rb"):
                        pass
                except OSError as err:
                    raise ValueError(f"{flag}: {err.strerror}: {path}") from None
        return tls


def go_duration(text: str) -> float:
    """Seconds in a Go duration (``2s``, ``1m30s``, ``500ms``) as etcdctl takes them; a
    bare number is read as seconds."""
    text = text.strip()
    try:
        seconds = parse_duration(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r}: must be positive")
    return seconds


class Client:
    """A tiny etcd v2 keys client that fails over between endpoints."""

    def __init__(self, endpoints: list[str], timeout: float | None = 5.0,
                 tls: ClientTLS | None = None) -> None:
        self.endpoints = endpoints
        self.timeout = timeout
        self.session = requests.Session()
        # Given with every request: requests lets REQUESTS_CA_BUNDLE override a
        # session-wide verify, and an explicit --ca-file must win over the environment.
        self.tls_options: dict[str, Any] = {}
        if tls is not None:
            self.tls_options["verify"] = tls.ca_file or True  # system CAs without --ca-file
            if tls.cert_file:
                self.tls_options["cert"] = (tls.cert_file, tls.key_file)

    def request(self, method: str, path: str, params: dict[str, str] | None = None,
                data: dict[str, str] | str | None = None, timeout: float | None = -1.0,
                headers: dict[str, str] | None = None) -> requests.Response:
        errors = []
        for number, endpoint in enumerate(self.endpoints):
            try:
                return self.session.request(
                    method, endpoint.rstrip("/") + path, params=params, data=data,
                    headers=headers, timeout=self.timeout if timeout == -1.0 else timeout,
                    **self.tls_options)
            except requests.RequestException as err:
                errors.append(f"error #{number}: {_reason(err)}")
        raise Unreachable("client: etcd cluster is unavailable or misconfigured; "
                          + "; ".join(errors) + "\n\n" + "\n".join(errors))

    def keys(self, method: str, key: str, params: dict[str, str] | None = None,
             data: dict[str, str] | None = None, timeout: float | None = -1.0
             ) -> dict[str, Any]:
        path = "/v2/keys" + _quote_key(key)
        resp = self.request(method, path, params=params, data=data, timeout=timeout)
        try:
            body = resp.json()
        except ValueError:
            raise ServerError({"errorCode": 300, "message": "Raft Internal Error",
                               "cause": f"unexpected answer (HTTP {resp.status_code})",
                               "index": 0}) from None
        if "errorCode" in body:
            raise ServerError(body)
        body["_index"] = int(resp.headers.get("X-Etcd-Index", "0") or 0)
        return body


def _reason(err: requests.RequestException) -> str:
    text = str(err)
    if "Connection refused" in text:
        return "connect: connection refused"
    return text


def _quote_key(key: str) -> str:
    from urllib.parse import quote
    if not key.startswith("/"):
        key = "/" + key
    return quote(key, safe="/")


# --------------------------------------------------------------------- output

def client_node(node: dict[str, Any] | None) -> dict[str, Any] | None:
    """The node as etcd's Go client re-encodes it (etcdctl's ``-o json``)."""
    if node is None:
        return None
    out: dict[str, Any] = {"key": node.get("key", "")}
    if node.get("dir"):
        out["dir"] = True
    out["value"] = node.get("value", "")
    nodes = node.get("nodes")
    out["nodes"] = [client_node(n) for n in nodes] if nodes else None
    out["createdIndex"] = node.get("createdIndex", 0)
    out["modifiedIndex"] = node.get("modifiedIndex", 0)
    if "expiration" in node:
        out["expiration"] = node["expiration"]
    if node.get("ttl"):
        out["ttl"] = node["ttl"]
    return out


def print_response(resp: dict[str, Any], output: str) -> None:
    node = resp.get("node") or {}
    prev = resp.get("prevNode")
    if output == "simple":
        if resp.get("action") != "delete":
            print(node.get("value", ""))
        else:
            print("PrevNode.Value:", (prev or {}).get("value", ""))
    elif output == "extended":
        print("Key:", node.get("key", ""))
        print("Created-Index:", node.get("createdIndex", 0))
        print("Modified-Index:", node.get("modifiedIndex", 0))
        if prev is not None:
            print("PrevNode.Value:", prev.get("value", ""))
        print("TTL:", node.get("ttl", 0))
        print("Index:", resp.get("_index", 0))
        if resp.get("action") != "delete":
            print("")
            print(node.get("value", ""))
    elif output == "json":
        print(json.dumps({"action": resp.get("action"), "node": client_node(node),
                          "prevNode": client_node(prev)}, separators=(",", ":")))
    else:
        print("Unsupported output format:", output, file=sys.stderr)


def fail(code: int, err: Exception | str) -> NoReturn:
    print("Error: ", err, file=sys.stderr)
    sys.exit(code)


# ------------------------------------------------------------------- commands

def _value_arg(args: argparse.Namespace) -> str:
    if args.value is not None:
        return str(args.value)
    if sys.stdin.isatty():
        fail(EXIT_BAD_ARGS, "value required")
    return sys.stdin.read()


def _ttl(args: argparse.Namespace) -> dict[str, str]:
    return {"ttl": str(args.ttl)} if getattr(args, "ttl", 0) else {}


def cmd_get(client: Client, args: argparse.Namespace) -> None:
    params = {"sorted": "true"} if args.sort else {}
    if args.quorum:
        params["quorum"] = "true"
    resp = client.keys("GET", args.key, params=params)
    if resp["node"].get("dir"):
        print(f"{resp['node'].get('key', '')}: is a directory", file=sys.stderr)
        sys.exit(EXIT_BAD_ARGS)
    print_response(resp, args.output)


def cmd_set(client: Client, args: argparse.Namespace) -> None:
    params: dict[str, str] = {}
    if args.swap_with_value:
        params["prevValue"] = args.swap_with_value
    if args.swap_with_index:
        params["prevIndex"] = str(args.swap_with_index)
    resp = client.keys("PUT", args.key, params=params,
                       data={"value": _value_arg(args), **_ttl(args)})
    print_response(resp, args.output)


def cmd_mk(client: Client, args: argparse.Namespace) -> None:
    data = {"value": _value_arg(args), **_ttl(args)}
    if args.in_order:
        resp = client.keys("POST", args.key, data=data)
    else:
        resp = client.keys("PUT", args.key, params={"prevExist": "false"}, data=data)
    print_response(resp, args.output)


def cmd_update(client: Client, args: argparse.Namespace) -> None:
    resp = client.keys("PUT", args.key, params={"prevExist": "true"},
                       data={"value": _value_arg(args), **_ttl(args)})
    print_response(resp, args.output)


def _dir_command(client: Client, args: argparse.Namespace, prev_exist: str | None) -> None:
    params = {"dir": "true"}
    if prev_exist is not None:
        params["prevExist"] = prev_exist
    resp = client.keys("PUT", args.key, params=params, data=_ttl(args))
    if args.output != "simple":
        print_response(resp, args.output)


def cmd_mkdir(client: Client, args: argparse.Namespace) -> None:
    _dir_command(client, args, "false")


def cmd_setdir(client: Client, args: argparse.Namespace) -> None:
    _dir_command(client, args, None)


def cmd_updatedir(client: Client, args: argparse.Namespace) -> None:
    _dir_command(client, args, "true")


def cmd_rm(client: Client, args: argparse.Namespace) -> None:
    params: dict[str, str] = {}
    if args.dir:
        params["dir"] = "true"
    if args.recursive:
        params["recursive"] = "true"
    if args.with_value:
        params["prevValue"] = args.with_value
    if args.with_index:
        params["prevIndex"] = str(args.with_index)
    resp = client.keys("DELETE", args.key, params=params)
    if not (resp.get("node") or {}).get("dir") or args.output != "simple":
        print_response(resp, args.output)


def cmd_rmdir(client: Client, args: argparse.Namespace) -> None:
    resp = client.keys("DELETE", args.key, params={"dir": "true"})
    if not (resp.get("node") or {}).get("dir") or args.output != "simple":
        print_response(resp, args.output)


def _ls_print(node: dict[str, Any], slash: bool) -> None:
    print(f"{node.get('key', '')}/" if node.get("dir") and slash else node.get("key", ""))
    for child in node.get("nodes") or []:
        _ls_print(child, slash)


def cmd_ls(client: Client, args: argparse.Namespace) -> None:
    params: dict[str, str] = {}
    if args.sort:
        params["sorted"] = "true"
    if args.recursive:
        params["recursive"] = "true"
    if args.quorum:
        params["quorum"] = "true"
    resp = client.keys("GET", args.key or "/", params=params)
    if args.output != "simple":
        print_response(resp, args.output)
        return
    node = resp.get("node") or {}
    if not node.get("dir"):
        print(node.get("key", ""))
    for child in node.get("nodes") or []:
        _ls_print(child, args.p)


def _watch_loop(client: Client, key: str, recursive: bool, after_index: int,
                forever: bool, handle: Any) -> None:
    index = after_index
    while True:
        params = {"wait": "true"}
        if recursive:
            params["recursive"] = "true"
        if index:
            params["waitIndex"] = str(index + 1)
        try:
            resp = client.keys("GET", key, params=params, timeout=None)
        except requests.exceptions.ChunkedEncodingError:
            continue  # the server closed an idle watch; ask again from the same index
        handle(resp)
        index = (resp.get("node") or {}).get("modifiedIndex", index)
        if not forever:
            return


def cmd_watch(client: Client, args: argparse.Namespace) -> None:
    def show(resp: dict[str, Any]) -> None:
        if args.recursive:
            print(f"[{resp.get('action')}] {(resp.get('node') or {}).get('key', '')}")
        print_response(resp, args.output)
        sys.stdout.flush()

    _watch_loop(client, args.key, args.recursive, args.after_index, args.forever, show)


def cmd_exec_watch(client: Client, args: argparse.Namespace) -> None:
    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        fail(EXIT_BAD_ARGS, "exec-watch needs a key and a command: exec-watch <key> -- <cmd>")

    def run(resp: dict[str, Any]) -> None:
        node = resp.get("node") or {}
        env = dict(os.environ, ETCD_WATCH_ACTION=str(resp.get("action", "")),
                   ETCD_WATCH_KEY=str(node.get("key", "")),
                   ETCD_WATCH_VALUE=str(node.get("value", "")),
                   ETCD_WATCH_MODIFIED_INDEX=str(node.get("modifiedIndex", 0)))
        subprocess.run(command, env=env, check=False)

    _watch_loop(client, args.key, args.recursive, args.after_index, True, run)


def _members(client: Client) -> list[dict[str, Any]]:
    resp = client.request("GET", "/v2/members")
    return list(resp.json().get("members", []))


def cmd_member(client: Client, args: argparse.Namespace) -> None:
    if args.member_command == "list":
        member.member_list(client)
    elif args.member_command == "add":
        member.member_add(client, args.name, args.peer_url)
    elif args.member_command == "remove":
        member.member_remove(client, args.member_id)
    else:
        member.member_update(client, args.member_id, args.peer_urls)


def cmd_cluster_health(client: Client, args: argparse.Namespace) -> None:
    members = _members(client)
    healthy = 0
    for m in members:
        urls = m.get("clientURLs", [])
        ok = False
        for url in urls:
            try:
                resp = client.session.get(url.rstrip("/") + "/health", timeout=client.timeout,
                                          **client.tls_options)
                if resp.ok and resp.json().get("health") in ("true", True):
                    print(f"member {m['id']} is healthy: got healthy result from {url}")
                    ok = True
                    break
                print(f"member {m['id']} is unhealthy: got unhealthy result from {url}")
                ok = None  # type: ignore[assignment]
                break
            except (requests.RequestException, ValueError):
                continue
        if ok:
            healthy += 1
        elif ok is False:
            print(f"member {m['id']} is unreachable: {urls} are all unreachable")
    if members and healthy == len(members):
        print("cluster is healthy")
        return
    print("cluster is degraded" if healthy * 2 > len(members) else "cluster is unavailable")
    sys.exit(EXIT_CLUSTER_NOT_HEALTHY)


# ------------------------------------------------------------------- parsing

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kvctl", description="Client for kvd and etcd v2")
    parser.add_argument("--endpoints", "--endpoint", "--peers", "-C", dest="endpoints",
                        default=os.environ.get("ETCDCTL_ENDPOINTS")
                        or os.environ.get("ETCDCTL_ENDPOINT") or DEFAULT_ENDPOINTS,
                        help="comma-separated list of endpoints")
    parser.add_argument("--output", "-o", default="simple",
                        choices=["simple", "json", "extended"])
    parser.add_argument("--timeout", type=go_duration, default=2.0,
                        help="timeout of each request (a Go duration, default 2s)")
    parser.add_argument("--total-timeout", type=go_duration, default=5.0,
                        help="upper bound of any one request's timeout (default 5s)")
    env = os.environ
    parser.add_argument("--cert-file", default=env.get("ETCDCTL_CERT_FILE", ""),
                        help="TLS client certificate (ETCDCTL_CERT_FILE)")
    parser.add_argument("--key-file", default=env.get("ETCDCTL_KEY_FILE", ""),
                        help="its private key (ETCDCTL_KEY_FILE)")
    parser.add_argument("--ca-file", default=env.get("ETCDCTL_CA_FILE", ""),
                        help="CA bundle that verifies the server (ETCDCTL_CA_FILE)")
    parser.add_argument("--no-sync", action="store_true", help="accepted for etcdctl habits")
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, func: Any, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text)
        p.set_defaults(func=func)
        return p

    p = command("get", cmd_get, "retrieve the value of a key")
    p.add_argument("key")
    p.add_argument("--sort", action="store_true")
    p.add_argument("--quorum", "-q", action="store_true")
    for name, func, help_text in (("set", cmd_set, "set the value of a key"),
                                  ("mk", cmd_mk, "make a new key with a given value"),
                                  ("update", cmd_update, "update an existing key")):
        p = command(name, func, help_text)
        p.add_argument("key")
        p.add_argument("value", nargs="?")
        p.add_argument("--ttl", type=int, default=0)
        if name == "set":
            p.add_argument("--swap-with-value", default="")
            p.add_argument("--swap-with-index", type=int, default=0)
        if name == "mk":
            p.add_argument("--in-order", action="store_true")
    for name, func in (("mkdir", cmd_mkdir), ("setdir", cmd_setdir),
                       ("updatedir", cmd_updatedir)):
        p = command(name, func, f"{name} a directory")
        p.add_argument("key")
        p.add_argument("--ttl", type=int, default=0)
    p = command("rm", cmd_rm, "remove a key or a directory")
    p.add_argument("key")
    p.add_argument("--dir", action="store_true")
    p.add_argument("--recursive", "-r", action="store_true")
    p.add_argument("--with-value", default="")
    p.add_argument("--with-index", type=int, default=0)
    p = command("rmdir", cmd_rmdir, "remove an empty directory")
    p.add_argument("key")
    p = command("ls", cmd_ls, "list a directory")
    p.add_argument("key", nargs="?", default="/")
    p.add_argument("--sort", action="store_true")
    p.add_argument("--recursive", "-r", action="store_true")
    p.add_argument("-p", action="store_true", help="append / to directories")
    p.add_argument("--quorum", "-q", action="store_true")
    p = command("watch", cmd_watch, "watch a key for changes")
    p.add_argument("key")
    p.add_argument("--forever", "-f", action="store_true")
    p.add_argument("--after-index", type=int, default=0)
    p.add_argument("--recursive", "-r", action="store_true")
    p = command("exec-watch", cmd_exec_watch, "run a command on every change of a key")
    p.add_argument("key")
    p.add_argument("command", nargs=argparse.REMAINDER)
    p.add_argument("--after-index", type=int, default=0)
    p.add_argument("--recursive", "-r", action="store_true")
    p = command("member", cmd_member, "list, add or remove members")
    msub = p.add_subparsers(dest="member_command", required=True)
    msub.add_parser("list")
    add = msub.add_parser("add")
    add.add_argument("name", nargs="?")
    add.add_argument("peer_url", nargs="?")
    remove = msub.add_parser("remove")
    remove.add_argument("member_id", nargs="?")
    update = msub.add_parser("update")
    update.add_argument("member_id", nargs="?")
    update.add_argument("peer_urls", nargs="?")
    command("cluster-health", cmd_cluster_health, "check the health of the cluster")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    except SystemExit as exit_:
        return EXIT_BAD_ARGS if exit_.code not in (0, None) else 0
    try:
        tls = ClientTLS.from_args(args)
    except ValueError as err:
        fail(EXIT_BAD_ARGS, err)
    client = Client([e.strip() for e in args.endpoints.split(",") if e.strip()],
                    timeout=min(args.timeout, args.total_timeout), tls=tls)
    try:
        args.func(client, args)
    except ServerError as err:
        fail(EXIT_SERVER_ERROR, err)
    except Unreachable as err:
        fail(EXIT_BAD_CONNECTION, err)
    except KeyboardInterrupt:
        return 0
    return EXIT_SUCCESS


if __name__ == "__main__":
    sys.exit(main())
