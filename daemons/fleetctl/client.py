"""A small synchronous client for the fleet API v1, over a unix socket or TCP.

Synchronous because fleetctl runs one request at a time and exits; written on
``http.client`` because ``requests`` cannot reach a unix socket without an extra plugin.
"""

from __future__ import annotations

import http.client
import json
import socket
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

DEFAULT_ENDPOINT = "unix:///var/run/fleet.sock"


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.socket_path)
        self.sock = sock


class FleetClient:
    def __init__(self, endpoint: str = DEFAULT_ENDPOINT, timeout: float = 3.0) -> None:
        self.endpoint = endpoint.split(",")[0].strip()
        self.timeout = timeout
        parts = urlsplit(self.endpoint)
        if parts.scheme == "unix":
            self._connect = lambda: UnixHTTPConnection(parts.path, timeout)
        elif parts.scheme in ("http", "https"):
            cls = (http.client.HTTPSConnection if parts.scheme == "https"
                   else http.client.HTTPConnection)
            self._connect = lambda: cls(parts.netloc, timeout=timeout)
        else:
            raise ValueError(f"--endpoint: unsupported scheme in {endpoint!r}")

    def request(self, method: str, path: str, body: Any = None,
                query: dict[str, str] | None = None) -> tuple[int, Any]:
        url = "/fleet/v1" + path + (f"?{urlencode(query)}" if query else "")
        headers = {}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        connection = self._connect()
        try:
            connection.request(method, url, body=data, headers=headers)
            reply = connection.getresponse()
            raw = reply.read()
        except OSError as error:
            raise ApiError(0, f"unable to reach fleet API at {self.endpoint}: {error}") from None
        finally:
            connection.close()
        payload = None
        if raw:
            try:
                payload = json.loads(raw)
            except ValueError:
                payload = None
        if reply.status >= 400:
            message = raw.decode(errors="replace")
            if isinstance(payload, dict) and isinstance(payload.get("error"), dict):
                message = str(payload["error"].get("message", message))
            raise ApiError(reply.status, message)
        return reply.status, payload

    def _paged(self, path: str, key: str, query: dict[str, str] | None = None) -> list[dict]:
        items: list[dict] = []
        params = dict(query or {})
        while True:
            _, page = self.request("GET", path, query=params or None)
            items.extend(page.get(key) or [])
            token = page.get("nextPageToken")
            if not token:
                return items
            params["nextPageToken"] = token

    def units(self) -> list[dict]:
        return self._paged("/units", "units")

    def unit(self, name: str) -> dict | None:
        try:
            return self.request("GET", f"/units/{quote(name)}")[1]
        except ApiError as error:
            if error.status == 404:
                return None
            raise

    def create_unit(self, name: str, options: list[dict], desired: str) -> None:
        self.request("PUT", f"/units/{quote(name)}",
                     {"name": name, "desiredState": desired, "options": options})

    def set_desired(self, name: str, desired: str) -> None:
        self.request("PUT", f"/units/{quote(name)}", {"name": name, "desiredState": desired})

    def destroy(self, name: str) -> bool:
        try:
            self.request("DELETE", f"/units/{quote(name)}")
        except ApiError as error:
            if error.status == 404:
                return False
            raise
        return True

    def states(self) -> list[dict]:
        return self._paged("/state", "states")

    def machines(self) -> list[dict]:
        return self._paged("/machines", "machines")

    def status(self, name: str) -> dict:
        return self.request("GET", f"/units/{quote(name)}/status")[1]

    def journal(self, name: str, lines: int) -> dict:
        return self.request("GET", f"/units/{quote(name)}/journal",
                            query={"lines": str(lines)})[1]
