"""Decision time of `place()`: pure CPU, no I/O."""

from __future__ import annotations

import random
import time

from federation.config import PolicySettings
from federation.policy import place
from federation.spec import parse_launch

from .common import members, summary, table, view

SIZES = (3, 100, 1000)
STRATEGIES = ("random", "rendezvous", "bounded-affinity")
CALLS = 3000
CACHE_ENTRIES = 100_000


def cache_map(n_members: int, entries: int, rng: random.Random) -> dict[str, frozenset[str]]:
    """`entries` (repository, member) pairs spread over repositories gh/org/repo<i>."""
    names = [m.name for m in members(n_members)]
    cache: dict[str, set[str]] = {}
    for i in range(entries):
        cache.setdefault(f"gh/org/repo{i % (entries // 2)}", set()).add(rng.choice(names))
    return {k: frozenset(v) for k, v in cache.items()}


def measure(strategy: str, n: int, with_cache: bool) -> dict[str, float]:
    rng = random.Random(1)
    cache = cache_map(n, CACHE_ENTRIES, rng) if with_cache else {}
    v = view(n, cache)
    settings = PolicySettings(strategy=strategy)
    launches = [parse_launch(f"/v2/gh/org/repo{rng.randrange(CACHE_ENTRIES // 2)}/HEAD") for _ in range(CALLS)]
    for launch in launches[:200]:  # warm up
        place(v, launch, settings, rng)
    samples = []
    for launch in launches:
        started = time.perf_counter()
        place(v, launch, settings, rng)
        samples.append(time.perf_counter() - started)
    return summary(samples)


def run() -> str:
    rows = []
    for strategy in STRATEGIES:
        for n in SIZES:
            with_cache = strategy == "bounded-affinity"
            s = measure(strategy, n, with_cache)
            rows.append([strategy, n, f"{CACHE_ENTRIES:,}" if with_cache else "-",
                         f"{s['p50'] * 1e6:.1f}", f"{s['p99'] * 1e6:.1f}", f"{s['mean'] * 1e6:.1f}"])
    return table(f"place() decision time ({CALLS} calls each)",
                 ["strategy", "members", "cache entries", "p50 µs", "p99 µs", "mean µs"], rows)
