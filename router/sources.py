"""Runs one router's membership sources (federation.sources) and what a reload changes.

The members and the configuration in force live in one place, the membership
snapshot (`RouterContext.snapshot`), which every source publishes into: the config
file publishes its members and settings together, as one new snapshot, so a request,
which reads the snapshot once, sees either the old or the new config with its own
members, never a mix. Settings that cannot change without a restart (listen address,
port, forwarding mode, store URL, launch-log sink, agent reports) keep their running
values (`in_force`); an edit to them is logged as such. What is built from the settings
rather than read from the snapshot per use (the prober's, the admin token, the sticky
secret, the Consul watch) is updated after the swap (`apply`).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from pathlib import Path
from typing import AsyncIterator

from aiohttp import web

from federation.config import ConsulSettings, FederationConfig
from federation.secrets import SecretError, read_secret
from federation.stores.memory import MemoryStore
from federation.sources import MembershipProvider
from federation.sources.file import FileSource

from . import admin
from .context import CONTEXT
from .sticky import load_signer

log = logging.getLogger("binderfed.sources")

# Settings a running router cannot change: (section or None, field). The agent-report
# reader is built once at start from `reports`, so that whole section is among them.
RESTART_ONLY = (("router", "host"), ("router", "port"), ("router", "forward"), ("router", "idle_timeout"),
                (None, "store_url"), (None, "launch_log"), (None, "reports"))

# How long start-up waits for Consul's first answer before serving without it.
CONSUL_FIRST_SYNC = 2.0


def _get(cfg: FederationConfig, section: str | None, name: str):
    return getattr(getattr(cfg, section) if section else cfg, name)


def keep_restart_only(running: FederationConfig, new: FederationConfig) -> FederationConfig:
    """`new` with the restart-only settings of `running`."""
    router = replace(new.router, host=running.router.host, port=running.router.port, forward=running.router.forward,
                     idle_timeout=running.router.idle_timeout)
    return replace(new, router=router, store_url=running.store_url, launch_log=running.launch_log,
                   reports=running.reports)


class RouterSources:
    """The file and Consul sources of one app; `start()`/`stop()` run from its cleanup_ctx."""

    def __init__(self, app: web.Application, config_path: str | Path | None = None, *,
                 sighup: bool = False, poll_interval: float = 0.5, consul_retry_initial: float = 0.5):
        self.app = app
        self.ctx = app[CONTEXT]
        self.config_path = config_path
        self.sighup = sighup
        self.poll_interval = poll_interval
        self.consul_retry_initial = consul_retry_initial
        self.providers: dict[str, MembershipProvider] = {}  # by name: "config" (the file), "consul"
        self._file_config: FederationConfig | None = None
        self._consul_settings: ConsulSettings | None = None
        self._known: set[str] = set()
        self._consul_lock = asyncio.Lock()

    def _load_sticky(self, config: FederationConfig, first: bool = False) -> None:
        router = config.router
        self.ctx.sticky = load_signer(router.cookie_secret_env, router.cookie_secret_file,
                                      None if first else self.ctx.sticky,
                                      replicas=not isinstance(self.ctx.store, MemoryStore))  # shared: replicas

    async def start(self) -> None:
        admin.load_token(self.app, self.ctx.config.admin)
        self._load_sticky(self.ctx.config, first=True)
        self._known = {m.name for m in self.ctx.membership.members()}
        for name in self._known:
            self._know(name)
        self.ctx.membership.subscribe(self._members_changed)
        if self.config_path is not None:
            file = FileSource(
                self.config_path, self.ctx.membership, on_config=self.apply, on_result=self.ctx.metrics.observe_reload,
                poll_interval=self.poll_interval, sighup=self.sighup, in_force=self.in_force,
            )
            self.providers[file.name] = file
            await file.start()
        await self._set_consul(self.ctx.config.consul)

    @property
    def file(self) -> FileSource | None:
        return self.providers.get(FileSource.name)  # type: ignore[return-value]

    @property
    def consul(self):  # noqa: ANN201 - federation.sources.consul.ConsulSource, imported only when enabled
        return self.providers.get("consul")

    async def stop(self) -> None:
        file = self.providers.pop(FileSource.name, None)
        if file is not None:  # first, and outside the lock: a reload in progress may be waiting for it
            await file.stop()
        async with self._consul_lock:
            for provider in list(self.providers.values()):
                await provider.stop()
            self.providers.clear()

    def _members_changed(self, members) -> None:
        # A member that left stops being exported; its in-flight launches stay in the
        # store (counted by name), so they still count if it comes back.
        current = {m.name for m in members}
        for name in self._known - current:
            self.ctx.metrics.forget_member(name)
        for name in current - self._known:
            self._know(name)
        self._known = current

    def _know(self, name: str) -> None:
        reporting = self.ctx.config.reports.enabled and any(t.member == name for t in self.ctx.config.reports.members)
        self.ctx.metrics.know_member(name, reports=reporting)

    def in_force(self, file_config: FederationConfig) -> FederationConfig:
        """The config to put in force for a freshly loaded file (FileSource publishes it with
        the file's members, in one snapshot): the file's, but the restart-only settings running."""
        if self._file_config is not None:
            for section, name in RESTART_ONLY:
                before, after = _get(self._file_config, section, name), _get(file_config, section, name)
                if before != after:
                    key = f"{section}.{name}" if section else name
                    log.warning("%s: %s changed from %r to %r; this takes effect only after a restart",
                                file_config.source, key, before, after)
        self._file_config = file_config
        return keep_restart_only(self.ctx.config, file_config)

    async def apply(self, file_config: FederationConfig) -> None:
        """After a reload's snapshot went in force: update what is built from its settings."""
        ctx = self.ctx
        new = ctx.config
        if ctx.prober is not None:
            ctx.prober.settings = new.health
            ctx.prober.headroom = new.policy.pod_headroom
        admin.load_token(self.app, new.admin)
        self._load_sticky(new)
        if new.consul != self._consul_settings:
            await self._set_consul(new.consul)

    async def _set_consul(self, settings: ConsulSettings) -> None:
        async with self._consul_lock:
            self._consul_settings = settings
            running = self.providers.pop("consul", None)
            if running is not None:
                await running.stop()
            if not settings.enabled:
                if running is not None:
                    log.info("Consul discovery disabled: its members leave rotation")
                self.ctx.membership.set_source("consul", ())
                return
            try:
                token = read_secret(settings.token_env, settings.token_file)
            except SecretError as exc:
                # Without its token Consul would answer with an ACL-filtered (empty) list and
                # every registered member would leave; better not to watch at all.
                log.error("Consul discovery not started: Consul token %s", exc)
                return
            from federation.sources.consul import ConsulSource

            consul = ConsulSource(settings, self.ctx.membership, token.value, on_sync=self.ctx.metrics.observe_source,
                                  retry_initial=self.consul_retry_initial)
            self.providers[consul.name] = consul
            await consul.start()
            try:
                async with asyncio.timeout(CONSUL_FIRST_SYNC):  # not wait_for: it can lose a cancel on 3.11
                    await consul.synced.wait()
            except TimeoutError:
                log.warning("no answer from Consul at %s yet; serving without its members until it answers", settings.url)


SOURCES = web.AppKey("binderfed_sources", RouterSources)


async def lifecycle(app: web.Application) -> AsyncIterator[None]:
    """The cleanup_ctx entry that runs an app's sources (after the store and prober are up)."""
    sources = app[SOURCES]
    await sources.start()
    try:
        yield
    finally:
        await sources.stop()
