"""fleetctl 1.0's half of the fleet API v1 conversation, and fleet 1.0's expected half.

fleetctl 1.0 never builds a URL by hand: ``client/http.go`` drives the client that
Google's generator made from fleet's discovery document (``schema/v1-gen.go``), and the
commands in ``fleetctl/*.go`` decide which calls to make and how to poll. So every
request carries ``?alt=json``, the ``google-api-go-client/0.5`` User-Agent, a unit name
percent-encoded as an RFC 6570 simple expansion (``foo@1.service`` ->
``foo%401.service``), and bodies as Go's ``json.Encoder`` writes them (struct field order,
``omitempty``, HTML-escaped, a trailing newline). :class:`Fleetctl1` sends exactly these
requests, command by command, and polls the way fleetctl does (every 250 ms; after a
blocking ``start`` it allows 2 s for systemd to say active, and a 404 from
``/state/<unit>`` there is a nil-pointer panic in fleetctl 1.0).

:class:`Fleet1Oracle` is the other half: for each exchange it works out what fleet 1.0's
API (``api/*.go``, ``client/registry.go``, ``registry/*.go``) answers to the same request
in the same cluster state, and fails the test at the first answer that differs. Bodies
are compared as fleetctl's Go client sees them: decoded into the schema structs, whose
fields are all ``omitempty``, so an empty value we send and a field fleet leaves out read
the same (:func:`go_view`). Everything else (fields, values, order of lists, status codes,
error messages) must match.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import struct
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

USER_AGENT = "google-api-go-client/0.5"  # googleapi.UserAgent in fleet's vendored client
TICK = 0.25  # waitForState's ticker
ACTIVE_WINDOW = 2.0  # defaultSleepTime: how long waitForState tries before giving up
STATES = ("inactive", "loaded", "launched")


class Fleetctl1Failed(AssertionError):
    """fleetctl 1.0 would have failed (or panicked) here."""


# ------------------------------------------------------------------ Go's encodings


def go_json(value: Any) -> bytes:
    """What Go's ``json.NewEncoder(w).Encode(value)`` writes: compact, non-ASCII as UTF-8,
    ``<``, ``>``, ``&``, U+2028 and U+2029 escaped, and a newline."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    for char, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                          ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(char, escaped)
    return (text + "\n").encode()


def go_omit(fields: dict[str, Any]) -> dict[str, Any]:
    """A Go struct marshalled with every field ``omitempty``, fields in struct order."""
    return {key: value for key, value in fields.items() if value not in ("", None, [], {})}


def go_view(value: Any) -> Any:
    """``value`` as a Go client whose struct fields are all ``omitempty`` decodes and
    re-encodes it: empty strings, nulls, empty lists and empty objects disappear."""
    if isinstance(value, dict):
        viewed = {key: go_view(item) for key, item in value.items()}
        return {key: item for key, item in viewed.items() if item not in ("", None, [], {})}
    if isinstance(value, list):
        return [go_view(item) for item in value]
    return value


def expand(name: str) -> str:
    """A path parameter as googleapi.Expand escapes it (RFC 6570 simple expansion)."""
    return urllib.parse.quote(name, safe="-._~")


def unit_file_hash(options: list[dict[str, str]]) -> str:
    """fleet's unit hash: SHA1 of go-systemd's serialisation (sections in first-seen
    order, a blank line between sections), written out here independently of fleetd."""
    sections: dict[str, list[str]] = {}
    for option in options:
        sections.setdefault(option["section"], []).append(
            f"{option['name']}={option.get('value', '')}\n")
    text = "\n".join(f"[{section}]\n" + "".join(lines) for section, lines in sections.items())
    return hashlib.sha1(text.encode()).hexdigest()


def schema_option(section: str, name: str, value: str) -> dict[str, str]:
    """schema.UnitOption as fleetctl sends it (fields name, section, value; omitempty)."""
    return go_omit({"name": name, "section": section, "value": value})


