"""Abuse limits at the federation edge, checked before a launch is placed (`limits` config).

`check_limits(ctx, config, request, launch)` is the first step of the admission pipeline
(`router.pipeline.admit`), which redirects and relayed `/build/` streams alike go through;
it returns None to let the launch through, or the refusal to answer with:

- **banned** (`limits.banned`): the launch's `<provider>/<spec>` matches a ban rule.
  403 with the rule's message (an in-band `failed` event with `status_code` 403 on
  `/build/`). Bans apply whether or not the counting limits are enabled.
- **rate_limit_client** (`limits.per_client`): too many launches from one client
  address (`router.clients.client_address`, which believes `X-Forwarded-For` only from
  `router.trusted_proxies`) in a fixed window.
- **rate_limit_repo** (`limits.per_repo`): too many launches of one repository (all
  refs, all clients) in a fixed window.
- **repo_cap** (`limits.repo_concurrency` and `limits.repo_concurrency_overrides`,
  like BinderHub's `per_repo_quota` and `spec_config`; `repo_cap()` is the one place
  that says which cap a launch has): the repository already has that many launches
  in progress across the federation: launches routed within the last
  `repo_launch_ttl` seconds, plus, with agent reports, its running user servers on
  every member. This one is checked where the launch is counted
  (`pipeline.admit` -> `Store.record_launch(repo_cap=...)`), in the same atomic step, so
  a burst of concurrent launches on any number of replicas cannot get past it
  together; `repo_cap_refused` builds the answer.

The defaults refuse nothing but bans: per-client and per-repository windows are off
(members see each visitor's address and rate-limit it themselves; a classroom behind
one NAT or a viral repository must not be turned away here) and there is no
repository cap (each member's own per-repo quota applies).

Over a limit: 429 with `Retry-After` (in-band `status_code` 429 on `/build/`). The
counters live in the store (`Store.limit_launch`: one round trip for the rate
limits), so replicas sharing a Redis store share them too. Limits are read from
the config a launch is admitted under, read once per launch, so a config reload (a new
ban, say) applies to the next launch.

Only GET requests that place a launch are counted: every `/build/`, and `/v2/` and
`/repo/` in redirect mode. HEAD requests (link checkers) are answered by
`router.launch` without placing or counting anything. In stream mode `/v2/` serves the router's own launch page,
whose `/build/` stream is the launch; the page itself is only checked against bans.
Each refusal counts in `federation_refused_launches_total{cause}` and is logged with
its cause.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from urllib.parse import unquote

from aiohttp import web

from federation.config import BanRule, FederationConfig, LimitSettings
from federation.spec import LaunchRequest
from federation.stores.protocol import RateCheck

from .clients import client_address, client_key
from .context import RouterContext
from .pages import refuse

log = logging.getLogger("binderfed.router")

BANNED_MESSAGE = "This repository cannot be launched on this Binder federation."


def _window(seconds: float) -> str:
    """A window length for visitors: "10 minutes", "1 hour", "90 seconds"."""
    for unit, size in (("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            n = int(seconds // size)
            return f"{n} {unit}{'s' if n != 1 else ''}"
    return f"{seconds:g} seconds"


def repo_cap(limits: LimitSettings, launch: LaunchRequest) -> int:
    """The most launches of `launch`'s repository that may be in progress at once across
    the federation; 0 = no cap (also while `limits.enabled` is off).

    `limits.repo_concurrency`, unless rules of `limits.repo_concurrency_overrides` match
    the launch's `<provider>/<spec>`: as BinderHub applies `spec_config` (every rule in
    order, `re.match` ignoring case, the last match wins), tried on the spec as in the
    path, percent-decoded and as its canonical provider writes it (as `ban_for` does), so
    an override applies to every alias of the repository.
    """
    if not limits.enabled:
        return 0
    cap = limits.repo_concurrency
    if limits.repo_concurrency_overrides:
        raw = launch.provider_spec
        spellings = (raw, unquote(raw), *((launch.canonical_spec,) if launch.canonical_spec else ()))
        for rule in limits.repo_concurrency_overrides:
            if any(rule.pattern.match(spelling) for spelling in spellings):
                cap = rule.concurrency
    return cap


@dataclass(frozen=True)
class RepoCap:
    """The cap that applies to one launch, and the repository's servers already running."""

    cap: int
    running: int = 0   # user servers of the repository on every member (agent reports)

    @property
    def room(self) -> int:
        """How many launches of the repository may be in flight on top of the running servers."""
        return max(self.cap - self.running, 0)


