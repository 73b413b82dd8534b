"""The member API of a dev member: `/health`, `/versions` and the `/build/` event stream.

A launch runs as BinderHub's does: the build token and the per-visitor rate limit are
checked, then the stream goes `waiting`, `fetching`, `building`..., `pushing`,
`built` (an image cache makes a second launch of a repo@ref skip the build),
`launching`..., `ready`, with BinderHub's in-band failures. Pods are counted like
BinderHub's health check does: one build pod while a build runs, one user pod from
the start of `launching` until the server is culled.

`MemberApi` is mixed into `hub.devhub.member.DevHub`, whose state it reads and changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
import string
import time
from dataclasses import dataclass
from typing import Any, Mapping
from urllib.parse import unquote

from aiohttp import web

from .. import build_tokens
from .repos import RepoSpec, describe_spec, image_name
from .stream import ClientGone, EventStream

log = logging.getLogger("hub.devhub")

TOO_MANY_USERS = "Too many users on this BinderHub! Try again soon."

_NAME_CHARS = string.ascii_lowercase + string.digits


_BUILD_STEPS = (
    "FROM docker.io/library/buildpack-deps:jammy",
    "ENV DEBIAN_FRONTEND=noninteractive",
    "RUN apt-get -qq update && apt-get -qq install --yes --no-install-recommends less unzip",
    "ARG NB_USER=jovyan",
    "COPY --chown=1000:1000 build_script_files/ /tmp/",
    "RUN TIMEFORMAT='time: %3R' bash -c 'time /tmp/install-base-env.bash'",
    "COPY --chown=1000:1000 src/ ${REPO_DIR}/",
    "RUN ${KERNEL_PYTHON_PREFIX}/bin/pip install --no-cache-dir -r requirements.txt",
    "LABEL repo2docker.version=2024.07.0",
    'ENTRYPOINT ["/usr/local/bin/repo2docker-entrypoint"]',
    'CMD ["jupyter", "notebook", "--ip", "0.0.0.0"]',
)


@dataclass
class Server:
    """One "Jupyter server" (a user pod) of the dev member."""

    name: str
    token: str
    image: str
    repo_url: str
    started: float
    last_activity: float


class MemberApi:
    async def _health(self, request: web.Request) -> web.StreamResponse:
        with self._tracked():
            delay = self._faults.health_delay
            if delay > 0:
                await asyncio.sleep(delay)
        faults = self._faults
        if faults.garbage_health:
            return web.Response(text="<html><body><h1>It works!</h1></body></html>", content_type="text/html")
        checks: list[dict[str, Any]] = [
            {"service": "JupyterHub API", "ok": not faults.unhealthy},
            {"service": "Docker registry", "ok": True},
        ]
        if self.settings.report_quota:
            quota = self.settings.quota
            total = self.total_pods
            checks.append(
                {
                    "service": "Pod quota",
                    "ok": total <= quota if quota is not None else True,
                    "total_pods": total,
                    "build_pods": self.build_pods,
                    "user_pods": self.user_pods,
                    "quota": quota,
                    "_ignore_failure": True,
                }
            )
        ok = all(c["ok"] for c in checks if not c.get("_ignore_failure"))
        return web.json_response({"ok": ok, "checks": checks}, status=200 if ok else 503)

    async def _versions(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(
            {"builder_info": {"build_image": self.settings.build_image}, "binderhub": self.settings.version}
        )

    def _base_url(self, request: web.Request) -> str:
        if self.settings.public_url:
            return self.settings.public_url
        return str(request.url.origin())

    async def _build(self, request: web.Request) -> web.StreamResponse:
        raw_path = request.rel_url.raw_path
        provider, _, spec = raw_path[len("/build/") :].partition("/")
        headers = request.headers
        token = request.query.get("build_token")
        token_problem = self.tokens.check(token, f"{provider}/{spec}", build_tokens.token_origin(headers)) if token else None
        seen = {
            "provider_spec": f"{provider}/{spec}",
            "query": request.rel_url.raw_query_string,
            "x_forwarded_for": headers.get("X-Forwarded-For"),
            "x_real_ip": headers.get("X-Real-Ip"),
            "peer": request.remote,
            "accept": headers.get("Accept"),
            "build_token": None if not token else ("invalid" if token_problem else "valid"),
        }
        self.build_requests.append(seen)
        if self._faults.build_refuse:
            return web.Response(status=500, text="500: Internal Server Error (devhub fault: build_refuse)\n")
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        )
        await response.prepare(request)
        stream = EventStream(request, response, self.settings.keepalive_seconds)
        with self._tracked():
            try:
                if "text/event-stream" not in headers.get("Accept", ""):
                    # EventSource cannot read HTTP status codes: BinderHub reports errors in-band.
                    await stream.emit(
                        {
                            "phase": "failed",
                            "status_code": 400,
                            "message": "Bad Request: /build/ requires the header 'Accept: text/event-stream'\n",
                        }
                    )
                    return response
                refusal = self._check_token_and_rate(request, token, token_problem)
                seen["refused"] = refusal.get("status_code") if refusal else None
                if refusal is not None:
                    await stream.emit(refusal)
                    return response
                stream.start_keepalive()
                await self._run_launch(request, stream, provider, spec)
            except ClientGone:
                log.debug("devhub %s: client left %s", self.settings.name, raw_path)
            finally:
                await stream.stop_keepalive()
        with contextlib.suppress(ConnectionError, RuntimeError):
            await response.write_eof()
        return response

    @staticmethod
    def visitor(request: web.Request) -> str:
        """The address BinderHub rate-limits: tornado's xheaders (X-Real-Ip, else the
        last X-Forwarded-For hop), else the peer."""
        forwarded = request.headers.get("X-Forwarded-For", "").split(",")[-1].strip()
        return request.headers.get("X-Real-Ip", "").strip() or forwarded or request.remote or ""

    def _check_token_and_rate(self, request: web.Request, token: str | None,
                              problem: str | None) -> dict[str, Any] | None:
        """BinderHub's check_build_token then check_rate_limit: the in-band refusal, or None."""
        if token and problem is not None:
            log.info("devhub %s: refused build token: %s", self.settings.name, problem)
            return {"phase": "failed", "status_code": 403, "message": build_tokens.INVALID + "\n"}
        limit = self.settings.rate_limit
        if token or limit == 0:
            return None  # a valid token skips the rate limit, as on BinderHub
        now = time.time()
        key = self.visitor(request)
        remaining, reset = self._rate.get(key, (limit, now + self.settings.rate_limit_period))
        if reset < now:
            remaining, reset = limit, now + self.settings.rate_limit_period
        remaining -= 1
        self._rate[key] = (remaining, reset)
        if remaining < 0:
            period = int(self.settings.rate_limit_period)
            log.info("devhub %s: rate limit exceeded for %s", self.settings.name, key)
            return {"phase": "failed", "status_code": 429,
                    "message": f"Rate limit exceeded. Try again in {period} seconds.\n"}
        return None

    async def _emit(self, stream: EventStream, event: Mapping[str, Any]) -> None:
        await stream.emit(event)
        stall = self._faults.stall_after
        if stall is not None and event.get("phase") == stall:
            log.info("devhub %s: stalling the stream after %r (fault)", self.settings.name, stall)
            await stream.wait_client_gone()

    async def _run_launch(self, request: web.Request, stream: EventStream, provider: str, spec: str) -> None:
        try:
            repo = describe_spec(provider, spec)
        except ValueError as exc:
            await self._emit(stream, {"phase": "failed", "message": f"{exc}\n"})
            return
        if self._faults.build_full or self.full():
            await self._emit(stream, {"phase": "failed", "message": TOO_MANY_USERS + "\n"})
            return
        image = image_name(self.settings.image_prefix, repo.build_slug, repo.resolved_ref)
        if image in self._images:
            await self._emit(stream, {"phase": "built", "imageName": image, "message": "Found built image, launching...\n"})
        elif not await self._run_build(stream, repo, image):
            return
        await self._run_server(request, stream, repo, image)

    async def _run_build(self, stream: EventStream, repo: RepoSpec, image: str) -> bool:
        s = self.settings
        steps = max(3, round(s.build_seconds * 0.8 / s.event_interval))
        step_delay = s.build_seconds * 0.8 / steps
        side_delay = s.build_seconds * 0.05
        tmp = "".join(self._rng.choices(_NAME_CHARS, k=8))
        self._builds += 1
        try:
            await self._emit(stream, {"phase": "waiting", "message": "Waiting for build to start...\n"})
            await asyncio.sleep(side_delay)
            # repo2docker log lines relayed without a phase, as BinderHub does
            await self._emit(stream, {"message": "Picked Git content provider.\n"})
            await self._emit(stream, {"message": f"Cloning into '/tmp/repo2docker{tmp}'...\n", "phase": "fetching"})
            await asyncio.sleep(side_delay)
            head = f"HEAD is now at {repo.resolved_ref[:7]} devhub fake commit\n"
            await self._emit(stream, {"message": head, "phase": "fetching"})
            for i in range(1, steps + 1):
                line = _BUILD_STEPS[min(i - 1, len(_BUILD_STEPS) - 1)] if i < steps else _BUILD_STEPS[-1]
                await self._emit(stream, {"message": f"Step {i}/{steps} : {line}\n", "phase": "building"})
                await asyncio.sleep(step_delay)
            if self._faults.fails(f"{repo.provider}/{repo.spec}", unquote(f"{repo.provider}/{repo.spec}")):
                await self._emit(
                    stream,
                    {"message": "ERROR: No matching distribution found for devhub-broken-package\n", "phase": "building"},
                )
                command = "/bin/sh -c ${KERNEL_PYTHON_PREFIX}/bin/pip install --no-cache-dir -r requirements.txt"
                await self._emit(
                    stream,
                    {
                        "phase": "failed",
                        "message": f"Error during build: The command '{command}' returned a non-zero code: 1\n",
                    },
                )
                return False
            await self._emit(
                stream, {"phase": "pushing", "message": "Pushing image\n", "progress": {"devhub-layer": "Pushing"}}
            )
            await asyncio.sleep(side_delay)
            await self._emit(
                stream, {"phase": "pushing", "message": "Pushing image\n", "progress": {"devhub-layer": "Pushed"}}
            )
            self._images.add(image)
        finally:
            self._builds -= 1
        await self._emit(stream, {"phase": "built", "message": "Built image, launching...\n", "imageName": image})
        return True

    def _new_server_name(self, repo: RepoSpec) -> str:
        base = re.sub(r"[^a-z0-9]+", "-", repo.build_slug.lower()).strip("-")[:26] or "server"
        while True:
            name = f"{base}-{''.join(self._rng.choices(_NAME_CHARS, k=8))}"
            if name not in self._servers:
                return name

    async def _run_server(self, request: web.Request, stream: EventStream, repo: RepoSpec, image: str) -> None:
        s = self.settings
        if self.full():
            await self._emit(stream, {"phase": "failed", "message": TOO_MANY_USERS + "\n"})
            return
        name = self._new_server_name(repo)
        token = secrets.token_urlsafe(16)
        now = time.monotonic()
        server = Server(name, token, image, repo.repo_url, now, now)
        self._servers[name] = server  # the user pod exists from here until culled
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        messages = [
            "Launching server...\n",
            "Server requested\n",
            f"{stamp} [Normal] Successfully assigned devhub/jupyter-{name} to {s.name}-node\n",
            f'{stamp} [Normal] Container image "{image}" already present on machine\n',
            f"{stamp} [Normal] Started container notebook\n",
            f"Server ready at /user/{name}/\n",
        ]
        delay = s.launch_seconds / len(messages)
        for message in messages:
            await asyncio.sleep(delay)
            if name not in self._servers:
                await self._emit(
                    stream, {"phase": "failed", "status_code": 500, "message": f"Server {name} stopped while launching\n"}
                )
                return
            server.last_activity = time.monotonic()
            await self._emit(stream, {"phase": "launching", "message": message})
        base = self._base_url(request)
        url = f"{base}/user/{name}/"
        await self._emit(
            stream,
            {
                "phase": "ready",
                "message": f"server running at {url}\n",
                "image": image,
                "repo_url": repo.repo_url,
                "token": token,
                "binder_ref_url": repo.ref_url,
                "binder_launch_host": base + "/",
                "binder_request": f"v2/{repo.provider}/{repo.spec}",
                "binder_persistent_request": f"v2/{repo.provider}/{repo.resolved_spec}",
                "url": url,
            },
        )
