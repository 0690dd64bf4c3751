"""fleet API v1 over HTTP (aiohttp): units, unit states and machines.

Shapes, status codes, the ``{"error":{"code","message"}}`` error entity and the
``nextPageToken`` encoding (URL-safe base64 of little-endian uint16 limit and page)
follow fleet, so existing fleet clients work: fleetctl 1.0 blocks on ``GET
/state/<name>`` after ``start`` and panics on anything but a unit state there, and
clients generated from fleet's discovery document fetch it from ``/discovery``. Two
additions serve ``fleetctl status`` and ``journal`` without SSH: ``GET
/fleet/v1/units/<name>/status`` and ``/journal``, answered by the agent of the machine
that holds the unit (forwarded there over its published API address when that is
another machine).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import struct
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any

import aiohttp
from aiohttp import web
from flotilla.daemons.kvclient import ClusterUnavailable, EtcdError

from . import model
from .registry import Registry

log = logging.getLogger("fleet.api")

VERSION = "1.0.0-flotilla"
PREFIXES = ("/fleet/v1", "/v1-alpha")
METADATA_KEY = re.compile(r"^[A-Za-z0-9_.-]+$")
# fleet's published API description (its schema/v1.json), served byte for byte: client
# generators and fleet's own example client read it from /discovery.
DISCOVERY = resources.files(__package__).joinpath("discovery.json").read_bytes()


class ApiError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def error_response(code: int, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=code)


def encode_page_token(limit: int, page: int) -> str:
    return base64.urlsafe_b64encode(struct.pack("<HH", limit, page)).decode()


def decode_page_token(token: str, limit: int) -> int:
    """The page number in ``token``; ApiError 400 if malformed or for another page size."""
    try:
        raw = base64.urlsafe_b64decode(token.encode())
        token_limit, page = struct.unpack("<HH", raw)
    except (binascii.Error, struct.error, ValueError):
        raise ApiError(400, "invalid page token") from None
    if token_limit != limit or page < 1:
        raise ApiError(400, "invalid page token")
    return page


def paginate(items: list[Any], request: web.Request, limit: int) -> tuple[list[Any], str | None]:
    """One page of ``items``, and the next page's token whenever this page came out full.

    As fleet does (api/*.go extract*PageData), a list that exactly fills its last page
    still gets a token, which yields one more, empty, page: a client then makes the same
    requests against us as against fleet.
    """
    token = request.query.get("nextPageToken")
    page = decode_page_token(token, limit) if token is not None else 1
    start, stop = (page - 1) * limit, page * limit
    next_token = encode_page_token(limit, page + 1) if stop <= len(items) else None
    return items[start:stop], next_token


LocalAgent = Any  # the Agent, kept loose so the API can run without one (tests, tools)


class FleetApi:
    def __init__(self, registry: Registry, *, token_limit: int = 100,
                 agent: LocalAgent | None = None, machine_id: str = "") -> None:
        self.registry = registry
        self.token_limit = token_limit
        self.agent = agent
        self.machine_id = machine_id
        self.ready = True

    # ------------------------------------------------------------ plumbing

    @web.middleware
    async def middleware(self, request: web.Request,
                         handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                         ) -> web.StreamResponse:
        try:
            if not self.ready:
                raise ApiError(503, "fleet server unable to communicate with etcd")
            response = await handler(request)
        except ApiError as error:
            response = error_response(error.code, error.message)
        except web.HTTPMethodNotAllowed:
            response = error_response(405, "method not supported against this resource")
        except web.HTTPNotFound:
            response = error_response(404, "Not Found")
        except (ClusterUnavailable, EtcdError) as error:
            log.error("store error serving %s: %s", request.path, error)
            response = error_response(500, "Internal Server Error")
        response.headers["Server"] = f"fleetd/{VERSION}"
        return response

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self.middleware], client_max_size=4 * 1024 * 1024)
        for prefix in PREFIXES:
            app.router.add_get(f"{prefix}/units", self.list_units)
            app.router.add_get(f"{prefix}/units/{{name}}", self.get_unit)
            app.router.add_put(f"{prefix}/units/{{name}}", self.put_unit)
            app.router.add_delete(f"{prefix}/units/{{name}}", self.delete_unit)
            app.router.add_get(f"{prefix}/units/{{name}}/status", self.unit_status)
            app.router.add_get(f"{prefix}/units/{{name}}/journal", self.unit_journal)
            app.router.add_get(f"{prefix}/state", self.list_states)
            app.router.add_get(f"{prefix}/state/{{name}}", self.get_state)
            # fleet mounts the document at /discovery only; /discovery.json is ours too
            for path in (f"{prefix}/discovery", f"{prefix}/discovery.json"):
                app.router.add_route("*", path, self.discovery)
            app.router.add_get(f"{prefix}/machines", self.list_machines)
            app.router.add_patch(f"{prefix}/machines", self.patch_machines)
        return app

    # ------------------------------------------------------------ units

    async def list_units(self, request: web.Request) -> web.Response:
        units = await self.registry.list_units()
        page, token = paginate(units, request, self.token_limit)
        body: dict[str, Any] = {"units": [u.to_json() for u in page]}
        if token:
            body["nextPageToken"] = token
        return web.json_response(body)

    async def get_unit(self, request: web.Request) -> web.Response:
        unit = await self.registry.get_unit(request.match_info["name"])
        if unit is None:
            raise ApiError(404, "unit does not exist")
        return web.json_response(unit.to_json())

    async def put_unit(self, request: web.Request) -> web.Response:
        item = request.match_info["name"]
        _check_content_type(request)
        try:
            body = json.loads(await request.read())
        except (ValueError, UnicodeDecodeError) as error:
            raise ApiError(400, f"unable to decode body: {error}") from None
        if not isinstance(body, dict):
            raise ApiError(400, "unable to decode body: expected a JSON object")
        name = body.get("name") or item
        if not isinstance(name, str):
            raise ApiError(400, "name: must be a string")
        if name != item:
            raise ApiError(400, f'name in URL "{item}" differs from unit name in '
                                f'request body "{name}"')
        try:
            model.validate_name(name)
        except model.UnitError as error:
            raise ApiError(400, str(error)) from None
        desired = body.get("desiredState") or ""
        if desired and desired not in model.DESIRED_STATES:
            raise ApiError(400, f'desiredState: invalid value "{desired}"')
        options: list[model.UnitOption] = []
        if body.get("options") is not None:
            try:
                options = model.options_from_json(body["options"])
            except model.UnitError as error:
                raise ApiError(400, str(error)) from None
        is_template = model.parse_name(name).is_template
        if is_template and desired not in ("", "inactive"):
            raise ApiError(400, f'cannot activate template unit "{name}"')
        existing = await self.registry.get_unit(name)
        if existing is None or (options and model.unit_hash(options) != existing.unit_hash):
            if not options:
                raise ApiError(409, "unit does not exist and options field empty")
            try:
                model.validate_unit(name, options)
            except model.UnitError as error:
                raise ApiError(400, str(error)) from None
            state = desired or (existing.desired_state if existing else "inactive")
            await self.registry.create_unit(name, options, state)
            return web.Response(status=201)
        if not desired:
            raise ApiError(409, "must provide DesiredState to update existing unit")
        await self.registry.set_target_state(name, desired)
        return web.Response(status=204)

    async def delete_unit(self, request: web.Request) -> web.Response:
        if not await self.registry.destroy_unit(request.match_info["name"]):
            raise ApiError(404, "unit does not exist")
        return web.Response(status=204)

    # ------------------------------------------------------------ status / journal

    async def _on_owner(self, request: web.Request, action: str) -> web.Response:
        name = request.match_info["name"]
        unit = await self.registry.get_unit(name)
        if unit is None:
            raise ApiError(404, "unit does not exist")
        owner = request.query.get("machineID") or unit.machine_id
        if not owner:
            if unit.is_global and self.agent is not None and self.agent.holds(name):
                owner = self.machine_id
            else:
                raise ApiError(409, f"unit {name} is not scheduled to any machine")
        if owner == self.machine_id and self.agent is not None:
            if not self.agent.holds(name):
                raise ApiError(409, f"unit {name} is not loaded on machine {owner}")
            if action == "status":
                output = await self.agent.status_text(name)
            else:
                lines = _int_query(request, "lines", 10)
                output = await self.agent.journal(name, lines)
            return web.json_response({"machineID": owner, "output": output})
        return await self._forward(request, owner, name, action)

    async def _forward(self, request: web.Request, owner: str, name: str,
                       action: str) -> web.Response:
        if request.query.get("forwarded"):
            raise ApiError(502, f"machine {owner} does not hold unit {name}")
        machines = {m.id: m for m in await self.registry.machines()}
        target = machines.get(owner)
        if target is None or not target.api_url:
            raise ApiError(503, f"machine {owner} publishes no API address")
        query = dict(request.query)
        query.update({"machineID": owner, "forwarded": "1"})
        url = f"{target.api_url.rstrip('/')}/fleet/v1/units/{name}/{action}"
        try:
            async with aiohttp.ClientSession() as session, session.get(
                url, params=query, timeout=aiohttp.ClientTimeout(total=10)
            ) as reply:
                payload = await reply.json(content_type=None)
                return web.json_response(payload, status=reply.status)
        except (aiohttp.ClientError, TimeoutError, ValueError) as error:
            raise ApiError(502, f"machine {owner} unreachable: {error}") from None

    async def unit_status(self, request: web.Request) -> web.Response:
        return await self._on_owner(request, "status")

    async def unit_journal(self, request: web.Request) -> web.Response:
        return await self._on_owner(request, "journal")

    # ------------------------------------------------------------ state and machines

    async def list_states(self, request: web.Request) -> web.Response:
        states = await self.registry.unit_states(
            machine=request.query.get("machineID") or None,
            unit=request.query.get("unitName") or None)
        page, token = paginate(states, request, self.token_limit)
        body: dict[str, Any] = {"states": [s.to_json() for s in page]}
        if token:
            body["nextPageToken"] = token
        return web.json_response(body)

    async def get_state(self, request: web.Request) -> web.Response:
        """The unit's state from one machine (the first by machine ID), as fleet's
        registry.UnitState answers it; 404 while no agent has published one."""
        states = await self.registry.unit_states(unit=request.match_info["name"])
        if not states:
            raise ApiError(404, "unit state does not exist")
        return web.json_response(states[0].to_json())

    async def discovery(self, request: web.Request) -> web.Response:
        if request.method != "GET":
            # fleet's discoveryResource answers every other method with 400, not 405
            raise ApiError(400, "only HTTP GET supported against this resource")
        return web.Response(body=DISCOVERY, content_type="application/json")

    async def list_machines(self, request: web.Request) -> web.Response:
        machines = await self.registry.machines()
        page, token = paginate(machines, request, self.token_limit)
        body: dict[str, Any] = {"machines": [
            {"id": m.id, "primaryIP": m.public_ip, "metadata": m.metadata} for m in page]}
        if token:
            body["nextPageToken"] = token
        return web.json_response(body)

    async def patch_machines(self, request: web.Request) -> web.Response:
        try:
            ops = json.loads(await request.read())
        except (ValueError, UnicodeDecodeError) as error:
            raise ApiError(400, f"unable to decode body: {error}") from None
        if not isinstance(ops, list):
            raise ApiError(400, "unable to decode body: expected a list of operations")
        planned: list[tuple[str, str, str | None]] = []
        for index, op in enumerate(ops):
            if not isinstance(op, dict):
                raise ApiError(400, f"[{index}]: must be an object")
            kind, path = op.get("op"), op.get("path")
            if kind not in ("add", "remove", "replace"):
                raise ApiError(400, f"[{index}].op: invalid op {kind!r}")
            parts = path.split("/") if isinstance(path, str) else []
            if len(parts) != 4 or parts[0] or parts[2] != "metadata" or not parts[1] \
                    or not METADATA_KEY.match(parts[3]):
                raise ApiError(400, f"[{index}].path: invalid path {path!r}")
            value: str | None = None
            if kind != "remove":
                wrapped = op.get("value")
                value = wrapped.get("value") if isinstance(wrapped, dict) else None
                if not isinstance(value, str) or not value:
                    raise ApiError(400, f"[{index}].value: missing value")
            planned.append((parts[1], parts[3], value))
        for machine, key, value in planned:
            await self.registry.set_machine_metadata(machine, key, value)
        return web.Response(status=204)


def _check_content_type(request: web.Request) -> None:
    """fleet's validateContentType: exactly one Content-Type header, whose media type
    (parameters such as charset aside) is application/json; 415 otherwise."""
    values = request.headers.getall("Content-Type", [])
    if len(values) != 1:
        raise ApiError(415, f"expected 1 Content-Type, got {len(values)}")
    if values[0].split(";", 1)[0].strip() != "application/json":
        raise ApiError(415, "only acceptable Content-Type is application/json")


def _int_query(request: web.Request, key: str, default: int) -> int:
    raw = request.query.get(key)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, f"{key}: must be an integer") from None
    if value < 0:
        raise ApiError(400, f"{key}: must not be negative")
    return value
