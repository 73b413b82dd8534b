"""A Kubernetes API test double: the few core/v1 endpoints the member agent reads.

It stands in for an API server because none can run here. It follows the wire
format of the real one, so the real `kubernetes` Python client talks to it unchanged:

- `GET /api/v1/namespaces/{ns}/pods` → `PodList` (`labelSelector`, `limit` and
  `continue` paging, `resourceVersion` in the list metadata);
  with `?watch=1` → a chunked stream of newline-delimited `WatchEvent` JSON
  (`{"type": "ADDED"|"MODIFIED"|"DELETED"|"ERROR", "object": {...}}`), starting after
  the given `resourceVersion` (or with synthetic `ADDED` events for every current
  object when none is given), ending after `timeoutSeconds`; a `resourceVersion`
  older than the retained history gets an `ERROR` event carrying a `410 Expired`
  `Status`, as a real API server does after compaction.
- `GET /api/v1/nodes` → `NodeList` (`labelSelector`, paging).
- errors are `Status` objects (`{"kind": "Status", "code": 401, "reason": ...}`).

Switches for tests: `fail_with(401|500|None)` answers every request with that error
(and ends open watches), `require_token()` demands a bearer token, `expire_history()`
compacts so old resource versions get 410, `end_watches()` closes open watch streams.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import re
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

Obj = dict[str, Any]

_REQUIREMENT = re.compile(
    r"^\s*(?P<neg>!)?\s*(?P<key>[A-Za-z0-9./_-]+)\s*"
    r"(?:(?P<op>==|=|!=)\s*(?P<value>[A-Za-z0-9._-]*)|\s(?P<setop>in|notin)\s*\((?P<values>[^)]*)\))?\s*$"
)


class SelectorError(ValueError):
    pass


def _split_requirements(selector: str) -> list[str]:
    """Split on commas that are not inside `(...)`."""
    parts, depth, current = [], 0, ""
    for char in selector:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return [p for p in parts if p.strip()]


def label_matcher(selector: str | None):
    """A predicate over a labels dict for a Kubernetes label selector (equality and set-based)."""
    checks = []
    for requirement in _split_requirements(selector or ""):
        match = _REQUIREMENT.match(requirement)
        if not match:
            raise SelectorError(f"unable to parse requirement: {requirement!r}")
        key, neg, op, value, setop = (match["key"], match["neg"], match["op"], match["value"], match["setop"])
        if setop:
            values = {v.strip() for v in match["values"].split(",") if v.strip()}
            if setop == "in":
                checks.append(lambda labels, k=key, vs=values: labels.get(k) in vs)
            else:
                checks.append(lambda labels, k=key, vs=values: labels.get(k) not in vs)
        elif op in ("=", "=="):
            checks.append(lambda labels, k=key, v=value: labels.get(k) == v)
        elif op == "!=":
            checks.append(lambda labels, k=key, v=value: labels.get(k) != v)
        elif neg:
            checks.append(lambda labels, k=key: k not in labels)
        else:
            checks.append(lambda labels, k=key: k in labels)
    return lambda labels: all(check(labels or {}) for check in checks)


def _labels(obj: Obj) -> dict[str, str]:
    metadata = obj.get("metadata") or {}
    return metadata.get("labels") or {}


@dataclass(eq=False)
class _Watch:
    namespace: str
    matches: Any
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)


class KubeDouble:
    """State and HTTP app of the double. Start with `await double.start()`; `double.url`."""

    def __init__(self) -> None:
        self.pods: dict[tuple[str, str], Obj] = {}
        self.nodes: dict[str, Obj] = {}
        self.resource_version = 1000
        self.history: list[tuple[int, str, str, Obj]] = []  # (rv, namespace, type, pod)
        self.oldest_retained = self.resource_version
        self.failure: int | None = None
        self.token: str | None = None
        self.requests: list[str] = []  # "LIST pods ns", "WATCH pods ns", "LIST nodes", for assertions
        self._watches: set[_Watch] = set()
        self._closing = False
        self._runner: web.AppRunner | None = None
        self.url = ""

    # -- lifecycle -------------------------------------------------------------------
    async def start(self) -> str:
        app = web.Application()
        app.router.add_get("/api/v1/namespaces/{namespace}/pods", self._pods)
        app.router.add_get("/api/v1/nodes", self._nodes)
        app.router.add_route("*", "/{tail:.*}", self._not_found)
        self._closing = False
        self._runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=0.5, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self.url

    async def stop(self) -> None:
        # Refuse watches from here on: a client thread that opens one after end_watches()
        # would otherwise hold its handler (and the server's shutdown) for the watch's
        # whole timeout.
        self._closing = True
        self.end_watches()
        if self._runner is not None:
            await self._runner.cleanup()

    # -- test switches -----------------------------------------------------------------
    def fail_with(self, status: int | None) -> None:
        """Answer every request with `status` (401, 403, 500, ...); None: serve normally."""
        self.failure = status
        if status is not None:
            self.end_watches()

    def require_token(self, token: str | None) -> None:
        """Demand `Authorization: Bearer <token>`; a changed token ends open watches (expiry)."""
        self.token = token
        self.end_watches()

    def expire_history(self) -> None:
        """Compaction: watches from any resource version seen so far now get 410 Gone."""
        self.history.clear()
        self.resource_version += 1
        self.oldest_retained = self.resource_version

    def end_watches(self) -> None:
        for watch in list(self._watches):
            watch.queue.put_nowait(None)

    def count(self, prefix: str) -> int:
        return sum(1 for r in self.requests if r.startswith(prefix))

    # -- objects -------------------------------------------------------------------------
    def _next_rv(self) -> str:
        self.resource_version += 1
        return str(self.resource_version)

    def put_pod(self, pod: Obj) -> Obj:
        """Create or replace a pod (ADDED or MODIFIED to watchers)."""
        pod = copy.deepcopy(pod)
        metadata = pod.setdefault("metadata", {})
        namespace = metadata.setdefault("namespace", "default")
        key = (namespace, metadata["name"])
        kind = "MODIFIED" if key in self.pods else "ADDED"
        metadata.setdefault("uid", f"uid-{namespace}-{metadata['name']}")
        metadata["resourceVersion"] = self._next_rv()
        self.pods[key] = pod
        self._publish(namespace, kind, pod)
        return pod

    def delete_pod(self, namespace: str, name: str) -> None:
        pod = self.pods.pop((namespace, name))
        pod = copy.deepcopy(pod)
        pod["metadata"]["resourceVersion"] = self._next_rv()
        self._publish(namespace, "DELETED", pod)

    def put_node(self, node: Obj) -> None:
        node = copy.deepcopy(node)
        node.setdefault("metadata", {})["resourceVersion"] = self._next_rv()
        self.nodes[node["metadata"]["name"]] = node

    def _publish(self, namespace: str, kind: str, pod: Obj) -> None:
        rv = int(pod["metadata"]["resourceVersion"])
        self.history.append((rv, namespace, kind, pod))
        for watch in list(self._watches):
            if watch.namespace == namespace and watch.matches(_labels(pod)):
                watch.queue.put_nowait((kind, pod))

    # -- HTTP -----------------------------------------------------------------------------
    @staticmethod
    def _status(code: int, reason: str, message: str) -> web.Response:
        return web.json_response(
            {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
             "message": message, "reason": reason, "code": code},
            status=code,
        )

    def _refusal(self, request: web.Request) -> web.Response | None:
        if self.failure is not None:
            reasons = {401: "Unauthorized", 403: "Forbidden", 429: "TooManyRequests", 500: "InternalError",
                       503: "ServiceUnavailable"}
            return self._status(self.failure, reasons.get(self.failure, "Unknown"), "injected failure")
        if self.token is not None and request.headers.get("Authorization") != f"Bearer {self.token}":
            return self._status(401, "Unauthorized", "Unauthorized")
        return None

    async def _not_found(self, request: web.Request) -> web.Response:
        return self._status(404, "NotFound", f"the server could not find the requested resource ({request.path})")

    def _page(self, kind: str, items: list[Obj], request: web.Request) -> web.Response:
        """A `<Kind>List`, honouring `limit` and `continue` as the real API does."""
        start = 0
        token = request.query.get("continue")
        if token:
            try:
                start = int(base64.urlsafe_b64decode(token.encode()).decode())
            except ValueError:
                return self._status(400, "BadRequest", "continue key is not valid")
        limit = int(request.query.get("limit") or 0)
        end = start + limit if limit > 0 else len(items)
        metadata: Obj = {"resourceVersion": str(self.resource_version)}
        if end < len(items):
            metadata["continue"] = base64.urlsafe_b64encode(str(end).encode()).decode()
            metadata["remainingItemCount"] = len(items) - end
        body = {"kind": kind, "apiVersion": "v1", "metadata": metadata, "items": items[start:end]}
        return web.json_response(body)

    def _matcher(self, request: web.Request):
        return label_matcher(request.query.get("labelSelector"))

    async def _nodes(self, request: web.Request) -> web.StreamResponse:
        refusal = self._refusal(request)
        if refusal is not None:
            return refusal
        self.requests.append("LIST nodes")
        try:
            matches = self._matcher(request)
        except SelectorError as exc:
            return self._status(400, "BadRequest", str(exc))
        items = [copy.deepcopy(n) for _, n in sorted(self.nodes.items()) if matches(_labels(n))]
        return self._page("NodeList", items, request)

    async def _pods(self, request: web.Request) -> web.StreamResponse:
        refusal = self._refusal(request)
        if refusal is not None:
            return refusal
        namespace = request.match_info["namespace"]
        try:
            matches = self._matcher(request)
        except SelectorError as exc:
            return self._status(400, "BadRequest", str(exc))
        if request.query.get("watch") in ("1", "true", "True"):
            return await self._watch(request, namespace, matches)
        self.requests.append(f"LIST pods {namespace}")
        items = [copy.deepcopy(p) for (ns, _), p in sorted(self.pods.items())
                 if ns == namespace and matches(_labels(p))]
        return self._page("PodList", items, request)

    async def _watch(self, request: web.Request, namespace: str, matches) -> web.StreamResponse:
        self.requests.append(f"WATCH pods {namespace}")
        watch = _Watch(namespace, matches)
        since = request.query.get("resourceVersion") or "0"
        timeout = float(request.query.get("timeoutSeconds") or 1800)
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        # Register before replaying, so nothing published in between is lost.
        self._watches.add(watch)
        if self._closing:
            watch.queue.put_nowait(None)
        try:
            if since == "0":
                backlog = [("ADDED", p) for (ns, _), p in sorted(self.pods.items()) if ns == namespace and matches(_labels(p))]
            elif int(since) < self.oldest_retained:
                backlog = []
                await self._send(response, "ERROR", {
                    "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": f"too old resource version: {since} ({self.oldest_retained})",
                    "reason": "Expired", "code": 410,
                })
                return response
            else:
                backlog = [(kind, p) for rv, ns, kind, p in self.history
                           if rv > int(since) and ns == namespace and matches(_labels(p))]
            # Events already queued for this watch are in the backlog too: skip them once.
            replayed = {p["metadata"]["resourceVersion"] for _, p in backlog}
            for kind, pod in backlog:
                await self._send(response, kind, pod)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            while True:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    item = await asyncio.wait_for(watch.queue.get(), remaining)
                except asyncio.TimeoutError:
                    break
                if item is None:
                    break
                kind, pod = item
                if pod["metadata"]["resourceVersion"] in replayed:
                    continue
                await self._send(response, kind, pod)
        except ConnectionResetError:
            pass  # the client went away
        finally:
            self._watches.discard(watch)
        return response

    @staticmethod
    async def _send(response: web.StreamResponse, kind: str, obj: Obj) -> None:
        if kind != "ERROR":
            obj = {"kind": "Pod", "apiVersion": "v1", **obj}
        await response.write(json.dumps({"type": kind, "object": obj}).encode() + b"\n")
