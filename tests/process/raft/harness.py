"""Real demo Raft members on 127.0.0.x, a load generator, and the end-of-test checks."""

from __future__ import annotations

import datetime
import ipaddress
import itertools
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.conditions import free_port, wait_until

REPO = Path(__file__).resolve().parents[3]
#: the value `Cluster.wait_converged` writes (the only one written more than once)
BARRIER = "final-barrier"


def request(addr: tuple[str, int], obj: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
    """One request on a fresh connection; raises OSError/ValueError on failure."""
    with socket.create_connection(addr, timeout=timeout) as s:
        s.sendall(json.dumps(obj).encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(1 << 20)
            if not chunk:
                raise ConnectionError("closed without a reply")
            buf += chunk
    return json.loads(buf)


@dataclass
class Member:
    node_id: int
    peer: tuple[str, int]
    client: tuple[str, int]
    data_dir: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class Cluster:
    """Processes of `python -m flotilla.daemons.raft.node`, killed for good on close."""

    def __init__(self, root: Path, ids: list[int], *, snapshot_every: int = 10_000,
                 tick_ms: int = 50, extra: list[str] | None = None) -> None:
        self.root = root
        self.members: dict[int, Member] = {}
        self.snapshot_every = snapshot_every
        self.tick_ms = tick_ms
        self.extra = extra or []
        for node_id in ids:
            self.define(node_id)

    def define(self, node_id: int) -> Member:
        host = f"127.0.0.{node_id}"
        m = Member(
            node_id,
            (host, free_port(host)),
            (host, free_port(host)),
            self.root / f"data{node_id}",
            self.root / f"node{node_id}.log",
        )
        self.members[node_id] = m
        return m

    def peers_arg(self, ids: list[int]) -> str:
        return ",".join(f"{i}={self.members[i].peer[0]}:{self.members[i].peer[1]}" for i in ids)

    def start(self, node_id: int, *, join: bool = False, peers: list[int] | None = None) -> None:
        m = self.members[node_id]
        assert not m.alive
        ids = peers if peers is not None else sorted(self.members)
        if node_id not in ids:
            ids = [*ids, node_id]
        cmd = [
            sys.executable, "-m", "flotilla.daemons.raft.node",
            "--id", str(node_id),
            "--peers", self.peers_arg(ids),
            "--data-dir", str(m.data_dir),
            "--client", f"{m.client[0]}:{m.client[1]}",
            "--cluster", "test",
            "--tick-ms", str(self.tick_ms),
            "--snapshot-every", str(self.snapshot_every),
            "--proposal-timeout", "3",
            "--log-level", "INFO",
            *self.extra,
        ]
        if join:
            cmd.append("--join")
        log = open(m.log_path, "ab")  # noqa: SIM115 - handed to the child process
        log.write(f"--- start {m.starts}\n".encode())
        log.flush()
        m.proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        log.close()
        m.starts += 1
        wait_until(lambda: self.status(node_id) is not None, 15, f"node {node_id} to serve")

    def kill(self, node_id: int) -> None:
        m = self.members[node_id]
        if m.proc is not None and m.proc.poll() is None:
            m.proc.send_signal(signal.SIGKILL)
            m.proc.wait(10)

    def close(self) -> None:
        for m in self.members.values():
            if m.proc is not None and m.proc.poll() is None:
                m.proc.send_signal(signal.SIGKILL)
                m.proc.wait(10)

    def status(self, node_id: int) -> dict[str, Any] | None:
        m = self.members[node_id]
        if not m.alive:
            return None
        try:
            return request(m.client, {"op": "status"}, timeout=2)
        except (OSError, ValueError):
            return None

    def leader(self, among: list[int] | None = None) -> int | None:
        """The node that says it leads, if the others alive agree on it."""
        ids = among or [i for i, m in self.members.items() if m.alive]
        sts = [s for s in (self.status(i) for i in ids) if s]
        leaders = {s["id"] for s in sts if s["role"] == "leader"}
        if len(leaders) != 1:
            return None
        (lead,) = leaders
        return lead

    def wait_leader(self, timeout: float = 15, among: list[int] | None = None) -> int:
        return wait_until(lambda: self.leader(among), timeout, "a single leader")

    def values(self, node_id: int, *, linearizable: bool = False) -> tuple[int, list[str]]:
        r = request(self.members[node_id].client, {"op": "values", "linearizable": linearizable})
        return r["applied"], r["values"]

    def wait_converged(self, ids: list[int], timeout: float = 30) -> list[str]:
        """Wait until every node in ``ids`` has applied a new barrier write; return the
        values they agree on, up to at least that barrier.

        The load may still be running. Then no two nodes need ever hold the same log at
        the same instant (each read is a moment on one node, and the next put lands in
        between), so waiting for equal logs would wait on luck. What Raft promises is
        that every applied log is a prefix of the longer ones: so every node must have
        applied the barrier's index and each log must be a prefix of the next. The
        shortest log holds everything acknowledged before the barrier was proposed.
        """

        def barrier() -> int | None:
            lead = self.leader(among=ids)
            if lead is None:
                return None
            try:
                r = request(self.members[lead].client, {"op": "put", "value": BARRIER},
                            timeout=10)
            except (OSError, ValueError):
                return None
            return r["index"] if r.get("ok") else None

        def agreed(index: int) -> list[str] | str:
            try:
                got = {i: self.values(i) for i in ids}
            except (OSError, ValueError) as exc:
                return f"not answering: {exc!r}"
            behind = {i: applied for i, (applied, _) in got.items() if applied < index}
            if behind:
                return f"applied below the barrier at {index}: {behind}"
            logs = sorted((values for _, values in got.values()), key=len)
            for shorter, longer in itertools.pairwise(logs):
                if longer[: len(shorter)] != shorter:
                    raise AssertionError(f"logs diverge: {shorter[-5:]} vs "
                                         f"{longer[len(shorter) - 5 : len(shorter)]}")
            return logs[0]

        index = wait_until(barrier, timeout, f"a barrier write among {ids}", interval=0.2)
        reason = ["no answer yet"]

        def converged() -> list[str] | None:
            result = agreed(index)
            if isinstance(result, str):
                reason[0] = result
                return None
            return result

        try:
            return wait_until(converged, timeout, f"nodes {ids} to converge", interval=0.2)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; {reason[0]}") from None

    def log_text(self, node_id: int) -> str:
        return self.members[node_id].log_path.read_text(errors="replace")


@dataclass
class Load:
    """Client threads proposing unique values to random live nodes."""

    cluster: Cluster
    clients: int = 4
    targets: Callable[[], list[int]] | None = None
    acked: dict[int, list[str]] = field(default_factory=dict)  # per client, in ack order
    attempts: int = 0
    failures: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> Load:
        for c in range(self.clients):
            self.acked[c] = []
            t = threading.Thread(target=self._client, args=(c,), daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def _client(self, c: int) -> None:
        rng = random.Random(c)
        seq = 0
        while not self._stop.is_set():
            ids = self.targets() if self.targets else list(self.cluster.members)
            alive = [i for i in ids if self.cluster.members[i].alive]
            if not alive:
                time.sleep(0.05)
                continue
            node = rng.choice(alive)
            value = f"c{c}-{seq}"
            seq += 1
            with self._lock:
                self.attempts += 1
            try:
                r = request(self.cluster.members[node].client, {"op": "put", "value": value}, 6)
            except (OSError, ValueError):
                r = {"ok": False}
            if r.get("ok"):
                self.acked[c].append(value)
            else:
                with self._lock:
                    self.failures += 1
                time.sleep(0.02)

    def acked_so_far(self) -> dict[int, list[str]]:
        return {c: list(v) for c, v in self.acked.items()}

    @property
    def total_acked(self) -> int:
        return sum(len(v) for v in self.acked.values())

    def wait_progress(self, more: int, timeout: float) -> None:
        target = self.total_acked + more
        wait_until(lambda: self.total_acked >= target, timeout, f"{more} more acknowledged puts")

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(15)
        # A client still running could add acknowledgements after the final read.
        assert not any(t.is_alive() for t in self._threads), "a load client did not stop"


def check_history(
    values: list[str], load: Load, acked: dict[int, list[str]] | None = None
) -> None:
    """Acknowledged = applied exactly once, and each client's acks in its own order.

    While the load still runs, pass ``acked`` as copied *before* the values were read:
    a put acknowledged after that moment is rightly absent from them.
    """
    counts: dict[str, int] = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    dupes = [v for v, n in counts.items() if n > 1 and v != BARRIER]
    assert not dupes, f"applied more than once: {dupes[:10]}"
    position = {v: i for i, v in enumerate(values)}
    for c, client_acked in (acked if acked is not None else load.acked).items():
        missing = [v for v in client_acked if v not in position]
        assert not missing, f"acknowledged but lost: {missing[:10]}"
        order = [position[v] for v in client_acked]
        assert order == sorted(order), f"client {c}: acknowledged puts applied out of order"


def make_ca_and_cert(tmp: Path, name: str, san_ip: str | None = None) -> None:
    """Write ``<name>-ca.pem`` and a peer ``<name>.pem``/``<name>.key`` it signed
    (for ``san_ip`` too, when given, so clients that check the host name accept it)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name}-ca")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name}-peer")]))
        .issuer_name(ca_name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
    )
    if san_ip is not None:
        cert = cert.add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address(san_ip))]), critical=False)
    cert = cert.sign(ca_key, hashes.SHA256())
    (tmp / f"{name}-ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (tmp / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp / f"{name}.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
