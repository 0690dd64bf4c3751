"""Concurrent etcd v2 clients that record every call for the linearizability checker.

Each request uses a fresh connection so the outcome is classified exactly: if the
connection cannot be opened the request was never sent and is left out of the history;
if it was sent but no answer came back (timeout, reset, a member frozen by SIGSTOP) the
outcome is unknown and the operation stays pending to the end of the history. Only
answers the v2 API defines as definite are recorded as known: 2xx, a compare failure
(101), a missing key (100) and an existing key on create (105). Any other error answer
(a proposal timeout, no leader) is also treated as unknown, because the write may still
be committed later.
"""

from __future__ import annotations

import http.client
import json
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from tests.conditions import wait_until
from tests.lincheck import CAS, GET, PUT, Recorder
from tests.process.kv_cluster.harness import Member

KEYS = ("/lin/a", "/lin/b", "/lin/c", "/lin/d")
LOG_DIR = "/lin/log"
REQUEST_TIMEOUT = 4.0
#: Bounds on each client, far above what a test needs: the clients are meant to run until
#: the test stops them, because a client that ran out of operations early would leave
#: the cluster idle and look like a cluster that stopped serving.
MAX_OPS_PER_CLIENT = 50_000
MAX_CLIENT_SECONDS = 120.0


@dataclass
class Answer:
    """How a request ended: ``sent`` False means it never left the client."""

    sent: bool
    status: int | None = None
    body: dict[str, Any] | None = None

    @property
    def error_code(self) -> int | None:
        return None if self.body is None else self.body.get("errorCode")


def call(member: Member, method: str, path: str, form: dict[str, str] | None = None,
         query: dict[str, str] | None = None, timeout: float = REQUEST_TIMEOUT) -> Answer:
    conn = http.client.HTTPConnection(member.host, member.client_port, timeout=timeout)
    try:
        try:
            conn.connect()
        except OSError:
            return Answer(sent=False)
        url = path + ("?" + urlencode(query) if query else "")
        body = urlencode(form) if form is not None else None
        headers = {"Content-Type": "application/x-www-form-urlencoded"} if form else {}
        try:
            conn.request(method, url, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
        except (OSError, http.client.HTTPException):
            return Answer(sent=True)
        try:
            parsed = json.loads(data)
        except ValueError:
            parsed = None
        return Answer(True, resp.status, parsed if isinstance(parsed, dict) else None)
    finally:
        conn.close()


@dataclass
class Workload:
    """Clients doing get / put / compare-and-swap on a few keys against random members.

    ``read_from`` and ``write_to`` restrict which members serve reads and writes (all by
    default); ``read_query`` adds parameters to every read (``quorum=false`` asks for a
    local read). A fifth of the writes go to unique keys under :data:`LOG_DIR`, so that
    durability can be checked key by key at the end.
    """

    recorder: Recorder
    members: list[Member]
    clients: int = 5
    seed: int = 0
    read_from: list[Member] | None = None
    write_to: list[Member] | None = None
    read_query: dict[str, str] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)
    acked_log_keys: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)

    def __enter__(self) -> Workload:
        self._threads = [threading.Thread(target=self._run, args=(c,), daemon=True)
                         for c in range(self.clients)]
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self._threads:
            t.join(REQUEST_TIMEOUT * 3)
        assert not any(t.is_alive() for t in self._threads), "a client did not finish"

    def working(self) -> int:
        """Clients still sending requests (each stops only when told to or at its bounds)."""
        return sum(1 for t in self._threads if t.is_alive())

    def known_writes(self) -> int:
        return sum(1 for op in self.recorder.history() if op.known and op.kind != GET)

    def _run(self, client: int) -> None:
        rng = random.Random(self.seed * 1000 + client)
        last_seen: dict[str, str | None] = {}
        give_up = time.monotonic() + MAX_CLIENT_SECONDS
        for n in range(MAX_OPS_PER_CLIENT):
            if self.stop.is_set() or time.monotonic() > give_up:
                return
            value = f"c{client}-{n}"
            roll = rng.random()
            if roll < 0.4:
                key = rng.choice(KEYS)
                seen = self.get(client, rng.choice(self.read_from or self.members), key)
                if seen is not _UNKNOWN:
                    last_seen[key] = seen
            elif roll < 0.55:
                self.put(client, rng.choice(self.write_to or self.members),
                         f"{LOG_DIR}/{value}", value, log=True)
            elif roll < 0.8:
                self.put(client, rng.choice(self.write_to or self.members),
                         rng.choice(KEYS), value)
            else:
                key = rng.choice(KEYS)
                self.cas(client, rng.choice(self.write_to or self.members), key,
                         last_seen.get(key), value)

    def get(self, client: int, member: Member, key: str) -> Any:
        call_time = self.recorder.begin()
        answer = call(member, "GET", "/v2/keys" + key, query=self.read_query or None)
        if answer.status == 200 and answer.body is not None:
            value = answer.body["node"].get("value")
        elif answer.status == 404 and answer.error_code == 100:
            value = None
        else:
            return _UNKNOWN  # a read without an answer constrains nothing
        self.recorder.end(client, GET, key, None, call_time, value)
        return value

    def put(self, client: int, member: Member, key: str, value: str, log: bool = False
            ) -> None:
        call_time = self.recorder.begin()
        answer = call(member, "PUT", "/v2/keys" + key, form={"value": value})
        if not answer.sent:
            return
        ok = answer.status in (200, 201)
        self.recorder.end(client, PUT, key, value, call_time, None, known=ok)
        if ok and log:
            with self._lock:
                self.acked_log_keys.add(key)

    def cas(self, client: int, member: Member, key: str, expected: str | None, new: str
            ) -> None:
        form = {"value": new}
        if expected is None:
            form["prevExist"] = "false"
        else:
            form["prevValue"] = expected
        call_time = self.recorder.begin()
        answer = call(member, "PUT", "/v2/keys" + key, form=form)
        if not answer.sent:
            return
        if answer.status in (200, 201):
            outcome: bool | None = True
        elif (answer.status, answer.error_code) in ((412, 101), (404, 100), (412, 105)):
            outcome = False
        else:
            outcome = None
        self.recorder.end(client, CAS, key, (expected, new), call_time, outcome,
                          known=outcome is not None)


_UNKNOWN = object()


def final_reads(recorder: Recorder, members: list[Member], deadline_s: float = 30.0) -> None:
    """Linearizable reads of every key from every member once the faults are over.

    They close the history, so a write that was acknowledged and then lost shows up as a
    contradiction between it and these reads.
    """
    workload = Workload(recorder, members)
    for member in members:
        for key in KEYS:
            wait_until(lambda m=member, k=key: workload.get(99, m, k) is not _UNKNOWN,
                       deadline_s, f"{member.name} to answer a read of {key}")


def log_keys_on(member: Member) -> set[str] | None:
    """Every key under :data:`LOG_DIR` by a linearizable read (None without an answer)."""
    answer = call(member, "GET", "/v2/keys" + LOG_DIR, query={"recursive": "true"},
                  timeout=10.0)
    if answer.status == 404:
        return set()
    if answer.status != 200 or answer.body is None:
        return None
    return {node["key"] for node in answer.body["node"].get("nodes", [])}
