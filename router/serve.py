"""`binderfed serve`: run the router until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from dataclasses import replace

from aiohttp import web

from federation import config as config_mod
from federation.logs import setup_logging
from federation.store import open_store

from .app import create_app
from .connections import GuardedSite
from .context import CONTEXT

log = logging.getLogger("binderfed.serve")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=os.environ.get("BINDERFED_CONFIG"),
                        help="YAML config file (default: $BINDERFED_CONFIG)")
    parser.add_argument("--host", help="listen address (overrides router.host)")
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


async def listen(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Start serving `app`; return the runner (to clean up) and the bound port (port 0 = any free one).

    Connections must deliver their first request's headers within `router.header_timeout`
    seconds (router.connections).
    """
    ctx = app[CONTEXT]
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()

    def timed_out(started: bool) -> None:
        ctx.metrics.header_timeouts.inc()
        log.debug("closed a client connection: %s", "its request headers did not arrive in time" if started
                  else "no request within router.header_timeout")

    try:
        await GuardedSite(runner, host, port, header_timeout=lambda: ctx.config.router.header_timeout,
                          on_timeout=timed_out).start()
    except BaseException:
        await runner.cleanup()
        raise
    bound = runner.addresses[0][1]
    log.info("router listening on http://%s:%d", host, bound)
    return runner, bound


async def serve(app: web.Application, host: str, port: int, stop: asyncio.Event) -> None:
    runner, _ = await listen(app, host, port)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def stop_event_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


def run(args: argparse.Namespace) -> int:
    setup_logging(args.log_format, args.log_level)
    try:
        cfg = load_with_overrides(args)
    except config_mod.ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1

    async def main() -> None:
        stop = stop_event_on_signals()
        # The config file is reloaded when it changes and on SIGHUP (router.sources).
        app = create_app(cfg, open_store(cfg.store_url), config_path=args.config, sighup=True)
        await serve(app, cfg.router.host, cfg.router.port, stop)

    try:
        asyncio.run(main())
    except OSError as exc:
        print(f"error: cannot listen on {cfg.router.host}:{cfg.router.port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0
