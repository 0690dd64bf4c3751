"""Where user-data and metadata come from: a file, a URL, a config drive, an EC2-style
metadata service, or ``cloud-config-url=`` on the kernel command line.

Every source answers ``available()`` (cheap, may be polled) and ``fetch()`` returning the
raw user-data bytes and a :class:`Metadata`. :func:`first_available` polls all sources in
parallel with a doubling backoff and returns the first that is available before a total
deadline, as the original did. HTTP follows the original's client: a per-request timeout,
retries with a doubling backoff for network errors and 5xx, a 4xx means "not there".
``requests`` is imported only when an HTTP source is used, to keep the command's start fast.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


class FetchError(RuntimeError):
    """A source was available but its user-data could not be read."""


@dataclass
class Metadata:
    hostname: str = ""
    public_keys: dict[str, str] = field(default_factory=dict)
    public_ipv4: str = ""
    private_ipv4: str = ""
    public_ipv6: str = ""
    private_ipv6: str = ""

    def addresses(self) -> dict[str, str]:
        return {k: getattr(self, k) for k in
                ("public_ipv4", "private_ipv4", "public_ipv6", "private_ipv6")
                if getattr(self, k)}


class Source(Protocol):
    name: str

    def available(self) -> bool: ...

    def fetch(self) -> tuple[bytes, Metadata]: ...


# ------------------------------------------------------------------------------ HTTP


@dataclass
class HttpPolicy:
    timeout: float = 10.0
    attempts: int = 15
    first_backoff: float = 0.05
    max_backoff: float = 5.0
    sleep: Callable[[float], None] = time.sleep


class NotFound(Exception):
    """The server answered 4xx: the resource is not there (not retried)."""


def http_get(url: str, policy: HttpPolicy, headers: dict[str, str] | None = None) -> bytes:
    """GET with the original's retry rules. Raises NotFound on 4xx, FetchError when all
    attempts failed."""
    if not url.startswith(("http://", "https://")):
        raise FetchError(f"{url}: only http and https URLs are supported")
    import requests

    delay = policy.first_backoff
    last = ""
    for attempt in range(policy.attempts):
        if attempt:
            policy.sleep(delay)
            delay = min(delay * 2, policy.max_backoff)
        try:
            response = requests.get(url, timeout=policy.timeout, headers=headers or {})
        except requests.RequestException as err:
            last = str(err)
            continue
        if 400 <= response.status_code < 500:
            raise NotFound(f"{url}: HTTP {response.status_code}")
        if response.status_code >= 500:
            last = f"HTTP {response.status_code}"
            continue
        return response.content
    raise FetchError(f"{url}: giving up after {policy.attempts} attempts: {last}")


# --------------------------------------------------------------------------- sources


@dataclass
class FileSource:
    path: Path
    name: str = "file"

    def available(self) -> bool:
        return self.path.is_file()

    def fetch(self) -> tuple[bytes, Metadata]:
        try:
            return self.path.read_bytes(), Metadata()
        except OSError as err:
            raise FetchError(f"{self.path}: {err.strerror}") from err


@dataclass
class UrlSource:
    url: str
    policy: HttpPolicy = field(default_factory=HttpPolicy)
    name: str = "url"
    _data: bytes | None = None

    def available(self) -> bool:
        try:
            self._data = http_get(self.url, HttpPolicy(self.policy.timeout, 1))
        except (NotFound, FetchError):
            return False
        return True

    def fetch(self) -> tuple[bytes, Metadata]:
        if self._data is None:
            try:
                self._data = http_get(self.url, self.policy)
            except NotFound as err:
                raise FetchError(str(err)) from err
        return self._data, Metadata()


@dataclass
class ConfigDriveSource:
    """An OpenStack config drive: ``DIR/openstack/latest/{user_data,meta_data.json}``."""

    root: Path
    name: str = "configdrive"

    def available(self) -> bool:
        return (self.root / "openstack").is_dir()

    def fetch(self) -> tuple[bytes, Metadata]:
        base = self.root / "openstack" / "latest"
        user_data = _read_optional(base / "user_data")
        meta = Metadata()
        raw = _read_optional(base / "meta_data.json")
        if raw:
            try:
                doc = json.loads(raw)
            except ValueError as err:
                raise FetchError(f"{base / 'meta_data.json'}: invalid JSON: {err}") from err
            meta.hostname = str(doc.get("hostname", "") or "")
            keys = doc.get("public_keys") or {}
            if isinstance(keys, dict):
                meta.public_keys = {str(k): str(v) for k, v in keys.items()}
        return user_data, meta


def _read_optional(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return b""


def find_config_drive_devices(label: str = "config-2") -> list[str]:
    """Block devices whose filesystem label is ``config-2``.

    udev's view first (pyudev, or its /dev/disk/by-label links). Where udev has not
    probed the device (early boot, a container, no udevd), ``blkid`` reads the
    filesystem labels itself, bypassing its cache."""
    try:
        import pyudev
    except ImportError:
        pyudev = None
    if pyudev is not None:
        context = pyudev.Context()
        found = sorted(dev.device_node for dev in context.list_devices(subsystem="block")
                       if dev.get("ID_FS_LABEL") == label and dev.device_node)
        if found:
            return found
    by_label = Path("/dev/disk/by-label") / label
    if by_label.exists():
        return [str(by_label.resolve())]
    return _blkid_devices(label)


def _blkid_devices(label: str) -> list[str]:
    try:
        result = subprocess.run(["blkid", "-c", "/dev/null", "-t", f"LABEL={label}", "-o",
                                 "device"], capture_output=True, text=True, timeout=30,
                                check=False)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return sorted(line.strip() for line in result.stdout.splitlines() if line.strip())


@dataclass
class MountedConfigDrive:
    """Finds a ``config-2`` device, mounts it read-only for the fetch, unmounts after."""

    devices: Callable[[], list[str]] = find_config_drive_devices
    name: str = "configdrive"

    def available(self) -> bool:
        return bool(self.devices())

    def fetch(self) -> tuple[bytes, Metadata]:
        device = self.devices()[0]
        import tempfile

        mountpoint = tempfile.mkdtemp(prefix="flotilla-configdrive-")
        try:
            result = subprocess.run(["mount", "-o", "ro", device, mountpoint],
                                    capture_output=True, text=True, check=False)
            if result.returncode != 0:
                raise FetchError(f"mount {device}: {result.stderr.strip()}")
            try:
                return ConfigDriveSource(Path(mountpoint)).fetch()
            finally:
                subprocess.run(["umount", mountpoint], check=False, capture_output=True)
        finally:
            # rmdir, never a recursive delete: if the unmount failed, the drive stays intact.
            with contextlib.suppress(OSError):
                os.rmdir(mountpoint)


@dataclass
class Ec2MetadataSource:
    """An EC2-style metadata service (``URL/2009-04-04/...``)."""

    base: str
    policy: HttpPolicy = field(default_factory=HttpPolicy)
    name: str = "ec2-metadata"
    api: str = "2009-04-04"

    def _url(self, path: str) -> str:
        return f"{self.base.rstrip('/')}/{self.api}/{path}"

    def available(self) -> bool:
        try:
            http_get(self._url(""), HttpPolicy(self.policy.timeout, 1))
        except (NotFound, FetchError):
            return False
        return True

    def _get(self, path: str) -> str:
        try:
            return http_get(self._url(path), self.policy).decode(errors="replace")
        except NotFound:
            return ""

    def fetch(self) -> tuple[bytes, Metadata]:
        try:
            user_data = http_get(self._url("user-data"), self.policy)
        except NotFound:
            user_data = b""
        meta = Metadata()
        listing = self._get("meta-data/public-keys")
        for line in listing.splitlines():
            index, _, key_name = line.partition("=")
            if index.strip() and key_name:
                key = self._get(f"meta-data/public-keys/{index.strip()}/openssh-key")
                if key:
                    meta.public_keys[key_name.strip()] = key.strip()
        hostname = self._get("meta-data/hostname").split()
        meta.hostname = hostname[0] if hostname else ""
        meta.private_ipv4 = self._get("meta-data/local-ipv4").strip()
        meta.public_ipv4 = self._get("meta-data/public-ipv4").strip()
        return user_data, meta


def cloud_config_url(cmdline: str) -> str:
    """The last ``cloud-config-url=`` (``_`` and ``-`` alike) on a kernel command line."""
    found = ""
    for word in cmdline.split():
        key, sep, value = word.partition("=")
        if sep and key.replace("_", "-") == "cloud-config-url":
            found = value
    return found


@dataclass
class ProcCmdlineSource:
    cmdline_path: Path = Path("/proc/cmdline")
    policy: HttpPolicy = field(default_factory=HttpPolicy)
    name: str = "proc-cmdline"
    poll_once: bool = True

    def _url(self) -> str:
        try:
            return cloud_config_url(self.cmdline_path.read_text())
        except OSError:
            return ""

    def available(self) -> bool:
        return bool(self._url())

    def fetch(self) -> tuple[bytes, Metadata]:
        url = self._url()
        try:
            return http_get(url, self.policy), Metadata()
        except NotFound as err:
            raise FetchError(str(err)) from err


# ----------------------------------------------------------------------- selection


def first_available(sources: Sequence[Source], deadline: float, *,
                    first_backoff: float = 0.1, max_backoff: float = 30.0,
                    clock: Callable[[], float] = time.monotonic) -> Source | None:
    """Poll every source in parallel; the first one available wins. None at the deadline
    (seconds from now)."""
    end = clock() + deadline
    winner: list[Source] = []
    stop = threading.Event()

    def poll(source: Source) -> None:
        delay = first_backoff
        while not stop.is_set():
            if source.available():
                winner.append(source)
                stop.set()
                return
            if getattr(source, "poll_once", False):
                return
            remaining = end - clock()
            if remaining <= 0:
                return
            stop.wait(min(delay, remaining))
            delay = min(delay * 2, max_backoff)

    if not sources:
        return None
    from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

    with ThreadPoolExecutor(max_workers=len(sources)) as pool:
        futures = [pool.submit(poll, s) for s in sources]
        pending = set(futures)
        while pending and not winner:
            remaining = end - clock()
            if remaining <= 0:
                break
            _done, pending = wait(pending, timeout=remaining, return_when=FIRST_COMPLETED)
        stop.set()
    return winner[0] if winner else None


def merge_metadata_keys(keys: list[str], meta: Metadata) -> list[str]:
    """Metadata SSH keys are appended to the config's keys (sorted by key name, so the
    result is stable where the original's order was random)."""
    return [*keys, *(meta.public_keys[k] for k in sorted(meta.public_keys))]


def environ_addresses(environ: dict[str, str] | None = None) -> dict[str, str]:
    environ = dict(os.environ) if environ is None else environ
    return {k: environ.get(f"COREOS_{k.upper()}", "") for k in
            ("public_ipv4", "private_ipv4", "public_ipv6", "private_ipv6")}