def is_global(options: list[dict[str, str]]) -> bool:
    """job.Unit.IsGlobal: the last X-Fleet Global value, truthy as fleet parses it."""
    values = [o.get("value", "") for o in options
              if o["section"] == "X-Fleet" and o["name"] == "Global"]
    return bool(values) and values[-1].lower() in ("true", "yes", "1", "on", "t")


# ------------------------------------------------------------------ one exchange


@dataclass
class Exchange:
    method: str
    path: str  # below /fleet/v1/, escaped as sent
    query: list[tuple[str, str]]
    body: bytes | None
    status: int = 0
    raw: bytes = b""
    content_type: str = ""
    server: str = ""

    @property
    def reply(self) -> Any:
        return json.loads(self.raw) if self.raw else None

    def __str__(self) -> str:
        query = urllib.parse.urlencode(self.query)
        sent = f" {self.body.decode().strip()}" if self.body else ""
        return (f"{self.method} /fleet/v1/{self.path}?{query}{sent} -> {self.status} "
                f"{self.raw.decode(errors='replace')[:300]}")


# ------------------------------------------------------------------ fleet's side


@dataclass
class Fleet1Oracle:
    """What fleet 1.0 answers, from what the conversation so far has told it.

    ``machines`` is the expected ``/machines`` listing (fleet's Machine entities). Unit
    contents and desired states come from the requests themselves, as they do for fleet;
    where fleet's answer depends on the cluster's progress (currentState, target machine,
    systemd states), the rules of ``registry/job_state.go`` bound what may be seen.
    """

    machines: list[dict[str, Any]]
    token_limit: int = 100
    units: dict[str, dict[str, Any]] = field(default_factory=dict)
    files: dict[str, list[dict[str, str]]] = field(default_factory=dict)  # every one seen
    transcript: list[Exchange] = field(default_factory=list)

    def fail(self, exchange: Exchange, why: str) -> None:
        history = "\n  ".join(str(e) for e in self.transcript[-15:])
        raise AssertionError(f"fleet 1.0 answers differently: {why}\n  at: {exchange}\n"
                             f"  conversation so far:\n  {history}")

    def check(self, exchange: Exchange) -> None:
        self.transcript.append(exchange)
        if not exchange.server.startswith("fleetd/"):
            self.fail(exchange, f"Server header {exchange.server!r}, fleet sends fleetd/<v>")
        parts = [urllib.parse.unquote(p) for p in exchange.path.split("/")]
        query = dict(exchange.query)
        if exchange.method == "GET" and parts == ["machines"]:
            self.expect_page(exchange, query, "machines", self.machines)
        elif exchange.method == "GET" and parts == ["units"]:
            self.check_unit_page(exchange, query)
        elif exchange.method == "GET" and parts[0] == "units" and len(parts) == 2:
            self.check_unit(exchange, parts[1])
        elif exchange.method == "PUT" and parts[0] == "units" and len(parts) == 2:
            self.check_set(exchange, parts[1])
        elif exchange.method == "DELETE" and parts[0] == "units" and len(parts) == 2:
            self.check_delete(exchange, parts[1])
        elif exchange.method == "GET" and parts == ["state"]:
            self.check_state_page(exchange, query)
        elif exchange.method == "GET" and parts[0] == "state" and len(parts) == 2:
            self.check_state(exchange, parts[1])
        else:
            self.fail(exchange, "fleetctl 1.0 never sends this request")

    # -------------------------------------------------------------- helpers

    def expect(self, exchange: Exchange, status: int, body: Any = None) -> None:
        if exchange.status != status:
            self.fail(exchange, f"status {exchange.status}, fleet answers {status}")
        if body is None:
            if exchange.raw:
                self.fail(exchange, "fleet answers with no body")
            return
        if not exchange.content_type.startswith("application/json"):
            self.fail(exchange, f"Content-Type {exchange.content_type!r}")
        got = go_view(exchange.reply)
        if got != go_view(body):
            self.fail(exchange, f"body {got!r}\n  fleet: {go_view(body)!r}")

    def expect_error(self, exchange: Exchange, status: int, message: str) -> None:
        self.expect(exchange, status, {"error": {"code": status, "message": message}})

    def token(self, exchange: Exchange, query: dict[str, str]) -> int:
        """The page a request asks for; fleetctl only ever sends back fleet's tokens."""
        if "nextPageToken" not in query:
            return 1
        limit, page = struct.unpack("<HH", base64.urlsafe_b64decode(query["nextPageToken"]))
        if limit != self.token_limit or page < 2:
            self.fail(exchange, "fleetctl sent back a token fleet did not issue")
        return page

    def next_token(self, page: int, count: int) -> str:
        """api/pagination.go: a page that came out full carries the next page's token
        (so a list that fills its last page exactly ends with one more, empty, page)."""
        if count < self.token_limit:
            return ""
        return base64.urlsafe_b64encode(struct.pack("<HH", self.token_limit, page + 1)).decode()

    def expect_page(self, exchange: Exchange, query: dict[str, str], key: str,
                    items: list[Any]) -> None:
        page = self.token(exchange, query)
        chunk = items[(page - 1) * self.token_limit:page * self.token_limit]
        self.expect(exchange, 200, {key: chunk, "nextPageToken": self.next_token(
            page, len(chunk))})

    # -------------------------------------------------------------- units

    def unit_entity(self, exchange: Exchange, name: str, seen: dict[str, Any] | None,
                    listed: bool) -> dict[str, Any]:
        """fleet's Unit for ``name``, taking from ``seen`` only what the cluster's progress
        decides (currentState, machineID) after checking it is possible there."""
        unit = self.units[name]
        seen = seen or {}
        machine_ids = {m["id"] for m in self.machines}
        current, target = seen.get("currentState", ""), seen.get("machineID", "")
        if unit["global"]:
            # client/registry.go: Unit() gives a global unit no schedule, Units() (the
            # list) maps every unit through Schedule(), so there it is "inactive"
            current, target = ("inactive" if listed else ""), ""
        elif target:
            if target not in machine_ids or current not in STATES:
                self.fail(exchange, f"{name} scheduled to {target!r} in state {current!r}")
        else:
            current = "inactive"  # determineJobState without a target machine
        return go_omit({"currentState": current, "desiredState": unit["desired"],
                        "machineID": target, "name": name, "options": unit["options"]})

    def check_unit(self, exchange: Exchange, name: str) -> None:
        if name not in self.units:
            self.expect_error(exchange, 404, "unit does not exist")
            return
        self.expect(exchange, 200, self.unit_entity(exchange, name, exchange.reply, False))

    def check_unit_page(self, exchange: Exchange, query: dict[str, str]) -> None:
        reply = exchange.reply if isinstance(exchange.reply, dict) else {}
        seen = {u.get("name"): u for u in reply.get("units") or []}
        units = [self.unit_entity(exchange, name, seen.get(name), True)
                 for name in sorted(self.units)]
        self.expect_page(exchange, query, "units", units)

    def check_set(self, exchange: Exchange, name: str) -> None:
        """api/units.go set(), for the bodies fleetctl sends."""
        body = json.loads(exchange.body or b"{}")
        options = body.get("options") or []
        desired = body.get("desiredState", "")
        existing = self.units.get(name)
        if existing is None and not options:
            self.expect_error(exchange, 409, "unit does not exist and options field empty")
        elif options and (existing is None
                          or unit_file_hash(options) != unit_file_hash(existing["options"])):
            self.expect(exchange, 201)
            self.units[name] = {"options": options, "global": is_global(options),
                                "desired": desired or "inactive"}
            self.files[name] = options
        elif not desired:
            self.expect_error(exchange, 409, "must provide DesiredState to update existing unit")
        elif "@." in name and desired != "inactive":
            self.expect_error(exchange, 400, f'cannot activate template "{name}"')
        else:
            self.expect(exchange, 204)
            existing["desired"] = desired

    def check_delete(self, exchange: Exchange, name: str) -> None:
        if name not in self.units:
            self.expect_error(exchange, 404, "unit does not exist")
            return
        self.expect(exchange, 204)
        del self.units[name]

    # -------------------------------------------------------------- unit states

    def state_entity(self, exchange: Exchange, seen: dict[str, Any]) -> dict[str, Any]:
        name = seen.get("name", "")
        options = self.files.get(name)
        if options is None:
            self.fail(exchange, f"a state for {name!r}, a unit never submitted")
        machine = seen.get("machineID", "")
        if machine not in {m["id"] for m in self.machines}:
            self.fail(exchange, f"a state from machine {machine!r}, not in the cluster")
        load, active, sub = (seen.get("systemdLoadState"), seen.get("systemdActiveState"),
                             seen.get("systemdSubState"))
        # what systemd (here its stand-in) can say of a unit fleet linked: fleet relays it
        if (load, active, sub) not in (("loaded", "active", "running"),
                                       ("loaded", "inactive", "dead"),
                                       ("not-found", "inactive", "dead")):
            self.fail(exchange, f"systemd state {(load, active, sub)} for {name}")
        return go_omit({"hash": unit_file_hash(options), "machineID": machine, "name": name,
                        "systemdActiveState": active, "systemdLoadState": load,
                        "systemdSubState": sub})

    def check_state(self, exchange: Exchange, name: str) -> None:
        if exchange.status == 404:
            self.expect_error(exchange, 404, "unit state does not exist")
            return
        reply = exchange.reply if isinstance(exchange.reply, dict) else {}
        if reply.get("name") != name:
            self.fail(exchange, f"the state of {reply.get('name')!r}, asked for {name!r}")
        self.expect(exchange, 200, self.state_entity(exchange, reply))

    def check_state_page(self, exchange: Exchange, query: dict[str, str]) -> None:
        reply = exchange.reply if isinstance(exchange.reply, dict) else {}
        seen = reply.get("states") or []
        states = [self.state_entity(exchange, s) for s in seen]
        order = [(s["name"], s["machineID"]) for s in states]
        if order != sorted(order):
            self.fail(exchange, "fleet lists states by unit name, then machine ID")
        # which states exist depends on the agents' progress, so the page seen stands in
        # for fleet's; its size still decides the token
        page = self.token(exchange, query)
        if len(states) > self.token_limit:
            self.fail(exchange, f"{len(states)} states on a page of {self.token_limit}")
        self.expect(exchange, 200, {"states": states,
                                    "nextPageToken": self.next_token(page, len(states))})


