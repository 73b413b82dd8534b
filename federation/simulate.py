"""`binderfed simulate`: compare placement strategies side by side on a launch trace.

The simulator drives the real `federation.policy.place()` and the real in-memory
store (`federation.store.MemoryStore`, with a simulated clock) through a
discrete-event model of the members, so every number it prints comes from the code
that routes production launches. Only the members are modelled.

The router, as in production (`router.context.view_for` and `router.launch.record`):

- each launch reads `store.launch_state(repo_key)`, builds a `FederationView` with
  a `ViewBuilder` (the cache map holds only that repository's entry) and calls
  `place()`; a placed launch is counted in flight with `store.record_launch()`
  for `policy.in_flight_ttl` seconds;
- every member is probed every `--probe-period` seconds (phases spread evenly).
  A probe stores the member's status (full when `quota - pods <= pod_headroom`, as
  `health.prober.assess` decides) and settles as many in-flight launches as the pod
  count grew since the previous probe (`store.settle_in_flight`), so between probes
  placement sees exactly the stale counts plus in-flight accounting it sees live;
- the image-cache map learns `(repository, member)` when a launch on that member
  becomes ready (`store.learn_image`, `policy.cache_ttl`).

The members:

- a member answers `/health` from a cache refreshed at most every
  `--health-cache` seconds (BinderHub caches each check for about 15 s);
- a launch reaches its member `--redirect-delay` seconds after the decision
  (redirect, page load, opening `/build/`). It is *refused* when the member's true
  pod count is already at its quota; refused launches are not retried;
- an accepted launch holds one pod slot from its arrival until its session ends
  (build pod, then user pod). Start-up takes `--start-time` when the member's node
  cache holds the image (a *cache hit*), `--pull-time` when the image was built
  somewhere in the federation before (pulled from the peer registry), otherwise a
  *build* of the repository's build time (log-normal per repository, median
  `--build-median` s, deterministic per repository and seed). A launch arriving
  while the same image is being built on that member waits for that build;
- each member keeps an LRU image cache of `cache` images (default: its quota,
  about one image per pod slot); an image enters it when built or pulled there.

Members (`--members`): comma-separated `[name=]quota[:weight=W][:cache=N][:sites=a+b]`.
Weights default to the quota (operators weight members by capacity). Default
scenario: `m1=50,m2=100:sites=zenodo.org,m3=150,m4=250:sites=dataverse.harvard.edu,m5=400`.

Synthetic trace (`TraceParams`; seeded, deterministic):

- `launches` (100 000) launches of `repos` (10 000) GitHub repositories whose
  popularity follows a Zipf law with exponent `zipf` (1.1);
- Poisson arrivals at `rate` launches per second (0.45: with the default session
  lengths that offers about half the default federation's 950 pods);
- a *viral* repository (`gh/viral/notebook`, never seen before) during a burst that
  spans launches `burst_start` (0.4) to `burst_start + burst_length` (0.6) of the
  trace: its launches come on top of the usual traffic and make up `viral_share`
  (0.4) of all launches in the burst (the arrival rate rises to `rate / (1 - share)`,
  offering about 80 % of the federation during the burst);
- `data_share` (0.1) of the other launches name data: Zenodo (`zenodo.org`) or
  Harvard Dataverse (`dataverse.harvard.edu`) records, half each, `data_repos`
  (1 000) records with the same Zipf law;
- session lengths are log-normal with median `session_median` (600 s) and shape
  `session_sigma` (1.0), cut at `session_max` (6 h, BinderHub's maximum age).

Scenarios (`--scenario`, `SCENARIOS`): `default` is the trace above. `low-load` is
a quiet federation: 20 000 launches at 0.05 per second (about 6 % of the pods in
use, members far from full), no viral burst and no data launches, so that bounded
load is the only difference between rendezvous and bounded-affinity; there
bounded-affinity must place like rendezvous (affinity holds while balance does not
matter). With the default 10 % data launches added (`--data-share 0.1`)
bounded-affinity trails rendezvous by about 0.2 points of cache hits there: its data
tier sends every data launch to the data site's one member (data-local 100 % against
about 25 %), whose image cache then holds both.

JSONL trace (`--trace`): one launch event per line, BinderHub's launch-event shape
`{"timestamp": ..., "provider": ..., "spec": ...}`. The timestamp is Unix seconds or
ISO 8601; the provider is the URL prefix (`gh`) or the event archive's name
(`GitHub`). Each spec goes through `federation.spec.parse_launch`. Lines that are not
JSON, lack a field or do not parse are skipped and counted. Session lengths are
drawn from the model above (seeded).

Figures, one row per strategy: launches; cache-hit rate (share of all launches that
landed on a member whose node cache held the image); builds; refused launches
(member full on arrival); launches no member could take (decision "none");
peak utilization (max over time of pods / quota: the max over members, and per
member); mean utilization (time average of all pods / all quota, until the last
arrival); data-local rate (of launches naming data, the share sent to a member
declaring that data site); time to ready, median and p95 (from the click to the
server being ready, over the launches a member accepted: redirect, then start-up,
pull or build, or the wait for a build of the same image already running there;
refused launches never get a server and are counted apart).
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import collections
import dataclasses
import hashlib
import heapq
import json
import math
import random
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from statistics import NormalDist
from typing import Any, Iterable, Sequence

from .config import PolicySettings
from .members import Member, MemberState, MemberStatus
from .policy import STRATEGIES, place
from .store import MemoryStore
from .view import ViewBuilder

DEFAULT_MEMBERS = "m1=50,m2=100:sites=zenodo.org,m3=150,m4=250:sites=dataverse.harvard.edu,m5=400"
DEFAULT_STRATEGIES = ("random", "rendezvous", "bounded-affinity")
VIRAL_REPO = "gh/viral/notebook"

# BinderHub's launch-event archive names providers; the router's paths use prefixes.
PROVIDER_PREFIXES = {
    "github": "gh",
    "gh": "gh",
    "gist": "gist",
    "gitlab": "gl",
    "gl": "gl",
    "git": "git",
    "zenodo": "zenodo",
    "figshare": "figshare",
    "hydroshare": "hydroshare",
    "dataverse": "dataverse",
    "ckan": "ckan",
}


# --------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SimMember:
    name: str
    quota: int
    weight: float
    cache: int  # images the member's nodes keep (LRU)
    data_sites: tuple[str, ...] = ()

    def member(self) -> Member:
        return Member(
            name=self.name, url=f"https://{self.name}.sim.invalid", weight=self.weight, data_sites=self.data_sites
        )


@dataclass(frozen=True, slots=True)
class TraceLaunch:
    """One launch of a trace; a `policy.Placeable`."""

    time: float  # seconds since the start of the trace
    repo_key: str
    data_site: str | None
    session: float  # seconds the visitor keeps the server once it is ready


@dataclass(frozen=True)
class TraceParams:
    """The synthetic trace (see the module docstring)."""

    launches: int = 100_000
    repos: int = 10_000
    zipf: float = 1.1
    rate: float = 0.45
    viral_share: float = 0.4
    burst_start: float = 0.4
    burst_length: float = 0.2
    data_share: float = 0.1
    data_repos: int = 1_000
    session_median: float = 600.0
    session_sigma: float = 1.0
    session_max: float = 6 * 3600.0
    seed: int = 1


# Named synthetic scenarios (`--scenario`); trace flags given on the command line override them.
SCENARIOS: dict[str, TraceParams] = {
    # Busy: about half the federation in use, 80 % during the viral burst.
    "default": TraceParams(),
    # Quiet: about 6 % in use, no burst and no data launches, so that bounded load is the
    # only difference between rendezvous and bounded-affinity (see the module docstring).
    "low-load": TraceParams(launches=20_000, rate=0.05, viral_share=0.0, data_share=0.0),
}


@dataclass(frozen=True)
class Model:
    """Timings of the member model (see the module docstring)."""

    probe_period: float = 10.0
    health_cache: float = 15.0
    redirect_delay: float = 2.0
    start_time: float = 15.0
    pull_time: float = 90.0
    build_median: float = 300.0
    build_sigma: float = 0.8
    build_max: float = 3600.0
    sample_period: float = 60.0


@dataclass(frozen=True)
class Trace:
    launches: tuple[TraceLaunch, ...]
    source: str
    bad_lines: int = 0


def parse_members(spec: str, cache: int | None = None) -> tuple[SimMember, ...]:
    """`[name=]quota[:weight=W][:cache=N][:sites=a+b],...` -> members (ValueError when malformed)."""
    members: list[SimMember] = []
    for position, entry in enumerate(part.strip() for part in spec.split(",")):
        if not entry:
            continue
        head, *options = entry.split(":")
        name, _, quota_text = head.rpartition("=")
        name = name or f"m{position + 1}"
        try:
            quota = int(quota_text)
        except ValueError:
            raise ValueError(f"member {entry!r}: quota {quota_text!r} is not an integer") from None
        if quota <= 0:
            raise ValueError(f"member {entry!r}: quota must be positive")
        values: dict[str, str] = {}
        for option in options:
            key, sep, value = option.partition("=")
            if not sep or key not in ("weight", "cache", "sites"):
                raise ValueError(f"member {entry!r}: unknown option {option!r} (expected weight=, cache= or sites=)")
            values[key] = value
        try:
            weight = float(values.get("weight", quota))
            images = int(values["cache"]) if "cache" in values else (cache if cache is not None else quota)
        except ValueError as exc:
            raise ValueError(f"member {entry!r}: {exc}") from None
        sites = tuple(s for s in values.get("sites", "").split("+") if s)
        members.append(SimMember(name=name, quota=quota, weight=weight, cache=max(1, images), data_sites=sites))
    names = [m.name for m in members]
    if not members:
        raise ValueError("no members given")
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate member names in {spec!r}")
    return tuple(members)


def _zipf_cumulative(n: int, exponent: float) -> list[float]:
    total = 0.0
    cumulative = []
    for rank in range(1, n + 1):
        total += rank**-exponent
        cumulative.append(total)
    return cumulative


def _session(rng: random.Random, params: TraceParams) -> float:
    return min(params.session_max, rng.lognormvariate(math.log(params.session_median), params.session_sigma))


def synthetic_trace(params: TraceParams = TraceParams()) -> Trace:
    """A Zipf trace with a viral burst and data launches (see the module docstring)."""
    if not 0 <= params.viral_share < 1:
        raise ValueError("viral_share must be in [0, 1)")
    rng = random.Random(params.seed)
    code = _zipf_cumulative(params.repos, params.zipf)
    data = _zipf_cumulative(max(1, params.data_repos), params.zipf)
    burst_from = int(params.launches * params.burst_start)
    burst_to = int(params.launches * (params.burst_start + params.burst_length))
    burst_rate = params.rate / (1.0 - params.viral_share)
    launches = []
    now = 0.0
    for index in range(params.launches):
        in_burst = burst_from <= index < burst_to
        now += rng.expovariate(burst_rate if in_burst else params.rate)
        site = None
        if in_burst and rng.random() < params.viral_share:
            key = VIRAL_REPO
        elif rng.random() < params.data_share:
            record = bisect.bisect(data, rng.random() * data[-1])
            if record % 2:
                key, site = f"zenodo/10.5281/zenodo.{1000000 + record}", "zenodo.org"
            else:
                key, site = f"dataverse/10.7910/dvn/sim{record:05d}", "dataverse.harvard.edu"
        else:
            repo = bisect.bisect(code, rng.random() * code[-1])
            key = f"gh/user{repo}/repo{repo}"
        launches.append(TraceLaunch(now, key, site, _session(rng, params)))
    return Trace(tuple(launches), source=f"synthetic (seed {params.seed})")


def _timestamp(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("timestamp is a boolean")
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise ValueError("timestamp is not finite")
        return float(value)
    if isinstance(value, str):
        return datetime.fromisoformat(value.strip()).timestamp()
    raise ValueError("timestamp is neither a number nor an ISO 8601 string")


def read_trace(path: str | Path, params: TraceParams = TraceParams()) -> Trace:
    """Read a JSONL launch-event trace; bad lines are skipped and counted."""
    from .spec import parse_launch  # the router's own parser: the trace sees what the router would

    rng = random.Random(params.seed)
    rows: list[tuple[float, str, str | None]] = []
    bad = 0
    with open(path, encoding="utf-8", errors="replace") as lines:
        for line in lines:
            if not line.strip():
                continue
            try:
                event = json.loads(line)
                if not isinstance(event, dict):
                    raise ValueError("not a JSON object")
                when = _timestamp(event["timestamp"])
                provider = PROVIDER_PREFIXES.get(str(event["provider"]).lower(), str(event["provider"]))
                spec = str(event["spec"]).strip("/")
                request = parse_launch(f"/v2/{provider}/{spec}")
            except (ValueError, KeyError, TypeError, OverflowError):  # SpecError is a ValueError
                bad += 1
                continue
            rows.append((when, request.repo_key, request.data_site))
    rows.sort(key=lambda row: row[0])
    start = rows[0][0] if rows else 0.0
    launches = tuple(TraceLaunch(when - start, key, site, _session(rng, params)) for when, key, site in rows)
    return Trace(launches, source=str(path), bad_lines=bad)


# --------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------


def _percentile(values: Sequence[float], q: float) -> float | None:
    """The nearest-rank `q`-th percentile (a value that occurred), None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


