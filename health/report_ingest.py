"""Read member agents' reports from Redis on a period and fold them into router state.

Every router replica runs one `ReportIngest` (when `reports.enabled`). Each period it
reads every `binderfed:agent-report:<member>` key (`hub.report.report_key`), judges
each envelope it has not judged before with `federation.reports.check`, counts the
result in `federation_agent_reports{member,result}` and logs any rejection with its
cause. An accepted report

- refreshes the image-cache map: `store.learn_image(repo key, member, ttl)` for each
  repository whose image sits on the member's nodes, with a ttl that ends when the
  report turns stale (so an agent that stops reporting stops steering launches);
- is kept for `fill_capacity`, which the prober calls for members whose `/health`
  has no `Pod quota` check.

Tokens are read from their files or environment variables again on every period, so
rotating one needs no restart.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from pathlib import Path
from typing import Any, Callable, Mapping

from federation.config import AgentToken, ReportSettings
from federation.membership import Membership
from federation.reports import (
    ACCEPTED,
    Verdict,
    cache_ttl,
    cached_repositories,
    check,
    fresh,
    running_repositories,
    with_reported_capacity,
)
from federation.stores.protocol import Store
from hub.models import HealthReport
from hub.report import REPORT_KEY_PREFIX, MemberReport
from hub.tasks import BackgroundService, time_limit

log = logging.getLogger("binderfed.reports")

# (member label, result): the member label is "" for names that are not members.
ReportObserver = Callable[[str, str], None]


class RedisReportInbox:
    """The agents' report keys in Redis, read in one SCAN + MGET."""

    def __init__(self, url: str, timeout: float = 10.0):
        import redis.asyncio as redis

        # No socket timeout for redis-py (its default is 5 s): with one it writes every
        # command through asyncio.wait_for, which loses cancellations on Python 3.11
        # (hub.tasks). A whole read is bounded here with asyncio.timeout instead.
        self.timeout = timeout
        self.redis = redis.Redis.from_url(url, socket_timeout=None, socket_connect_timeout=5,
                                          health_check_interval=30)

    async def read(self) -> dict[str, bytes]:
        """member name (from the key) → sealed report; TimeoutError after `timeout` seconds."""
        async with time_limit(self.timeout, "Redis"):
            keys = [key async for key in self.redis.scan_iter(match=REPORT_KEY_PREFIX + "*", count=1000)]
            values = await self.redis.mget(keys) if keys else []
        if not keys:
            return {}
        out = {}
        for key, value in zip(keys, values):
            if value is not None:
                name = key.decode("utf-8", "replace") if isinstance(key, bytes) else str(key)
                out[name[len(REPORT_KEY_PREFIX):]] = value
        return out

    async def close(self) -> None:
        await self.redis.aclose()


