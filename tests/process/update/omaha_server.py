"""A small Omaha server for engine tests: answers checks, serves one payload.

It listens on 127.0.0.1 (or a test bridge's address), answers the way Nebraska lays out
its answers (one ``<app>``, ``<updatecheck>`` with ``urls`` and a ``manifest``), records
every request it got (kinds and event codes, parsed from the XML the engine really sent)
and serves the payload with HTTP ranges. Faults are set per test: an HTTP status for
checks, or a download that stalls after some bytes.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import ssl
import threading
import xml.etree.ElementTree as ET
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclasses.dataclass
class Seen:
    """One request the server got: its kind and the fields a test asserts on."""

    kind: str  # "check", "event", "ping"
    installsource: str = ""
    events: list[tuple[int, int, int]] = dataclasses.field(default_factory=list)
    previous_version: str | None = None


class OmahaServer:
    def __init__(self, host: str = "127.0.0.1", *, tls: ssl.SSLContext | None = None,
                 download_auth: str | None = None) -> None:
        self.host = host
        self.scheme = "https" if tls is not None else "http"
        #: ``user:password`` payload downloads must carry (HTTP basic auth), or None
        self.download_auth = download_auth
        self.payload: bytes | None = None
        self.version = "2.0.0"
        self.check_status = 200
        #: a download stalls after this many bytes (once each), as a cut link does: the
        #: client has read everything before the stall when its read timeout fires
        self.stall_after: list[int] = []
        self.released = threading.Event()  # ends every stall (set when the server stops)
        self.max_failures = 10
        self.seen: list[Seen] = []
        self.ranges: list[int] = []  # start offsets of payload requests
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer((host, 0), self._handler())
        if tls is not None:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.httpd.server_address[1]}"

    def __enter__(self) -> OmahaServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.released.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)

    def kinds(self) -> list[str]:
        with self.lock:
            return [s.kind for s in self.seen]

    def events(self) -> list[tuple[int, int, int]]:
        with self.lock:
            return [e for s in self.seen if s.kind == "event" for e in s.events]

    # ------------------------------------------------------------------ answers

    def answer(self, seen: Seen) -> bytes:
        head = '<?xml version="1.0" encoding="UTF-8"?><response protocol="3.0" server="test">'
        if seen.kind != "check":
            return (head + '<daystart elapsed_seconds="0"></daystart><app appid='
                    '"{e96281a6-d1af-4bde-9a0a-97b76e56dc57}" status="ok"></app></response>'
                    ).encode()
        app = '<app appid="{e96281a6-d1af-4bde-9a0a-97b76e56dc57}" status="ok">'
        if self.payload is None:
            check = '<updatecheck status="noupdate"></updatecheck>'
        else:
            sha256 = base64.b64encode(hashlib.sha256(self.payload).digest()).decode()
            sha1 = base64.b64encode(hashlib.sha1(self.payload).digest()).decode()
            check = (f'<updatecheck status="ok"><urls><url codebase="{self.url}/payloads/">'
                     f'</url></urls><manifest version="{self.version}"><packages>'
                     f'<package name="update.gz" hash="{sha1}" size="{len(self.payload)}" '
                     'required="true"></package></packages><actions>'
                     f'<action event="postinstall" sha256="{sha256}" '
                     f'MaxFailureCountPerUrl="{self.max_failures}"></action>'
                     '</actions></manifest></updatecheck>')
        return (head + '<daystart elapsed_seconds="0"></daystart>' + app + check
                + "</app></response>").encode()

    @staticmethod
    def parse(body: bytes) -> Seen:
        root = ET.fromstring(body)
        app = root.find("app")
        assert app is not None, body
        events = [(int(e.get("eventtype", "0")), int(e.get("eventresult", "0")),
                   int(e.get("errorcode", "0"))) for e in app.findall("event")]
        previous = next((e.get("previousversion") for e in app.findall("event")
                         if e.get("previousversion") is not None), None)
        if app.find("updatecheck") is not None:
            kind = "check"
        elif events:
            kind = "event"
        else:
            kind = "ping"
        return Seen(kind, root.get("installsource", ""), events, previous)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                seen = server.parse(body)
                with server.lock:
                    server.seen.append(seen)
                if seen.kind == "check" and server.check_status != 200:
                    self.send_response(server.check_status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                answer = server.answer(seen)
                self.send_response(200)
                self.send_header("Content-Type", "text/xml")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def do_GET(self) -> None:
                payload = server.payload
                if payload is None or not self.path.startswith("/payloads/update.gz"):
                    self.send_error(404)
                    return
                if server.download_auth is not None:
                    wanted = "Basic " + base64.b64encode(server.download_auth.encode()).decode()
                    if self.headers.get("Authorization") != wanted:
                        self.send_response(401)
                        self.send_header("WWW-Authenticate", 'Basic realm="payloads"')
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                start = 0
                ranged = self.headers.get("Range", "")
                if ranged.startswith("bytes="):
                    start = int(ranged[6:].split("-")[0])
                with server.lock:
                    server.ranges.append(start)
                    cut = server.stall_after.pop(0) if server.stall_after else None
                self.send_response(206 if start else 200)
                if start:
                    self.send_header("Content-Range",
                                     f"bytes {start}-{len(payload) - 1}/{len(payload)}")
                self.send_header("Content-Length", str(len(payload) - start))
                self.end_headers()
                body = payload[start:] if cut is None else payload[start:start + cut]
                self.wfile.write(body)
                if cut is not None:
                    self.wfile.flush()
                    server.released.wait(60)  # bounded: the client times out long before
                    self.close_connection = True
                    self.connection.shutdown(2)

        return Handler