@dataclass
class Result:
    strategy: str
    members: tuple[str, ...]
    launches: int = 0
    hits: int = 0
    pulls: int = 0
    builds: int = 0
    refused: int = 0
    unplaced: int = 0
    data_launches: int = 0
    data_local: int = 0
    peak: dict[str, float] = field(default_factory=dict)
    mean: dict[str, float] = field(default_factory=dict)
    mean_utilization: float = 0.0
    reasons: collections.Counter[str] = field(default_factory=collections.Counter)
    duration: float = 0.0  # simulated seconds until the last arrival
    wall: float = 0.0  # seconds the simulation took
    samples: list[tuple[float, tuple[float, ...]]] = field(default_factory=list, repr=False)
    ready_times: list[float] = field(default_factory=list, repr=False)  # click to ready, per accepted launch
    trace: dict[str, Any] = field(default_factory=dict)

    @property
    def hit_rate(self) -> float:
        return self.hits / self.launches if self.launches else 0.0

    @property
    def data_local_rate(self) -> float | None:
        return self.data_local / self.data_launches if self.data_launches else None

    @property
    def peak_utilization(self) -> float:
        return max(self.peak.values(), default=0.0)

    @property
    def ready_median(self) -> float | None:
        return _percentile(self.ready_times, 50)

    @property
    def ready_p95(self) -> float | None:
        return _percentile(self.ready_times, 95)

    def to_json(self) -> dict[str, Any]:
        return {
            "launches": self.launches,
            "cache_hit_rate": round(self.hit_rate, 6),
            "cache_hits": self.hits,
            "pulls": self.pulls,
            "builds": self.builds,
            "refused": self.refused,
            "no_member": self.unplaced,
            "peak_utilization": round(self.peak_utilization, 6),
            "peak_utilization_per_member": {name: round(value, 6) for name, value in self.peak.items()},
            "time_to_ready_median": None if self.ready_median is None else round(self.ready_median, 3),
            "time_to_ready_p95": None if self.ready_p95 is None else round(self.ready_p95, 3),
            "mean_utilization": round(self.mean_utilization, 6),
            "mean_utilization_per_member": {name: round(value, 6) for name, value in self.mean.items()},
            "data_launches": self.data_launches,
            "data_local_rate": None if self.data_local_rate is None else round(self.data_local_rate, 6),
            "reasons": dict(sorted(self.reasons.items())),
            "simulated_hours": round(self.duration / 3600, 3),
            "trace": self.trace,
        }


