"""A Consul test double: the parts of Consul's HTTP API this project uses, on loopback.

No Consul binary can be installed where the tests run, so this small aiohttp server
speaks the documented wire format (https://developer.hashicorp.com/consul/api-docs)
of one Consul agent that is also the catalog, and the real `consul` client library
(py-consul) talks to it over a socket:

- `PUT /v1/agent/service/register` (keys case-insensitive, as Consul accepts them;
  `check`/`checks`, `?replace-existing-checks`), `PUT /v1/agent/service/deregister/<id>`,
  `PUT /v1/agent/service/maintenance/<id>?enable=&reason=`;
- `GET /v1/catalog/service/<name>`, `GET /v1/catalog/services`,
  `GET /v1/health/service/<name>` (`?passing`, `?tag`), `GET /v1/agent/services`;
- `GET/PUT/DELETE /v1/kv/<key>` (`?recurse`, `?keys`, `?raw`, `?cas`, `?flags`);
- `GET /v1/status/leader`.

Reads are blocking queries when given `?index=N`: the request is held until the
index of what it reads passes N or `?wait=` (Go duration, default 5m, at most 10m)
runs out, and every read answers with `X-Consul-Index`. HTTP checks are run like an
agent runs them (2xx passing, 429 warning, anything else critical; a new check
starts `critical`); tests may also set a check's status with `set_check_status`.

With `acl_token` set, writes need that token (`X-Consul-Token`, a bearer token or
`?token=`): a different token gets 403 "ACL not found", none gets 403 "Permission
denied"; reads without it are filtered to nothing, as with a default-deny policy.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

import aiohttp
from aiohttp import web

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
MAX_WAIT = 600.0
DEFAULT_WAIT = 300.0


def parse_duration(text: str) -> float:
    """A Go duration ("10s", "1m30s", "250ms") in seconds; ValueError when it is not one."""
    text = text.strip()
    if not text:
        raise ValueError("empty duration")
    pos, total = 0, 0.0
    for match in _DURATION.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos != len(text):
        if text.isdigit():  # Consul also takes a bare number of seconds for some fields
            return float(text)
        raise ValueError(f"invalid duration {text!r}")
    return total


def _lower_keys(value: Any) -> Any:
    """Consul decodes request bodies case-insensitively; normalise keys to lower case.

    Meta keys are data, not field names, so their case is kept.
    """
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            lowered = key.lower()
            out[lowered] = dict(item) if lowered == "meta" and isinstance(item, dict) else _lower_keys(item)
        return out
    if isinstance(value, list):
        return [_lower_keys(v) for v in value]
    return value


@dataclass
class _Check:
    node: str
    check_id: str
    name: str
    status: str
    service_id: str = ""
    service_name: str = ""
    service_tags: list[str] = field(default_factory=list)
    notes: str = ""
    output: str = ""
    type: str = ""
    http: str = ""
    interval: float = 10.0
    timeout: float = 10.0
    header: dict[str, list[str]] = field(default_factory=dict)
    create_index: int = 0
    modify_index: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "Node": self.node,
            "CheckID": self.check_id,
            "Name": self.name,
            "Status": self.status,
            "Notes": self.notes,
            "Output": self.output,
            "ServiceID": self.service_id,
            "ServiceName": self.service_name,
            "ServiceTags": list(self.service_tags),
            "Type": self.type,
            "Interval": f"{self.interval:g}s" if self.type == "http" else "",
            "Timeout": f"{self.timeout:g}s" if self.type == "http" else "",
            "ExposedPort": 0,
            "Definition": {},
            "CreateIndex": self.create_index,
            "ModifyIndex": self.modify_index,
        }


@dataclass
class _Service:
    node: str
    service_id: str
    name: str
    address: str = ""
    port: int = 0
    tags: list[str] = field(default_factory=list)
    meta: dict[str, str] = field(default_factory=dict)
    weights: dict[str, int] = field(default_factory=lambda: {"Passing": 1, "Warning": 1})
    enable_tag_override: bool = False
    create_index: int = 0
    modify_index: int = 0

    def to_json(self) -> dict[str, Any]:
        """The `Service` object of /v1/health/service and /v1/agent/services."""
        return {
            "Kind": "",
            "ID": self.service_id,
            "Service": self.name,
            "Tags": list(self.tags),
            "Address": self.address,
            "TaggedAddresses": {},
            "Meta": dict(self.meta),
            "Port": self.port,
            "Weights": dict(self.weights),
            "EnableTagOverride": self.enable_tag_override,
            "Proxy": {"Mode": "", "MeshGateway": {}, "Expose": {}},
            "Connect": {},
            "PeerName": "",
            "CreateIndex": self.create_index,
            "ModifyIndex": self.modify_index,
            "Datacenter": "",
            "Namespace": "",
            "Partition": "",
        }


@dataclass
class _KV:
    key: str
    value: bytes | None
    flags: int = 0
    create_index: int = 0
    modify_index: int = 0
    lock_index: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "Key": self.key,
            "Value": base64.b64encode(self.value).decode() if self.value is not None else None,
            "Flags": self.flags,
            "CreateIndex": self.create_index,
            "ModifyIndex": self.modify_index,
            "LockIndex": self.lock_index,
            "Session": "",
        }


class ConsulDouble:
    """One Consul agent + catalog on 127.0.0.1. State survives `stop()`/`start()` (like a restart)."""

    def __init__(
        self,
        *,
        datacenter: str = "dc1",
        node: str = "consul-double",
        node_address: str = "127.0.0.1",
        acl_token: str | None = None,
        run_checks: bool = True,
    ):
        self.datacenter = datacenter
        self.node = node
        self.acl_token = acl_token
        self.run_checks = run_checks
        self.index = 1
        self.requests: list[tuple[str, str, dict[str, str]]] = []  # (method, path, query) seen, oldest first
        self._nodes: dict[str, dict[str, Any]] = {}
        self._services: dict[tuple[str, str], _Service] = {}
        self._checks: dict[tuple[str, str], _Check] = {}
        self._kv: dict[str, _KV] = {}
        self._service_index: dict[str, int] = {}
        self._kv_index = 1
        self._changed = asyncio.Event()
        self._check_tasks: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._closing = False
        self.port = 0
        self.add_node(node, node_address)

    # -- lifecycle -----------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, port: int | None = None) -> str:
        """Serve on 127.0.0.1 (on the previous port after a stop, so clients find it again)."""
        app = web.Application()
        app.router.add_put("/v1/agent/service/register", self._register)
        app.router.add_put("/v1/agent/service/deregister/{id}", self._deregister)
        app.router.add_put("/v1/agent/service/maintenance/{id}", self._maintenance)
        app.router.add_get("/v1/agent/services", self._agent_services)
        app.router.add_get("/v1/catalog/services", self._catalog_services)
        app.router.add_get("/v1/catalog/service/{name}", self._catalog_service)
        app.router.add_get("/v1/health/service/{name}", self._health_service)
        app.router.add_get("/v1/kv/{key:.*}", self._kv_get)
        app.router.add_put("/v1/kv/{key:.*}", self._kv_put)
        app.router.add_delete("/v1/kv/{key:.*}", self._kv_delete)
        app.router.add_get("/v1/status/leader", self._leader)
        app.middlewares.append(self._record)
        app.on_shutdown.append(self._on_shutdown)
        self._closing = False
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port if port is not None else self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        if self.run_checks:
            for key, check in self._checks.items():
                if check.type == "http":
                    self._start_check(key)
        return self.url

    async def stop(self) -> None:
        """Stop answering (connections are refused afterwards); registrations are kept."""
        self._closing = True
        self._notify()
        tasks = list(self._check_tasks.values())
        self._check_tasks.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _on_shutdown(self, app: web.Application) -> None:
        self._closing = True
        self._notify()

    # -- state helpers for tests ---------------------------------------------------------

    def add_node(self, node: str, address: str) -> None:
        """Another node of the cluster (an organization's own agent), with its serfHealth check."""
        index = self._bump()
        self._nodes[node] = {
            "ID": str(uuid.uuid5(uuid.NAMESPACE_DNS, node)),
            "Node": node,
            "Address": address,
            "Datacenter": self.datacenter,
            "TaggedAddresses": {"lan": address, "wan": address},
            "Meta": {"consul-network-segment": ""},
            "CreateIndex": index,
            "ModifyIndex": index,
        }
        self._checks[(node, "serfHealth")] = _Check(
            node=node, check_id="serfHealth", name="Serf Health Status", status="passing",
            output="Agent alive and reachable", type="", create_index=index, modify_index=index,
        )

    def register(self, definition: dict[str, Any], node: str | None = None) -> None:
        """What `PUT /v1/agent/service/register` does, on `node` (default: this agent's)."""
        self._register_definition(_lower_keys(definition), node or self.node, replace_checks=False)

    def service_ids(self, name: str | None = None) -> list[str]:
        return sorted(s.service_id for s in self._services.values() if name is None or s.name == name)

    def service(self, service_id: str, node: str | None = None) -> dict[str, Any] | None:
        found = self._services.get((node or self.node, service_id))
        return found.to_json() if found else None

    def checks(self, service_id: str) -> list[dict[str, Any]]:
        return [c.to_json() for c in self._checks.values() if c.service_id == service_id]

    def set_check_status(self, check_id: str, status: str, output: str = "", node: str | None = None) -> None:
        if status not in ("passing", "warning", "critical"):
            raise ValueError(f"not a Consul check status: {status!r}")
        check = self._checks[(node or self.node, check_id)]
        task = self._check_tasks.pop((check.node, check_id), None)
        if task is not None:
            task.cancel()  # a test that sets a status takes over from the HTTP check
        self._update_check(check, status, output or f"set by test: {status}")

    def kv_value(self, key: str) -> bytes | None:
        entry = self._kv.get(key)
        return entry.value if entry else None

    # -- internals -----------------------------------------------------------------------

    def _bump(self) -> int:
        self.index += 1
        return self.index

    def _notify(self) -> None:
        event, self._changed = self._changed, asyncio.Event()
        event.set()

    def _touch_service(self, name: str, index: int) -> None:
        self._service_index[name] = index
        self._notify()

    def _update_check(self, check: _Check, status: str, output: str) -> None:
        if check.status == status and check.output == output:
            return
        index = self._bump()
        check.status, check.output, check.modify_index = status, output, index
        if check.service_name:
            self._touch_service(check.service_name, index)
        else:  # a node check concerns every service on the node
            for service in self._services.values():
                if service.node == check.node:
                    self._touch_service(service.name, index)
            self._notify()

    def _register_definition(self, d: dict[str, Any], node: str, replace_checks: bool) -> None:
        name = d.get("name")
        if not isinstance(name, str) or not name:
            raise web.HTTPBadRequest(text="Missing service name")
        sid = d.get("id") or name
        index = self._bump()
        key = (node, sid)
        old = self._services.get(key)
        if old is not None and old.name != name:
            self._touch_service(old.name, index)
        meta = {str(k): str(v) for k, v in (d.get("meta") or {}).items()}
        for k, v in meta.items():
            if len(k) > 128 or len(v) > 512:
                raise web.HTTPBadRequest(text=f"Invalid service: Key {k!r} or its value is too long")
        weights = d.get("weights") or {}
        service = _Service(
            node=node, service_id=sid, name=name, address=d.get("address") or "", port=int(d.get("port") or 0),
            tags=[str(t) for t in d.get("tags") or []], meta=meta,
            weights={"Passing": int(weights.get("passing", 1)), "Warning": int(weights.get("warning", 1))},
            enable_tag_override=bool(d.get("enabletagoverride", False)),
            create_index=old.create_index if old else index, modify_index=index,
        )
        self._services[key] = service
        definitions = list(d.get("checks") or [])
        if d.get("check"):
            definitions.insert(0, d["check"])
        if replace_checks or definitions:
            for ckey in [k for k, c in self._checks.items() if c.node == node and c.service_id == sid
                         and not c.check_id.startswith("_service_maintenance")]:
                self._drop_check(ckey)
        for n, cdef in enumerate(definitions, start=1):
            check_id = cdef.get("checkid") or cdef.get("id") or (f"service:{sid}" if len(definitions) == 1 else f"service:{sid}:{n}")
            kind = "http" if cdef.get("http") else ("ttl" if cdef.get("ttl") else ("tcp" if cdef.get("tcp") else "script"))
            check = _Check(
                node=node, check_id=check_id, name=cdef.get("name") or f"Service '{name}' check",
                status=cdef.get("status") or "critical", service_id=sid, service_name=name,
                service_tags=list(service.tags), notes=cdef.get("notes") or "", type=kind,
                http=cdef.get("http") or "",
                interval=parse_duration(str(cdef.get("interval") or "10s")),
                timeout=parse_duration(str(cdef.get("timeout") or "10s")),
                header=cdef.get("header") or {}, create_index=index, modify_index=index,
            )
            self._checks[(node, check_id)] = check
            if kind == "http" and self.run_checks and self._runner is not None:
                self._start_check((node, check_id))
        self._touch_service(name, index)

    def _drop_check(self, key: tuple[str, str]) -> None:
        self._checks.pop(key, None)
        task = self._check_tasks.pop(key, None)
        if task is not None:
            task.cancel()

    def _start_check(self, key: tuple[str, str]) -> None:
        old = self._check_tasks.pop(key, None)
        if old is not None:
            old.cancel()
        self._check_tasks[key] = asyncio.create_task(self._run_http_check(key), name=f"consul-check-{key[1]}")

    async def _run_http_check(self, key: tuple[str, str]) -> None:
        while True:
            check = self._checks.get(key)
            if check is None or self._session is None:
                return
            try:
                headers = {k: v[0] for k, v in check.header.items() if v}
                async with self._session.get(check.http, headers=headers,
                                             timeout=aiohttp.ClientTimeout(total=check.timeout)) as resp:
                    body = (await resp.text(errors="replace"))[:4096]
                    status = "passing" if 200 <= resp.status < 300 else ("warning" if resp.status == 429 else "critical")
                    output = f"HTTP GET {check.http}: {resp.status} {resp.reason} Output: {body}"
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                status, output = "critical", f'Get "{check.http}": {exc or type(exc).__name__}'
            if self._checks.get(key) is check:
                self._update_check(check, status, output)
            await asyncio.sleep(check.interval)

    def _authorized(self, request: web.Request, write: bool) -> bool:
        if self.acl_token is None:
            return True
        token = (request.headers.get("X-Consul-Token") or request.query.get("token")
                 or request.headers.get("Authorization", "").removeprefix("Bearer ").strip())
        if token == self.acl_token:
            return True
        if token:
            raise web.HTTPForbidden(text="ACL not found")
        if write:
            raise web.HTTPForbidden(text="Permission denied: anonymous token lacks permission 'service:write'")
        return False

    @web.middleware
    async def _record(self, request: web.Request, handler: Callable) -> web.StreamResponse:
        self.requests.append((request.method, request.path, dict(request.query)))
        return await handler(request)

    async def _block(self, request: web.Request, current: Callable[[], int]) -> int:
        """Hold a blocking query until `current()` passes ?index or ?wait runs out; the index to send."""
        raw = request.query.get("index")
        if raw is None:
            return current()
        try:
            index = int(raw)
        except ValueError:
            raise web.HTTPBadRequest(text=f"Invalid index: {raw!r}") from None
        try:
            wait = min(parse_duration(request.query.get("wait", "")) if "wait" in request.query else DEFAULT_WAIT, MAX_WAIT)
        except ValueError:
            raise web.HTTPBadRequest(text="Invalid wait time") from None
        deadline = time.monotonic() + wait
        while current() <= index and not self._closing:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            event = self._changed
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(event.wait(), remaining)
        return current()

    def _json(self, data: Any, index: int, filtered: bool = False, status: int = 200) -> web.Response:
        headers = {"X-Consul-Index": str(index), "X-Consul-KnownLeader": "true", "X-Consul-LastContact": "0",
                   "X-Consul-Default-ACL-Policy": "deny" if self.acl_token else "allow"}
        if filtered:
            headers["X-Consul-Results-Filtered-By-ACLs"] = "true"
        return web.json_response(data, status=status, headers=headers)

    def _dc_ok(self, request: web.Request) -> None:
        dc = request.query.get("dc")
        if dc and dc != self.datacenter:
            raise web.HTTPInternalServerError(text=f"No path to datacenter")

    # -- agent ---------------------------------------------------------------------------

    async def _register(self, request: web.Request) -> web.Response:
        self._authorized(request, write=True)
        try:
            definition = _lower_keys(json.loads(await request.text() or "{}"))
        except ValueError as exc:
            raise web.HTTPBadRequest(text=f"Request decode failed: {exc}") from None
        if not isinstance(definition, dict):
            raise web.HTTPBadRequest(text="Request decode failed: not an object")
        try:
            self._register_definition(definition, self.node,
                                      replace_checks=request.query.get("replace-existing-checks") in ("true", "1"))
        except ValueError as exc:
            raise web.HTTPBadRequest(text=f"Invalid check: {exc}") from None
        return web.Response(status=200)

    async def _deregister(self, request: web.Request) -> web.Response:
        self._authorized(request, write=True)
        sid = request.match_info["id"]
        service = self._services.pop((self.node, sid), None)
        if service is None:
            raise web.HTTPNotFound(text=f'Unknown service ID "{sid}". Ensure that the service ID is passed, not the service name.')
        for key in [k for k, c in self._checks.items() if c.node == self.node and c.service_id == sid]:
            self._drop_check(key)
        self._touch_service(service.name, self._bump())
        return web.Response(status=200)

    async def _maintenance(self, request: web.Request) -> web.Response:
        self._authorized(request, write=True)
        sid = request.match_info["id"]
        service = self._services.get((self.node, sid))
        if service is None:
            raise web.HTTPNotFound(text=f'Unknown service ID "{sid}"')
        enable = request.query.get("enable", "")
        if enable not in ("true", "false"):
            raise web.HTTPBadRequest(text="Missing value for enable")
        key = (self.node, f"_service_maintenance:{sid}")
        index = self._bump()
        if enable == "true":
            reason = request.query.get("reason", "")
            self._checks[key] = _Check(
                node=self.node, check_id=key[1], name="Service Maintenance Mode", status="critical",
                service_id=sid, service_name=service.name, notes=reason or "Maintenance mode is enabled for this service, but no reason was provided. This is a default message.",
                output="", type="maintenance", create_index=index, modify_index=index,
            )
        else:
            self._checks.pop(key, None)
        self._touch_service(service.name, index)
        return web.Response(status=200)

    async def _agent_services(self, request: web.Request) -> web.Response:
        allowed = self._authorized(request, write=False)
        services = {s.service_id: s.to_json() for s in self._services.values() if s.node == self.node} if allowed else {}
        return web.json_response(services)

    async def _leader(self, request: web.Request) -> web.Response:
        return web.json_response("127.0.0.1:8300")

    # -- catalog and health --------------------------------------------------------------

    def _entries(self, name: str, request: web.Request) -> list[_Service]:
        tags = request.query.getall("tag", [])
        found = [s for s in self._services.values() if s.name == name and all(t in s.tags for t in tags)]
        return sorted(found, key=lambda s: (s.node, s.service_id))

    def _checks_of(self, service: _Service) -> list[_Check]:
        return [c for c in self._checks.values()
                if c.node == service.node and (c.service_id == "" or c.service_id == service.service_id)]

    async def _catalog_services(self, request: web.Request) -> web.Response:
        self._dc_ok(request)
        allowed = self._authorized(request, write=False)
        index = await self._block(request, lambda: self.index)
        names: dict[str, list[str]] = {}
        for service in self._services.values():
            names.setdefault(service.name, [])
            names[service.name] = sorted(set(names[service.name]) | set(service.tags))
        return self._json(names if allowed else {}, index, filtered=not allowed)

    async def _catalog_service(self, request: web.Request) -> web.Response:
        self._dc_ok(request)
        name = request.match_info["name"]
        allowed = self._authorized(request, write=False)
        index = await self._block(request, lambda: self._service_index.get(name, 1))
        result = []
        for s in self._entries(name, request) if allowed else []:
            node = self._nodes[s.node]
            result.append({
                "ID": node["ID"],
                "Node": s.node,
                "Address": node["Address"],
                "Datacenter": self.datacenter,
                "TaggedAddresses": node["TaggedAddresses"],
                "NodeMeta": node["Meta"],
                "ServiceKind": "",
                "ServiceID": s.service_id,
                "ServiceName": s.name,
                "ServiceTags": list(s.tags),
                "ServiceAddress": s.address,
                "ServiceTaggedAddresses": {},
                "ServiceWeights": dict(s.weights),
                "ServiceMeta": dict(s.meta),
                "ServicePort": s.port,
                "ServiceEnableTagOverride": s.enable_tag_override,
                "ServiceProxy": {"Mode": "", "MeshGateway": {}, "Expose": {}},
                "ServiceConnect": {},
                "CreateIndex": s.create_index,
                "ModifyIndex": s.modify_index,
            })
        return self._json(result, index, filtered=not allowed)

    async def _health_service(self, request: web.Request) -> web.Response:
        self._dc_ok(request)
        name = request.match_info["name"]
        allowed = self._authorized(request, write=False)
        index = await self._block(request, lambda: self._service_index.get(name, 1))
        passing_only = "passing" in request.query and request.query.get("passing") not in ("0", "false")
        result = []
        for s in self._entries(name, request) if allowed else []:
            checks = self._checks_of(s)
            if passing_only and any(c.status != "passing" for c in checks):
                continue
            result.append({"Node": dict(self._nodes[s.node]), "Service": s.to_json(), "Checks": [c.to_json() for c in checks]})
        return self._json(result, index, filtered=not allowed)

    # -- key/value store -----------------------------------------------------------------

    async def _kv_get(self, request: web.Request) -> web.StreamResponse:
        key = request.match_info["key"]
        allowed = self._authorized(request, write=False)
        index = await self._block(request, lambda: self._kv_index)
        if "keys" in request.query:
            sep = request.query.get("separator", "")
            keys = set()
            for k in sorted(self._kv) if allowed else []:
                if k.startswith(key):
                    rest = k[len(key):]
                    if sep and sep in rest:
                        k = key + rest[: rest.index(sep) + len(sep)]
                    keys.add(k)
            if not keys:
                return self._json(None, index, status=404)
            return self._json(sorted(keys), index)
        if "recurse" in request.query:
            entries = [e for k, e in sorted(self._kv.items()) if k.startswith(key)] if allowed else []
        else:
            entry = self._kv.get(key) if allowed else None
            entries = [entry] if entry else []
        if not entries:
            return web.Response(status=404, headers={"X-Consul-Index": str(index)})
        if "raw" in request.query:
            return web.Response(body=entries[0].value or b"", headers={"X-Consul-Index": str(index)})
        return self._json([e.to_json() for e in entries], index)

    async def _kv_put(self, request: web.Request) -> web.Response:
        self._authorized(request, write=True)
        key = request.match_info["key"]
        body = await request.read()
        existing = self._kv.get(key)
        if "cas" in request.query:
            cas = int(request.query["cas"])
            current = existing.modify_index if existing else 0
            if cas != current:
                return web.json_response(False)
        index = self._bump()
        self._kv[key] = _KV(key, body, flags=int(request.query.get("flags", existing.flags if existing else 0)),
                            create_index=existing.create_index if existing else index, modify_index=index)
        self._kv_index = index
        self._notify()
        return web.json_response(True)

    async def _kv_delete(self, request: web.Request) -> web.Response:
        self._authorized(request, write=True)
        key = request.match_info["key"]
        doomed = [k for k in self._kv if k.startswith(key)] if "recurse" in request.query else [key]
        removed = [k for k in doomed if self._kv.pop(k, None) is not None]
        if removed:
            self._kv_index = self._bump()
            self._notify()
        return web.json_response(True)
