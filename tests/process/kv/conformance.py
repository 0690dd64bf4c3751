"""Side-by-side driver: the same seeded v2 requests to etcd and kvd, answers compared.

Index numbers differ between the servers (etcd spends indexes on membership at startup),
so each server's answers are rebased on the index of a baseline write made first, and
index-valued request parameters are translated the other way. TTLs are long enough
never to expire during a run and are compared within a second; expiry itself is checked
in its own scenario. Children of an unsorted listing are compared as a set because etcd
lists them in Go map order.

Parameter values are usually percent-encoded by the driver, but :class:`Raw` values go on
the wire as written (``%25``, ``+``, ``%2B``, bad escapes, bytes that are not UTF-8) and
:class:`Spelled` ones have their characters percent-escaped, so every parameter of every
action is also exercised in spellings a second decoding would misread (issue #20). Values
that differ only in bytes that are not UTF-8 are never compared with each other: kvd folds
each such byte into U+FFFD while etcd keeps the bytes (a known difference).

A live watch is only followed by its write once both servers have sent the watch's
response headers: both flush them after the watcher is registered, so the headers are the
witness that the write cannot be missed.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import aiohttp

KEYS = ["/a", "/b", "/c", "/dir", "/dir/a", "/dir/b", "/dir/sub", "/dir/sub/c", "/dir/_hid",
        "/_hid", "/q", "/q/x", "/dir/sub/_h/d", "/sp%20ace", "/dir/%C3%BC", "/x%FFy",
        "/dir/a%2Fb"]
DIRS = ["/dir", "/q", "/dir/sub", "/"]


class Raw(str):
    """A parameter value (or name) sent byte for byte; lone surrogates stand for bytes
    that are not UTF-8 (``surrogateescape``), so only bodies may carry them."""


class Spelled(str):
    """A value sent with every other character percent-escaped (``true`` as
    ``t%72u%65``): decoded once it is the plain text, decoded twice it is not."""


VALUES = ["alpha", "beta", "gamma", "", "sp ace", "<&>", "ünï", "a+b=c&d"]
ODD_VALUES = [Raw("50%25"), Raw("a%2541"), Raw("a+b%2Bc"), Raw("sp%20ace+x"), Raw("%25zz"),
              Raw("%2525"), Raw("%FFx%FE"), Raw("%e4%bd"), Raw("%C3%BC%3B%26%3D")]
PREV_VALUES = ["alpha", "beta", "gamma", Raw("50%25"), Raw("a%2541"), Raw("a+b%2Bc"),
               Raw("%FFx%FE"), Raw("%25zz")]
BAD_ESCAPES = [Raw("%zz"), Raw("100%"), Raw("%4"), Raw("a%%41"), Raw("%g0"), Raw('%"a'),
               Raw("%\\x"), Raw("50%2")]
BODY_BYTES = [Raw("x\udcffy"), Raw("\udce4\udcbd"), Raw("ü+%FF"), Raw("%\udcff\udcfe"),
              Raw("%z\udcc3\udca9"), Raw("%\t"), Raw("a;b")]
ODD_PARAMS = ("value", "prevValue", "ttl", "waitIndex", "prevIndex", "dir", "recursive",
              "wait", "prevExist", "sorted", "quorum", "refresh", "noValueOnSuccess")
BOOLS = ["true", "false", "1", "0", "t", "F", "True"]
BAD_BOOLS = ["yes", "2", "", "tru"]
BAD_UINTS = ["-1", "abc", "", "1.5", "18446744073709551616", "+3"]
IDX_PARAMS = ("prevIndex", "waitIndex")
HEADERS_COMPARED = ("Content-Type", "Allow", "Location")

# Indexes in causes: "[prevIndex != modifiedIndex]" and "cleared [oldest/asked]". A value
# compare "[prevValue != value]" looks the same only when both values are numbers, which
# the generator never stores.
_INDEXES_IN_CAUSE = re.compile(r"\[(\d+)( != |/)(\d+)\]")
_EXPIRATION = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z$")
_ORDERED = re.compile(r"/(\d{20})(?=/|$)")


@dataclass
class Target:
    name: str
    url: str
    base: int = 0

    def absolute(self, relative: int) -> int:
        return relative + self.base if relative > 0 else relative

    def relative(self, absolute: int) -> int:
        return absolute - self.base if absolute > self.base else 0 if absolute == 0 else -1


@dataclass
class Op:
    method: str
    path: str
    query: list[tuple[str, str]] = field(default_factory=list)
    body: list[tuple[str, str]] | None = None
    raw_query: str = ""
    content_type: str = "application/x-www-form-urlencoded"
    kind: str = ""

    def describe(self) -> str:
        return f"{self.method} {self.path}?{self.query}{self.raw_query} body={self.body}"


def _spell(text: str) -> str:
    """Every other character percent-escaped, with alternating hex case; spaces as ``+``."""
    out = []
    for i, char in enumerate(text):
        if char == " ":
            out.append("+")
        elif i % 2:
            escaped = quote(char, safe="")
            if escaped == char:
                escaped = "".join(f"%{b:02X}" if i % 4 == 1 else f"%{b:02x}"
                                  for b in char.encode())
            out.append(escaped)
        else:
            out.append(quote(char, safe=""))
    return "".join(out)


def _encode_one(text: str, translated: str) -> str:
    if isinstance(text, Raw):
        return text
    if isinstance(text, Spelled):
        return _spell(translated)
    return quote(translated, safe="")


def _encode(pairs: list[tuple[str, str]], target: Target) -> str:
    out = []
    for name, value in pairs:
        translated = value
        if name in IDX_PARAMS and value.isdigit() and not isinstance(value, Raw):
            translated = str(target.absolute(int(value)))
        out.append(f"{_encode_one(name, name)}={_encode_one(value, translated)}")
    return "&".join(out)


def odd_params(op: Op) -> set[str]:
    """``"METHOD name where"`` for each parameter sent in a :class:`Raw` or
    :class:`Spelled` spelling: which actions the run exercised that way."""
    seen = set()
    for where, pairs in (("query", op.query), ("body", op.body or [])):
        for name, value in pairs:
            if isinstance(value, Raw | Spelled) or isinstance(name, Raw | Spelled):
                seen.add(f"{op.method} {name} {where}")
    return seen


NO_EVENT = b"<no event yet>"


async def send(session: aiohttp.ClientSession, target: Target, op: Op,
               timeout: float = 5.0) -> tuple[int, dict[str, str], bytes]:
    """One request and its whole answer. A history watch that is still waiting 0.4 s after
    its headers arrived (the servers had their history in hand by then) has no event."""
    resp = await open_request(session, target, op, timeout)
    if op.kind == "history-watch":
        return await finish(resp, 0.4, may_wait=True)
    return await finish(resp, timeout)


async def open_request(session: aiohttp.ClientSession, target: Target, op: Op,
                       timeout: float = 5.0) -> aiohttp.ClientResponse:
    """Send ``op`` and return once the response headers are in (the body is not read).

    For a watch the headers are the witness that the server registered the watcher:
    etcd and kvd both flush them right after registering it, before any event."""
    query = _encode(op.query, target)
    if op.raw_query:
        query = f"{query}&{op.raw_query}" if query else op.raw_query
    url = target.url + op.path + (f"?{query}" if query else "")
    data = None
    headers = {}
    if op.body is not None:
        data = _encode(op.body, target).encode("utf-8", "surrogateescape")
        headers["Content-Type"] = op.content_type
    async with asyncio.timeout(timeout):
        return await session.request(op.method, aiohttp.client.URL(url, encoded=True),
                                     data=data, headers=headers, allow_redirects=False,
                                     timeout=aiohttp.ClientTimeout(total=None))


async def finish(resp: aiohttp.ClientResponse, timeout: float = 5.0, *,
                 may_wait: bool = False) -> tuple[int, dict[str, str], bytes]:
    """The status, headers and body of an opened request. A body that does not arrive
    within ``timeout`` seconds raises TimeoutError, or with ``may_wait`` counts as
    :data:`NO_EVENT`: a watch still waiting."""
    try:
        async with asyncio.timeout(timeout):
            body = await resp.read()
    except TimeoutError:
        resp.close()  # the server sees the connection go and drops its watcher
        if not may_wait:
            raise
        return 0, {}, NO_EVENT
    resp.release()
    return resp.status, dict(resp.headers), body


def _rebase_text(text: str, target: Target) -> str:
    return _INDEXES_IN_CAUSE.sub(
        lambda m: f"[{target.relative(int(m.group(1)))}{m.group(2)}"
                  f"{target.relative(int(m.group(3)))}]", text)


def _rebase_key(key: str, target: Target) -> str:
    return _ORDERED.sub(lambda m: f"/<{target.relative(int(m.group(1)))}>", key)


def normalise(value: Any, target: Target, sort_children: bool) -> Any:
    if isinstance(value, list):
        items = [normalise(v, target, sort_children) for v in value]
        if sort_children and all(isinstance(i, dict) for i in items):
            items.sort(key=lambda i: json.dumps(i, sort_keys=True))
        return items
    if not isinstance(value, dict):
        return value
    out: dict[str, Any] = {}
    for name, item in value.items():
        if name in ("createdIndex", "modifiedIndex", "index") and isinstance(item, int):
            out[name] = target.relative(item) if item else 0
        elif name == "key" and isinstance(item, str):
            out[name] = _rebase_key(item, target)
        elif name == "cause" and isinstance(item, str):
            out[name] = _rebase_text(_rebase_key(item, target), target) \
                if ("[" in item) else _rebase_key(item, target)
        elif name == "expiration" and isinstance(item, str):
            out[name] = "<expiration>" if _EXPIRATION.match(item) else item
        else:
            out[name] = normalise(item, target, sort_children)
    return out


def ttl_close(a: Any, b: Any) -> bool:
    """Structural equality where ``ttl`` values may differ by one second."""
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return False
        for name in a:
            if name == "ttl" and isinstance(a[name], int) and isinstance(b[name], int):
                if abs(a[name] - b[name]) > 1:
                    return False
            elif not ttl_close(a[name], b[name]):
                return False
        return True
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(ttl_close(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def view(target: Target, status: int, headers: dict[str, str], body: bytes,
         sort_children: bool) -> dict[str, Any]:
    """The comparable part of one answer."""
    seen: dict[str, Any] = {"status": status}
    for name in HEADERS_COMPARED:
        if name in headers:
            seen[name] = headers[name]
    if "X-Etcd-Index" in headers:
        seen["X-Etcd-Index"] = target.relative(int(headers["X-Etcd-Index"]))
    seen["raft-headers"] = sorted(h for h in headers if h.startswith("X-Raft-"))
    seen["cluster-id-header"] = "X-Etcd-Cluster-Id" in headers
    if headers.get("Content-Type", "").startswith("application/json") and body:
        try:
            seen["body"] = [normalise(json.loads(line), target, sort_children)
                            for line in body.decode().splitlines() if line.strip()]
            seen["newline"] = body.endswith(b"\n")
        except ValueError:
            seen["body"] = body.decode(errors="replace")
    else:
        seen["body"] = body.decode(errors="replace")
    return seen


class Generator:
    """Seeded random v2 requests, valid and malformed, over a small key space."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.current = 0  # relative store index of the last answer
        self.seen_indexes: list[int] = []
        self.written: list[tuple[int, str]] = []

    def _index(self) -> str:
        rng = self.rng
        if self.seen_indexes and rng.random() < 0.7:
            return self._odd(str(rng.choice(self.seen_indexes[-30:])))
        return self._odd(str(rng.randint(0, self.current + 2)))

    def _odd(self, text: str, chance: float = 0.25) -> str:
        """``text`` itself, or sometimes the same text in a :class:`Spelled` spelling."""
        return Spelled(text) if self.rng.random() < chance else text

    def _value(self) -> str:
        rng = self.rng
        return rng.choice(ODD_VALUES) if rng.random() < 0.3 else self._odd(rng.choice(VALUES))

    def _bool(self) -> str:
        return self._odd(self.rng.choice(BOOLS))

    def _place(self, op: Op, params: list[tuple[str, str]]) -> Op:
        rng = self.rng
        if op.method in ("PUT", "POST") and rng.random() < 0.6:
            op.body = [p for p in params if rng.random() < 0.8]
            op.query = [p for p in params if p not in op.body]
        else:
            op.query = params
        rng.shuffle(op.query)
        return op

    def write(self, near: str | None = None) -> Op:
        """A random write; with ``near`` (a watched key), to that key or below it, and
        mostly a plain set, so that the watch has something to see."""
        rng = self.rng
        method = rng.choices(["PUT", "POST", "DELETE"], [6, 1, 3])[0]
        key = rng.choice(DIRS if method == "POST" else KEYS)
        if near is not None:
            below = [k for k in KEYS if k.startswith(near.rstrip("/") + "/")]
            key = near if not below or rng.random() < 0.6 else rng.choice(below)
            if rng.random() < 0.6:
                return self._place(Op("PUT", "/v2/keys" + key, kind="write"),
                                   [("value", self._value())])
        params: list[tuple[str, str]] = []
        if method == "DELETE":
            for name in ("dir", "recursive"):
                if rng.random() < 0.3:
                    params.append((name, self._bool()))
            if rng.random() < 0.25:
                params.append(("prevValue", rng.choice(PREV_VALUES)))
            if rng.random() < 0.25:
                params.append(("prevIndex", self._index()))
            return self._place(Op(method, "/v2/keys" + key, kind="write"), params)
        refresh = method == "PUT" and rng.random() < 0.1
        if not refresh and rng.random() < 0.9:
            params.append(("value", self._value()))
        if rng.random() < 0.2 or refresh:
            params.append(("ttl", self._odd(str(rng.randint(100, 300)))))
        if rng.random() < 0.15:
            params.append(("dir", self._bool()))
        if refresh:
            params.append(("refresh", self._odd("true")))
        if method == "PUT":
            if rng.random() < 0.3:
                params.append(("prevExist", self._odd(rng.choice(["true", "false"]))))
            if rng.random() < 0.2:
                params.append(("prevValue", rng.choice(PREV_VALUES)))
            if rng.random() < 0.2:
                params.append(("prevIndex", self._index()))
        if rng.random() < 0.1:
            params.append(("noValueOnSuccess", self._odd("true")))
        return self._place(Op(method, "/v2/keys" + key, kind="write"), params)

    def read(self) -> Op:
        rng = self.rng
        key = rng.choice([*KEYS, "/", "/missing", "/a/under"])
        params = []
        for name in ("recursive", "sorted", "quorum"):
            if rng.random() < 0.4:
                params.append((name, self._bool()))
        method = "HEAD" if rng.random() < 0.05 else "GET"
        return Op(method, "/v2/keys" + key.rstrip("/"), params, kind="read")

    def history_watch(self) -> Op:
        rng = self.rng
        if self.written and rng.random() < 0.9:
            index, key = rng.choice(self.written[-300:])
            if rng.random() < 0.3:
                key = key.rsplit("/", 1)[0] or "/"
            since = max(1, index - rng.randint(0, 5))
        else:
            key = rng.choice([*KEYS, "/"])
            since = rng.randint(max(1, self.current - 400), max(1, self.current))
        params = [("wait", self._odd("true")), ("waitIndex", self._odd(str(since)))]
        if rng.random() < 0.5:
            params.append(("recursive", self._odd("true")))
        return Op("GET", "/v2/keys" + key.rstrip("/"), params, kind="history-watch")

    def live_watch(self) -> Op:
        rng = self.rng
        key = rng.choice([*KEYS, "/", "/dir/sub/_h"])
        params = [("wait", self._odd("true"))]
        if rng.random() < 0.5:
            params.append(("recursive", self._odd("true")))
        if rng.random() < 0.5:
            params.append(("waitIndex", self._odd(str(self.current + 1))))
        return Op("GET", "/v2/keys" + key.rstrip("/"), params, kind="live-watch")

    def malformed(self) -> Op:
        rng = self.rng
        key = "/v2/keys" + rng.choice(KEYS)
        choice = rng.randint(0, 17)
        if choice >= 14:
            return self._malformed_spelling(key, choice)
        if choice == 0:
            return Op("PUT", key, [(rng.choice(["dir", "recursive", "sorted", "quorum",
                                                 "stream", "prevExist", "refresh",
                                                 "noValueOnSuccess", "wait"]),
                                     rng.choice(BAD_BOOLS))], kind="bad")
        if choice == 1:
            return Op(rng.choice(["PUT", "GET", "DELETE"]), key,
                      [(rng.choice(["prevIndex", "waitIndex", "ttl"]), rng.choice(BAD_UINTS))],
                      kind="bad")
        if choice == 2:
            return Op("PUT", key, [("prevValue", ""), ("value", "x")], kind="bad")
        if choice == 3:
            return Op(rng.choice(["PUT", "POST", "DELETE"]), key, [("wait", "true")],
                      kind="bad")
        if choice == 4:
            return Op("PUT", key, [("refresh", "true"), ("value", "v"), ("ttl", "100")],
                      kind="bad")
        if choice == 5:
            return Op("PUT", key, [("refresh", "true")], kind="bad")
        if choice == 6:
            return Op("PUT", key, raw_query=rng.choice(["value=%zz", "a=1;b=2", "value=%4",
                                                        "%=x", "value=%e4%bd", "value=%zz&a;b",
                                                        "a;b&value=%zz", "%zz=1&value=v",
                                                        "value=50%25&prevValue=%"]),
                      kind="bad")
        if choice == 7:
            return Op("PUT", key, body=[("value", "fromjson")], content_type="application/json",
                      kind="bad")
        if choice == 8:
            return Op("PATCH", key, kind="bad")
        if choice == 9:
            return Op("GET", rng.choice(["/v2/keys//a", "/v2/keys/a/../b", "/v2/keys/./c",
                                         "/v2/keys/dir//a/", "/v2/keys/a%zz",
                                         "/v2/keys/a%2F..%2Fb"]), kind="bad")
        if choice == 10:
            return Op("PUT", "/v2/keys/", [("value", "root")], kind="bad")
        if choice == 11:
            return Op("DELETE", rng.choice(["/v2/keys/", "/v2/keys"]),
                      [("recursive", "true")], kind="bad")
        if choice == 12:
            return Op("PUT", key, body=[("value", "a"), ("value", "b")],
                      query=[("value", "c")], kind="bad")
        return Op("PUT", key, [("ttl", "")], body=[("value", "v")], kind="bad")

    def _malformed_spelling(self, key: str, choice: int) -> Op:
        """Bad escapes in any parameter, bytes that are not UTF-8 in bodies, encoded names."""
        rng = self.rng
        method = rng.choice(["PUT", "POST", "DELETE", "GET"])
        if choice == 14:  # a bad escape in one parameter, the query or (PUT/POST) the body
            op = Op(method, key, [("value", "v")], kind="bad")
            bad = (rng.choice(ODD_PARAMS), rng.choice(BAD_ESCAPES))
            if method in ("PUT", "POST") and rng.random() < 0.5:
                op.body = [bad]
            else:
                op.query.append(bad)
            return op
        if choice == 15:  # raw bytes in a body, some of them bad escapes
            return Op(rng.choice(["PUT", "POST"]), key, [("ttl", Spelled("100"))],
                      body=[(rng.choice(["value", "prevValue"]), rng.choice(BODY_BYTES))],
                      kind="bad")
        if choice == 16:  # a bad body and a bad query: the body's error is the answer
            return Op("PUT", key, body=[("value", rng.choice(BAD_ESCAPES))],
                      raw_query=rng.choice(["a;b", "value=%zz", "ttl=%2531"]), kind="bad")
        name = rng.choice([Raw("va%6Cue"), Raw("prev%56alue"), Raw("%74tl"), Raw("%zz"),
                           Raw("wait%49ndex"), Raw("va+lue")])
        return Op("PUT", key, [(name, Spelled("12"))], kind="bad")


