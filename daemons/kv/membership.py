"""Membership changes as etcd's ``/v2/members`` API makes them, and a member's identity.

Two jobs that both concern "who is in the cluster":

* Request checking (pure): the bodies of ``POST /v2/members`` and ``PUT /v2/members/<id>``
  are decoded and validated the way etcd 3.4 does it, down to its messages, because
  scripts compare them (``membership: peerURL exists``, ``no valid URLs given``, Go's
  JSON decoder wording for a body of the wrong shape). `MemberError` carries the HTTP
  status and message.
* Identity: which member id this process is, which cluster it belongs to and the peer
  URLs it starts with. A static ``--initial-cluster`` member derives its id from its
  peer URLs; a member added at runtime got its id from the cluster (etcd mixes the add
  time into it), so with ``--initial-cluster-state existing`` it asks the members named
  in ``--initial-cluster`` for the member list over the peer port and finds itself by
  its peer URLs. The answer is kept in ``<data-dir>/member.json`` (written atomically)
  so a restart neither asks again nor depends on flags that may have changed.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import ssl
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from flotilla.daemons.durable import write_atomic
from flotilla.daemons.kv.config import Config, ConfigError, member_id
from flotilla.daemons.raft.transport import QueryError, query_peer

MEMBER_FILE = "member.json"
MEMBER_FILE_VERSION = 1
#: Peer-port query a joining (or possibly removed) member asks its peers.
MEMBERS_QUERY = "members"
JOIN_TIMEOUT = 5.0
#: Go's name for the anonymous struct etcd decodes member bodies into.
_GO_BODY_TYPE = 'struct { PeerURLs []string "json:\\"peerURLs\\"" }'
_HEX_ID = re.compile(r"[0-9a-fA-F]{1,16}")
_GO_KINDS = {str: "string", bool: "bool", int: "number", float: "number",
             list: "array", dict: "object"}


class MemberError(Exception):
    """A refused membership request: etcd's HTTP status and ``{"message"}`` text."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _go_kind(value: Any) -> str:
    return _GO_KINDS.get(type(value), "value")


def _go_syntax_error(text: str, err: json.JSONDecodeError) -> str:
    """Go's encoding/json wording for the common syntax errors."""
    if err.pos >= len(text.rstrip()):
        return "unexpected end of JSON input"
    char = text[err.pos]
    if err.msg.startswith("Expecting property name"):
        return f"invalid character {char!r} looking for beginning of object key string"
    if err.msg.startswith("Expecting value"):
        return f"invalid character {char!r} looking for beginning of value"
    if err.msg.startswith("Expecting ':'"):
        return f"invalid character {char!r} after object key"
    if err.msg.startswith("Expecting ',' delimiter"):
        return f"invalid character {char!r} after object key:value pair"
    if err.msg.startswith("Extra data"):
        return f"invalid character {char!r} after top-level value"
    return f"invalid character {char!r} in JSON input"


def check_peer_url(url: str) -> str:
    """etcd's ``types.NewURLs`` rules for one URL; raises MemberError(400)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https", "unix", "unixs"):
        raise MemberError(400, f"URL scheme must be http, https, unix, or unixs: {url}")
    host, sep, port = parts.netloc.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise MemberError(400, f'URL address does not have the form "host:port": {url}')
    if parts.path not in ("", "/"):
        raise MemberError(400, f"URL must not contain a path: {url}")
    return url


def parse_member_body(content_type: str, body: bytes) -> list[str]:
    """The sorted peer URLs of a members POST/PUT body, or MemberError as etcd answers."""
    media = content_type.split(";", 1)[0].strip().lower()
    if media != "application/json":
        raise MemberError(415, f"Bad Content-Type {media}, accept application/json")
    text = body.decode("utf-8", "replace")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise MemberError(400, _go_syntax_error(text, err)) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise MemberError(400, f"json: cannot unmarshal {_go_kind(data)} into Go value "
                               f"of type {_GO_BODY_TYPE}")
    # Go matches struct fields case-insensitively; the last matching key wins.
    urls: Any = None
    for key, value in data.items():
        if key.lower() == "peerurls":
            urls = value
    if urls is None:
        urls = []
    if not isinstance(urls, list):
        raise MemberError(400, f"json: cannot unmarshal {_go_kind(urls)} into Go struct "
                               "field .peerURLs of type []string")
    for item in urls:
        if item is not None and not isinstance(item, str):
            raise MemberError(400, f"json: cannot unmarshal {_go_kind(item)} into Go "
                                   "struct field .peerURLs of type string")
    if not urls:
        raise MemberError(400, "no valid URLs given")
    return sorted(check_peer_url(u or "") for u in urls)


def parse_member_id(text: str) -> int:
    """A hex member id from a URL path; etcd answers an unparsable one with 404."""
    if not _HEX_ID.fullmatch(text):
        raise MemberError(404, f"No such member: {text}")
    return int(text, 16)


def new_member_id(peer_urls: list[str], now_s: int) -> int:
    """etcd's id for a member added at runtime: SHA-1 of its peer URLs and the add time."""
    digest = hashlib.sha1(("".join(sorted(peer_urls)) + str(now_s)).encode()).digest()
    return struct.unpack(">Q", digest[:8])[0]


def cluster_id_of(ids: list[int]) -> int:
    """etcd's cluster id: SHA-1 over the initial members' ids, in order."""
    digest = hashlib.sha1(b"".join(struct.pack(">Q", i) for i in sorted(ids))).digest()
    return struct.unpack(">Q", digest[:8])[0]


