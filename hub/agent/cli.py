"""`binderfed agent`: flags and environment, checks, and the run (or `--once`)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import signal
import sys
import time
from pathlib import Path

from .kube import KubeReader, api_status, default_config_loader
from .outbox import RedisOutbox
from .service import Agent
from .settings import AgentSettings, token_from

log = logging.getLogger("binderfed.agent")

IN_CLUSTER_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
MEMBER_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(name) or default


def _default_namespace() -> str:
    try:
        return IN_CLUSTER_NAMESPACE.read_text().strip() or "default"
    except OSError:
        return "default"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--member", default=_env("BINDERFED_AGENT_MEMBER"),
                        help="this member's name in the federation (default: $BINDERFED_AGENT_MEMBER)")
    parser.add_argument("--image-prefix", default=_env("BINDERFED_AGENT_IMAGE_PREFIX"),
                        help="the BinderHub's image_prefix, e.g. gcr.io/binderhub/r2d-2023- "
                             "(default: $BINDERFED_AGENT_IMAGE_PREFIX)")
    parser.add_argument("--redis-url", default=_env("BINDERFED_AGENT_REDIS_URL"),
                        help="the federation's Redis, redis:// or rediss:// (default: $BINDERFED_AGENT_REDIS_URL)")
    parser.add_argument("--token-file", default=_env("BINDERFED_AGENT_TOKEN_FILE"),
                        help="file holding this member's report token (default: $BINDERFED_AGENT_TOKEN_FILE; "
                             "or put the token itself in $BINDERFED_AGENT_TOKEN)")
    parser.add_argument("--namespace", default=_env("BINDERFED_AGENT_NAMESPACE"),
                        help="BinderHub's namespace (default: $BINDERFED_AGENT_NAMESPACE, the pod's own namespace "
                             "in a cluster, else 'default')")
    parser.add_argument("--build-namespace", default=_env("BINDERFED_AGENT_BUILD_NAMESPACE"),
                        help="namespace of build pods when BinderHub's build_namespace differs")
    parser.add_argument("--node-selector", default=_env("BINDERFED_AGENT_NODE_SELECTOR"),
                        help="label selector of the nodes that run user servers, e.g. "
                             "hub.jupyter.org/node-purpose=user (default: all nodes)")
    parser.add_argument("--spec", action="append", default=[], metavar="PROVIDER/SPEC",
                        help="a launch spec known to run here, e.g. gh/binder-examples/requirements/HEAD (repeatable)")
    parser.add_argument("--specs-file", default=_env("BINDERFED_AGENT_SPECS_FILE"),
                        help="file of launch specs, one per line ('#' starts a comment)")
    parser.add_argument("--period", type=float, default=float(_env("BINDERFED_AGENT_PERIOD", "30")),
                        help="seconds between two reports (default: 30)")
    parser.add_argument("--forget-after-days", type=float, default=30.0,
                        help="forget a learned launch spec when its image was not seen for this many days")
    parser.add_argument("--kubeconfig", default=None,
                        help="kubeconfig file (default: the in-cluster service account, else ~/.kube/config)")
    parser.add_argument("--context", default=None, help="kubeconfig context")
    parser.add_argument("--once", action="store_true",
                        help="print one report as JSON and exit, publishing nothing (checks access and config)")
    parser.add_argument("--log-level", default="info")


def read_specs_file(path: str) -> list[str]:
    specs = []
    for line in Path(path).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            specs.append(line)
    return specs


def settings_from_args(args: argparse.Namespace) -> AgentSettings:
    if not args.member or not MEMBER_NAME.fullmatch(args.member):
        raise ValueError("--member must be the member's name in the federation (lower-case letters, digits, '-')")
    if not args.image_prefix:
        raise ValueError("--image-prefix is required: it is how the member's images are recognised on nodes")
    if args.period <= 0:
        raise ValueError("--period must be positive")
    specs = list(args.spec)
    if args.specs_file:
        try:
            specs += read_specs_file(args.specs_file)
        except OSError as exc:
            raise ValueError(f"cannot read --specs-file {args.specs_file}: {exc.strerror or exc}") from None
    return AgentSettings(
        member=args.member,
        image_prefix=args.image_prefix,
        namespace=args.namespace or _default_namespace(),
        build_namespace=args.build_namespace,
        node_selector=args.node_selector,
        specs=tuple(specs),
        period=args.period,
        forget_after=args.forget_after_days * 86400,
    )


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = settings_from_args(args)
        token = None if args.once else token_from(args.token_file, os.environ.get("BINDERFED_AGENT_TOKEN"))
        if token is not None:
            token()  # fail now, not at the first report
        if not args.once and not args.redis_url:
            raise ValueError("--redis-url is required (the federation's Redis)")
        if not args.once and not args.redis_url.startswith(("redis://", "rediss://", "unix://")):
            scheme = args.redis_url.partition("://")[0] if "://" in args.redis_url else args.redis_url[:20]
            raise ValueError(f"--redis-url must be a redis://, rediss:// or unix:// URL, not {scheme}:// "
                             "(the agent does not speak Redis Sentinel: give it the master's address)")
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    kube = KubeReader(default_config_loader(args.kubeconfig, args.context), settings.request_timeout)

    async def once() -> int:
        agent = Agent(settings, kube, None, lambda: "")
        for watcher in agent.watchers:
            pods, _ = await asyncio.to_thread(kube.list_pods, watcher.namespace, watcher.selector)
            agent.book.replace(watcher.namespace, pods)
            watcher.synced = True
            for pod in agent.book.pods():
                agent.specs.learn_from_pod(pod, time.time())
        report = await agent.report_once()
        kube.close()
        print(json.dumps(report.to_json() if report else None, indent=2))
        return 0

    async def main() -> int:
        agent = Agent(settings, kube, RedisOutbox(args.redis_url, settings.member), token)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await agent.start()
        log.info("agent of member %s watching namespace(s) %s, reporting every %g s",
                 settings.member, ", ".join(settings.namespaces), settings.period)
        try:
            await stop.wait()
        finally:
            await agent.stop()
        return 0

    try:
        return asyncio.run(once() if args.once else main())
    except Exception as exc:
        if args.once:
            status = api_status(exc)
            print(f"error: cannot read the Kubernetes API: {f'HTTP {status}' if status else exc}", file=sys.stderr)
            return 1
        raise
