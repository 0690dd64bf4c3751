"""flotilla-update-server as a real process on 127.0.0.1, and the calls tests make to it.

The server is started the way systemd starts it: ``NOTIFY_SOCKET`` points at a datagram
socket the harness reads, and the server counts as up only after it sent ``READY=1``. It
is stopped with SIGTERM, and its exit status is returned so tests can assert a clean stop.
"""

from __future__ import annotations

import base64
import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import requests

from tests.conditions import free_port

REPO = Path(__file__).resolve().parents[3]
APP_ID = "{e96281a6-d1af-4bde-9a0a-97b76e56dc57}"
APP_PATH = "/api/apps/e96281a6-d1af-4bde-9a0a-97b76e56dc57"


class Server:
    """One server process; ``db`` may be shared with another Server."""

    def __init__(self, workdir: Path, *, db: Path | None = None, token: str | None = None,
                 name: str = "server") -> None:
        self.workdir = workdir
        self.db = db or workdir / "updates.db"
        self.token = token
        self.name = name
        self.port = free_port("127.0.0.1")
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.ready_lines: list[str] = []
        self.session = requests.Session()

    def start(self, timeout: float = 30) -> Server:
        notify_path = self.workdir / f"{self.name}.notify"
        notify_path.unlink(missing_ok=True)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(str(notify_path))
        argv = [sys.executable, "-m", "flotilla.daemons.updateserver", "--listen",
                f"127.0.0.1:{self.port}", "--db", str(self.db),
                "--payload-dir", str(self.workdir / "payloads")]
        if self.token is not None:
            token_file = self.workdir / f"{self.name}.token"
            token_file.write_text(self.token + "\n")
            argv += ["--token-file", str(token_file)]
        env = {k: v for k, v in os.environ.items() if k not in ("LISTEN_FDS", "LISTEN_PID")}
        env["NOTIFY_SOCKET"] = str(notify_path)
        log = open(self.workdir / f"{self.name}.log", "ab")  # noqa: SIM115 (the child keeps it)
        self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env,
                                     cwd=REPO, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        try:
            while "READY=1" not in self.ready_lines:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"the server exited {self.proc.returncode}: "
                                       + self.log())
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no READY=1 within {timeout}s: {self.log()}")
                sock.settimeout(min(left, 0.5))
                try:
                    self.ready_lines += sock.recv(4096).decode().split("\n")
                except TimeoutError:
                    continue
        except BaseException:
            self.stop()
            raise
        finally:
            sock.close()
        return self

    def log(self) -> str:
        path = self.workdir / f"{self.name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self, timeout: float = 20) -> int | None:
        """SIGTERM, then the exit status (SIGKILL and None if it does not stop in time)."""
        self.session.close()
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
                return None
        return self.proc.returncode

    # ------------------------------------------------------------------ calls

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def api(self, method: str, path: str, body: Any = None, *, expect: int | None = None,
            **kwargs: Any) -> Any:
        headers = kwargs.pop("headers", self.headers())
        reply = self.session.request(method, self.url + path, json=body, headers=headers,
                                     timeout=30, **kwargs)
        if expect is not None:
            assert reply.status_code == expect, (method, path, reply.status_code, reply.text)
        if not reply.content:
            return None
        return reply.json()

    def omaha(self, body: bytes, path: str = "/v1/update/") -> requests.Response:
        return self.session.post(self.url + path, data=body, timeout=30,
                                 headers={"Content-Type": "text/xml"})


def setup_flatcar(server: Server, payload: bytes, *, version: str = "2.0.0",
                  track: str = "stable", **policy: Any) -> dict[str, Any]:
    """The OS app, one stored package, a channel on it and a group, through the API."""
    apps = server.api("GET", "/api/apps", expect=200)
    if not any(a["id"] == APP_ID.strip("{}") for a in apps["applications"]):
        server.api("POST", "/api/apps", {"id": APP_ID, "name": "Flatcar"}, expect=201)
    package = server.api("POST", APP_PATH + "/packages",
                         {"version": version, "filename": "update.gz"}, expect=201)
    package = server.api("PUT", f"{APP_PATH}/packages/{package['id']}/payload",
                         data=payload, expect=200)
    channel = server.api("POST", APP_PATH + "/channels",
                         {"name": track, "package_id": package["id"]}, expect=201)
    group = server.api("POST", APP_PATH + "/groups", {
        "name": track.capitalize(), "track": track, "channel_id": channel["id"],
        "policy_max_updates_per_period": 999999, "policy_period_interval": "1 minutes",
        "policy_timezone": "UTC", "policy_update_timeout": "60 minutes", **policy},
        expect=201)
    return {"package": package, "channel": channel, "group": group}


def digests(payload: bytes) -> tuple[str, str]:
    """(base64 SHA-1, base64 SHA-256) as Omaha carries them."""
    return (base64.b64encode(hashlib.sha1(payload).digest()).decode(),
            base64.b64encode(hashlib.sha256(payload).digest()).decode())