# ------------------------------------------------------------------ identity


@dataclass(slots=True)
class Identity:
    """Who this member is: enough to start its Raft node."""

    member_id: int
    cluster_id: int
    peers: dict[int, list[str]]  # every member's peer URLs as known at start
    joined: bool  # True: learn the log and membership from the leader

    def to_json(self) -> dict[str, Any]:
        return {"version": MEMBER_FILE_VERSION, "id": f"{self.member_id:x}",
                "clusterID": f"{self.cluster_id:x}", "joined": self.joined,
                "peers": {f"{k:x}": v for k, v in sorted(self.peers.items())}}

    @classmethod
    def from_json(cls, obj: Any, where: str) -> Identity:
        try:
            if not isinstance(obj, dict) or obj.get("version") != MEMBER_FILE_VERSION:
                raise ValueError("version: unsupported")
            peers = {int(k, 16): [str(u) for u in v] for k, v in obj["peers"].items()}
            return cls(int(obj["id"], 16), int(obj["clusterID"], 16), peers,
                       bool(obj["joined"]))
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise ValueError(f"{where}: not a kvd member file ({err})") from None


def load_identity(data_dir: Path) -> Identity | None:
    path = data_dir / MEMBER_FILE
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: line {err.lineno}: {err.msg}") from None
    return Identity.from_json(obj, str(path))


def save_identity(data_dir: Path, identity: Identity) -> None:
    """Write ``member.json`` atomically: temp file, fsync, rename, fsync the directory."""
    data_dir.mkdir(parents=True, exist_ok=True)
    text = json.dumps(identity.to_json(), indent=1, sort_keys=True) + "\n"
    write_atomic(data_dir / MEMBER_FILE, text.encode())


def static_identity(config: Config) -> Identity:
    """A member of a cluster bootstrapped from the static ``--initial-cluster``."""
    token = config.initial_cluster_token
    peers = {member_id(urls, token): sorted(urls) for urls in config.initial_cluster.values()}
    return Identity(config.member_id, config.cluster_id, peers, joined=False)


def peer_address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 2380


def find_self(answer: Any, own_urls: list[str]) -> tuple[Identity | None, str]:
    """This member's identity in a ``members`` query answer, or why it is not there."""
    if not isinstance(answer, dict) or not isinstance(answer.get("members"), list):
        return None, "malformed member list"
    own = sorted(own_urls)
    peers: dict[int, list[str]] = {}
    found = None
    for m in answer["members"]:
        ident, urls = int(m["id"]), sorted(str(u) for u in m["peerURLs"])
        peers[ident] = urls
        if urls == own:
            found = ident
    if found is None:
        return None, "not in the member list"
    if found in {int(i) for i in answer.get("removed", [])}:
        return None, "was removed from the cluster"
    return Identity(found, int(answer["clusterID"]), peers, joined=True), ""


async def join_identity(config: Config, ssl_context: ssl.SSLContext | None,
                        timeout: float = JOIN_TIMEOUT, clock: Any = time.monotonic
                        ) -> Identity:
    """Ask the members named in ``--initial-cluster`` who this member is.

    Retries until ``timeout`` because a member is often started right after ``member
    add`` returned, before every other member applied the change.
    """
    own = sorted(config.initial_advertise_peer_urls)
    targets = sorted({url for name, urls in config.initial_cluster.items()
                      for url in urls if url not in own})
    if not targets:
        raise ConfigError("--initial-cluster: with --initial-cluster-state existing it must "
                          "name at least one existing member besides this one")
    deadline = clock() + timeout
    problems: dict[str, str] = {}
    while True:
        for url in targets:
            try:
                answer = await query_peer(peer_address(url), config.initial_cluster_token,
                                          MEMBERS_QUERY, ssl_context=ssl_context)
            except QueryError as err:
                problems[url] = str(err)
                continue
            try:
                identity, why = find_self(answer, own)
            except (KeyError, TypeError, ValueError):
                identity, why = None, "malformed member list"
            if identity is not None:
                return identity
            problems[url] = why
            if why == "was removed from the cluster":
                raise ConfigError(
                    f"--initial-cluster-state existing: the member with peer URLs "
                    f"{','.join(own)} was permanently removed from the cluster; add it "
                    "again and start it with an empty --data-dir")
        if clock() >= deadline:
            break
        await asyncio.sleep(0.3)
    if any(why == "not in the member list" for why in problems.values()):
        raise ConfigError(
            f"--initial-cluster-state existing: no member with peer URLs {','.join(own)} "
            f"(--initial-advertise-peer-urls) in the cluster's member list; add it first "
            f"(kvctl member add {config.name} {own[0]})")
    tried = "; ".join(f"{url}: {why}" for url, why in sorted(problems.items()))
    raise ConfigError(f"--initial-cluster: no existing member reachable to join ({tried})")


def members_answer(cluster_id: int, members: list[tuple[int, str, list[str], list[str]]],
                   removed: set[int]) -> dict[str, Any]:
    """The answer to a ``members`` peer query (plain types for msgpack)."""
    return {"clusterID": cluster_id,
            "members": [{"id": ident, "name": name, "peerURLs": list(peers),
                         "clientURLs": list(clients)}
                        for ident, name, peers, clients in members],
            "removed": sorted(removed)}
