"""The admin API under /api/v1/admin/: drain, undrain and reweight members at runtime.

Authentication is a bearer token read from a file (`admin.token_file`) or an
environment variable (`admin.token_env`, default `BINDERFED_ADMIN_TOKEN`) at start
and on every config reload or SIGHUP, and compared in constant time. Without a
token the API is disabled, never open: every admin request gets 403 saying so.

Changes are written to the store as `Override`s, so they take effect on every
replica that shares it, and each one is logged with who (the `X-Admin-User` header
or `?by=`, else "token holder"), from which client address, what and when.

| request | effect |
|---|---|
| `POST /api/v1/admin/members/{name}/drain` (optional JSON `{"note": "..."}`) | no new launches; still probed and listed, state `draining` |
| `POST /api/v1/admin/members/{name}/undrain` | back in rotation (keeps a weight override) |
| `PUT /api/v1/admin/members/{name}/weight` (JSON `{"weight": 2}`; `null` resets) | share of launches relative to the others |
| `DELETE /api/v1/admin/members/{name}/override` | forget the override: the member's own declaration applies |
| `GET /api/v1/admin/overrides` | every override in the store |

Whatever a request carries, the answer is a 4xx with a JSON message, never a 500: a
token that is not printable ASCII (RFC 6750 bearer tokens are) is 401 before any
comparison; a body must be a JSON object of at most `MAX_BODY` bytes, arrive within
`BODY_TIMEOUT` seconds and nest no deeper than Python can parse; a weight goes through
the federation's admission gate (`federation.admission.check_weight`: a finite number
from 0 to 1000, huge integers included).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from dataclasses import dataclass, replace
from typing import Any

from aiohttp import web

from federation.admission import AdmissionError, check_weight
from federation.config import AdminSettings
from federation.members import Override
from federation.secrets import Secret, SecretError, read_secret

from .api import member_json
from .context import CONTEXT, RouterContext
from .clients import client_address

log = logging.getLogger("binderfed.admin")

PREFIX = "/api/v1/admin"
MAX_LABEL = 64
MAX_NOTE = 500
MIN_TOKEN = 16
MAX_BODY = 64 * 1024     # bytes of a request body read
BODY_TIMEOUT = 10.0      # seconds a body may take to arrive


class AdminAuth:
    """The admin token of one router, re-read by `load()` on start and on reload."""

    def __init__(self, settings: AdminSettings):
        self.settings = settings
        self.token = Secret()
        self.problem = ""

    def load(self, settings: AdminSettings | None = None) -> None:
        if settings is not None:
            self.settings = settings
        before = self.token
        try:
            self.token = read_secret(self.settings.token_env, self.settings.token_file)
            self.problem = ""
        except SecretError as exc:
            self.token, self.problem = Secret(), str(exc)
            log.error("admin API disabled: admin token %s", exc)
            return
        if self.token:
            if before.value != self.token.value:
                log.info("admin API enabled (token from %s)", self.token.origin)
                if len(self.token.value) < MIN_TOKEN:
                    log.warning("the admin token from %s is shorter than %d characters: use a long random one "
                                "(openssl rand -hex 32)", self.token.origin, MIN_TOKEN)
        elif self.token.origin:
            self.problem = f"{self.token.origin} is empty"
            log.warning("admin API disabled: %s", self.problem)
        elif before:
            log.warning("admin API disabled: no admin token configured any more")

    @property
    def enabled(self) -> bool:
        return bool(self.token)

    def disabled_reason(self) -> str:
        where = (f"the file {self.settings.token_file}" if self.settings.token_file
                 else f"the environment variable {self.settings.token_env}")
        detail = f" ({self.problem})" if self.problem else ""
        return f"the admin API is disabled: no admin token is configured{detail}; put one in {where}"

    def check(self, presented: str) -> bool:
        # Both sides are printable ASCII here (authorize() refuses anything else first).
        return hmac.compare_digest(presented.encode("ascii"), self.token.value.encode("utf-8"))


ADMIN = web.AppKey("binderfed_admin", AdminAuth)


@dataclass(frozen=True)
class Actor:
    """Who made a change: an operator's label and the client address it came from."""

    who: str
    client: str


