"""`binderfed demo`: a whole federation on loopback — router + dev members.

The dev members are `hub.devhub.DevHub`s (development stand-ins for BinderHub, not
BinderHubs) with different quotas, so placement has something to choose between.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import socket
import sys
from dataclasses import replace

from federation import config as config_mod
from federation.logs import setup_logging
from federation.stores.factory import open_store
from hub.devhub import DevHub, DevHubSettings

from .app import create_app
from .serve import ListenError, listen, stop_events_on_signals

log = logging.getLogger("binderfed.demo")

DEMO_REPO = "/v2/gh/binder-examples/requirements/HEAD?urlpath=lab"
QUOTAS = (10, 20, 40, 80, 160)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=str(config_mod.DEMO_CONFIG),
                        help="config whose members become dev members (default: config/demo.yaml)")
    parser.add_argument("--host", default="127.0.0.1", help="listen address of the router")
    parser.add_argument("--port", type=int, default=None,
                        help="router port (default: the config's, or a free one if that is taken)")
    parser.add_argument("--forward", choices=["redirect", "stream"], help="override router.forward")
    parser.add_argument("--store-url", help="override store.url (for example a local redis://)")
    parser.add_argument("--build-seconds", type=float, default=3.0, help="how long a dev member 'builds' an image")
    parser.add_argument("--log-format", choices=["auto", "json", "text"], default="text")


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


async def run_demo(args: argparse.Namespace, ready: asyncio.Event | None = None,
                   stop: asyncio.Event | None = None) -> None:
    cfg = config_mod.load(args.config)
    hubs: list[DevHub] = []
    try:
        members = []
        for index, member in enumerate(cfg.members):
            hub = DevHub(DevHubSettings(name=member.name, quota=QUOTAS[index % len(QUOTAS)],
                                        build_seconds=args.build_seconds, idle_cull_seconds=600))
            url = await hub.start(args.host, 0)
            hubs.append(hub)
            members.append(member.with_url(url))
        port = args.port if args.port is not None else cfg.router.port
        if args.port is None and not _port_free(args.host, port):
            port = 0
        router = replace(cfg.router, host=args.host, port=port, forward=args.forward or cfg.router.forward)
        cfg = replace(cfg, members=tuple(members), router=router, store_url=args.store_url or cfg.store_url)
        app = create_app(cfg, open_store(cfg.store_url))
        stop = stop or stop_events_on_signals()[0]  # a demo stops at once: nothing to drain
        runner, bound = await listen(app, args.host, port)
        try:
            base = f"http://{args.host}:{bound}"
            print("binder-federation demo is running:", flush=True)
            for hub, member in zip(hubs, members):
                print(f"  member {member.name:<6} {member.url}  (dev member, quota {hub.settings.quota})", flush=True)
            print(f"  router        {base}   members: {base}/api/v1/members", flush=True)
            print(f"\nLaunch URL: {base}{DEMO_REPO}\n  (open it in a browser, or: curl -L '{base}{DEMO_REPO}')\n"
                  "Press Ctrl-C to stop.", flush=True)
            if ready is not None:
                ready.set()
            await stop.wait()
        finally:
            await runner.cleanup()
    finally:
        for hub in hubs:
            await hub.stop()


def run(args: argparse.Namespace) -> int:
    setup_logging(args.log_format, "info")
    try:
        asyncio.run(run_demo(args))
    except config_mod.ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (OSError, ListenError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
