"""`binderfed agent`: runs beside one member BinderHub and reports its cluster's truth.

The agent reads its own Kubernetes API with the real `kubernetes` client (in-cluster
service account, or a kubeconfig) and publishes a signed `hub.report.MemberReport`
to the federation's Redis every `period` seconds:

- **usage**: BinderHub pods in the namespace(s) that are not finished, by their
  `component` label: user servers (`singleuser-server`) and builds (`binderhub-build`).
  Pods are *watched* (`list`, then `watch` from the list's resourceVersion, resumed
  from the last seen version when a stream ends, re-listed on `410 Gone`), so the
  counts follow the cluster without polling it.
- **capacity**: the sum of `status.allocatable` (pods, cpu, memory) over ready,
  schedulable nodes (optionally only those matching a node label selector). Nodes
  are *listed* once per period rather than watched: a node object changes on every
  kubelet status update and carries its whole image list, so a watch would stream
  far more than one list per period.
- **cached images**: each node's `status.images` names, matched against the
  member's image prefix (`hub.images.parse_image_name`), counted per repository as
  the number of nodes holding any tag of its image.

An image name carries only the *safe slug* of a repository (escaped, cut, plus a
hash of the original slug), which cannot be turned back into a repository. The agent
learns which launch spec built which slug from:

1. the user pods themselves: BinderHub's spawner puts the launch request in the
   server container's environment (`BINDER_REQUEST=v2/<provider>/<spec>`, set by
   `BinderSpawnerMixin.get_env` from the launch's `binder_request` user option) and
   runs the image as that container's image. Where the slug can be computed from
   the spec (`hub.images.build_slug`), the pair is checked with `slug_matches`, so a
   mismatch is never learned; for data providers (Zenodo, ...) the slug needs the
   provider's API and the pod's pairing is taken as it is.
2. launch specs given in the configuration (`--spec`, `--specs-file`), for images
   that are pre-pulled or were launched before the agent started.

What it learned from pods is kept in Redis (`binderfed:agent-specs:<member>`), so a
restarted agent still knows the repositories of images whose pods are long gone;
entries of images not seen for `--forget-after-days` are dropped.

Reading the cluster (raw JSON, blocking calls in worker threads) is `hub.kube`.

Errors (API 5xx, connection loss, an expired token answering 401) are retried with
exponential backoff; a 401 also rebuilds the client from its configuration, which
re-reads a rotated service-account token or kubeconfig. While pods or nodes cannot
be read the agent publishes nothing, so the router's age limit retires its last
report instead of trusting an outdated one.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import re
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from . import images
from .kube import KubeReader, NodeInfo, PodBook, PodInfo, PodWatcher, api_status, default_config_loader, node_info
from .report import Capacity, CachedImage, MemberReport, RunningRepo, Usage, report_key, seal
from .tasks import Backoff, BackgroundService, time_limit

log = logging.getLogger("binderfed.agent")

SPECS_KEY_PREFIX = "binderfed:agent-specs:"
IN_CLUSTER_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
MEMBER_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


def agent_version() -> str:
    try:
        from importlib.metadata import PackageNotFoundError, version

        return version("binder-federation")
    except PackageNotFoundError:
        return "unknown"


@dataclass(frozen=True)
class AgentSettings:
    member: str
    image_prefix: str
    namespace: str = "default"
    build_namespace: str | None = None      # BinderHub's build_namespace, when not the same
    node_selector: str | None = None        # only nodes matching this label selector count
    specs: tuple[str, ...] = ()             # launch specs `<provider>/<spec>` known to be launched here
    period: float = 30.0                    # seconds between two reports
    watch_timeout: int = 300                # seconds one watch request may last (server side)
    request_timeout: float = 30.0           # seconds one list request may take
    backoff_initial: float = 1.0
    backoff_max: float = 60.0
    forget_after: float = 30 * 86400.0      # seconds a learned spec is kept without its image being seen

    @property
    def namespaces(self) -> tuple[str, ...]:
        if self.build_namespace and self.build_namespace != self.namespace:
            return (self.namespace, self.build_namespace)
        return (self.namespace,)

    @property
    def report_ttl(self) -> int:
        """Seconds the report key lives in Redis: it disappears soon after the agent stops."""
        return int(max(10 * self.period, 300))


# --- what the agent knows ------------------------------------------------------------------


@dataclass
class _Learned:
    spec: str
    seen: float
    saved: float = 0.0   # `seen` as last written to Redis


class SpecBook:
    """Which launch spec built which image slug (safe slug → `<provider>/<spec>`)."""

    def __init__(self, image_prefix: str):
        self.prefix = image_prefix
        self.configured: dict[str, str] = {}
        self.learned: dict[str, _Learned] = {}

    def configure(self, specs: Iterable[str]) -> None:
        for spec in specs:
            provider, _, rest = spec.partition("/")
            try:
                slug = images.build_slug(provider, rest)
            except ValueError as exc:
                log.warning("ignoring configured spec %r: %s", spec, exc)
                continue
            if slug is None:
                log.warning("configured spec %r names a data provider whose image slug needs the provider's API; "
                            "it is learned from its pods instead", spec)
                continue
            safe = images.safe_build_slug(slug, limit=images.MAX_IMAGE_NAME - len(self.prefix))
            self.configured[safe] = spec

    def learn_from_pod(self, pod: PodInfo, now: float) -> bool:
        """Remember the pod's (image slug, spec) pair if it is consistent; True if it was."""
        if pod.kind != "user" or not pod.image or not pod.spec:
            return False
        parsed = images.parse_image_name(self.prefix, pod.image)
        if parsed is None:
            return False
        slug = parsed[0]
        provider, _, rest = pod.spec.partition("/")
        try:
            expected = images.build_slug(provider, rest)
        except ValueError:
            return False
        if expected is not None and not images.slug_matches(slug, expected):
            log.debug("pod image %s does not belong to launch %s; not learned", pod.image, pod.spec)
            return False
        entry = self.learned.get(slug)
        if entry is None:
            self.learned[slug] = _Learned(pod.spec, now)
        else:
            if entry.spec != pod.spec:
                entry.saved = 0.0  # write the new spelling at the next save
            entry.spec, entry.seen = pod.spec, max(entry.seen, now)
        return True

    def spec_for(self, slug: str) -> str | None:
        entry = self.learned.get(slug)
        return entry.spec if entry is not None else self.configured.get(slug)

    def saw(self, slugs: Iterable[str], now: float) -> None:
        for slug in slugs:
            entry = self.learned.get(slug)
            if entry is not None:
                entry.seen = max(entry.seen, now)

    # persistence: one Redis hash field per slug, JSON {"spec", "seen"}
    def load(self, fields: Mapping[Any, Any]) -> None:
        for slug, raw in fields.items():
            slug = slug.decode() if isinstance(slug, bytes) else str(slug)
            try:
                data = json.loads(raw)
                spec, seen = str(data["spec"]), float(data["seen"])
            except (ValueError, KeyError, TypeError):
                continue
            entry = self.learned.get(slug)
            if entry is None or entry.seen < seen:
                self.learned[slug] = _Learned(spec, seen, saved=seen)

    def changes(self, now: float, forget_after: float, resave_after: float = 3600.0) -> tuple[dict[str, str], list[str]]:
        """(fields to write, slugs to forget); marks the written ones as saved."""
        write: dict[str, str] = {}
        forget = [slug for slug, e in self.learned.items() if now - e.seen > forget_after]
        for slug in forget:
            del self.learned[slug]
        for slug, entry in self.learned.items():
            if entry.saved == 0.0 or entry.seen - entry.saved >= resave_after:
                write[slug] = json.dumps({"spec": entry.spec, "seen": entry.seen})
                entry.saved = entry.seen
        return write, forget