def setup(app: web.Application, settings: AdminSettings) -> None:
    """Register the admin routes; the token is loaded by `load_token` when the app starts."""
    app[ADMIN] = AdminAuth(settings)
    members = PREFIX + "/members/{name}"
    app.router.add_post(members + "/drain", drain)
    app.router.add_post(members + "/undrain", undrain)
    app.router.add_put(members + "/weight", set_weight)
    app.router.add_delete(members + "/override", clear_override)
    app.router.add_get(PREFIX + "/overrides", list_overrides)
    app.router.add_route("*", PREFIX + "/{tail:.*}", not_found)


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.HTTPException:
    body = {"text": json.dumps({"error": message}), "content_type": "application/json", "headers": headers}
    if status == 413:
        return web.HTTPRequestEntityTooLarge(MAX_BODY, **body)
    cls = web.HTTPException
    for candidate in (web.HTTPBadRequest, web.HTTPUnauthorized, web.HTTPForbidden, web.HTTPNotFound,
                      web.HTTPRequestTimeout):
        if candidate.status_code == status:
            cls = candidate
    return cls(**body)


def _label(text: str) -> str:
    """An operator-supplied label fit for a log line: printable, one line, bounded."""
    cleaned = "".join(ch for ch in text if ch.isprintable()).strip()
    return cleaned[:MAX_LABEL]


def authorize(request: web.Request) -> Actor:
    """The actor behind an admin request, or an HTTP error: 403 disabled, 401 no token, 403 wrong token."""
    auth = request.app[ADMIN]
    client = _client(request)
    if not auth.enabled:
        raise _error(403, auth.disabled_reason())
    header = request.headers.get("Authorization", "")
    scheme, _, presented = header.partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        raise _error(401, "admin token required: send 'Authorization: Bearer <token>'",
                     {"WWW-Authenticate": 'Bearer realm="binder-federation admin"'})
    presented = presented.strip()
    if not (presented.isascii() and presented.isprintable()):
        log.warning("admin request with a malformed token from %s: %s %s", client, request.method, request.path,
                    extra={"client": client})
        raise _error(401, "malformed admin token: a bearer token is printable ASCII",
                     {"WWW-Authenticate": 'Bearer realm="binder-federation admin", error="invalid_request"'})
    if not auth.check(presented):
        log.warning("admin request with a wrong token from %s: %s %s", client, request.method, request.path,
                    extra={"client": client})
        raise _error(403, "wrong admin token",
                     {"WWW-Authenticate": 'Bearer realm="binder-federation admin", error="invalid_token"'})
    who = _label(request.headers.get("X-Admin-User", "") or request.query.get("by", "")) or "token holder"
    return Actor(who, client)


def _client(request: web.Request) -> str:
    """The operator's address: behind a trusted proxy (router.trusted_proxies), the one it forwarded."""
    return client_address(request, request.app[CONTEXT].config.router.trusted_networks)


async def _body(request: web.Request, required: bool) -> dict[str, Any]:
    if not request.can_read_body:
        if required:
            raise _error(400, "a JSON object body is required")
        return {}
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise _error(413, f"body is larger than {MAX_BODY} bytes")
    try:
        async with asyncio.timeout(BODY_TIMEOUT):
            raw = await request.content.read(MAX_BODY + 1)
    except TimeoutError:
        raise _error(408, f"body did not arrive within {BODY_TIMEOUT:g} s") from None
    if len(raw) > MAX_BODY:
        raise _error(413, f"body is larger than {MAX_BODY} bytes")
    try:
        data = json.loads(raw)
    except RecursionError:
        raise _error(400, "body is not valid JSON: nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise _error(400, f"body is not valid JSON: {str(exc)[:200]}") from None
    if not isinstance(data, dict):
        raise _error(400, f"body must be a JSON object, not {type(data).__name__}")
    return data


def _note(data: dict[str, Any]) -> str:
    note = data.get("note", "")
    if not isinstance(note, str):
        raise _error(400, f"note must be a string, not {type(note).__name__}")
    cleaned = " ".join("".join(ch for ch in note if ch.isprintable() or ch.isspace()).split())
    if len(cleaned) > MAX_NOTE:
        raise _error(400, f"note is longer than {MAX_NOTE} characters")
    return cleaned


def _known(ctx: RouterContext, name: str) -> None:
    if ctx.membership.get(name) is None:
        known = ", ".join(m.name for m in ctx.membership.members()) or "none"
        raise _error(404, f"unknown member {name!r} (members: {known})")


async def _current(ctx: RouterContext, name: str) -> Override:
    return (await ctx.store.overrides()).get(name) or Override()


def _is_noop(override: Override) -> bool:
    return not override.draining and override.weight is None


async def _apply(request: web.Request, name: str, action: str, override: Override, actor: Actor, what: str) -> web.Response:
    ctx = request.app[CONTEXT]
    stored = None if _is_noop(override) else override
    await ctx.store.set_override(name, stored)
    ctx.metrics.admin_changes.labels(action).inc()
    log.info(
        "admin: %s %s by %s from %s at %s: %s", action, name, actor.who, actor.client,
        time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(override.at)), what,
        extra={"admin_action": action, "member": name, "by": actor.who, "client": actor.client,
               "at": override.at, "override": stored.to_json() if stored else None},
    )
    return await _member_response(ctx, name, stored)


