"""The engine's three kinds of I/O: its prefs on disk, the A/B disk, and HTTP to the server.

Each is a small class the engine (``engine.py``) is given, so a process test can point
them at a temp directory, a GPT image on a loop device and a server on 127.0.0.1.

- :class:`Prefs` keeps update_engine's pref layout, one small file per key under
  ``/var/lib/update_engine/prefs``, each replaced durably.
- :class:`UsrDisk` finds the disk that holds the USR slots (``USR_DEVICE``, else the block
  device whose GPT has the running slot), writes a payload's partition writes into the
  passive slot at its extent, hashes what was written and flips the gptprio attributes.
- :class:`OmahaHttp` posts requests and streams payloads with aiohttp: a CA bundle of
  the admin's (``SERVER_CA_FILE``), the proxy from ``HTTPS_PROXY``/``HTTP_PROXY`` as
  update_engine honours it, basic auth for downloads (``DOWNLOAD_USER``), ranged
  requests to resume, and bounded timeouts on every step.
"""

from __future__ import annotations

import base64
import hashlib
import os
import ssl
from collections.abc import AsyncIterator, Iterable, Mapping
from pathlib import Path

import aiohttp

from .. import durable
from . import disk as disk_io
from . import gpt
from .gptprio import Slot

PREF_KEY_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_")
HASH_CHUNK = 1 << 20
#: an answer past this is no Omaha answer (parse_response refuses past 1 MiB anyway)
MAX_ANSWER_BYTES = 2 << 20


