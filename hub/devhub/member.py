"""One dev member: its state (servers, image cache, build pods), its lifecycle and its routes.

The member API (`hub.devhub.api`) and the pages (`hub.devhub.pages`) are mixed in;
this module adds what changes the member from outside: faults (`/_devhub/faults`),
a reset (`/_devhub/reset`) and a look at its state (`/_devhub/state`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
import time
from collections import deque
from typing import Any, AsyncIterator, Iterator

from aiohttp import web

from .. import build_tokens
from .api import MemberApi, Server
from .faults import DevHubFaults
from .pages import Pages
from .settings import DevHubSettings

log = logging.getLogger("hub.devhub")


class DevHub(MemberApi, Pages):
    """One development member. `start()` serves it on a loopback port; `stop()` ends it.

    `create_app()` returns the aiohttp application (for embedding in another runner);
    its lifecycle runs the idle culler. State (servers, image cache, build pods) lives
    on the DevHub object. `seed` makes server names reproducible.
    """

    def __init__(
        self,
        settings: DevHubSettings | None = None,
        *,
        faults: DevHubFaults | None = None,
        seed: int | None = None,
    ) -> None:
        self.settings = settings or DevHubSettings()
        self._initial_faults = faults or DevHubFaults()
        self._faults = self._initial_faults
        self._rng = random.Random(seed)
        self._servers: dict[str, Server] = {}
        self._images: set[str] = set()
        self._builds = 0
        self._active: set[asyncio.Task[Any]] = set()
        self._runner: web.AppRunner | None = None
        self._url: str | None = None
        self.build_requests: deque[dict[str, Any]] = deque(maxlen=100)
        secret = self.settings.build_token_secret
        self.tokens = build_tokens.BuildTokens(
            secret=bytes.fromhex(secret) if secret else secrets.token_bytes(32),
            expires=self.settings.build_token_expires)
        self._rate: dict[str, tuple[int, float]] = {}  # visitor -> (launches left, window reset time)

    # -- state ---------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The bound base URL (no trailing slash); only while started."""
        if self._url is None:
            raise RuntimeError(f"devhub {self.settings.name} is not started")
        return self._url

    @property
    def faults(self) -> DevHubFaults:
        return self._faults

    @faults.setter
    def faults(self, faults: DevHubFaults) -> None:
        self._faults = faults

    def set_faults(self, **changes: Any) -> DevHubFaults:
        """Change some faults (`hub.set_faults(unhealthy=True)`); returns the new set."""
        self._faults = self._faults.updated(changes)
        return self._faults

    def reset(self) -> None:
        """Restore the initial faults; forget all servers, cached images and rate-limit counts."""
        self._faults = self._initial_faults
        self._servers.clear()
        self._images.clear()
        self.build_requests.clear()
        self._rate.clear()

    @property
    def build_pods(self) -> int:
        return self._builds

    @property
    def user_pods(self) -> int:
        return len(self._servers)

    @property
    def total_pods(self) -> int:
        return self._builds + len(self._servers)

    @property
    def images(self) -> frozenset[str]:
        return frozenset(self._images)

    @property
    def server_names(self) -> tuple[str, ...]:
        return tuple(self._servers)

    def full(self) -> bool:
        quota = self.settings.quota
        return quota is not None and self.total_pods >= quota

    def state(self) -> dict[str, Any]:
        now = time.monotonic()
        return {
            "name": self.settings.name,
            "url": self._url,
            "quota": self.settings.quota,
            "build_pods": self.build_pods,
            "user_pods": self.user_pods,
            "total_pods": self.total_pods,
            "servers": [
                {"name": s.name, "image": s.image, "repo_url": s.repo_url, "idle_seconds": round(now - s.last_activity, 3)}
                for s in self._servers.values()
            ],
            "images": sorted(self._images),
            "faults": self._faults.to_json(),
            "build_requests": list(self.build_requests),
        }

    def cull_idle(self, now: float | None = None) -> list[str]:
        """Remove servers idle for longer than `idle_cull_seconds`; return their names."""
        now = time.monotonic() if now is None else now
        limit = self.settings.idle_cull_seconds
        culled = [s.name for s in self._servers.values() if now - s.last_activity > limit]
        for name in culled:
            del self._servers[name]
            log.info("devhub %s: culled idle server %s", self.settings.name, name)
        return culled

    # -- lifecycle -----------------------------------------------------------------

    def create_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/", self._index)
        app.router.add_get("/about", self._about)
        app.router.add_get("/static/devhub.css", self._stylesheet)
        app.router.add_get("/health", self._health)
        app.router.add_get("/versions", self._versions)
        app.router.add_get("/build/{provider}/{spec:.+}", self._build)
        app.router.add_get("/v2/{provider}/{spec:.+}", self._v2)
        app.router.add_get("/user/{name}", self._user_redirect)
        app.router.add_get("/user/{name}/{tail:.*}", self._user)
        app.router.add_get("/_devhub/faults", self._get_faults)
        app.router.add_post("/_devhub/faults", self._post_faults)
        app.router.add_post("/_devhub/reset", self._post_reset)
        app.router.add_get("/_devhub/state", self._get_state)
        app.router.add_get("/_devhub/request", self._echo_request)
        app.on_shutdown.append(self._on_shutdown)
        app.cleanup_ctx.append(self._culler)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve on host:port (0 = any free port); return the base URL, also `.url`."""
        if self._runner is not None:
            raise RuntimeError(f"devhub {self.settings.name} is already started")
        runner = web.AppRunner(
            self.create_app(), handle_signals=False, handler_cancellation=True, shutdown_timeout=1.0, access_log=None
        )
        await runner.setup()
        try:
            site = web.TCPSite(runner, host, port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        bound_port = runner.addresses[0][1]
        shown = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)
        if ":" in shown:
            shown = f"[{shown}]"
        self._runner = runner
        self._url = f"http://{shown}:{bound_port}"
        log.info("devhub %s listening on %s", self.settings.name, self._url)
        return self._url

    async def stop(self) -> None:
        """Stop serving: open streams and pending requests are cut at once."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        self._url = None

    async def __aenter__(self) -> "DevHub":
        if self._runner is None:
            await self.start()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.stop()

    async def _on_shutdown(self, app: web.Application) -> None:
        current = asyncio.current_task()
        tasks = [t for t in self._active if t is not current and not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=1.0)

    async def _culler(self, app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(self._cull_loop(), name=f"devhub-{self.settings.name}-culler")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _cull_loop(self) -> None:
        interval = max(0.01, min(self.settings.idle_cull_seconds / 4, 5.0))
        while True:
            await asyncio.sleep(interval)
            self.cull_idle()

    @contextlib.contextmanager
    def _tracked(self) -> Iterator[None]:
        """Register the running handler so stop() can cut it short."""
        task = asyncio.current_task()
        if task is not None:
            self._active.add(task)
        try:
            yield
        finally:
            if task is not None:
                self._active.discard(task)

    # -- failure injection ---------------------------------------------------------

    async def _get_faults(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(self._faults.to_json())

    async def _post_faults(self, request: web.Request) -> web.StreamResponse:
        try:
            changes = await request.json()
        except ValueError:
            return web.json_response({"error": "body must be a JSON object"}, status=400)
        if not isinstance(changes, dict):
            return web.json_response({"error": "body must be a JSON object"}, status=400)
        try:
            self._faults = self._faults.updated(changes)
        except (TypeError, ValueError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        log.info("devhub %s: faults now %s", self.settings.name, self._faults.to_json())
        return web.json_response(self._faults.to_json())

    async def _post_reset(self, request: web.Request) -> web.StreamResponse:
        self.reset()
        return web.json_response(self.state())

    async def _get_state(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(self.state())