async def _member_response(ctx: RouterContext, name: str, override: Override | None) -> web.Response:
    view = await ctx.view_for(None)
    member = view.by_name(name)
    body: dict[str, Any] = {"name": name, "override": override.to_json() if override else None}
    if member is not None:
        body["member"] = member_json(ctx, member, view.now)
    return web.json_response(body)


async def _set_draining(request: web.Request, draining: bool) -> web.Response:
    actor = authorize(request)
    ctx = request.app[CONTEXT]
    name = request.match_info["name"]
    data = await _body(request, required=False)
    note = _note(data)
    _known(ctx, name)
    current = await _current(ctx, name)
    override = replace(current, draining=draining, by=actor.who, at=time.time(), note=note)
    if draining:
        return await _apply(request, name, "drain", override, actor, "draining" + (f" ({note})" if note else ""))
    return await _apply(request, name, "undrain", override, actor, "back in rotation")


async def drain(request: web.Request) -> web.Response:
    return await _set_draining(request, True)


async def undrain(request: web.Request) -> web.Response:
    return await _set_draining(request, False)


async def set_weight(request: web.Request) -> web.Response:
    actor = authorize(request)
    ctx = request.app[CONTEXT]
    name = request.match_info["name"]
    data = await _body(request, required=True)
    if "weight" not in data:
        raise _error(400, 'missing "weight": send {"weight": <number >= 0>} (null resets to the declared weight)')
    weight = data["weight"]
    if weight is not None:
        try:
            weight = check_weight(weight)  # the admission gate every member's weight goes through
        except AdmissionError as exc:
            raise _error(400, f"{exc.why} (or null to reset it)") from None
    note = _note(data)
    _known(ctx, name)
    current = await _current(ctx, name)
    override = replace(current, weight=weight, by=actor.who, at=time.time(), note=note or current.note)
    what = f"weight {weight:g}" if weight is not None else "weight reset to the declared one"
    return await _apply(request, name, "weight", override, actor, what)


async def clear_override(request: web.Request) -> web.Response:
    actor = authorize(request)
    ctx = request.app[CONTEXT]
    name = request.match_info["name"]
    overrides = await ctx.store.overrides()
    if name not in overrides:
        _known(ctx, name)  # a departed member's leftover override may still be cleared
    override = Override(by=actor.who, at=time.time())
    return await _apply(request, name, "clear", override, actor, "override removed")


async def list_overrides(request: web.Request) -> web.Response:
    authorize(request)
    ctx = request.app[CONTEXT]
    overrides = await ctx.store.overrides()
    return web.json_response({
        "overrides": [
            {"member": name, "known": ctx.membership.get(name) is not None, **override.to_json()}
            for name, override in sorted(overrides.items())
        ]
    })


async def not_found(request: web.Request) -> web.Response:
    authorize(request)  # do not reveal the API's shape to anyone without the token
    raise _error(404, f"no admin endpoint {request.method} {request.path}")


def load_token(app: web.Application, settings: AdminSettings | None = None) -> None:
    app[ADMIN].load(settings)
