"""What probing a thousand members costs the router, as a share of one core.

The router (benchmarks/target.py, the real app with the real prober and default
health settings: every member every 10 s, /health only) probes 1,000 members, each
a port of a cheap stand-in that answers BinderHub's /health JSON (one process,
pinned to the other core, so each member has its own connection as in production).
Once every member has been seen healthy (the first round, all at once, is not
counted), the router's CPU time is read over two probe periods starting mid-way
between rounds, so the window holds exactly two rounds of 1,000 probes. The same
router with the prober off, over the same window, is the idle baseline; probing is
the difference.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from tests.support.redis_proc import RedisProcess

from .common import table
from .load import Server, get, pin, usable_cores, wait_for

MEMBERS = 1000
PERIOD = 10.0  # HealthSettings().period: the benchmark runs the defaults
ROUNDS = 2


@dataclass
class Probing:
    store: str
    busy: float | None  # share of a core, prober on
    idle: float | None  # share of a core, prober off
    probes: int  # /health answers in the window

    @property
    def probing(self) -> float | None:
        return None if self.busy is None or self.idle is None else max(0.0, self.busy - self.idle)


def _cores() -> tuple[set[int] | None, set[int] | None]:
    cores = usable_cores()
    return ({cores[0]}, {cores[1]}) if len(cores) >= 2 else (None, None)


def _share_of_core(server: Server, seconds: float) -> float | None:
    before, started = server.cpu(), time.monotonic()
    time.sleep(seconds)
    after, ended = server.cpu(), time.monotonic()
    return None if before is None or after is None else (after - before) / (ended - started)


def all_healthy(port: int, count: int = MEMBERS) -> bool:
    """Whether the router on `port` has seen all its `count` members healthy."""
    status, _, body = get(port, "/api/v1/members")
    members = json.loads(body)["members"] if status == 200 else []
    return len(members) == count and all(m["state"] == "healthy" for m in members)


def answered(port: int) -> int:
    """Probes the health stand-in on `port` has answered so far."""
    return json.loads(get(port, "/_answered")[2])["health"]


def measure(store: str, store_url: str, redis: RedisProcess | None) -> Probing:
    router_core, other_core = _cores()
    if redis is not None and redis.proc is not None:
        pin(redis.proc.pid, other_core if other_core is not None else set(usable_cores()))
    window = ROUNDS * PERIOD
    with Server(["health", "--sites", str(MEMBERS)], other_core) as members:
        urls = [arg for port in members.ports for arg in ("--member-url", f"http://127.0.0.1:{port}")]
        with Server(["router", "--store", store_url, "--probe", *urls], router_core) as router:
            wait_for(lambda: all_healthy(router.port), timeout=120, what=f"{MEMBERS} probed members to be healthy")
            time.sleep(PERIOD / 2)  # mid-way between the first round and the next
            before = answered(members.port)
            busy = _share_of_core(router, window)
            probes = answered(members.port) - before
    with Server(["router", "--store", store_url, "--members", str(MEMBERS)], router_core) as router:
        time.sleep(PERIOD / 2)
        idle = _share_of_core(router, window)
    return Probing(store, busy, idle, probes)


def run(redis: RedisProcess | None) -> list[Probing]:
    stores = [("memory", "memory://")] + ([("redis", redis.url)] if redis is not None else [])
    return [measure(store, url, redis) for store, url in stores]


def format_table(results: list[Probing]) -> str:
    pct = lambda v: "-" if v is None else f"{100 * v:.1f}%"  # noqa: E731
    rows = [[p.store, MEMBERS, f"{PERIOD:g} s", f"{p.probes:,}", pct(p.busy), pct(p.idle), pct(p.probing)]
            for p in results]
    return table(f"Probing {MEMBERS:,} members (router CPU as a share of one core, over {ROUNDS} probe periods)",
                 ["store", "members", "period", "probes answered", "router, prober on", "router, prober off",
                  "probing"], rows)
