"""`binderfed devhub`: serve one development member until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from .faults import DevHubFaults
from .member import DevHub
from .settings import DevHubSettings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `binderfed devhub`."""
    d = DevHubSettings()
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8585, help="port to listen on, 0 = any free port (default: %(default)s)")
    parser.add_argument("--name", default=d.name, help="member name shown on pages (default: %(default)s)")
    parser.add_argument("--quota", type=int, default=None, help="pod quota (default: unlimited)")
    parser.add_argument("--build-seconds", type=float, default=d.build_seconds, help="duration of a fresh build")
    parser.add_argument("--launch-seconds", type=float, default=d.launch_seconds, help="duration of a launch")
    parser.add_argument("--event-interval", type=float, default=d.event_interval, help="spacing of log events")
    parser.add_argument("--idle-cull-seconds", type=float, default=d.idle_cull_seconds, help="cull servers idle this long")
    parser.add_argument("--image-prefix", default=d.image_prefix, help="prefix of image names")
    parser.add_argument("--keepalive-seconds", type=float, default=d.keepalive_seconds, help="keepalive comment period")
    parser.add_argument(
        "--no-pod-quota",
        dest="report_quota",
        action="store_false",
        help="report no 'Pod quota' health check, like a BinderHub not on Kubernetes",
    )
    parser.add_argument("--binderhub-version", default=d.version, help="version reported by /versions")
    parser.add_argument("--public-url", default=None, help="base URL for server links (default: request host)")
    parser.add_argument(
        "--fail-repo", action="append", default=[], metavar="REGEX", help="launches matching REGEX fail to build"
    )
    parser.add_argument("--rate-limit", type=int, default=d.rate_limit, metavar="N",
                        help="/build/ launches per visitor address and period without a build token, "
                             "as BinderHub's rate limit (default: 0, no limit; BinderHub's own default is 10)")
    parser.add_argument("--rate-limit-period", type=float, default=d.rate_limit_period, metavar="SECONDS",
                        help="the rate limit's window (default: %(default)s)")
    parser.add_argument("--build-token-secret", default=None, metavar="HEX",
                        help="secret that signs build tokens, hexadecimal (default: a random one)")
    parser.add_argument("--seed", type=int, default=None, help="seed for reproducible server names")


def settings_from_args(args: argparse.Namespace) -> DevHubSettings:
    return DevHubSettings(
        name=args.name,
        quota=args.quota,
        build_seconds=args.build_seconds,
        launch_seconds=args.launch_seconds,
        event_interval=args.event_interval,
        idle_cull_seconds=args.idle_cull_seconds,
        image_prefix=args.image_prefix,
        report_quota=args.report_quota,
        keepalive_seconds=args.keepalive_seconds,
        version=args.binderhub_version,
        public_url=args.public_url,
        rate_limit=args.rate_limit,
        rate_limit_period=args.rate_limit_period,
        build_token_secret=args.build_token_secret,
    )


def run(args: argparse.Namespace) -> int:
    """Serve one dev member until SIGINT/SIGTERM; return the exit status."""
    try:
        hub = DevHub(settings_from_args(args), faults=DevHubFaults(fail_repos=tuple(args.fail_repo)), seed=args.seed)
    except ValueError as exc:
        print(f"devhub: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(_serve(hub, args.host, args.port))


async def _serve(hub: DevHub, host: str, port: int) -> int:
    try:
        url = await hub.start(host, port)
    except OSError as exc:
        print(f"devhub: cannot listen on {host}:{port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    print(f"devhub {hub.settings.name} listening on {url}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
        await hub.stop()
    print(f"devhub {hub.settings.name} stopped", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="devhub", description="Run a development member BinderHub.")
    add_arguments(parser)
    return run(parser.parse_args(argv))
