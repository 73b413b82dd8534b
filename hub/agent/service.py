"""The agent as a background service: pod watchers plus a report every period."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Callable

from .kube import KubeReader, PodWatcher, api_status
from .pods import PodBook, PodInfo, node_info
from ..report import MemberReport, seal
from ..tasks import Backoff, BackgroundService
from .outbox import RedisOutbox
from .reporting import build_report
from .settings import AgentSettings, TokenSource, agent_version
from .specs import SpecBook

log = logging.getLogger("binderfed.agent")


class Agent(BackgroundService):
    """The member agent: pod watchers plus a loop that reports every `period` seconds."""

    def __init__(self, settings: AgentSettings, kube: KubeReader, outbox: RedisOutbox | None,
                 token: TokenSource, clock: Callable[[], float] = time.time):
        super().__init__("agent-report")
        self.settings = settings
        self.kube = kube
        self.outbox = outbox
        self.token = token
        self.clock = clock
        self.version = agent_version()
        self.book = PodBook()
        self.specs = SpecBook(settings.image_prefix)
        self.specs.configure(settings.specs)
        self.watchers = [
            PodWatcher(kube, ns, self.book, on_pod=self._learn, watch_timeout=settings.watch_timeout,
                       backoff_initial=settings.backoff_initial, backoff_max=settings.backoff_max)
            for ns in settings.namespaces
        ]
        self.published = 0
        self.last_report: MemberReport | None = None
        self.last_error: str = ""
        self._specs_loaded = outbox is None
        self._node_call: asyncio.Future[Any] | None = None

    def _learn(self, pod: PodInfo) -> None:
        self.specs.learn_from_pod(pod, self.clock())

    async def start(self) -> None:
        for watcher in self.watchers:
            await watcher.start()
        await super().start()

    async def stop(self) -> None:
        await super().stop()
        for watcher in self.watchers:
            await watcher.stop()
        if self._node_call is not None:
            # A node list still running in its thread ends within the request timeout.
            await asyncio.wait({self._node_call}, timeout=self.settings.request_timeout + 5)
        if self.outbox is not None:
            await self.outbox.close()
        self.kube.close()

    @property
    def synced(self) -> bool:
        return all(w.synced for w in self.watchers)

    async def report_once(self) -> MemberReport | None:
        """Read nodes and build a report; None while the pod counts are not known."""
        self._node_call = asyncio.get_running_loop().run_in_executor(
            None, self.kube.list_nodes, self.settings.node_selector)
        try:
            raw_nodes = await self._node_call
        except Exception as exc:
            if api_status(exc) == 401:
                self.kube.reset()
            raise
        if not self.synced:
            return None
        now = self.clock()
        nodes = [node_info(n, self.settings.image_prefix) for n in raw_nodes]
        for node in nodes:
            if node.usable:
                self.specs.saw(node.slugs, now)
        return build_report(self.settings, nodes, self.book.usage(), self.specs, now, self.version,
                            self.book.running())

    async def _persist_specs(self) -> None:
        if self.outbox is None or not self._specs_loaded:
            return  # never overwrite what an earlier run saved before it is loaded
        write, forget = self.specs.changes(self.clock(), self.settings.forget_after)
        await self.outbox.save_specs(write, forget)

    async def publish_once(self) -> MemberReport | None:
        if not self._specs_loaded and self.outbox is not None:
            try:
                self.specs.load(await self.outbox.load_specs())
                self._specs_loaded = True
            except Exception as exc:
                log.warning("cannot load learned launch specs from Redis yet: %s", exc)
        report = await self.report_once()
        if report is None:
            log.info("pods of member %s are not listed yet; no report this period", self.settings.member)
            return None
        if self.outbox is not None:
            await self.outbox.publish(seal(report, self.token()), self.settings.report_ttl)
            await self._persist_specs()
        self.published += 1
        self.last_report = report
        log.info("reported %d user and %d build pods, %d nodes (%d pods allocatable), %d cached repositories "
                 "(%d unmapped images)", report.usage.user_pods, report.usage.build_pods, report.capacity.nodes,
                 report.capacity.pods, len(report.cached_images), report.unmapped_images)
        return report

    async def run(self) -> None:
        backoff = Backoff(self.settings.backoff_initial, self.settings.backoff_max, jitter=0.5)
        while not self.stopping:
            try:
                report = await self.publish_once()
                self.last_error = ""
                backoff.reset()
                # Before the first list completes, look again soon rather than a period later.
                delay = self.settings.period if report is not None else min(self.settings.period, 1.0)
            except Exception as exc:
                status = api_status(exc)
                self.last_error = f"HTTP {status}" if status else f"{type(exc).__name__}: {exc}"
                delay = min(backoff.next(), max(self.settings.period, self.settings.backoff_initial))
                log.warning("report of member %s failed (%s); retrying in %.1f s",
                            self.settings.member, self.last_error, delay)
            if not await self.pause(delay):
                return