def read_tokens(refs: tuple[AgentToken, ...], environ: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """(member → token, member → why its token is missing)."""
    tokens: dict[str, str] = {}
    problems: dict[str, str] = {}
    for ref in refs:
        if ref.token_file:
            try:
                token = Path(ref.token_file).read_text().strip()
            except OSError as exc:
                problems[ref.member] = f"cannot read token file {ref.token_file}: {exc.strerror or exc}"
                continue
            where = f"token file {ref.token_file}"
        else:
            token = environ.get(ref.token_env, "").strip()
            where = f"environment variable {ref.token_env}"
        if token:
            tokens[ref.member] = token
        else:
            problems[ref.member] = f"{where} is empty"
    return tokens, problems


class ReportIngest(BackgroundService):
    """Background reader of agent reports; `start()`/`stop()` from the app's lifecycle."""

    def __init__(
        self,
        inbox: Any,                      # RedisReportInbox or anything with async read() / close()
        store: Store,
        membership: Membership,
        settings: ReportSettings,
        observer: ReportObserver | None = None,
        clock: Callable[[], float] = time.time,
        environ: Mapping[str, str] = os.environ,
    ):
        super().__init__("report-ingest")
        self.inbox = inbox
        self.store = store
        self.membership = membership
        self.settings = settings
        self.observer = observer
        self.clock = clock
        self.environ = environ
        self._judged: dict[str, bytes] = {}          # key member → digest of the envelope last judged
        self._reports: dict[str, MemberReport] = {}  # member → its latest accepted report
        self._running: dict[str, dict[str, int]] = {}  # member → repository key → running user servers
        self._token_problems: dict[str, str] = {}
        self._failing = False

    async def stop(self) -> None:
        await super().stop()
        await self.inbox.close()

    # -- what the rest of the router asks ----------------------------------------------
    def report(self, member: str) -> MemberReport | None:
        """The member's latest accepted report while it is fresh."""
        report = self._reports.get(member)
        return report if fresh(report, self.clock(), self.settings.max_age) else None

    def running(self, repo_key: str) -> int:
        """User servers of a repository running on every member with a fresh report."""
        return sum(counts.get(repo_key, 0) for member, counts in self._running.items()
                   if self.report(member) is not None)

    def fill_capacity(self, member: str, health: HealthReport) -> HealthReport | None:
        """For the prober: `health` completed with the agent's capacity, or None without a fresh report."""
        report = self.report(member)
        return with_reported_capacity(health, report) if report is not None else None

    # -- the loop ------------------------------------------------------------------------
    async def run(self) -> None:
        while not self.stopping:
            try:
                await self.poll_once()
                if self._failing:
                    log.info("agent reports readable again")
                self._failing = False
            except Exception as exc:
                if not self._failing:  # one line per outage, not one per period
                    log.warning("cannot read agent reports: %s: %s", type(exc).__name__, exc)
                self._failing = True
            if not await self.pause(self.settings.period):
                return

    async def poll_once(self) -> list[Verdict]:
        """Read all reports once; judge and fold the new ones. Returns their verdicts."""
        envelopes = await self.inbox.read()
        tokens = self._tokens()
        members = {m.name for m in self.membership.members()}
        now = self.clock()
        verdicts = []
        for name in [n for n in self._judged if n not in envelopes]:
            del self._judged[name]
        for name, raw in sorted(envelopes.items()):
            digest = hashlib.sha256(raw if isinstance(raw, bytes) else raw.encode()).digest()
            if self._judged.get(name) == digest:
                continue  # the agent has not published since; judged already
            self._judged[name] = digest
            verdict = check(name, raw, tokens, members, now, self.settings.max_age)
            verdicts.append(verdict)
            if self.observer is not None:
                self.observer(name if name in members else "", verdict.result)
            if verdict.result == ACCEPTED:
                assert verdict.report is not None
                await self._fold(verdict.report, now)
            else:
                log.warning("ignored the agent report of %r: %s: %s", name[:80], verdict.result, verdict.detail,
                        extra={"member": name[:80], "result": verdict.result})
        return verdicts

    async def _fold(self, report: MemberReport, now: float) -> None:
        previous = self._reports.get(report.member)
        if previous is not None and previous.timestamp > report.timestamp:
            return  # an older report re-published late must not undo a newer one
        self._reports[report.member] = report
        self._running[report.member] = running_repositories(report)
        repos, invalid = cached_repositories(report)
        if invalid:
            log.warning("agent report of %s names %d images with specs that are not launch specs, e.g. %r",
                        report.member, len(invalid), invalid[0][:200])
        ttl = cache_ttl(report, now, self.settings.max_age)
        # One at a time: a burst of thousands of concurrent writes would exhaust a shared
        # store's connection pool, and launches need that pool more than this does.
        for key in repos:
            await self.store.learn_image(key, report.member, ttl)
        log.debug("agent report of %s: %d pods allocatable, %d BinderHub pods, %d cached repositories",
                  report.member, report.capacity.pods, report.usage.total_pods, len(repos))

    def _tokens(self) -> dict[str, str]:
        tokens, problems = read_tokens(self.settings.members, self.environ)
        for member, problem in problems.items():
            if self._token_problems.get(member) != problem:
                log.error("no agent report token for member %s: %s", member, problem)
        self._token_problems = problems
        return tokens
