"""The discrete-event loop: the real router code placing a trace on modelled members.

Events (probes, arrivals at a member, builds done, servers ready, sessions ended)
come off one heap in time order; between them every launch of the trace reads the
store, builds a view and calls the real `place()`, as `router/launch.py` does.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import heapq
import math
import random
import time
from typing import Any, Sequence

from hub.models import HealthReport

from ..config import PolicySettings
from ..member_health import ProbeResult, assess
from ..members import MemberStatus
from ..placement.place import place
from ..placement.strategies import STRATEGIES
from ..stores.memory import MemoryStore
from ..placement.view import ViewBuilder
from .model import Model, SimMember, build_time
from .results import Result
from .trace import Trace, TraceLaunch

# Event kinds, in the order they are handled when they fall on the same instant.
_PROBE, _BUILT, _READY, _END, _ARRIVE = range(5)


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
        """Probe a modelled member as the prober does: its cached /health, judged by `assess()`."""
        model, now = self.model, self.now
        computed, pods = self.health[member]
        if now - computed >= model.health_cache:
            computed, pods = self.health[member] = (now, self.pods[member])
        name = self.sim_members[member].name
        # The modelled member answers like a BinderHub on Kubernetes: healthy, with its pod quota.
        report = HealthReport(ok=True, http_status=200, has_quota_check=True, quota=self.quota[member],
                              total_pods=pods, user_pods=pods)
        previous = self.previous[member]
        status = assess(name, ProbeResult(report, {}), previous, self.settings.pod_headroom, None, now)
        if previous is not None:
            await self.store.settle_in_flight(name, status.total_pods - previous.total_pods)
        await self.store.put_status(status)
        self.previous[member] = status

    def build_time(self, repo_key: str) -> float:
        value = self.build_times.get(repo_key)
        if value is None:
            value = self.build_times[repo_key] = build_time(repo_key, self.seed, self.model)
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
