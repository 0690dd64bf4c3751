"""kvd as an etcd discovery service: ``GET /new?size=N`` hands out a discovery URL.

This is what discovery.etcd.io's ``/new`` does, served on kvd's own client listener:
it picks a random 32-hex-digit token, writes ``/_etcd/registry/<token>/_config/size``
through the normal replicated write path, and answers with the URL new members pass
as ``--discovery``. Those members then speak the plain v2 keys API to kvd, so no proxy
is needed: the URL points straight into ``/v2/keys/_etcd/registry/<token>``.
"""

from __future__ import annotations

import secrets
import time
from typing import TYPE_CHECKING

from aiohttp import web
from flotilla.daemons.kv.errors import EtcdError
from flotilla.daemons.kv.request import Form, parse_key_request

if TYPE_CHECKING:
    from flotilla.daemons.kv.http import KeysApi

REGISTRY = "/_etcd/registry"
DEFAULT_SIZE = 3
#: Far beyond any sensible Raft cluster; keeps a typo from asking for millions.
MAX_SIZE = 1000
TOKEN_BYTES = 16


class BadSize(ValueError):
    """The ``size`` parameter of ``/new`` is unusable; the message says why."""


def parse_new_size(text: str | None) -> int:
    """``size`` as discovery.etcd.io reads it: absent or empty means 3."""
    if text is None or text == "":
        return DEFAULT_SIZE
    if not text.isascii() or not text.isdigit() or not 1 <= int(text) <= MAX_SIZE:
        raise BadSize(f"size: {text!r} is not a whole number from 1 to {MAX_SIZE}")
    return int(text)


def new_token() -> str:
    return secrets.token_hex(TOKEN_BYTES)


def size_key(token: str) -> str:
    return f"{REGISTRY}/{token}/_config/size"


def discovery_url(client_url: str, token: str) -> str:
    return f"{client_url.rstrip('/')}/v2/keys{REGISTRY}/{token}"


def _text(status: int, text: str) -> web.Response:
    return web.Response(status=status, text=text, content_type="text/plain",
                        charset="utf-8")


async def new_discovery_token(api: KeysApi, request: web.BaseRequest) -> web.Response:
    """Create a token of the asked size and answer its discovery URL as plain text."""
    if request.method != "GET":
        return web.Response(status=405, text="Method Not Allowed\n",
                            headers={"Allow": "GET"})
    try:
        size = parse_new_size(request.query.get("size"))
    except BadSize as err:
        return _text(400, f"{err}\n")
    client_urls = api.info.member.client_urls
    if not client_urls:
        return _text(500, "this member advertises no client URL to build a discovery URL\n")
    token = new_token()
    write = parse_key_request("PUT", size_key(token),
                              Form([("value", str(size)), ("prevExist", "false")]))
    outcome = await api.proposer.propose(write.command(time.time_ns()))
    if isinstance(outcome, EtcdError):
        return _text(503 if outcome.status >= 500 else 500,
                     f"could not create the discovery token: {outcome}\n")
    return _text(200, discovery_url(client_urls[0], token))