class Prefs:
    """update_engine's prefs: ``<dir>/<key>`` holds the value, absent means unset."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _path(self, key: str) -> Path:
        if not key or not set(key) <= PREF_KEY_CHARS:
            raise ValueError(f"pref key {key!r}: lower-case letters, digits, - and _ only")
        return self.directory / key

    def get(self, key: str) -> bytes | None:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            return None

    def get_text(self, key: str) -> str | None:
        raw = self.get(key)
        return None if raw is None else raw.decode("utf-8", "replace").strip()

    def set(self, key: str, value: bytes | str) -> None:
        durable.write_atomic(self._path(key), value, mode=0o600)

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink()
        except FileNotFoundError:
            return
        durable.fsync_dir(self.directory)


# ------------------------------------------------------------------ the disk

def read_cmdline(proc: Path = Path("/proc"), run: Path = Path("/run")) -> str:
    """The command line init got: the kernel's, or PID 1's own inside a container,
    which is where systemd itself reads ``mount.usr=`` from in one."""
    if (run / "systemd" / "container").exists():
        try:
            return (proc / "1" / "cmdline").read_bytes().replace(b"\0", b" ").decode(
                "utf-8", "replace")
        except OSError:
            pass
    try:
        return (proc / "cmdline").read_text("utf-8", "replace")
    except OSError:
        return ""


def candidate_disks(sys_block: Path = Path("/sys/block"), dev: Path = Path("/dev")
                    ) -> list[str]:
    """Whole block devices that have a node in /dev (loop devices last, as they are
    where test images live and rarely where a real machine's /usr does)."""
    try:
        names = sorted(p.name for p in sys_block.iterdir())
    except OSError:
        return []
    found = [str(dev / n) for n in names if (dev / n).exists()]
    return sorted(found, key=lambda path: "/loop" in path)


def find_usr_disk(uuid: str, candidates: Iterable[str]) -> str | None:
    """The first disk whose GPT has a USR partition with PARTUUID ``uuid``."""
    for path in candidates:
        try:
            table = disk_io.read_table(path)
        except (OSError, gpt.GptError):
            continue
        if any(s.is_usr and s.uuid.lower() == uuid.lower() for s in table.slots):
            return path
    return None


class UsrDisk:
    """The disk with the USR slots; every write to it is synced before it counts."""

    def __init__(self, path: str) -> None:
        self.path = path

    def table(self) -> gpt.Table:
        return disk_io.read_table(self.path)

    def slots(self) -> tuple[Slot, ...]:
        return self.table().slots

    def open_slot(self, number: int) -> SlotWriter:
        offset, size = self.table().extent(number)
        return SlotWriter(self.path, offset, size)

    def set_attributes(self, attributes: Mapping[int, int]) -> tuple[Slot, ...]:
        return disk_io.set_attributes(self.path, attributes).slots


class SlotWriter:
    """Writes confined to one partition's extent of the disk (a payload's writes are
    partition-relative; the reader already refused extents past the partition)."""

    def __init__(self, disk_path: str, offset: int, size: int) -> None:
        self.offset = offset
        self.size = size
        self.fd = os.open(disk_path, os.O_RDWR | os.O_CLOEXEC)

    def write(self, offset: int, data: bytes) -> None:
        if offset < 0 or offset + len(data) > self.size:
            raise ValueError(f"write of {len(data)} bytes at {offset} leaves the "
                             f"{self.size}-byte partition")
        view = memoryview(data)
        where = self.offset + offset
        while view:
            done = os.pwrite(self.fd, view, where)
            view, where = view[done:], where + done

    def sync(self) -> None:
        os.fsync(self.fd)

    def sha256(self, length: int) -> bytes:
        """SHA-256 of the partition's first ``length`` bytes, read back from the disk."""
        if length > self.size:
            raise ValueError(f"{length} bytes asked of a {self.size}-byte partition")
        digest = hashlib.sha256()
        done = 0
        while done < length:
            chunk = os.pread(self.fd, min(HASH_CHUNK, length - done), self.offset + done)
            if not chunk:
                raise OSError(f"partition ended after {done} bytes")
            digest.update(chunk)
            done += len(chunk)
        return digest.digest()

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


# ------------------------------------------------------------------ HTTP

class HttpFailure(Exception):
    """A request that got no usable answer: ``status`` is the HTTP status, 0 for none."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class OmahaHttp:
    """Posts Omaha requests and streams payloads; one session, closed with :meth:`close`."""

    def __init__(self, *, ca_file: str = "", user: str = "", password: str = "",
                 request_timeout: float = 60.0, read_timeout: float = 60.0,
                 chunk_size: int = 1 << 20) -> None:
        self._ssl: ssl.SSLContext | bool = True
        if ca_file:
            self._ssl = ssl.create_default_context(cafile=ca_file)
        #: HTTP basic auth for payloads only (the Omaha endpoint stays anonymous)
        self._download_headers: dict[str, str] = {}
        if user:
            token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
            self._download_headers["Authorization"] = f"Basic {token}"
        self.request_timeout = request_timeout
        self.read_timeout = read_timeout
        self.chunk_size = chunk_size
        self._session: aiohttp.ClientSession | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # trust_env: HTTPS_PROXY/HTTP_PROXY/NO_PROXY, as update_engine honours them
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._ssl), trust_env=True)
        return self._session

    async def post(self, url: str, body: bytes) -> bytes:
        """The server's answer to one request; HttpFailure when there is none."""
        timeout = aiohttp.ClientTimeout(total=self.request_timeout)
        try:
            async with self._get_session().post(
                    url, data=body, timeout=timeout,
                    headers={"Content-Type": "text/xml"}) as response:
                if response.status != 200:
                    raise HttpFailure(response.status, f"{url} answered HTTP {response.status}")
                payload = bytearray()
                async for chunk in response.content.iter_chunked(1 << 16):
                    payload += chunk
                    if len(payload) > MAX_ANSWER_BYTES:
                        raise HttpFailure(response.status, f"{url} answered more than "
                                          f"{MAX_ANSWER_BYTES} bytes")
                return bytes(payload)
        except (aiohttp.ClientError, TimeoutError, OSError) as err:
            raise HttpFailure(0, f"{url}: {err or type(err).__name__}") from err

    async def download(self, url: str, offset: int, total: int) -> AsyncIterator[bytes]:
        """The payload's bytes from ``offset`` on; a server that ignores the range
        (200 instead of 206 for a non-zero offset) is an error, never a silent restart."""
        headers = dict(self._download_headers)
        if offset:
            headers["Range"] = f"bytes={offset}-"
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.request_timeout,
                                        sock_read=self.read_timeout)
        try:
            async with self._get_session().get(url, headers=headers,
                                               timeout=timeout) as response:
                if response.status not in (200, 206) or (offset and response.status != 206):
                    raise HttpFailure(response.status,
                                      f"{url} answered HTTP {response.status} for bytes "
                                      f"{offset}-{total - 1}")
                async for chunk in response.content.iter_chunked(self.chunk_size):
                    yield chunk
        except (aiohttp.ClientError, TimeoutError, OSError) as err:
            raise HttpFailure(0, f"{url}: {err or type(err).__name__}") from err

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