# --------------------------------------------------------------------------------------
# The simulation
# --------------------------------------------------------------------------------------

# Event kinds, in the order they are handled when they fall on the same instant.
_PROBE, _BUILT, _READY, _END, _ARRIVE = range(5)


def _build_time(repo_key: str, seed: int, model: Model) -> float:
    digest = hashlib.blake2b(f"{seed}\0{repo_key}".encode(), digest_size=8).digest()
    u = (int.from_bytes(digest, "big") + 0.5) / 2.0**64
    z = NormalDist().inv_cdf(u)
    return min(model.build_max, model.build_median * math.exp(model.build_sigma * z))


class _Simulation:
    def __init__(
        self,
        trace: Trace,
        members: Sequence[SimMember],
        settings: PolicySettings,
        model: Model,
        seed: int,
    ):
        self.trace = trace
        self.sim_members = tuple(members)
        self.members = tuple(m.member() for m in members)
        self.settings = settings
        self.model = model
        self.seed = seed
        self.now = 0.0
        self.store = MemoryStore(clock=lambda: self.now)
        self.index = {m.name: i for i, m in enumerate(members)}
        n = len(members)
        self.quota = [m.quota for m in members]
        self.pods = [0] * n
        self.peak_pods = [0] * n
        self.area = [0.0] * n
        self.changed = [0.0] * n
        self.health = [(-math.inf, 0)] * n  # (computed at, pods) of each member's cached /health
        self.previous: list[MemberStatus | None] = [None] * n
        self.images: list[collections.OrderedDict[str, None]] = [collections.OrderedDict() for _ in members]
        self.building: list[dict[str, float]] = [{} for _ in members]
        self.registry: set[str] = set()
        self.build_times: dict[str, float] = {}
        self.events: list[tuple[float, int, int, Any, int]] = []
        self.sequence = 0

    def push(self, when: float, kind: int, payload: Any, member: int) -> None:
        self.sequence += 1
        heapq.heappush(self.events, (when, kind, self.sequence, payload, member))

    def change(self, member: int, delta: int) -> None:
        now = self.now
        self.area[member] += self.pods[member] * (now - self.changed[member])
        self.changed[member] = now
        pods = self.pods[member] = self.pods[member] + delta
        if pods > self.peak_pods[member]:
            self.peak_pods[member] = pods

    async def probe(self, member: int) -> None:
        model, now = self.model, self.now
        computed, pods = self.health[member]
        if now - computed >= model.health_cache:
            computed, pods = self.health[member] = (now, self.pods[member])
        quota = self.quota[member]
        headroom = self.settings.pod_headroom
        full = quota - pods <= headroom
        name = self.sim_members[member].name
        status = MemberStatus(
            name=name,
            state=MemberState.FULL if full else MemberState.HEALTHY,
            reason=f"full: {pods} of {quota} pods (headroom {headroom})" if full else f"ok: {pods} of {quota} pods",
            quota=quota,
            has_quota=True,
            total_pods=pods,
            user_pods=pods,
            checked_at=now,
        )
        previous = self.previous[member]
        if previous is not None:
            await self.store.settle_in_flight(name, status.total_pods - previous.total_pods)
        await self.store.put_status(status)
        self.previous[member] = status

    def build_time(self, repo_key: str) -> float:
        value = self.build_times.get(repo_key)
        if value is None:
            value = self.build_times[repo_key] = _build_time(repo_key, self.seed, self.model)
        return value

    def arrive(self, launch: TraceLaunch, member: int, result: Result) -> None:
        """The launch reaches its member."""
        model, now = self.model, self.now
        if self.pods[member] >= self.quota[member]:
            result.refused += 1
            return
        key = launch.repo_key
        images = self.images[member]
        self.change(member, +1)
        if key in images:
            images.move_to_end(key)
            result.hits += 1
            ready = now + model.start_time
        else:
            done = self.building[member].get(key)
            if done is None:
                if key in self.registry:
                    result.pulls += 1
                    done = now + model.pull_time - model.start_time
                else:
                    result.builds += 1
                    done = now + self.build_time(key)
                    self.building[member][key] = done
                self.push(done, _BUILT, key, member)
            ready = done + model.start_time
        result.ready_times.append(ready - launch.time)
        self.push(ready, _READY, key, member)
        self.push(ready + launch.session, _END, None, member)

    def built(self, key: str, member: int) -> None:
        """An image finished building or pulling on a member: its nodes now hold it."""
        self.building[member].pop(key, None)
        self.registry.add(key)
        images = self.images[member]
        images[key] = None
        images.move_to_end(key)
        while len(images) > self.sim_members[member].cache:
            images.popitem(last=False)

    async def run(self, strategy: str) -> Result:
        started = time.perf_counter()
        settings = dataclasses.replace(self.settings, strategy=strategy)
        model = self.model
        store = self.store
        members = self.members
        n = len(members)
        names = tuple(m.name for m in members)
        sites = [set(m.data_sites) for m in members]
        rng = random.Random(self.seed)
        result = Result(strategy=strategy, members=names)
        launches = self.trace.launches
        end = launches[-1].time if launches else 0.0
        period = model.probe_period
        # Everybody is probed once before the first launch, then on evenly spread phases.
        self.now = -period
        for member in range(n):
            await self.probe(member)
            self.push(-period + period * (member + 1) / n, _PROBE, None, member)
        next_sample = 0.0
        events = self.events
        pop = heapq.heappop
        ttl = settings.in_flight_ttl
        views = ViewBuilder()
        for launch in launches:
            arrival = launch.time
            while events and events[0][0] <= arrival:
                await self._handle(pop(events), result, end)
            while next_sample <= arrival:
                self.now = next_sample
                result.samples.append((next_sample, tuple(p / q for p, q in zip(self.pods, self.quota))))
                next_sample += model.sample_period
            self.now = arrival
            key = launch.repo_key
            state = await store.launch_state(key)
            view = views.build(
                members, state.statuses, state.in_flight, state.overrides, state.ejections, {key: state.holders}, arrival
            )
            decision = place(view, launch, settings, rng)
            result.launches += 1
            result.reasons[decision.reason] += 1
            site = decision.data_site
            if decision.member is None:
                result.unplaced += 1
                if site is not None:
                    result.data_launches += 1
                continue
            member = self.index[decision.member.name]
            if site is not None:
                result.data_launches += 1
                if site in sites[member]:
                    result.data_local += 1
            await store.record_launch(decision.member.name, ttl)
            self.push(arrival + model.redirect_delay, _ARRIVE, launch, member)
        self.now = end
        for member in range(n):
            self.change(member, 0)  # close the utilization integrals at the last arrival
        area = list(self.area)
        # Let the last launches reach their members; later events change no figure.
        while events and events[0][0] <= end + model.redirect_delay:
            await self._handle(pop(events), result, end)
        duration = max(end, 1e-9)
        result.duration = end
        result.peak = {name: self.peak_pods[i] / self.quota[i] for i, name in enumerate(names)}
        result.mean = {name: area[i] / duration / self.quota[i] for i, name in enumerate(names)}
        result.mean_utilization = sum(area) / duration / sum(self.quota)
        result.trace = {"source": self.trace.source, "launches": len(launches), "bad_lines": self.trace.bad_lines}
        result.wall = time.perf_counter() - started
        return result

    async def _handle(self, event: tuple[float, int, int, Any, int], result: Result, end: float) -> None:
        when, kind, _, payload, member = event
        self.now = when
        if kind == _ARRIVE:
            self.arrive(payload, member, result)
        elif kind == _END:
            self.change(member, -1)
        elif kind == _READY:
            await self.store.learn_image(payload, self.sim_members[member].name, self.settings.cache_ttl)
            images = self.images[member]
            if payload in images:
                images.move_to_end(payload)
        elif kind == _BUILT:
            self.built(payload, member)
        elif kind == _PROBE:
            await self.probe(member)
            if when < end:
                self.push(when + self.model.probe_period, _PROBE, None, member)