# ------------------------------------------------------------------ fleetctl's side


class Fleetctl1:
    """fleetctl 1.0 with ``--endpoint=http://host:port`` (the API driver), its default
    blocking mode and no SSH. Each method is one command; each request is checked by
    the oracle as soon as its answer arrives."""

    def __init__(self, endpoint: str, oracle: Fleet1Oracle, timeout: float = 30) -> None:
        url = urllib.parse.urlsplit(endpoint)
        self.host, self.port = url.hostname or "", url.port or 80
        self.oracle = oracle
        self.timeout = timeout  # fleetctl polls forever; a test must not
        self.machine_cache: list[dict[str, Any]] | None = None
        self.output: list[str] = []

    # -------------------------------------------------------------- schema/v1-gen.go

    def call(self, method: str, path: str, query: list[tuple[str, str]] | None = None,
             body: dict[str, Any] | None = None) -> Exchange:
        params = [("alt", "json"), *(query or [])]
        exchange = Exchange(method, path, params, go_json(body) if body is not None else None)
        headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "gzip"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        connection = http.client.HTTPConnection(self.host, self.port, timeout=10)
        try:
            connection.request(method, f"/fleet/v1/{path}?{urllib.parse.urlencode(params)}",
                               body=exchange.body, headers=headers)
            response = connection.getresponse()
            exchange.status, exchange.raw = response.status, response.read()
            exchange.content_type = response.getheader("Content-Type", "")
            exchange.server = response.getheader("Server", "")
        finally:
            connection.close()
        self.oracle.check(exchange)
        return exchange

    def ok(self, exchange: Exchange) -> Any:
        """googleapi.CheckResponse: any status outside 2xx is an error for fleetctl."""
        if not 200 <= exchange.status <= 299:
            raise Fleetctl1Failed(f"googleapi: Error {exchange.status}: {exchange}")
        return exchange.reply

    def pages(self, path: str, key: str) -> list[Any]:
        items: list[Any] = []
        query: list[tuple[str, str]] = []
        while True:
            page = self.ok(self.call("GET", path, query)) or {}
            items += page.get(key) or []
            if not page.get("nextPageToken"):
                return items
            query = [("nextPageToken", page["nextPageToken"])]

    # -------------------------------------------------------------- client/http.go

    def machines(self) -> list[dict[str, Any]]:
        return self.pages("machines", "machines")

    def units(self) -> list[dict[str, Any]]:
        return self.pages("units", "units")

    def unit(self, name: str) -> dict[str, Any] | None:
        exchange = self.call("GET", f"units/{expand(name)}")
        return None if exchange.status == 404 else self.ok(exchange)

    def unit_states(self) -> list[dict[str, Any]]:
        return self.pages("state", "states")

    def unit_state(self, name: str) -> dict[str, Any] | None:
        exchange = self.call("GET", f"state/{expand(name)}")
        return None if exchange.status == 404 else self.ok(exchange)

    def create_unit(self, name: str, options: list[dict[str, str]]) -> None:
        self.ok(self.call("PUT", f"units/{expand(name)}", body={"name": name,
                                                                  "options": options}))

    def set_target_state(self, name: str, state: str) -> None:
        self.ok(self.call("PUT", f"units/{expand(name)}",
                          body={"desiredState": state, "name": name}))

    def cached_machines(self) -> list[dict[str, Any]]:
        """cachedMachineState: one /machines listing per fleetctl run, when first needed."""
        if self.machine_cache is None:
            self.machine_cache = self.machines()
        return self.machine_cache

    # -------------------------------------------------------------- fleetctl.go

    def poll(self, check: Any, what: str, window: float | None = None) -> Any:
        """waitForState: ask every 250 ms (the first time after one tick)."""
        deadline = time.monotonic() + (window or self.timeout)
        while True:
            time.sleep(TICK)
            result = check()
            if result:
                return result
            if time.monotonic() >= deadline:
                raise Fleetctl1Failed(f"fleetctl 1.0 gives up: {what}")

    def wait_unit_state(self, name: str, state: str) -> None:
        """assertUnitState, looping as checkUnitState does with no --block-attempts."""
        def reached() -> bool:
            unit = self.unit(name)
            if unit is None:
                raise Fleetctl1Failed(f"Unit {name} not found")
            seen = unit.get("desiredState") if is_global(unit.get("options") or []) \
                else unit.get("currentState")
            if seen != state:
                return False
            line = f"Unit {name} {unit.get('currentState', '')}"
            if unit.get("machineID"):
                ms = [m for m in self.cached_machines() if m.get("id") == unit["machineID"]]
                if ms:
                    line += f" on {ms[0]['id'][:8]}.../{ms[0].get('primaryIP', '')}"
            self.output.append(line)
            return True

        self.poll(reached, f"{name} to reach {state}")

    def wait_systemd_active(self, name: str) -> dict[str, Any]:
        """assertSystemdActiveState: 2 s to see active/loaded; a missing state is a nil
        dereference in fleetctl 1.0, so a 404 here is a crash, not a retry."""
        def active() -> dict[str, Any] | None:
            state = self.unit_state(name)
            if state is None:
                raise Fleetctl1Failed(f"fleetctl 1.0 panics: no unit state for {name}")
            if state.get("systemdActiveState") == "active" \
                    and state.get("systemdLoadState") == "loaded":
                return state
            return None

        return self.poll(active, f"Failed to find an active unit {name}", ACTIVE_WINDOW)

    def lazy_create(self, name: str, local: list[dict[str, str]] | None) -> None:
        """lazyCreateUnits for one argument; ``local`` is the file next to fleetctl."""
        if self.unit(name) is not None:
            return
        if local is None:
            if "@" not in name or name.split("@", 1)[1].startswith("."):
                raise Fleetctl1Failed(f"unable to find Unit({name}) in Registry or on filesystem")
            # unit.NewUnitNameInfo: foo@1.service is an instance of foo@.service
            template = name[:name.index("@") + 1] + name[name.rindex("."):]
            found = self.unit(template)
            if found is None:
                raise Fleetctl1Failed(f"unable to find template Unit({template})")
            local = found.get("options") or []
        self.create_unit(name, local)
        self.wait_unit_state(name, "inactive")

    def set_states(self, names: list[str], state: str) -> list[dict[str, Any]]:
        """setTargetStateOfUnits: the units whose desired state had to change."""
        triggered = []
        for name in names:
            unit = self.unit(name)
            if unit is None:
                raise Fleetctl1Failed(f"unable to find unit {name}")
            if unit.get("desiredState") == state:
                continue
            self.set_target_state(name, state)
            triggered.append(unit)
        return triggered

    def find_units(self, names: list[str]) -> list[dict[str, Any]]:
        listed = {u["name"]: u for u in self.units()}
        return [listed[n] for n in names if n in listed]

    # -------------------------------------------------------------- the commands

    def list_machines(self) -> list[dict[str, Any]]:
        return self.machines()

    def list_unit_files(self) -> list[dict[str, Any]]:
        units = self.units()
        if any(u.get("machineID") and not is_global(u.get("options") or []) for u in units):
            self.cached_machines()  # the TARGET column
        return units

    def list_units(self, fields: str = "unit,machine,active,sub") -> list[dict[str, Any]]:
        states = self.unit_states()
        if "machine" in fields.split(",") and any(s.get("machineID") for s in states):
            self.cached_machines()
        return states

    def cat(self, name: str) -> dict[str, Any]:
        unit = self.unit(name)
        if unit is None:
            raise Fleetctl1Failed(f"Unit {name} not found")
        return unit

    def submit(self, name: str, local: list[dict[str, str]] | None) -> None:
        self.lazy_create(name, local)

    def load(self, name: str, local: list[dict[str, str]] | None = None) -> None:
        self.lazy_create(name, local)
        for unit in self.set_states([name], "loaded"):
            if not is_global(unit.get("options") or []):
                self.wait_unit_state(unit["name"], "loaded")

    def start(self, name: str, local: list[dict[str, str]] | None = None) -> None:
        self.lazy_create(name, local)
        starting = [u["name"] for u in self.set_states([name], "launched")
                    if not is_global(u.get("options") or [])]
        for unit in starting:
            self.wait_unit_state(unit, "launched")
        for unit in starting:
            self.wait_systemd_active(unit)

    def stop(self, name: str) -> None:
        for unit in self.find_units([name]):
            global_unit = is_global(unit.get("options") or [])
            if not global_unit:
                if unit.get("currentState") == "inactive":
                    raise Fleetctl1Failed(f"Unable to stop unit {name} in state inactive")
                if unit.get("currentState") == "loaded":
                    continue
            self.set_target_state(unit["name"], "loaded")
            if not global_unit:
                self.wait_unit_state(unit["name"], "loaded")

    def unload(self, name: str) -> None:
        for unit in self.find_units([name]):
            global_unit = is_global(unit.get("options") or [])
            if not global_unit and unit.get("currentState") == "inactive":
                continue
            self.set_target_state(unit["name"], "inactive")
            if not global_unit:
                self.wait_unit_state(unit["name"], "inactive")

    def destroy(self, name: str) -> None:
        """runDestroyUnit without --no-block: fleetctl 1.0 polls only *with* --no-block."""
        for unit in self.find_units([name]):
            exchange = self.call("DELETE", f"units/{expand(unit['name'])}")
            if exchange.status != 404:
                self.ok(exchange)
