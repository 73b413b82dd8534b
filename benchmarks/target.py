"""The servers the redirect benchmarks load, each run as a process of its own.

`python -m benchmarks.target KIND ...` serves on 127.0.0.1, prints one JSON line
(`{"ports": [...]}`) on stdout once it listens, and runs until SIGTERM. The
benchmark pins each process to a core and reads its CPU time from /proc.

- `router`: the real router app (`router.app.create_app`) as `binderfed serve` runs
  it, JSON logs at level info on stderr, with members that
  never need to be contacted: their statuses are written to the store as a prober
  would (`--probe` runs the real prober instead, against `--member-url`s).
- `ceiling`: a bare aiohttp handler answering every launch path with a 307 and a
  `Location`, served the same way (the router's handler_args, a GuardedSite, the
  start-up heap frozen): what aiohttp itself costs per redirect.
- `health`: a cheap stand-in for N members' `/health` (BinderHub's JSON shape, with a
  Pod quota check), one port per member so that the prober keeps one connection per
  member as it would in production; `/_answered` counts the probes it answered.

`--reuse-port` lets several processes listen on one port (SO_REUSEPORT: the kernel
spreads incoming connections over them), which is how the benchmark runs two
router replicas behind one address.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import signal
import sys
import time

from aiohttp import web

from federation.config import FederationConfig, LimitSettings, PolicySettings, RateLimit, RouterSettings
from federation.logs import setup_logging
from federation.members import Member
from federation.stores.factory import open_store
from router.app import create_app, handler_args
from router.connections import GuardedSite
from router.serve import HANDLER_SHUTDOWN_TIMEOUT, settle_heap
from router.pages import CORS_HEADERS

from .common import healthy_statuses, members

# Launch paths the load generators request and both servers answer.
LAUNCH_PREFIXES = ("/v2/", "/build/", "/repo/")
# Plenty of room on every member: the benchmark measures the redirect path, not a full federation.
QUOTA = 1_000_000
# Seconds a launch counts in flight: at thousands of launches per second the default
# 15 s would keep tens of thousands in flight at once; 2 s keeps the store's
# in-flight bookkeeping as small as a busy real federation's.
IN_FLIGHT_TTL = 2.0


# `--limits`: every abuse limit checked and counted, none ever reached.
UNREACHABLE_LIMITS = LimitSettings(enabled=True, per_client=RateLimit(10**12), per_repo=RateLimit(10**12),
                                   repo_concurrency=10**12)


def router_config(ms: list[Member], store_url: str, limits: bool = False) -> FederationConfig:
    """The benchmark's router: defaults (sticky cookie included), but no abuse limits,
    because the load generator is a single client address launching thousands of
    times a second; `limits`: limits that cost what they cost but never refuse."""
    return FederationConfig(
        members=tuple(ms), store_url=store_url,
        policy=PolicySettings(in_flight_ttl=IN_FLIGHT_TTL),
        router=RouterSettings(port=0),
        limits=UNREACHABLE_LIMITS if limits else LimitSettings(enabled=False),
    )


async def router_app(args: argparse.Namespace) -> web.Application:
    if args.member_url:
        ms = [Member(name=f"m{i:04d}", url=url) for i, url in enumerate(args.member_url)]
    else:
        ms = members(args.members)
    cfg = router_config(ms, args.store, args.limits)
    store = open_store(args.store)
    app = create_app(cfg, store, probe=args.probe)
    if not args.probe:
        async def healthy(app: web.Application):
            # After the app's own lifecycle started the store: as if a prober had just seen every member.
            for status in healthy_statuses(ms, quota=QUOTA).values():
                await store.put_status(status)
            yield

        app.cleanup_ctx.append(healthy)
    return app


def ceiling_app(router_response: bool = False) -> web.Application:
    """The bare handler; `router_response`: answering with the router's whole response
    (body, CORS and decision headers, sticky cookie), to tell what writing that costs."""
    member = "http://127.0.0.1:20000"

    async def redirect(request: web.Request) -> web.Response:
        return web.Response(status=307, headers={"Location": member + request.raw_path})

    async def redirect_like_router(request: web.Request) -> web.Response:
        response = web.Response(status=307, text="Redirecting to m0000", headers={
            **CORS_HEADERS, "Location": member + request.raw_path,
            "X-Binder-Federation-Member": "m0000", "X-Binder-Federation-Reason": "affinity"})
        response.set_cookie("binder-federation-member", "m0000", max_age=4 * 3600, path=request.path,
                            httponly=True, samesite="Lax")
        return response

    # Served as the router is (router.app.handler_args, below a GuardedSite): the
    # difference between the two is the router's own work.
    app = web.Application(handler_args=handler_args(RouterSettings().idle_timeout, lambda: None))
    for prefix in LAUNCH_PREFIXES:
        app.router.add_get(prefix + "{tail:.*}", redirect_like_router if router_response else redirect)
    return app


def health_app() -> web.Application:
    body = json.dumps({"ok": True, "checks": [
        {"service": "JupyterHub API", "ok": True},
        {"service": "Docker registry", "ok": True},
        {"service": "Pod quota", "ok": True, "total_pods": 10, "build_pods": 1, "user_pods": 9, "quota": 100,
         "_ignore_failure": True},
    ]}).encode()
    versions = json.dumps({"builder_info": {"build_image": "repo2docker"}, "binderhub": "1.0.0"}).encode()

    answered = [0]

    async def health(request: web.Request) -> web.Response:
        answered[0] += 1
        return web.Response(body=body, content_type="application/json")

    async def count(request: web.Request) -> web.Response:  # how many probes it has answered
        return web.json_response({"health": answered[0]})

    async def versions_(request: web.Request) -> web.Response:
        return web.Response(body=versions, content_type="application/json")

    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_get("/versions", versions_)
    app.router.add_get("/_answered", count)
    return app


async def serve(args: argparse.Namespace) -> None:
    if args.kind == "router":
        app = await router_app(args)
    elif args.kind == "ceiling":
        app = ceiling_app(args.router_response)
    else:
        app = health_app()
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=HANDLER_SHUTDOWN_TIMEOUT)  # as router.serve
    await runner.setup()
    if args.kind == "health":
        for _ in range(args.sites):
            await web.TCPSite(runner, "127.0.0.1", args.port).start()
    else:
        # The router and the ceiling alike, as `binderfed serve` listens (router.serve.listen).
        timeout = RouterSettings().header_timeout
        await GuardedSite(runner, "127.0.0.1", args.port, header_timeout=lambda: timeout,
                          reuse_port=args.reuse_port).start()
        settle_heap()
    ports = [address[1] for address in runner.addresses]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(json.dumps({"ports": ports, "started": time.time()}), flush=True)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.target")
    parser.add_argument("kind", choices=["router", "ceiling", "health"])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--reuse-port", action="store_true")
    parser.add_argument("--members", type=int, default=3, help="router: synthetic members")
    parser.add_argument("--member-url", action="append", default=[], help="router: member URLs (instead of --members)")
    parser.add_argument("--store", default="memory://", help="router: store URL")
    parser.add_argument("--probe", action="store_true", help="router: run the prober")
    parser.add_argument("--limits", action="store_true", help="router: check every abuse limit (never reached)")
    parser.add_argument("--router-response", action="store_true",
                        help="ceiling: answer with the router's whole response (headers, body, cookie)")
    parser.add_argument("--sites", type=int, default=1, help="health: members, one port each")
    args = parser.parse_args()
    # One socket per member connection (health, probing) on top of the load's 50.
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    setup_logging("json", "info")  # as `binderfed serve` in a container: JSON lines on stderr
    asyncio.run(serve(args))


if __name__ == "__main__":
    sys.exit(main())
