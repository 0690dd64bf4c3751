"""Fetching resources: data, file and http(s) URLs, with gzip and hash verification.

Every fetched resource is decompressed (``compression: gzip``) and its
``verification.hash`` checked against the decompressed bytes before anything uses it.
HTTP follows Ignition's habits: 5xx answers and connection failures are retried with a
backoff that starts at 100 ms and doubles up to 5 s; any answer below 500 is final; custom
headers override the defaults but are not sent again after a redirect; CA bundles from
``ignition.security.tls.certificateAuthorities`` are trusted in addition to the system's.
The clock and sleep are passed in, so tests bound the retries without waiting.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import ssl
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flotilla.ignition import urls

USER_AGENT = "Ignition/2.14.0 flotilla-ignition"
BACKOFF_START = 0.1
BACKOFF_MAX = 5.0
MAX_REDIRECTS = 10


class FetchError(Exception):
    pass


@dataclass
class HttpPolicy:
    """Timeouts and retry bounds; ``max_attempts`` 0 means retry until ``total`` expires."""

    response_headers: float = 10.0
    total: float = 0.0
    max_attempts: int = 0
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic


def backoff_delays(limit: int) -> list[float]:
    """The first ``limit`` waits between attempts: 0.1 s doubling, capped at 5 s."""
    delays, delay = [], BACKOFF_START
    for _ in range(limit):
        delays.append(delay)
        delay = min(delay * 2, BACKOFF_MAX)
    return delays


@dataclass
class Fetcher:
    policy: HttpPolicy = field(default_factory=HttpPolicy)
    ca_pems: list[bytes] = field(default_factory=list)
    allow_file: bool = False
    log: Callable[[str], None] = lambda message: None

    @classmethod
    def for_config(cls, config: dict[str, Any], **kwargs: Any) -> Fetcher:
        """A fetcher honouring the config's timeouts and CA bundles."""
        timeouts = config.get("ignition", {}).get("timeouts", {})
        policy = kwargs.pop("policy", None) or HttpPolicy()
        if timeouts.get("httpResponseHeaders"):
            policy.response_headers = float(timeouts["httpResponseHeaders"])
        if timeouts.get("httpTotal"):
            policy.total = float(timeouts["httpTotal"])
        fetcher = cls(policy=policy, **kwargs)
        cas = config.get("ignition", {}).get("security", {}).get("tls", {}).get(
            "certificateAuthorities", [])
        fetcher.ca_pems = [fetcher.fetch(ca) for ca in cas]
        return fetcher

    def fetch(self, resource: dict[str, Any]) -> bytes:
        """Raw bytes of a resource, decompressed and verified; b'' for no source."""
        source = resource.get("source") or ""
        data = self.fetch_url(source, resource.get("httpHeaders", [])) if source else b""
        if resource.get("compression") == "gzip":
            try:
                data = gzip.decompress(data)
            except (OSError, EOFError) as exc:
                raise FetchError(f"{_redact(source)}: gzip decompression failed: {exc}") from None
        digest = resource.get("verification", {}).get("hash")
        if digest:
            verify(data, digest, source)
        return data

    def fetch_url(self, url: str, headers: list[dict[str, Any]] | None = None) -> bytes:
        try:
            urls.validate(url, allow_file=self.allow_file)
        except urls.URLError as exc:
            raise FetchError(f"{_redact(url)}: {exc}") from None
        scheme = urls.scheme_of(url)
        if scheme == "data":
            return urls.decode_data_url(url)
        if scheme == "file":
            path = urllib.parse.unquote(urllib.parse.urlsplit(url).path)
            try:
                with open(path, "rb") as handle:
                    return handle.read()
            except OSError as exc:
                raise FetchError(f"{url}: {exc.strerror}") from None
        if scheme in ("http", "https"):
            return self._http(url, headers or [])
        raise FetchError(f"{_redact(url)}: fetching {scheme} URLs is not supported")

    def _ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        for pem in self.ca_pems:
            context.load_verify_locations(cadata=pem.decode("ascii", errors="replace"))
        return context

    def _http(self, url: str, custom: list[dict[str, Any]]) -> bytes:
        policy = self.policy
        deadline = policy.clock() + policy.total if policy.total else None
        delay = BACKOFF_START
        attempt = 0
        while True:
            attempt += 1
            try:
                status, body = self._http_once(url, custom)
            except (OSError, http.client.HTTPException) as exc:
                status, body, problem = 0, b"", str(exc)
            else:
                problem = f"HTTP {status}"
                if status < 500:
                    if 200 <= status < 300:
                        return body
                    raise FetchError(f"{_redact(url)}: server answered {status}")
            self.log(f"GET {_redact(url)}: attempt #{attempt} failed: {problem}")
            out_of_attempts = policy.max_attempts and attempt >= policy.max_attempts
            out_of_time = deadline is not None and policy.clock() + delay > deadline
            if out_of_attempts or out_of_time:
                raise FetchError(f"{_redact(url)}: giving up after {attempt} attempts: {problem}")
            policy.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX)

    def _http_once(self, url: str, custom: list[dict[str, Any]]) -> tuple[int, bytes]:
        headers = {"User-Agent": USER_AGENT, "Accept": "*/*", "Accept-Encoding": "identity"}
        for header in custom:
            headers[header["name"]] = header.get("value", "")
        for _ in range(MAX_REDIRECTS):
            parts = urllib.parse.urlsplit(url)
            timeout = self.policy.response_headers or None
            if parts.scheme == "https":
                conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                    parts.hostname or "", parts.port, timeout=timeout, context=self._ssl_context())
            else:
                conn = http.client.HTTPConnection(parts.hostname or "", parts.port,
                                                  timeout=timeout)
            target = parts.path or "/"
            if parts.query:
                target += "?" + parts.query
            try:
                conn.request("GET", target, headers=headers)
                response = conn.getresponse()
                body = response.read()
                location = response.getheader("Location")
                status = response.status
            finally:
                conn.close()
            if status in (301, 302, 303, 307, 308) and location:
                url = urllib.parse.urljoin(url, location)
                # Custom headers stay with the first request, as upstream does.
                headers = {"User-Agent": USER_AGENT, "Accept": "*/*",
                           "Accept-Encoding": "identity"}
                continue
            return status, body
        raise FetchError(f"{_redact(url)}: too many redirects")


def verify(data: bytes, spec: str, source: str = "") -> None:
    function, _, expected = spec.partition("-")
    if function not in ("sha256", "sha512"):
        raise FetchError(f"unrecognized hash function {function}")
    actual = hashlib.new(function, data).hexdigest()
    if actual != expected.lower():
        raise FetchError(
            f"{_redact(source)}: hash mismatch: expected {expected}, got {actual}")


def _redact(url: str) -> str:
    """Data URLs can be huge and hold secrets: never print their payload."""
    if url.startswith("data:"):
        return "data URL"
    return url


def read_cmdline_url(cmdline_path: str = "/proc/cmdline") -> str | None:
    """``ignition.config.url=`` from the kernel command line, if present."""
    try:
        with open(cmdline_path, encoding="utf-8") as handle:
            words = handle.read().split()
    except OSError:
        return None
    found = None
    for word in words:
        name, _, value = word.partition("=")
        if name == "ignition.config.url" and value:
            found = value
    return found


def exists(path: str) -> bool:
    return os.path.exists(path)
