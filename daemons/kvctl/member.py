"""``kvctl member list|add|remove|update``: etcdctl v2's member commands, same output.

Scripts run ``etcdctl member add`` and ``eval`` the ``ETCD_*`` lines it prints to start
the new member, and match ``Removed member ... from cluster``; kvctl prints the same
lines. Like etcdctl, a refused change prints the server's message alone on stderr and
exits 1; a member id that is not in the list is caught before anything is sent.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import urlsplit

if TYPE_CHECKING:  # main imports this module; only the type is needed here
    from flotilla.daemons.kvctl.main import Client

EXIT_MEMBER_ERROR = 1


def refuse(message: str) -> NoReturn:
    print(message, file=sys.stderr)
    sys.exit(EXIT_MEMBER_ERROR)


def _message(resp: Any) -> str:
    try:
        return str(resp.json().get("message", resp.text))
    except ValueError:
        return resp.text.strip() or f"HTTP {resp.status_code}"


def check_url(url: str) -> str:
    """The client-side URL checks etcdctl makes before asking the cluster."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https", "unix", "unixs"):
        refuse(f"URL scheme must be http, https, unix, or unixs: {url}")
    host, sep, port = parts.netloc.rpartition(":")
    if not sep or not host or not port.isdigit():
        refuse(f'URL address does not have the form "host:port": {url}')
    if parts.path not in ("", "/"):
        refuse(f"URL must not contain a path: {url}")
    return url


def members(client: Client) -> list[dict[str, Any]]:
    resp = client.request("GET", "/v2/members")
    if resp.status_code != 200:
        refuse(_message(resp))
    return list(resp.json().get("members", []))


def leader_id(client: Client) -> str:
    resp = client.request("GET", "/v2/members/leader")
    try:
        return str(resp.json().get("id", "")) if resp.status_code == 200 else ""
    except ValueError:
        return ""


def member_list(client: Client) -> None:
    leader = leader_id(client)
    for m in members(client):
        peers = ",".join(m.get("peerURLs", []))
        if not m.get("name") and not m.get("clientURLs"):
            print(f"{m['id']}[unstarted]: peerURLs={peers}")
            continue
        print(f"{m['id']}: name={m['name']} peerURLs={peers} "
              f"clientURLs={','.join(m.get('clientURLs', []))} "
              f"isLeader={'true' if m['id'] == leader else 'false'}")


def member_add(client: Client, name: str | None, peer_url: str | None) -> None:
    if not name or not peer_url:
        refuse("Provide a name and a single member peerURL")
    urls = [check_url(u) for u in peer_url.split(",")]
    resp = client.request("POST", "/v2/members", data=json.dumps({"peerURLs": urls}),
                          headers={"Content-Type": "application/json"}, timeout=None)
    if resp.status_code != 201:
        refuse(_message(resp))
    new_id = resp.json()["id"]
    cluster = [f"{name if m['id'] == new_id else m.get('name', '')}={u}"
               for m in members(client) for u in m.get("peerURLs", [])]
    print(f"Added member named {name} with ID {new_id} to cluster\n")
    print(f'ETCD_NAME="{name}"')
    print(f'ETCD_INITIAL_CLUSTER="{",".join(cluster)}"')
    print('ETCD_INITIAL_CLUSTER_STATE="existing"')


def member_remove(client: Client, member_id: str | None) -> None:
    if not member_id:
        refuse("Provide a single member ID")
    if all(m["id"] != member_id for m in members(client)):
        refuse(f"Couldn't find a member in the cluster with an ID of {member_id}.")
    resp = client.request("DELETE", f"/v2/members/{member_id}", timeout=None)
    if resp.status_code != 204:
        refuse(_message(resp))
    print(f"Removed member {member_id} from cluster")


def member_update(client: Client, member_id: str | None, peer_urls: str | None) -> None:
    if not member_id or not peer_urls:
        refuse("Provide an ID and a list of comma separated peerURL "
               "(0xabcd http://example.com,http://example1.com)")
    urls = [check_url(u) for u in peer_urls.split(",")]
    resp = client.request("PUT", f"/v2/members/{member_id}",
                          data=json.dumps({"peerURLs": urls}),
                          headers={"Content-Type": "application/json"}, timeout=None)
    if resp.status_code != 204:
        refuse(_message(resp))
    print(f"Updated member with ID {member_id} in cluster")
