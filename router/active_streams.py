"""Every relayed stream of one app: the sweep that notices departed clients, and shutdown.

Client disconnects: `ActiveStreams` (one per app, started and stopped by the app's
lifecycle) checks every relayed stream's connection a few times a second and
cancels the handler of a stream whose client left; cancellation closes the upstream
stream (`async with` around `hub.build_stream.BuildStream`). The same sweep writes the
keepalives.

Router shutdown (the app's on_shutdown, after the listener closed): in a graceful
stop (router.serve) streams still relaying get `router.shutdown.stream_deadline`
seconds to reach their final event, and streams lingering after it end at once.
Whatever is still relaying then ends with a final event of its own, so no client is
left with a stream cut without a word:

    data: {"phase": "failed", "status_code": 503, "message": "This router is shutting down ..."}
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Protocol

from aiohttp import web

from hub.tasks import BackgroundService

from .context import CONTEXT

log = logging.getLogger("binderfed.relay")

SWEEP_SECONDS = 0.2  # how often client connections are checked and keepalives are due
SHUTTING_DOWN = "router shutting down"
FINAL_WRITE_TIMEOUT = 2.0  # a slow client must not hold up the router's stop


class RelayedStream(Protocol):
    """What the sweep and the shutdown ask of one relayed launch (`router.relay`'s)."""

    def client_left(self) -> bool: ...

    def keepalive_due(self, now: float) -> bool: ...

    async def write_keepalive(self) -> None: ...

    def stop(self, why: str) -> None: ...


class ActiveStreams(BackgroundService):
    """The relayed streams of one app: notices departed clients and sends keepalives.

    One sweep for all streams (instead of a timer per stream) keeps an idle stream
    free of any scheduled work but this check. `start()`/`stop()` run from the app's
    cleanup_ctx; `shutdown()` (the app's on_shutdown) ends every stream, after the
    stream deadline in a graceful stop, so a stopping router does not wait for builds
    that can take an hour.
    """

    def __init__(self, sweep: float = SWEEP_SECONDS) -> None:
        super().__init__("relay-sweep")
        self.sweep = sweep
        self._relays: set[RelayedStream] = set()
        self._empty = asyncio.Event()
        self._empty.set()
        self.closing = asyncio.Event()  # set at shutdown: lingering streams end now

    def __len__(self) -> int:
        return len(self._relays)

    def add(self, relay: RelayedStream) -> None:
        self._relays.add(relay)
        self._empty.clear()

    def discard(self, relay: RelayedStream) -> None:
        self._relays.discard(relay)
        if not self._relays:
            self._empty.set()

    async def shutdown(self, app: web.Application) -> None:
        ctx = app[CONTEXT]
        self.closing.set()
        if ctx.draining_since is not None and self._relays:
            deadline = ctx.config.router.shutdown.stream_deadline
            running = len(self._relays)
            log.info("waiting up to %g s for %d relayed streams to finish", deadline, running)
            started = time.monotonic()
            waits = [asyncio.ensure_future(self._empty.wait()), asyncio.ensure_future(ctx.hurry.wait())]
            await asyncio.wait(waits, timeout=deadline, return_when=asyncio.FIRST_COMPLETED)
            for waiting in waits:
                waiting.cancel()
            log.info("relayed streams: %d finished in %.1f s, %d still running are ended now",
                     running - len(self._relays), time.monotonic() - started, len(self._relays))
        relays = list(self._relays)
        for relay in relays:
            relay.stop(SHUTTING_DOWN)
        # Let each write its final event (bounded by FINAL_WRITE_TIMEOUT per stream).
        if relays:
            await asyncio.wait([asyncio.ensure_future(self._empty.wait())], timeout=FINAL_WRITE_TIMEOUT + 1)

    def check(self) -> None:
        """One sweep: cancel streams whose client left, write due keepalives."""
        now = time.monotonic()
        for relay in list(self._relays):
            if relay.client_left():
                relay.stop("client left")
            elif relay.keepalive_due(now):
                self.spawn(relay.write_keepalive(), name="relay-keepalive")  # stop() cancels it

    async def run(self) -> None:
        while await self.pause(self.sweep):
            try:
                self.check()
            except Exception as exc:  # pragma: no cover - never let the sweep die
                log.exception("relay sweep failed: %s", exc)


STREAMS = web.AppKey("binderfed_relay_streams", ActiveStreams)


def setup(app: web.Application) -> None:
    """Register the app's ActiveStreams (its sweep runs from the app's lifecycle)."""
    streams = ActiveStreams()
    app[STREAMS] = streams
    app.on_shutdown.append(streams.shutdown)

    async def lifecycle(app: web.Application) -> Any:
        await streams.start()
        try:
            yield
        finally:
            await streams.stop()

    app.cleanup_ctx.append(lifecycle)
