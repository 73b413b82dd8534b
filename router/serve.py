"""`binderfed serve`: run the router until SIGINT/SIGTERM, then stop gracefully.

On the first SIGTERM (or SIGINT) the router stops being ready (`GET /ready` answers
503; `GET /health`, the liveness check, stays 200) and goes on serving everything for
`router.shutdown.grace` seconds, so load balancers take it out of rotation before
anything is refused. Then the listener closes and relayed `/build/` streams get
`router.shutdown.stream_deadline` more seconds to reach their final event; a stream
still running then ends with a final `failed` event saying the router is shutting
down (router.relay). A second signal skips what is left of both waits.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import signal
import sys
import time
from dataclasses import replace

from aiohttp import web

from federation import config as config_mod
from federation.launchlog import LaunchLogError
from federation.logs import setup_logging
from federation.stores.factory import open_store

from .app import create_app
from .connections import GuardedSite
from .context import CONTEXT

log = logging.getLogger("binderfed.serve")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=os.environ.get("BINDERFED_CONFIG"),
                        help="YAML config file (default: $BINDERFED_CONFIG)")
    parser.add_argument("--host", default=os.environ.get("BINDERFED_HOST"),
                        help="listen address (overrides router.host; default: $BINDERFED_HOST, which the container "
                             "image sets to 0.0.0.0)")
    parser.add_argument("--port", type=int, help="listen port (overrides router.port)")
    parser.add_argument("--store-url", help="state store URL (overrides store.url)")
    parser.add_argument("--log-format", choices=["auto", "json", "text"], default="auto")
    parser.add_argument("--log-level", default="info")


def load_with_overrides(args: argparse.Namespace) -> config_mod.FederationConfig:
    if not args.config:
        raise config_mod.ConfigError("<command line>", "--config", "no config file given (use --config FILE or BINDERFED_CONFIG)")
    cfg = config_mod.load(args.config)
    router = cfg.router
    if args.host:
        router = replace(router, host=args.host)
    if args.port is not None:
        router = replace(router, port=args.port)
    cfg = replace(cfg, router=router)
    if args.store_url:
        cfg = replace(cfg, store_url=args.store_url)
    return cfg


class ListenError(Exception):
    """The router could not bind its listening socket."""


# How long, once the listener is closed, other requests (and the final writes of ended
# streams) get to complete before aiohttp cancels their handlers. Relayed streams are
# waited for before that, for router.shutdown.stream_deadline (router.relay).
HANDLER_SHUTDOWN_TIMEOUT = 10.0


async def listen(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Start serving `app`; return the runner (to clean up) and the bound port (port 0 = any free one).

    Connections must deliver their first request's headers within `router.header_timeout`
    seconds (router.connections).
    """
    ctx = app[CONTEXT]
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=HANDLER_SHUTDOWN_TIMEOUT)
    await runner.setup()

    def timed_out(started: bool) -> None:
        ctx.metrics.header_timeouts.inc()
        log.debug("closed a client connection: %s", "its request headers did not arrive in time" if started
                  else "no request within router.header_timeout")

    try:
        await GuardedSite(runner, host, port, header_timeout=lambda: ctx.config.router.header_timeout,
                          on_timeout=timed_out).start()
    except OSError as exc:
        await runner.cleanup()
        raise ListenError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    except BaseException:
        await runner.cleanup()
        raise
    bound = runner.addresses[0][1]
    log.info("router listening on http://%s:%d", host, bound)
    return runner, bound


async def stop_gracefully(app: web.Application, hurry: asyncio.Event) -> None:
    """The first part of a graceful stop: not ready any more, still serving for the grace.

    What follows (closing the listener, waiting for relayed streams) is the runner's
    cleanup and the relay's on_shutdown handler, which reads `draining_since`.
    """
    ctx = app[CONTEXT]
    settings = ctx.config.router.shutdown  # as in force now: a reloaded config applies
    ctx.draining_since = time.monotonic()
    ctx.hurry = hurry
    log.info("shutting down: not ready any more, serving %g s more; then relayed streams get %g s to finish",
             settings.grace, settings.stream_deadline,
             extra={"grace": settings.grace, "stream_deadline": settings.stream_deadline})
    try:
        async with asyncio.timeout(settings.grace):
            await hurry.wait()
        log.info("second signal: stopping now")
    except TimeoutError:
        pass


def settle_heap() -> None:
    """After start-up: move everything allocated so far (modules, config, member tables)
    out of the garbage collector's sight. It lives as long as the process, and otherwise
    every full collection walks it again while the router serves."""
    gc.collect()
    gc.freeze()


async def serve(app: web.Application, host: str, port: int, stop: asyncio.Event,
                hurry: asyncio.Event | None = None) -> None:
    runner, _ = await listen(app, host, port)
    settle_heap()
    try:
        await stop.wait()
        await stop_gracefully(app, hurry or asyncio.Event())
    finally:
        await runner.cleanup()


def stop_events_on_signals() -> tuple[asyncio.Event, asyncio.Event]:
    """(stop, hurry): the first SIGINT/SIGTERM sets `stop`, any further one `hurry`."""
    stop, hurry = asyncio.Event(), asyncio.Event()
    loop = asyncio.get_running_loop()

    def received() -> None:
        (hurry if stop.is_set() else stop).set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, received)
    return stop, hurry


def run(args: argparse.Namespace) -> int:
    setup_logging(args.log_format, args.log_level)
    try:
        cfg = load_with_overrides(args)
        config_mod.check_runnable(cfg)
    except config_mod.ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1

    async def main() -> None:
        stop, hurry = stop_events_on_signals()
        # The config file is reloaded when it changes and on SIGHUP (router.sources).
        app = create_app(cfg, open_store(cfg.store_url), config_path=args.config, sighup=True)
        await serve(app, cfg.router.host, cfg.router.port, stop, hurry)

    try:
        asyncio.run(main())
    except (ListenError, LaunchLogError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    log.info("router stopped")
    return 0