def simulate(
    trace: Trace,
    members: Sequence[SimMember],
    strategy: str,
    settings: PolicySettings = PolicySettings(),
    model: Model = Model(),
    seed: int = 1,
) -> Result:
    """Run one strategy over a trace; deterministic for a given seed."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; known: {', '.join(STRATEGIES)}")
    return asyncio.run(_Simulation(trace, members, settings, model, seed).run(strategy))


# --------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------


def format_table(results: Sequence[Result]) -> str:
    if not results:
        return ""
    names = results[0].members
    header = (
        f"{'strategy':<17} {'launches':>9} {'cache hits':>10} {'builds':>7} {'refused':>8} {'no member':>9} "
        f"{'peak util':>9} {'mean util':>9} {'data-local':>10} {'ready p50':>9} {'ready p95':>9}  "
        f"peak per member ({', '.join(names)})"
    )
    lines = [header, "-" * len(header)]
    for r in results:
        local = "-" if r.data_local_rate is None else f"{100 * r.data_local_rate:.1f}%"
        per_member = " ".join(f"{100 * r.peak[name]:.0f}%" for name in names)
        p50, p95 = ("-" if v is None else f"{v:.0f} s" for v in (r.ready_median, r.ready_p95))
        lines.append(
            f"{r.strategy:<17} {r.launches:>9} {100 * r.hit_rate:>9.1f}% {r.builds:>7} {r.refused:>8} {r.unplaced:>9} "
            f"{100 * r.peak_utilization:>8.1f}% {100 * r.mean_utilization:>8.1f}% {local:>10} {p50:>9} {p95:>9}  "
            f"{per_member}"
        )
    return "\n".join(lines)


def plot(results: Sequence[Result], path: str | Path) -> None:
    """Utilization over time per member, one panel per strategy (needs matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise RuntimeError(
            "--plot needs matplotlib, an optional extra: pip install 'binder-federation[plot]' (or: pip install matplotlib)"
        ) from exc
    figure, axes = plt.subplots(len(results), 1, sharex=True, sharey=True, figsize=(11, 2.8 * len(results)), squeeze=False)
    for ax, result in zip(axes[:, 0], results):
        hours = [t / 3600 for t, _ in result.samples]
        for position, name in enumerate(result.members):
            ax.plot(hours, [100 * u[position] for _, u in result.samples], linewidth=0.8, label=name)
        ax.set_title(
            f"{result.strategy}: cache hits {100 * result.hit_rate:.1f}%, refused {result.refused}, "
            f"peak {100 * result.peak_utilization:.0f}%"
        )
        ax.set_ylabel("pods / quota (%)")
        ax.set_ylim(0, 105)
        ax.grid(alpha=0.3)
    axes[0, 0].legend(loc="upper left", fontsize="small", ncol=len(results[0].members))
    axes[-1, 0].set_xlabel("hours")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


# --------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------


# (flag, TraceParams field, type, help) of the synthetic trace's command-line flags.
TRACE_FLAGS: tuple[tuple[str, str, type, str], ...] = (
    ("--launches", "launches", int, "synthetic launches"),
    ("--seed", "seed", int, "seed of the trace and the router"),
    ("--repos", "repos", int, "synthetic repositories"),
    ("--zipf", "zipf", float, "Zipf exponent of popularity"),
    ("--rate", "rate", float, "launches per second"),
    ("--viral-share", "viral_share", float, "share of launches the viral repository takes during the burst"),
    ("--burst-start", "burst_start", float, "start of the burst, as a fraction of the trace"),
    ("--burst-length", "burst_length", float, "length of the burst, as a fraction of the trace"),
    ("--data-share", "data_share", float, "share of launches naming data"),
    ("--session-median", "session_median", float, "median session length in seconds"),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults, model, policy = TraceParams(), Model(), PolicySettings()
    parser.add_argument("--strategies", default=",".join(DEFAULT_STRATEGIES),
                        help="comma-separated strategies to compare (default: %(default)s)")
    parser.add_argument("--members", default=DEFAULT_MEMBERS,
                        help="members: [name=]quota[:weight=W][:cache=N][:sites=a+b],... (default: %(default)s)")
    parser.add_argument("--trace", metavar="FILE.jsonl", help="replay a JSONL launch-event trace instead of a synthetic one")
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), default="default",
                        help="synthetic trace preset: default (busy, with a viral burst) or low-load (quiet); "
                             "the flags below override its values (default: %(default)s)")
    # Trace flags default to the scenario's values, shown here for the default scenario.
    for flag, name, kind, text in TRACE_FLAGS:
        parser.add_argument(flag, dest=name, type=kind, default=None,
                            help=f"{text} (default: the scenario's; {getattr(defaults, name)} in default)")
    parser.add_argument("--cache-images", type=int, help="images each member's nodes keep (default: its quota)")
    parser.add_argument("--epsilon", type=float, default=policy.epsilon, help="bounded-load epsilon (default: %(default)s)")
    parser.add_argument("--headroom", type=int, default=policy.pod_headroom, help="policy pod_headroom (default: %(default)s)")
    parser.add_argument("--in-flight-ttl", type=float, default=policy.in_flight_ttl,
                        help="seconds a launch counts in flight (default: %(default)s)")
    parser.add_argument("--probe-period", type=float, default=model.probe_period,
                        help="seconds between probes of a member (default: %(default)s)")
    parser.add_argument("--health-cache", type=float, default=model.health_cache,
                        help="seconds a member caches its /health answer (default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="print one JSON object keyed by strategy")
    parser.add_argument("--plot", metavar="FILE.png", help="write utilization over time per member (needs matplotlib)")


def run(args: argparse.Namespace) -> int:
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown or not strategies:
        print(f"binderfed simulate: unknown strategy {', '.join(unknown) or '(none given)'}; "
              f"known: {', '.join(STRATEGIES)}", file=sys.stderr)
        return 2
    try:
        members = parse_members(args.members, args.cache_images)
    except ValueError as exc:
        print(f"binderfed simulate: --members: {exc}", file=sys.stderr)
        return 2
    given = {name: getattr(args, name) for _, name, _, _ in TRACE_FLAGS if getattr(args, name) is not None}
    params = dataclasses.replace(SCENARIOS[args.scenario], **given)
    try:
        if args.trace:
            trace = read_trace(args.trace, params)
        else:
            trace = synthetic_trace(params)
            trace = dataclasses.replace(trace, source=f"synthetic, {args.scenario} scenario (seed {params.seed})")
    except (OSError, ValueError) as exc:
        print(f"binderfed simulate: {exc}", file=sys.stderr)
        return 2
    if not trace.launches:
        print(f"binderfed simulate: {trace.source}: no launches ({trace.bad_lines} bad lines)", file=sys.stderr)
        return 1
    settings = dataclasses.replace(
        PolicySettings(), epsilon=args.epsilon, pod_headroom=args.headroom, in_flight_ttl=args.in_flight_ttl
    )
    model = dataclasses.replace(Model(), probe_period=args.probe_period, health_cache=args.health_cache)
    results = [simulate(trace, members, strategy, settings, model, params.seed) for strategy in strategies]
    if args.json:
        print(json.dumps({r.strategy: r.to_json() for r in results}, indent=2))
    else:
        print(f"trace: {trace.source}, {len(trace.launches)} launches"
              + (f", {trace.bad_lines} bad lines skipped" if trace.bad_lines else "")
              + f", {results[0].duration / 3600:.1f} simulated hours")
        print(format_table(results))
    if args.plot:
        try:
            plot(results, args.plot)
        except RuntimeError as exc:
            print(f"binderfed simulate: {exc}", file=sys.stderr)
            return 2
        if not args.json:
            print(f"plot written to {args.plot}")
    return 0


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="binderfed simulate", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(None if argv is None else list(argv)))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