@dataclass
class Mismatch:
    step: int
    op: str
    etcd: Any
    kvd: Any


async def _pair(session: aiohttp.ClientSession, etcd: Target, kvd: Target, op: Op,
                sort_children: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    (s1, h1, b1), (s2, h2, b2) = await asyncio.gather(send(session, etcd, op),
                                                      send(session, kvd, op))
    return view(etcd, s1, h1, b1, sort_children), view(kvd, s2, h2, b2, sort_children)


async def baseline(session: aiohttp.ClientSession, target: Target) -> None:
    status, headers, _ = await send(session, target, Op("PUT", "/v2/keys/_baseline",
                                                        [("value", "b")]))
    assert status in (200, 201), status
    target.base = int(headers["X-Etcd-Index"])


async def run_sequence(etcd_url: str, kvd_url: str, seed: int, steps: int
                       ) -> tuple[list[Mismatch], dict[str, int]]:
    etcd, kvd = Target("etcd", etcd_url), Target("kvd", kvd_url)
    gen = Generator(seed)
    mismatches: list[Mismatch] = []
    counts: dict[str, int] = {}
    async with aiohttp.ClientSession() as session:
        await baseline(session, etcd)
        await baseline(session, kvd)
        for step in range(steps):
            roll = gen.rng.random()
            if roll < 0.5:
                op = gen.write()
            elif roll < 0.72:
                op = gen.read()
            elif roll < 0.82:
                op = gen.history_watch()
            elif roll < 0.97:
                op = gen.malformed()
            else:
                op = gen.live_watch()
            counts[op.kind] = counts.get(op.kind, 0) + 1
            for family in odd_params(op):
                counts[f"odd {family}"] = counts.get(f"odd {family}", 0) + 1
            sort_children = not any(n == "sorted" and v.lower() in ("true", "1", "t")
                                    for n, v in op.query)
            if op.kind == "live-watch":
                e_view, k_view, w_views = await _live_watch(session, etcd, kvd, gen, op)
                if not ttl_close(w_views[0], w_views[1]):
                    mismatches.append(Mismatch(step, "write after watch", *w_views))
                if e_view.get("status") == 200 and e_view.get("body") != NO_EVENT.decode():
                    counts["live-watch fired"] = counts.get("live-watch fired", 0) + 1
            else:
                e_view, k_view = await _pair(session, etcd, kvd, op, sort_children)
            if not ttl_close(e_view, k_view):
                mismatches.append(Mismatch(step, op.describe(), e_view, k_view))
            elif odd_params(op) and e_view["status"] in (200, 201):
                counts["odd answered 2xx"] = counts.get("odd answered 2xx", 0) + 1
            index = e_view.get("X-Etcd-Index")
            if isinstance(index, int) and index > 0 and op.kind != "live-watch":
                gen.current = max(gen.current, index)
                if op.method in ("PUT", "POST") and e_view["status"] in (200, 201):
                    gen.seen_indexes.append(index)
                if op.kind == "write" and e_view["status"] in (200, 201):
                    gen.written.append((index, op.path[len("/v2/keys"):]))
    return mismatches, counts


async def _live_watch(session: aiohttp.ClientSession, etcd: Target, kvd: Target,
                      gen: Generator, op: Op) -> tuple[dict[str, Any], dict[str, Any],
                                                       tuple[dict[str, Any], dict[str, Any]]]:
    """Start the same watch on both, make one write, and compare what each watch saw.

    The write waits for both watches' response headers (the witness that each watcher is
    registered); after the write has been answered, a watch gets 1 s to deliver its event
    and one still silent then has none. The caller counts the watches that fired."""
    responses = await asyncio.gather(*(open_request(session, t, op) for t in (etcd, kvd)))
    try:
        write = gen.write(near=op.path[len("/v2/keys"):] or "/")
        w_etcd, w_kvd = await _pair(session, etcd, kvd, write, True)
        index = w_etcd.get("X-Etcd-Index")
        if isinstance(index, int) and index > 0:
            gen.current = max(gen.current, index)
        answers = await asyncio.gather(*(finish(resp, 1.0, may_wait=True)
                                         for resp in responses))
    finally:
        for resp in responses:
            resp.close()
    results = [view(target, *answer, True) for target, answer in zip((etcd, kvd), answers,
                                                                       strict=True)]
    return results[0], results[1], (w_etcd, w_kvd)