def repo_cap_for(ctx: RouterContext, config: FederationConfig, launch: LaunchRequest) -> RepoCap | None:
    """The repository cap a new launch is counted against, or None when none applies."""
    limits = config.limits
    if not limits.enabled or not places_launch(config, launch):
        return None
    cap = repo_cap(limits, launch)
    if cap <= 0:
        return None
    return RepoCap(cap, ctx.reports.running(launch.repo_key) if ctx.reports is not None else 0)


def places_launch(config: FederationConfig, launch: LaunchRequest) -> bool:
    """Whether answering this request places a launch (and so counts against the limits)."""
    return launch.family == "build" or config.router.forward_for(launch.family) == "redirect"


def ban_for(limits: LimitSettings, launch: LaunchRequest) -> BanRule | None:
    """The ban rule a launch matches, tried on `<provider>/<spec>` as in the path,
    percent-decoded (so `%2F` or `%65` spellings cannot slip past a pattern), and as the
    repository's canonical provider writes it (`federation.spec`: a `git` URL of a GitHub
    repository is `gh/<org>/<repo>/<ref>`), so a ban applies to every alias."""
    raw = launch.provider_spec
    return (limits.ban_for(raw) or limits.ban_for(unquote(raw))
            or (limits.ban_for(launch.canonical_spec) if launch.canonical_spec else None))


async def check_limits(ctx: RouterContext, config: FederationConfig, request: web.Request,
                       launch: LaunchRequest) -> web.Response | None:
    """None if the launch may be placed, else the refusal to send (see the module docstring);
    `config` is the one the whole launch is admitted under (router.pipeline)."""
    limits = config.limits
    rule = ban_for(limits, launch)
    if rule is not None:
        return _banned(ctx, launch, rule)
    if not limits.enabled or not places_launch(config, launch):
        return None
    client = client_address(request, config.router.trusted_networks)
    checks: list[tuple[str, RateCheck]] = []
    if limits.per_client.active:
        checks.append(("rate_limit_client", RateCheck("client:" + client_key(client), limits.per_client.launches,
                                                      limits.per_client.window)))
    if limits.per_repo.active:
        checks.append(("rate_limit_repo", RateCheck("repo:" + launch.repo_key, limits.per_repo.launches,
                                                    limits.per_repo.window)))
    if not checks:
        return None
    state = await ctx.store.limit_launch([rate for _, rate in checks], None)
    if state.refused is not None:
        cause, rate = checks[state.refused]
        retry = max(1, math.ceil(state.retry_after))
        window = _window(rate.window)
        if cause == "rate_limit_client":
            detail = f"{rate.limit} launches in {window} from {client}"
            message = (f"Too many launches from your address: at most {rate.limit} launches in {window} "
                       f"are allowed. Please try again in {retry} seconds.")
        else:
            detail = f"{rate.limit} launches in {window}"
            message = (f"This repository has been launched too often: at most {rate.limit} launches in {window} "
                       f"are allowed. Please try again in {retry} seconds.")
        return _too_many(ctx, launch, cause, detail, client, message, retry)
    return None


def repo_cap_refused(ctx: RouterContext, config: FederationConfig, request: web.Request, launch: LaunchRequest,
                     in_flight: int, cap: RepoCap) -> web.Response:
    """The answer to a launch the store refused at the repository's cap."""
    client = client_address(request, config.router.trusted_networks)
    retry = config.router.retry_after
    detail = f"{in_flight} launches in progress, {cap.running} servers running, cap {cap.cap}"
    message = (f"This repository already has {cap.cap} or more launches in progress across this Binder "
               f"federation, the most one repository may have. Please try again in {retry} seconds.")
    return _too_many(ctx, launch, "repo_cap", detail, client, message, retry)


def _too_many(ctx: RouterContext, launch: LaunchRequest, cause: str, detail: str, client: str, message: str,
              retry: int) -> web.Response:
    ctx.metrics.refused.labels(cause).inc()
    log.info("refused launch %s from %s: %s (%s)", launch.provider_spec, client, cause, detail,
             extra={"cause": cause, "client": client, "repo_key": launch.repo_key})
    return refuse(launch.family, 429, "Too many launches", message, {"Retry-After": str(retry)})


def _banned(ctx: RouterContext, launch: LaunchRequest, rule: BanRule) -> web.Response:
    ctx.metrics.refused.labels("banned").inc()
    log.info("refused launch %s: banned (pattern %r)", launch.provider_spec, rule.pattern.pattern,
             extra={"cause": "banned", "repo_key": launch.repo_key})
    return refuse(launch.family, 403, "Repository not available", rule.message or BANNED_MESSAGE)