def build_report(settings: AgentSettings, nodes: list[NodeInfo], usage: Usage, specs: SpecBook,
                 now: float, version: str, running: Mapping[str, int] | None = None) -> MemberReport:
    """The report for one moment (pure)."""
    usable = [n for n in nodes if n.usable]
    per_slug: dict[str, int] = {}
    for node in usable:
        for slug in node.slugs:
            per_slug[slug] = per_slug.get(slug, 0) + 1
    cached, unmapped = [], 0
    for slug, count in sorted(per_slug.items()):
        spec = specs.spec_for(slug)
        if spec is None:
            unmapped += 1
        else:
            cached.append(CachedImage(spec=spec, slug=slug, nodes=count))
    return MemberReport(
        member=settings.member,
        timestamp=now,
        agent_version=version,
        capacity=Capacity(
            nodes=len(usable), pods=sum(n.pods for n in usable),
            cpu=round(sum(n.cpu for n in usable), 3), memory=sum(n.memory for n in usable),
        ),
        usage=usage,
        cached_images=tuple(cached),
        unmapped_images=unmapped,
        running=tuple(RunningRepo(spec, pods) for spec, pods in sorted((running or {}).items())),
    )




# --- publishing ------------------------------------------------------------------------------


class RedisOutbox:
    """Where the agent's reports go: one Redis key per member (`hub.report.report_key`)."""

    def __init__(self, url: str, member: str, timeout: float = 5.0):
        import redis.asyncio as redis

        self.member = member
        # No socket timeout for redis-py (its default is 5 s): with one it writes every
        # command through asyncio.wait_for, which loses cancellations on Python 3.11
        # (hub.tasks). Each call is bounded here with asyncio.timeout instead.
        self.timeout = timeout
        self.redis = redis.Redis.from_url(url, socket_timeout=None, socket_connect_timeout=5,
                                          health_check_interval=30)

    def _bounded(self) -> contextlib.AbstractAsyncContextManager[None]:
        return time_limit(self.timeout, "Redis")

    async def publish(self, sealed: str, ttl: int) -> None:
        async with self._bounded():
            await self.redis.set(report_key(self.member), sealed, ex=ttl)

    async def load_specs(self) -> dict[Any, Any]:
        async with self._bounded():
            return await self.redis.hgetall(SPECS_KEY_PREFIX + self.member)

    async def save_specs(self, write: Mapping[str, str], forget: list[str]) -> None:
        key = SPECS_KEY_PREFIX + self.member
        async with self._bounded():
            if write:
                await self.redis.hset(key, mapping=dict(write))
            if forget:
                await self.redis.hdel(key, *forget)

    async def close(self) -> None:
        await self.redis.aclose()


TokenSource = Callable[[], str]


def token_from(file: str | None, value: str | None) -> TokenSource:
    """The member's report token, read again for every report so a rotated secret is picked up."""
    if file:
        path = Path(file)

        def read() -> str:
            token = path.read_text().strip()
            if not token:
                raise ValueError(f"token file {path} is empty")
            return token

        return read
    if value:
        return lambda: value
    raise ValueError("no report token: give --token-file or set BINDERFED_AGENT_TOKEN")


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


# --- command line ----------------------------------------------------------------------------


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
