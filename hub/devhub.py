"""A development member: a small server speaking the member BinderHub API.

`DevHub` stands in for a real BinderHub (which needs Kubernetes) in `binderfed demo`,
the tests and the benchmarks. It is a development tool and says so on its pages; it
builds and runs nothing. What it does reproduce is the wire behaviour the router
relies on (DESIGN.md, "Member BinderHub API"):

- `GET /health` in BinderHub's shape, with the soft `Pod quota` check (omitted when
  `report_quota` is False, like a BinderHub not on Kubernetes), 503 on a hard failure;
- `GET /versions`;
- `GET /build/<provider>/<spec>`: a `text/event-stream` of `waiting`, `fetching`,
  `building`..., `pushing`, `built`, `launching`..., `ready` events (an image cache
  makes the second launch of a repo@ref skip the build), `:keepalive` comments, and
  BinderHub's in-band failures (`failed` with `status_code` 400 without the Accept
  header, "Too many users on this BinderHub! Try again soon." when full, "Error during
  build: ..." for repositories matching a failing pattern);
- `GET /user/<name>/...`: a "Jupyter server" page guarded by the launch token; idle
  servers are culled after `idle_cull_seconds`;
- `GET /v2/<provider>/<spec>`: a minimal launch page that follows the build stream
  and redirects to the server, as BinderHub's UI does, with a build token embedded
  as BinderHub embeds it (`hub.build_tokens`) and passed to `/build/`;
- BinderHub's per-visitor rate limit on `/build/` (`rate_limit` launches per
  `rate_limit_period`, off by default): the visitor is `X-Real-Ip`, else the last
  `X-Forwarded-For` address, else the peer (tornado's `xheaders`, as BinderHub runs);
  a valid `build_token` skips it, an invalid one is refused with BinderHub's in-band
  403 "Invalid build token", and a visitor over the limit gets its in-band 429
  "Rate limit exceeded. Try again in <period> seconds.";
- BinderHub's other pages, for a router that serves the prime's pages
  (`router.landing: proxy`): `/` linking a stylesheet `/static/devhub.css` (gzip-
  compressed when the client accepts it), `/about`.

Pods are counted like BinderHub's health check does: one build pod while a build
runs, one user pod from the start of `launching` until the server is culled.

Failure injection (`DevHubFaults`) can be changed at runtime with
`POST /_devhub/faults` (JSON object of fields to change), read with
`GET /_devhub/faults`, set in code with `DevHub.faults = ...` / `set_faults(...)`.
`POST /_devhub/reset` restores the faults the hub was created with and forgets all
servers and cached images. `GET /_devhub/state` shows pods, servers, images and the
last `/build/` requests (with the client addresses they carried). `GET
/_devhub/request` answers the request it got (method, path, query, headers) as JSON
with a `Set-Cookie`, or with `?redirect=<url>` a 302 there: what a proxy in front
passed on. These endpoints are unauthenticated: bind a dev member to loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import hmac
import html
import json
import logging
import random
import re
import secrets
import signal
import string
import sys
import time
from collections import deque
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, AsyncIterator, Iterator, Mapping
from urllib.parse import unquote

from aiohttp import web

from . import build_tokens, images
from .events import encode_comment, encode_event
from .models import launch_urlpath

__all__ = [
    "TOO_MANY_USERS",
    "DevHub",
    "DevHubFaults",
    "DevHubSettings",
    "add_arguments",
    "main",
    "run",
    "settings_from_args",
]

log = logging.getLogger("hub.devhub")

TOO_MANY_USERS = "Too many users on this BinderHub! Try again soon."
STALL_PHASES = ("waiting", "fetching", "building", "pushing", "built", "launching")
PROVIDERS = ("gh", "gist", "gl", "git", "zenodo", "figshare", "hydroshare", "dataverse", "ckan")

_NAME_CHARS = string.ascii_lowercase + string.digits
_SHA_RE = re.compile(r"[0-9a-f]{40}")

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


# -- settings and faults ------------------------------------------------------------


@dataclass(frozen=True)
class DevHubSettings:
    """How one dev member behaves. Durations are in seconds.

    A fresh launch takes about `build_seconds + launch_seconds`; a cached one about
    `launch_seconds`. `event_interval` is the target spacing of log lines (at least
    three `building` and several `launching` events are sent whatever the durations).
    `quota` None means unlimited. `public_url` overrides the base of the server URLs
    in `ready` events (default: the address the request came to). `rate_limit`:
    `/build/` launches one visitor address may start per `rate_limit_period` seconds
    without a build token (BinderHub's default is 10 per hour; 0 = no limit).
    `build_token_secret` (hex, like BINDERHUB_BUILD_TOKEN_SECRET): None = a random one.
    `issue_build_tokens` False: the launch page embeds none, as BinderHub before build tokens.
    """

    name: str = "devhub"
    quota: int | None = None
    build_seconds: float = 2.0
    launch_seconds: float = 1.0
    event_interval: float = 0.2
    idle_cull_seconds: float = 600.0
    image_prefix: str = "devhub/"
    report_quota: bool = True
    keepalive_seconds: float = 25.0
    version: str = "1.0.0+devhub"
    build_image: str = "quay.io/jupyterhub/repo2docker:2024.07.0"
    public_url: str | None = None
    rate_limit: int = 0
    rate_limit_period: float = 3600.0
    build_token_secret: str | None = None
    build_token_expires: float = build_tokens.DEFAULT_EXPIRES
    issue_build_tokens: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.rate_limit, bool) or self.rate_limit < 0:
            raise ValueError(f"devhub rate_limit must be a non-negative integer, not {self.rate_limit!r}")
        if self.rate_limit_period <= 0 or self.build_token_expires <= 0:
            raise ValueError("devhub rate_limit_period and build_token_expires must be positive")
        if self.build_token_secret is not None:
            try:
                bytes.fromhex(self.build_token_secret)
            except ValueError:
                raise ValueError("devhub build_token_secret must be hexadecimal") from None
        if not self.name:
            raise ValueError("devhub name must not be empty")
        if self.quota is not None and (isinstance(self.quota, bool) or self.quota < 0):
            raise ValueError(f"devhub quota must be None or a non-negative integer, not {self.quota!r}")
        for name in ("build_seconds", "launch_seconds"):
            if getattr(self, name) < 0:
                raise ValueError(f"devhub {name} must not be negative")
        for name in ("event_interval", "idle_cull_seconds", "keepalive_seconds"):
            if getattr(self, name) <= 0:
                raise ValueError(f"devhub {name} must be positive")
        if self.public_url is not None:
            object.__setattr__(self, "public_url", self.public_url.rstrip("/"))


@dataclass(frozen=True)
class DevHubFaults:
    """Failures to inject.

    - `unhealthy`: `/health` answers 503 with the JupyterHub API check failing.
    - `health_delay`: seconds to wait before answering `/health` (large = hang).
    - `garbage_health`: `/health` answers 200 with a non-JSON body.
    - `build_refuse`: `/build/` answers HTTP 500.
    - `build_full`: `/build/` always answers the too-many-users `failed` event.
    - `stall_after`: a phase name; right after the first event of that phase the
      stream goes silent (no more events, no keepalives) until the client leaves.
    - `fail_repos`: regular expressions; a launch whose `<provider>/<spec>` matches
      one (`re.search`, escaped or unescaped form) fails with a build error after
      its building phase.
    """

    unhealthy: bool = False
    health_delay: float = 0.0
    build_refuse: bool = False
    build_full: bool = False
    stall_after: str | None = None
    fail_repos: tuple[str, ...] = ()
    garbage_health: bool = False

    def __post_init__(self) -> None:
        for name in ("unhealthy", "build_refuse", "build_full", "garbage_health"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"fault {name!r} must be true or false")
        delay = self.health_delay
        if isinstance(delay, bool) or not isinstance(delay, (int, float)) or delay < 0:
            raise ValueError("fault 'health_delay' must be a non-negative number of seconds")
        if self.stall_after is not None and self.stall_after not in STALL_PHASES:
            raise ValueError(f"fault 'stall_after' must be null or one of {', '.join(STALL_PHASES)}")
        repos = self.fail_repos
        if isinstance(repos, str) or not all(isinstance(r, str) for r in repos):
            raise ValueError("fault 'fail_repos' must be a list of regular expressions")
        for pattern in repos:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"fault 'fail_repos': invalid regular expression {pattern!r}: {exc}") from None
        object.__setattr__(self, "fail_repos", tuple(repos))

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["fail_repos"] = list(self.fail_repos)
        return data

    def updated(self, changes: Mapping[str, Any]) -> "DevHubFaults":
        """A copy with `changes` applied; unknown names or bad values raise ValueError."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ValueError(f"unknown fault(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        values = dict(changes)
        if isinstance(values.get("fail_repos"), list):
            values["fail_repos"] = tuple(values["fail_repos"])
        return replace(self, **values)

    def fails(self, *texts: str) -> bool:
        return any(re.search(pattern, text) for pattern in self.fail_repos for text in texts)


# -- repositories and images --------------------------------------------------------


class UnknownProvider(ValueError):
    pass


@dataclass(frozen=True)
class RepoSpec:
    """What a BinderHub repo provider would resolve a `/build/` spec to."""

    provider: str
    spec: str  # as requested (URL-escaped parts kept escaped)
    build_slug: str
    resolved_ref: str
    repo_url: str
    ref_url: str
    resolved_spec: str


def _fake_sha(*parts: str) -> str:
    return hashlib.sha1("\x00".join(parts).encode("utf-8")).hexdigest()


def _tag(text: str) -> str:
    tag = re.sub(r"[^A-Za-z0-9_.-]", "-", text)[:128].strip(".-")
    return tag or _fake_sha(text)


def describe_spec(provider: str, spec: str) -> RepoSpec:
    """Resolve `spec` the way the provider would (refs become deterministic fake SHAs).

    Build slugs come from `hub.images`, so the image names in `built`/`ready` events
    are exactly those the router and the member agent derive for the same launch.
    Raises `UnknownProvider` for an unknown provider prefix and ValueError for a spec
    of the wrong shape; both messages are BinderHub's wording.
    """
    if provider not in PROVIDERS:
        raise UnknownProvider(f"No provider found for prefix {provider}")
    spec = spec.rstrip("/")
    parts = spec.split("/")

    def git_like(n_repo_parts: int, ref: str, url: str, tree: str) -> RepoSpec:
        repo = "/".join(parts[:n_repo_parts])  # still URL-escaped, as requested
        sha = ref if _SHA_RE.fullmatch(ref) else _fake_sha(provider, unquote(repo), ref)
        slug = images.build_slug(provider, spec)
        assert slug is not None
        return RepoSpec(provider, spec, slug, sha, url, tree.format(url=url, sha=sha), f"{repo}/{sha}")

    if provider == "gh":
        if len(parts) < 3 or not all(parts):
            raise ValueError(f"Spec is not of the form 'user/repo/ref', provided: {spec!r}")
        org, repo, ref = unquote(parts[0]), unquote(parts[1]), unquote("/".join(parts[2:]))
        return git_like(2, ref, f"https://github.com/{org}/{repo}", "{url}/tree/{sha}")
    if provider == "gist":
        if len(parts) < 2 or not all(parts):
            raise ValueError(f"Spec is not of the form 'username/gistid/ref', provided: {spec!r}")
        user, gist = unquote(parts[0]), unquote(parts[1])
        ref = unquote("/".join(parts[2:])) or "HEAD"
        return git_like(2, ref, f"https://gist.github.com/{user}/{gist}", "{url}/{sha}")
    if provider in ("gl", "git"):
        if len(parts) < 2 or not all(parts):
            raise ValueError(f"Spec is not of the form 'url-escaped-repo/ref', provided: {spec!r}")
        repo, ref = unquote(parts[0]), unquote("/".join(parts[1:]))
        if provider == "gl":
            return git_like(1, ref, f"https://gitlab.com/{repo}", "{url}/-/tree/{sha}")
        return git_like(1, ref, repo, "{url}")
    # data providers: the whole spec names one record; what their APIs would resolve
    # it to is faked from the spec
    record = unquote(spec)
    if not record:
        raise ValueError(f"Spec for {provider} is empty")
    url = f"https://doi.org/{record}"
    if provider in ("zenodo", "figshare"):
        marker = f"{provider}."
        resolved = record.rsplit(marker, 1)[1] if marker in record else record.rsplit("/", 1)[-1]
        resolved = _tag(resolved)
        slug, tag = images.data_build_slug(provider, resolved), resolved
    elif provider == "hydroshare":
        resource = record.rstrip("/").rsplit("/", 1)[-1]
        url = f"https://www.hydroshare.org/resource/{resource}"
        resolved = f"{_tag(resource)}.v{int(_fake_sha(resource)[:7], 16)}"
        slug, tag = images.data_build_slug(provider, resolved), resolved
    elif provider == "dataverse":
        identifier = record.split("/", 1)[1] if record.startswith("10.") and "/" in record else record
        slug, tag = images.data_build_slug(provider, identifier), str(int(_fake_sha(record)[:7], 16))
    else:  # ckan: the dataset URL
        url = record
        slug, tag = f"ckan-{record.rstrip('/').rsplit('/', 1)[-1]}", _fake_sha(record)
    return RepoSpec(provider, spec, slug, tag, url, url, spec)


def image_name(prefix: str, build_slug: str, ref: str) -> str:
    """`<prefix><safe_slug>:<ref>`, BinderHub's image name (see `hub.images`)."""
    return images.image_name(prefix, build_slug, ref)


# -- servers and streams ------------------------------------------------------------


@dataclass
class _Server:
    name: str
    token: str
    image: str
    repo_url: str
    started: float
    last_activity: float


class _ClientGone(Exception):
    """The client of an event stream disconnected."""


class _EventStream:
    """Serialises event and keepalive writes on one streaming response."""

    def __init__(self, request: web.Request, response: web.StreamResponse, keepalive: float) -> None:
        self._request = request
        self._response = response
        self._keepalive = keepalive
        self._lock = asyncio.Lock()
        self._keepalive_task: asyncio.Task[None] | None = None

    async def write(self, data: bytes) -> None:
        async with self._lock:
            try:
                await self._response.write(data)
            except (ConnectionError, RuntimeError) as exc:
                raise _ClientGone() from exc

    async def emit(self, event: Mapping[str, Any]) -> None:
        await self.write(encode_event(json.dumps(event)))

    def start_keepalive(self) -> None:
        self._keepalive_task = asyncio.create_task(self._keepalive_loop())

    async def stop_keepalive(self) -> None:
        task, self._keepalive_task = self._keepalive_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _keepalive_loop(self) -> None:
        while True:
            await asyncio.sleep(self._keepalive)
            try:
                await self.write(encode_comment("keepalive"))
            except _ClientGone:
                return

    async def wait_client_gone(self) -> None:
        """Stay silent until the client disconnects, then raise _ClientGone."""
        await self.stop_keepalive()
        while True:
            transport = self._request.transport
            if transport is None or transport.is_closing():
                raise _ClientGone()
            await asyncio.sleep(0.05)


class _CollectedStream(_EventStream):
    """Runs a launch for a client without JavaScript: events are kept, not written."""

    def __init__(self, request: web.Request) -> None:
        super().__init__(request, web.StreamResponse(), keepalive=3600)
        self.events: list[Mapping[str, Any]] = []

    async def write(self, data: bytes) -> None:
        if self._request.transport is None or self._request.transport.is_closing():
            raise _ClientGone()

    async def emit(self, event: Mapping[str, Any]) -> None:
        await self.write(b"")
        self.events.append(event)


# -- the dev member ------------------------------------------------------------------


class DevHub:
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
        self._servers: dict[str, _Server] = {}
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
        now = _now()
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
        now = _now() if now is None else now
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

    # -- member API ----------------------------------------------------------------

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
        stream = _EventStream(request, response, self.settings.keepalive_seconds)
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
            except _ClientGone:
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

    async def _emit(self, stream: _EventStream, event: Mapping[str, Any]) -> None:
        await stream.emit(event)
        stall = self._faults.stall_after
        if stall is not None and event.get("phase") == stall:
            log.info("devhub %s: stalling the stream after %r (fault)", self.settings.name, stall)
            await stream.wait_client_gone()

    async def _run_launch(self, request: web.Request, stream: _EventStream, provider: str, spec: str) -> None:
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

    async def _run_build(self, stream: _EventStream, repo: RepoSpec, image: str) -> bool:
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

    async def _run_server(self, request: web.Request, stream: _EventStream, repo: RepoSpec, image: str) -> None:
        s = self.settings
        if self.full():
            await self._emit(stream, {"phase": "failed", "message": TOO_MANY_USERS + "\n"})
            return
        name = self._new_server_name(repo)
        token = secrets.token_urlsafe(16)
        now = _now()
        server = _Server(name, token, image, repo.repo_url, now, now)
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
            server.last_activity = _now()
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

    # -- "Jupyter servers" ---------------------------------------------------------

    async def _user_redirect(self, request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound(request.rel_url.with_path(request.rel_url.path + "/"))

    async def _user(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        server = self._servers.get(name)
        if server is None:
            return web.Response(status=404, text=f"404: no running server {name!r} on {self.settings.name}\n")
        query_token = request.query.get("token", "")
        token = query_token or request.cookies.get(f"devhub-{name}", "")
        auth = request.headers.get("Authorization", "")
        scheme, _, value = auth.partition(" ")
        if not token and scheme.lower() in ("token", "bearer"):
            token = value.strip()
        if not token or not hmac.compare_digest(token.encode(), server.token.encode()):
            return web.Response(status=403, text=f"403: a valid token is required for server {name!r}\n")
        server.last_activity = _now()
        title = f"Jupyter server {name} on {self.settings.name}"
        esc = html.escape
        body = (
            "<!doctype html>\n<html><head><meta charset='utf-8'>"
            f"<title>{esc(title)}</title></head><body>\n"
            f"<h1>{esc(title)}</h1>\n"
            f"<p>Development member (no real Jupyter server runs here).</p>\n"
            f"<p>Image: <code>{esc(server.image)}</code></p>\n"
            f"<p>Repository: <code>{esc(server.repo_url)}</code></p>\n"
            f"<p>Path: <code>{esc(request.rel_url.raw_path)}</code></p>\n"
            f"<p>Query: <code id='query'>{esc(request.rel_url.raw_query_string)}</code></p>\n"
            "</body></html>\n"
        )
        response = web.Response(text=body, content_type="text/html")
        if query_token:
            response.set_cookie(f"devhub-{name}", query_token, path=f"/user/{name}/", httponly=True)
        return response

    # -- pages ---------------------------------------------------------------------

    async def _index(self, request: web.Request) -> web.StreamResponse:
        name = html.escape(self.settings.name)
        body = (
            "<!doctype html>\n<html><head><meta charset='utf-8'>"
            f"<title>devhub {name}</title><link rel='stylesheet' href='/static/devhub.css'></head><body>\n"
            f"<h1>devhub {name}</h1>\n"
            "<p>A development member for binder-federation; it speaks the member BinderHub API "
            "but is not a BinderHub and runs nothing.</p>\n"
            "<ul><li><a href='/health'>/health</a></li><li><a href='/versions'>/versions</a></li>"
            "<li><a href='/about'>/about</a></li>"
            "<li><a href='/_devhub/state'>/_devhub/state</a></li></ul>\n</body></html>\n"
        )
        return web.Response(text=body, content_type="text/html")

    async def _about(self, request: web.Request) -> web.StreamResponse:
        name = html.escape(self.settings.name)
        body = (f"<!doctype html>\n<html><head><meta charset='utf-8'><title>About devhub {name}</title></head>"
                f"<body><h1>About devhub {name}</h1><p>BinderHub {html.escape(self.settings.version)} "
                "(development member)</p></body></html>\n")
        return web.Response(text=body, content_type="text/html")

    async def _stylesheet(self, request: web.Request) -> web.StreamResponse:
        # Large enough to be worth compressing, as BinderHub's bundled assets are.
        rules = "".join(f".devhub-{i} {{ margin: {i}px; }}\n" for i in range(400))
        response = web.Response(text="body { font-family: sans-serif; }\n" + rules, content_type="text/css",
                                headers={"Cache-Control": "max-age=3600", "ETag": '"devhub-css-1"'})
        response.enable_compression()  # gzip or deflate when the client's Accept-Encoding allows it
        return response

    async def _echo_request(self, request: web.Request) -> web.StreamResponse:
        target = request.query.get("redirect")
        if target:
            raise web.HTTPFound(target)
        response = web.json_response({
            "method": request.method,
            "path": request.rel_url.raw_path,
            "query": request.rel_url.raw_query_string,
            "headers": [[name, value] for name, value in request.headers.items()],
            "peer": request.remote,
        })
        response.set_cookie("devhub-seen", "1")
        return response

    async def _v2(self, request: web.Request) -> web.StreamResponse:
        provider_spec = request.rel_url.raw_path[len("/v2/") :]
        if "text/html" not in request.headers.get("Accept", ""):
            return await self._v2_without_javascript(request, provider_spec)
        build_url = "/build/" + provider_spec
        page_config = json.dumps({"baseUrl": "/"} if not self.settings.issue_build_tokens else {
            "baseUrl": "/", "buildToken": self.tokens.issue(provider_spec, build_tokens.token_origin(request.headers))
        }).replace("<", "\\u003c")

        def js(value: str) -> str:
            return json.dumps(value).replace("<", "\\u003c")

        title = html.escape(f"devhub {self.settings.name}: launching {provider_spec}")
        body = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title></head><body>
<h1>{title}</h1>
<p>Development member (not a real BinderHub).</p>
<pre id="log"></pre>
<script>
window.pageConfig = {page_config};
</script>
<script>
const params = new URLSearchParams(window.location.search);
const log = document.getElementById("log");
const buildUrl = new URL({js(build_url)}, window.location.href);
if (window.pageConfig.buildToken) buildUrl.searchParams.append("build_token", window.pageConfig.buildToken);
const source = new EventSource(buildUrl);
source.onmessage = (msg) => {{
  const ev = JSON.parse(msg.data);
  if (ev.message) log.textContent += ev.message;
  if (ev.phase === "ready") {{
    source.close();
    let target = ev.url;
    const urlpath = params.get("labpath") ? "doc/tree/" + encodeURI(params.get("labpath").replace(/\\/$/, ""))
      : (params.get("filepath") ? "tree/" + encodeURI(params.get("filepath").replace(/\\/$/, "")) : (params.get("urlpath") || ""));
    if (urlpath) target += urlpath.replace(/^\\//, "");
    window.location.href = target + (target.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(ev.token);
  }} else if (ev.phase === "failed") {{
    source.close();
  }}
}};
</script>
</body></html>
"""
        return web.Response(text=body, content_type="text/html")

    async def _v2_without_javascript(self, request: web.Request, provider_spec: str) -> web.StreamResponse:
        """Dev convenience for `curl -L` and scripts: launch server-side, then redirect
        to the server as the launch page's JavaScript would. A real BinderHub always
        serves its page; the dev member does this so the demo works without a browser."""
        provider, _, spec = provider_spec.partition("/")
        stream = _CollectedStream(request)
        with self._tracked():
            try:
                await self._run_launch(request, stream, provider, spec)
            except _ClientGone:
                return web.Response(status=499)
        final = stream.events[-1] if stream.events else {"phase": "failed", "message": "no events"}
        if final.get("phase") != "ready":
            return web.Response(status=503, text=f"launch failed: {final.get('message', '')}")
        target = str(final["url"])
        urlpath = launch_urlpath(request.rel_url.raw_query_string)
        target += urlpath.lstrip("/")
        sep = "&" if "?" in target else "?"
        raise web.HTTPFound(f"{target}{sep}token={final['token']}")

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


def _now() -> float:
    return time.monotonic()


# -- command line --------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `binderfed devhub`."""
    d = DevHubSettings()
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8585, help="port to listen on, 0 = any free port (default: %(default)s)")
    parser.add_argument("--name", default=d.name, help="member name shown on pages (default: %(default)s)")
    parser.add_argument("--quota", type=int, default=None, help="pod quota (default: unlimited)")
    parser.add_argument("--build-seconds", type=float, default=d.build_seconds, help="duration of a fresh build")
    parser.add_argument("--launch-seconds", type=float, default=d.launch_seconds, help="duration of a launch")
    parser.add_argument("--event-interval", type=float, default=d.event_interval, help="spacing of log events")
    parser.add_argument("--idle-cull-seconds", type=float, default=d.idle_cull_seconds, help="cull servers idle this long")
    parser.add_argument("--image-prefix", default=d.image_prefix, help="prefix of image names")
    parser.add_argument("--keepalive-seconds", type=float, default=d.keepalive_seconds, help="keepalive comment period")
    parser.add_argument(
        "--no-pod-quota",
        dest="report_quota",
        action="store_false",
        help="report no 'Pod quota' health check, like a BinderHub not on Kubernetes",
    )
    parser.add_argument("--binderhub-version", default=d.version, help="version reported by /versions")
    parser.add_argument("--public-url", default=None, help="base URL for server links (default: request host)")
    parser.add_argument(
        "--fail-repo", action="append", default=[], metavar="REGEX", help="launches matching REGEX fail to build"
    )
    parser.add_argument("--rate-limit", type=int, default=d.rate_limit, metavar="N",
                        help="/build/ launches per visitor address and period without a build token, "
                             "as BinderHub's rate limit (default: 0, no limit; BinderHub's own default is 10)")
    parser.add_argument("--rate-limit-period", type=float, default=d.rate_limit_period, metavar="SECONDS",
                        help="the rate limit's window (default: %(default)s)")
    parser.add_argument("--build-token-secret", default=None, metavar="HEX",
                        help="secret that signs build tokens, hexadecimal (default: a random one)")
    parser.add_argument("--seed", type=int, default=None, help="seed for reproducible server names")


def settings_from_args(args: argparse.Namespace) -> DevHubSettings:
    return DevHubSettings(
        name=args.name,
        quota=args.quota,
        build_seconds=args.build_seconds,
        launch_seconds=args.launch_seconds,
        event_interval=args.event_interval,
        idle_cull_seconds=args.idle_cull_seconds,
        image_prefix=args.image_prefix,
        report_quota=args.report_quota,
        keepalive_seconds=args.keepalive_seconds,
        version=args.binderhub_version,
        public_url=args.public_url,
        rate_limit=args.rate_limit,
        rate_limit_period=args.rate_limit_period,
        build_token_secret=args.build_token_secret,
    )


def run(args: argparse.Namespace) -> int:
    """Serve one dev member until SIGINT/SIGTERM; return the exit status."""
    try:
        hub = DevHub(settings_from_args(args), faults=DevHubFaults(fail_repos=tuple(args.fail_repo)), seed=args.seed)
    except ValueError as exc:
        print(f"devhub: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(_serve(hub, args.host, args.port))


async def _serve(hub: DevHub, host: str, port: int) -> int:
    try:
        url = await hub.start(host, port)
    except OSError as exc:
        print(f"devhub: cannot listen on {host}:{port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    print(f"devhub {hub.settings.name} listening on {url}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
        await hub.stop()
    print(f"devhub {hub.settings.name} stopped", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="devhub", description="Run a development member BinderHub.")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
