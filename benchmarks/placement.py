"""Decision time of `place()`: pure CPU, no I/O.

Each launch gets a fresh view from a `ViewBuilder`, as in the router: the member set and
statuses stay put, and the in-flight counts change with every launch (each placed launch
is counted on its member and expires after a while). Three figures per row:

- `place()`: the decision alone (the issue's target: bounded-affinity p99 < 200 µs at
  1000 members with a 100k-entry image-cache map);
- `+ view`: the router's per-launch CPU before I/O, building the view and placing;
- `+ order`: placing and then reading the whole failover order (`decision.ranking`),
  which only stream mode's failover and the explain API do.
"""

from __future__ import annotations

import random
import time
from collections import Counter, deque

from federation.config import PolicySettings
from federation.placement.place import place
from federation.spec import parse_launch
from federation.placement.view import ViewBuilder

from .common import healthy_statuses, members, summary, table

SIZES = (3, 100, 1000)
STRATEGIES = ("random", "rendezvous", "bounded-affinity")
CALLS = 3000
CACHE_ENTRIES = 100_000
IN_FLIGHT = 200  # launches in flight at any time, spread over the members placement chose


def cache_map(n_members: int, entries: int, rng: random.Random) -> dict[str, frozenset[str]]:
    """`entries` (repository, member) pairs spread over repositories gh/org/repo<i>."""
    names = [m.name for m in members(n_members)]
    cache: dict[str, set[str]] = {}
    for i in range(entries):
        cache.setdefault(f"gh/org/repo{i % (entries // 2)}", set()).add(rng.choice(names))
    return {k: frozenset(v) for k, v in cache.items()}


def measure(strategy: str, n: int, with_cache: bool) -> dict[str, dict[str, float]]:
    rng = random.Random(1)
    cache = cache_map(n, CACHE_ENTRIES, rng) if with_cache else {}
    ms = members(n)
    statuses = healthy_statuses(ms, quota=400, pods=100)
    settings = PolicySettings(strategy=strategy)
    launches = [parse_launch(f"/v2/gh/org/repo{rng.randrange(CACHE_ENTRIES // 2)}/HEAD") for _ in range(CALLS)]
    builder = ViewBuilder()
    in_flight: Counter[str] = Counter()
    recent: deque[str] = deque()
    now = time.time()
    decide, with_view, with_order = [], [], []
    for round_ in range(2):  # the first round warms up
        for launch in launches:
            key = launch.repo_key
            holders = {key: cache[key]} if key in cache else {}
            started = time.perf_counter()
            view = builder.build(ms, statuses, in_flight, {}, {}, holders, now)
            built = time.perf_counter()
            decision = place(view, launch, settings, rng)
            placed = time.perf_counter()
            tuple(decision.ranking)  # materialise the failover order
            ordered = time.perf_counter()
            if round_:
                decide.append(placed - built)
                with_view.append(placed - started)
                with_order.append(ordered - built)
            name = decision.ranking[0]
            in_flight[name] += 1
            recent.append(name)
            if len(recent) > IN_FLIGHT:
                gone = recent.popleft()
                in_flight[gone] -= 1
                if not in_flight[gone]:
                    del in_flight[gone]
    return {"place": summary(decide), "view": summary(with_view), "order": summary(with_order)}


def run() -> str:
    rows = []
    for strategy in STRATEGIES:
        for n in SIZES:
            with_cache = strategy == "bounded-affinity"
            s = measure(strategy, n, with_cache)
            rows.append([strategy, n, f"{CACHE_ENTRIES:,}" if with_cache else "-",
                         f"{s['place']['p50'] * 1e6:.1f}", f"{s['place']['p99'] * 1e6:.1f}",
                         f"{s['view']['p99'] * 1e6:.1f}", f"{s['order']['p99'] * 1e6:.1f}"])
    return table(f"place() decision time ({CALLS} launches each, {IN_FLIGHT} in flight, fresh view per launch)",
                 ["strategy", "members", "cache entries", "place() p50 µs", "place() p99 µs",
                  "+ view p99 µs", "+ order p99 µs"], rows)
