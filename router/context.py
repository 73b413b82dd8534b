"""Everything one router app owns, built by `create_app` and reached by handlers."""

from __future__ import annotations

import asyncio
import math
import random
import time
from dataclasses import dataclass, field
from typing import Mapping

import aiohttp
from aiohttp import web

from federation.admission import host_rules, may_resolve_private
from federation.config import FederationConfig
from federation.launchlog import LaunchLog
from federation.members import MemberState, MemberStatus, fresh_statuses
from federation.membership import Membership, MembershipSnapshot
from federation.spec import LaunchRequest
from federation.stores.protocol import Store
from federation.placement.view import FederationView, ViewBuilder
from health.outlier import OutlierDetector
from health.prober import Prober
from health.report_ingest import ReportIngest
from hub.client import HubClient

from .metrics import Metrics
from .sticky import StickySigner


class FreshStatuses:
    """`fresh_statuses` for a stream of launches: computed again only when the statuses
    changed or one of them came of age since, not per launch (a loop over every member)."""

    def __init__(self) -> None:
        self._input: Mapping[str, MemberStatus] | None = None
        self._output: Mapping[str, MemberStatus] = {}
        self._max_age = -1.0
        self._until = -math.inf  # the answer holds while now <= this

    def __call__(self, statuses: Mapping[str, MemberStatus], now: float, max_age: float) -> Mapping[str, MemberStatus]:
        # Equality is cheap: unchanged members come back as the very same objects.
        if now <= self._until and max_age == self._max_age and statuses == self._input:
            return self._output
        self._input, self._max_age = dict(statuses), max_age
        self._output = fresh_statuses(statuses, now, max_age)
        fresh = [s.checked_at for s in statuses.values()
                 if s.state is not MemberState.UNKNOWN and now - s.checked_at <= max_age]
        self._until = min(fresh) + max_age if fresh else math.inf
        return self._output


@dataclass
class RouterContext:
    store: Store
    # The members and the config in force, one immutable snapshot swapped whole on a
    # reload (federation.membership): a request reads it once (`snapshot`) and keeps it.
    membership: Membership
    metrics: Metrics
    launch_log: LaunchLog
    outlier: OutlierDetector  # passive health, fed by the stream relay; started with the app
    rng: random.Random = field(default_factory=random.Random)
    # Made when the app starts (they need its event loop), None before.
    session: aiohttp.ClientSession | None = None
    client: HubClient | None = None
    # Optional by configuration: the prober (create_app(probe=...)), agent reports (`reports.enabled`).
    prober: Prober | None = None
    reports: ReportIngest | None = None
    started_at: float = field(default_factory=time.time)
    views: ViewBuilder = field(default_factory=ViewBuilder)
    fresh: FreshStatuses = field(default_factory=FreshStatuses)
    # Graceful stop (router.serve): when it began (monotonic), and set when a second
    # signal asks to skip the remaining waits. GET /ready answers 503 from the start.
    draining_since: float | None = None
    hurry: asyncio.Event = field(default_factory=asyncio.Event)
    sticky: StickySigner = field(default_factory=StickySigner.random)  # loaded by router.sources

    @property
    def snapshot(self) -> MembershipSnapshot:
        """The members and settings in force now: read once per request and use that one."""
        return self.membership.snapshot

    @property
    def config(self) -> FederationConfig:
        """The config in force now. A request that reads anything else (members, or the config
        again after an await) reads `snapshot` once instead."""
        return self.membership.snapshot.config

    def may_resolve_private(self, host: str) -> bool:
        """Whether calls to members may reach `host` at a non-public address (hub.resolver):
        the config file names it, or an exact `consul.allowed_hosts` entry does."""
        config = self.config
        return may_resolve_private(host, config.members, host_rules(config.consul.allowed_hosts))

    async def view_for(self, request: LaunchRequest | None, snapshot: MembershipSnapshot | None = None) -> FederationView:
        """One store read, merged with the members of `snapshot` (the one in force now if
        None): the view placement sees."""
        snapshot = snapshot or self.membership.snapshot
        repo_key = request.repo_key if request is not None else None
        state = await self.store.launch_state(repo_key)
        now = time.time()
        return self.views.build(
            snapshot.members,
            self.fresh(state.statuses, now, snapshot.config.health.status_max_age),
            state.in_flight,
            state.overrides,
            state.ejections,
            {repo_key: state.holders} if repo_key else {},
            now,
        )


CONTEXT = web.AppKey("binderfed_context", RouterContext)
