"""Faults injected into a running three-member cluster while clients work.

Each nemesis is a context manager running its schedule in a thread until the block
ends, and it always leaves the cluster whole: killed members restarted, frozen members
continued, iptables rules removed (also at interpreter exit, should a test be torn
down abruptly). Only a minority (one member) is ever faulty at a time.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import random
import signal
import subprocess
import threading
from dataclasses import dataclass, field

from tests.process.kv_cluster.harness import Cluster, Member


@dataclass
class Nemesis:
    """Base: a thread that runs :meth:`_schedule` and records what it did."""

    cluster: Cluster
    seed: int = 0
    stop: threading.Event = field(default_factory=threading.Event)
    events: list[str] = field(default_factory=list)
    error: BaseException | None = None
    _thread: threading.Thread | None = None

    def __enter__(self) -> Nemesis:
        self._thread = threading.Thread(target=self._guarded, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        if self._thread is not None:
            self._thread.join(60)
        self.heal()
        if self.error is not None:
            raise AssertionError(f"nemesis failed after {self.events}") from self.error

    def _guarded(self) -> None:
        try:
            self._schedule(random.Random(self.seed))
        except BaseException as exc:  # reported by __exit__ on the test's thread
            self.error = exc

    def _schedule(self, rng: random.Random) -> None:
        raise NotImplementedError

    def heal(self) -> None:
        """Undo any fault still in place."""

    def _victim(self, rng: random.Random, round_: int) -> Member:
        """The leader on even rounds (the interesting case), a random member otherwise."""
        if round_ % 2 == 0:
            return self.cluster.leader(timeout=20.0)
        return rng.choice(self.cluster.members)


@dataclass
class Killer(Nemesis):
    """SIGKILL one member, let the others carry on, restart it from its data dir."""

    down_s: float = 1.5
    between_s: float = 1.5

    def _schedule(self, rng: random.Random) -> None:
        round_ = 0
        while not self.stop.wait(self.between_s):
            victim = self._victim(rng, round_)
            victim.kill()
            self.events.append(f"kill {victim.name}")
            self.stop.wait(self.down_s)
            victim.start()
            self.cluster.wait_serving(victim)
            self.events.append(f"restart {victim.name}")
            round_ += 1

    def heal(self) -> None:
        for m in self.cluster.members:
            if not m.alive:
                m.start()
                self.cluster.wait_serving(m)


@dataclass
class Pauser(Nemesis):
    """SIGSTOP the leader long enough for an election, then SIGCONT it."""

    paused_s: float = 3.0
    between_s: float = 2.0
    _paused: set[int] = field(default_factory=set)

    def _schedule(self, rng: random.Random) -> None:
        while not self.stop.wait(self.between_s):
            leader = self.cluster.leader(timeout=20.0)
            assert leader.proc is not None
            os.kill(leader.proc.pid, signal.SIGSTOP)
            self._paused.add(leader.proc.pid)
            self.events.append(f"pause {leader.name}")
            self.stop.wait(self.paused_s)
            os.kill(leader.proc.pid, signal.SIGCONT)
            self._paused.discard(leader.proc.pid)
            self.events.append(f"continue {leader.name}")

    def heal(self) -> None:
        for pid in list(self._paused):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
            self._paused.discard(pid)


def iptables(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["iptables", "-w", "5", *args], capture_output=True, text=True,
                          check=False, timeout=30)


def iptables_rules() -> list[str]:
    result = iptables("-S")
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def install_chain(chain: str) -> None:
    """Create ``chain`` and jump to it from INPUT (removed again if either step fails)."""
    for argv in (("-N", chain), ("-I", "INPUT", "-j", chain)):
        result = iptables(*argv)
        if result.returncode != 0:
            remove_chain(chain)
            raise AssertionError(f"iptables {' '.join(argv)}: {result.stderr}")


def remove_chain(chain: str) -> None:
    """Delete the jump to ``chain`` and the chain itself; safe to call twice."""
    while iptables("-D", "INPUT", "-j", chain).returncode == 0:
        pass
    iptables("-F", chain)
    iptables("-X", chain)


@dataclass
class Partitioner(Nemesis):
    """Cut the Raft traffic between one member and the other two, then heal.

    Rules live in a chain of our own, jumped to from INPUT (a drop there looks like a
    lossy network to the sender, where a drop in OUTPUT would fail its send at once).
    They match only the members' peer ports, so clients still reach every member: the
    isolated one must refuse or delay what it cannot serve linearizably.
    """

    cut_s: float = 3.0
    between_s: float = 2.0
    only: Member | None = None
    chain: str = field(default_factory=lambda: f"FLT-LINCHK-{os.getpid()}")
    installed: bool = False

    def __enter__(self) -> Partitioner:
        self.install()
        return super().__enter__()  # type: ignore[return-value]

    def install(self) -> None:
        install_chain(self.chain)
        self.installed = True
        atexit.register(self.remove)

    def remove(self) -> None:
        """Deletes the jump and the chain; safe to call twice."""
        remove_chain(self.chain)
        self.installed = False

    def isolate(self, member: Member) -> None:
        ports = ",".join(str(m.peer_port) for m in self.cluster.members)
        for other in self.cluster.members:
            if other is member:
                continue
            for src, dst in ((member.host, other.host), (other.host, member.host)):
                result = iptables("-A", self.chain, "-p", "tcp", "-s", src, "-d", dst,
                                  "-m", "multiport", "--ports", ports, "-j", "DROP")
                assert result.returncode == 0, result.stderr
        self.events.append(f"isolate {member.name}")

    def heal(self) -> None:
        if self.installed:
            iptables("-F", self.chain)

    def __exit__(self, *exc: object) -> None:
        try:
            super().__exit__(*exc)
        finally:
            self.remove()
            atexit.unregister(self.remove)

    def _schedule(self, rng: random.Random) -> None:
        round_ = 0
        while not self.stop.wait(self.between_s):
            victim = self.only or self._victim(rng, round_)
            self.isolate(victim)
            self.stop.wait(self.cut_s)
            iptables("-F", self.chain)
            self.events.append("heal")
            round_ += 1
