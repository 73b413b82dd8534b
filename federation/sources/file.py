"""The YAML config file as a membership source, reloaded while the router runs.

The file is read every `poll_interval` seconds (0.5 s by default) and its SHA-256
compared with the last one seen, and at once on SIGHUP. Polling the content, rather
than watching with inotify (`watchfiles`), needs no extra dependency, cannot miss
an edit that keeps the size and modification time, and follows the symlink swap
Kubernetes does when it updates a mounted ConfigMap (an inotify watch on the old
target would go quiet). Reading a config file of a few kilobytes twice a second
costs nothing measurable.

A changed file is validated with `federation.config.load`. A bad edit changes
nothing: the last good configuration stays in force and the error, which names the
file and the key, is logged once per distinct content. A good edit is published
as one new membership snapshot, its members and its settings together
(`Membership.publish`; `in_force` says which of the file's settings go in force, the
router keeping those it cannot change while running), and is then handed to
`on_config`, for what is built from the settings rather than read from the snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import inspect
import logging
import signal
from pathlib import Path
from typing import Any, Awaitable, Callable

from hub.tasks import BackgroundService

from .. import config as config_mod
from ..config import FederationConfig
from ..membership import Membership

log = logging.getLogger("binderfed.sources.file")

ConfigListener = Callable[[FederationConfig], "Awaitable[None] | None"]
SettingsFilter = Callable[[FederationConfig], FederationConfig]  # the file's config -> the config in force
ResultListener = Callable[[str], None]  # "ok" or "error"


class FileSource(BackgroundService):
    """Membership and settings from one YAML file; `start()`/`stop()` run by the app lifecycle."""

    name = "config"

    def __init__(
        self,
        path: str | Path,
        membership: Membership,
        on_config: ConfigListener | None = None,
        on_result: ResultListener | None = None,
        *,
        poll_interval: float = 0.5,
        sighup: bool = False,
        in_force: SettingsFilter | None = None,
    ):
        self.path = Path(path)
        super().__init__(f"config-file-{self.path.name}")
        self.membership = membership
        self.on_config = on_config
        self.on_result = on_result
        self.in_force = in_force
        self.poll_interval = poll_interval
        self.sighup = sighup
        self.config: FederationConfig | None = None   # the last good config read from the file
        self.last_error: str = ""                     # "" while the file on disk is the config in force
        self._digest: bytes | None = None
        self._forced = False
        self._signal_installed = False

    async def start(self) -> None:
        # The first read takes over from whatever config the app was built with, so the
        # file is the single truth from now on; it logs only if something is wrong.
        await self.check(initial=True)
        if self.sighup:
            try:
                asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self.reload_now)
                self._signal_installed = True
            except (NotImplementedError, RuntimeError, ValueError) as exc:  # not the main thread, or no SIGHUP here
                log.warning("cannot reload %s on SIGHUP here (%s); changes are still picked up by polling", self.path, exc)
        await super().start()

    async def stop(self) -> None:
        if self._signal_installed:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
            self._signal_installed = False
        await super().stop()

    def reload_now(self) -> None:
        """Re-read and re-apply the file at once, even if its content did not change (SIGHUP)."""
        self._forced = True
        self.wake()

    async def run(self) -> None:
        while await self.pause(self.poll_interval):   # or until reload_now()
            forced, self._forced = self._forced, False
            try:
                await self.check(force=forced)
            except Exception:  # a bug in a listener must not stop reloading for good
                log.exception("applying %s failed unexpectedly", self.path)

    async def check(self, force: bool = False, initial: bool = False) -> bool:
        """Reload if the file changed (or `force`); True when a new config was applied."""
        try:
            content = await asyncio.to_thread(self.path.read_bytes)
        except OSError as exc:
            self._digest = None  # whatever comes back next is read afresh
            self._failed(config_mod.ConfigError(str(self.path), "", f"cannot read file: {exc.strerror or exc}"))
            return False
        digest = hashlib.sha256(content).digest()
        if digest == self._digest and not force:
            return False
        self._digest = digest
        try:
            # load() reads the file again; if it changed in between, the next poll sees a
            # new digest and loads once more, so the newest content always wins.
            new = await asyncio.to_thread(config_mod.load, self.path)
        except config_mod.ConfigError as exc:
            self._failed(exc)
            return False
        previous, self.config = self.config, new
        was_broken, self.last_error = self.last_error, ""
        if previous is not None and new == previous and not force:
            if was_broken:
                self._report("ok")
                log.info("config %s is valid again; the config in force is unchanged", self.path)
            return False  # e.g. only a comment changed, or a bad edit was reverted
        # One swap: no request sees the new members with the old settings, or the reverse.
        self.membership.publish(self.name, new.members,
                                config=self.in_force(new) if self.in_force is not None else new)
        if self.on_config is not None:
            result: Any = self.on_config(new)
            if inspect.isawaitable(result):
                await result
        self._report("ok")
        if initial:
            log.debug("config %s: %d members", self.path, len(new.members))
        else:
            log.info("config reloaded from %s: %s", self.path, describe_change(previous, new),
                     extra={"file": str(self.path), "members": [m.name for m in new.members]})
        return True

    def _failed(self, exc: config_mod.ConfigError) -> None:
        message = str(exc)
        if message == self.last_error:
            return  # the same broken file is reported once, not on every poll
        self.last_error = message
        self._report("error")
        kept = "keeping the last good config" if self.config is not None else "keeping the config the router started with"
        log.error("config reload failed, %s: %s", kept, message,
                  extra={"file": exc.source, "key": exc.key, "problem": exc.problem})

    def _report(self, result: str) -> None:
        if self.on_result is not None:
            self.on_result(result)


def describe_change(previous: FederationConfig | None, new: FederationConfig) -> str:
    """One line an operator can read: which members and sections changed."""
    if previous is None:
        return f"{len(new.members)} members"
    old = {m.name: m for m in previous.members}
    cur = {m.name: m for m in new.members}
    parts = []
    added = sorted(cur.keys() - old.keys())
    removed = sorted(old.keys() - cur.keys())
    changed = sorted(n for n in cur.keys() & old.keys() if cur[n] != old[n])
    if added:
        parts.append("added " + ", ".join(added))
    if removed:
        parts.append("removed " + ", ".join(removed))
    if changed:
        parts.append("changed " + ", ".join(changed))
    sections = [f.name for f in dataclasses.fields(new)
                if f.name not in ("members", "source") and getattr(previous, f.name) != getattr(new, f.name)]
    if sections:
        parts.append("settings " + ", ".join(sections))
    return "; ".join(parts) or "no effective change"
