"""Redirect throughput of the router beside the bare-aiohttp ceiling, measured in one run.

Every router figure has the ceiling measured beside it, the same way: a bare aiohttp
handler answering each launch path with a 307 and a `Location` (benchmarks/target.py),
in a process of its own, under the same load (wrk, 50 connections, 1,000 repository
`/build/` paths in turn). Both run side by side and are loaded in turn, three times
each; each figure is the median run. The ratio of the two is what a shared, busy
machine cannot blur much: both move together when the machine slows down.

Layout on a machine with two cores: the server process on one core, the load
generator and redis-server on the other. Two replicas: two server processes on one
port (SO_REUSEPORT: the kernel spreads wrk's connections over them, as a load
balancer in front of replicas would), one on each core; wrk and redis-server are
then not pinned and share both cores with them, so "two replicas / one" measures
what a second core buys with the load generator on the same machine (the ceiling's
own two/one ratio says what the machine allows). With three or more cores the load
generator gets a core of its own in both layouts.

The router runs as `binderfed serve` does: default settings (the sticky cookie is set
on every redirect), JSON log lines at level info on stderr (written to a file; a
redirect logs nothing at info, the launch log has each launch), members healthy with plenty of room; abuse limits are off because the
load generator is one client address. Member statuses are written to the store once
before the load: probing is measured on its own (benchmarks/probing.py).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

from tests.support.redis_proc import RedisProcess

from . import probing
from .common import table
from .load import Load, Server, cpu_seconds, get, load_generator, pin, run_load, usable_cores

SIZES = (3, 1000)
DURATION = 3.0  # seconds per load run
ROUNDS = 3  # runs of the ceiling and of the router, in turn
WARMUP = 1.0
CONNECTIONS = 50
REPOS = 1000
PROBE_PATH = "/build/gh/org/repo0/HEAD"


@dataclass
class Run:
    """One server layout under one load."""

    load: Load
    cpu: float | None  # seconds, all server processes
    redis_cpu: float | None = None
    round_trips: float | None = None

    @property
    def cpu_per_request(self) -> float | None:
        return self.cpu / self.load.requests if self.cpu is not None and self.load.requests else None

    @property
    def redis_per_request(self) -> float | None:
        return self.redis_cpu / self.load.requests if self.redis_cpu is not None and self.load.requests else None


@dataclass
class Row:
    store: str
    members: int
    replicas: int
    router: Run  # the median run
    ceiling: Run
    router_runs: list[Run] = field(default_factory=list)
    ceiling_runs: list[Run] = field(default_factory=list)

    @property
    def of_ceiling(self) -> float:
        return self.router.load.rps / self.ceiling.load.rps if self.ceiling.load.rps else 0.0


def layout(replicas: int) -> tuple[list[set[int] | None], set[int] | None]:
    """Cores for each server process and for the load generator (None: not pinned)."""
    cores = usable_cores()
    if len(cores) > replicas:
        return [{c} for c in cores[:replicas]], {cores[replicas]}
    if len(cores) == replicas:
        return [{c} for c in cores], None
    return [None] * replicas, None


def layout_note() -> str:
    cores = usable_cores()
    if len(cores) < 2:
        return "one core: nothing pinned, server and load generator share it (figures understate the server)"
    one = f"one process on core {cores[0]}, load generator and redis-server on core {cores[1]}"
    if len(cores) >= 3:
        two = f"two processes on cores {cores[0]} and {cores[1]}, load generator and redis-server on core {cores[2]}"
    else:
        two = (f"two processes on cores {cores[0]} and {cores[1]}, one port (SO_REUSEPORT), "
               "load generator and redis-server not pinned, sharing both")
    return f"{one}; {two}"


def _redis_client(redis: RedisProcess):  # noqa: ANN202
    import redis as redis_py

    return redis_py.Redis.from_url(redis.url)


def _top_level_calls(redis: RedisProcess) -> int:
    """Requests the routers sent to Redis: the store's hot path is EVALSHA scripts, and
    commandstats also counts the commands a script runs inside, so count the commands
    that only exist at the top level (EVALSHA, EVAL, MULTI)."""
    with contextlib.closing(_redis_client(redis)) as client:
        info = client.info("commandstats")
    return sum(int(info.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in ("evalsha", "eval", "multi"))


class Servers:
    """`replicas` processes of one benchmark server on one port, one per core of the layout."""

    def __init__(self, args: list[str], replicas: int, redis: RedisProcess | None = None):
        self.args = args
        self.replicas = replicas
        self.redis = redis  # the Redis these servers use: its CPU and round trips are counted
        self.cores, self.load_cores = layout(replicas)
        self.stack = contextlib.ExitStack()
        self.servers: list[Server] = []

    def __enter__(self) -> "Servers":
        shared = ["--reuse-port"] if self.replicas > 1 else []
        try:
            first = self.stack.enter_context(Server(self.args + shared, self.cores[0]))
            self.servers = [first] + [
                self.stack.enter_context(Server(self.args + shared + ["--port", str(first.port)], cores))
                for cores in self.cores[1:]]
            status, headers, _ = get(first.port, PROBE_PATH)
            if status != 307 or not headers.get("Location", "").endswith(PROBE_PATH):
                raise RuntimeError(f"{self.args[0]} answered {PROBE_PATH} with {status} {headers}: {first.log_tail()}")
            run_load(first.port, WARMUP, CONNECTIONS, REPOS, self.load_cores)
        except BaseException:
            self.stack.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stack.close()

    def run(self, seconds: float) -> Run:
        """Load the servers for `seconds`; their CPU time (and Redis') over exactly that load."""
        redis = self.redis
        redis_pid = redis.proc.pid if redis is not None and redis.proc is not None else None
        calls = _top_level_calls(redis) if redis is not None else None
        before = [s.cpu() for s in self.servers]
        redis_before = cpu_seconds(redis_pid) if redis_pid else None
        load = run_load(self.servers[0].port, seconds, CONNECTIONS, REPOS, self.load_cores)
        after = [s.cpu() for s in self.servers]
        redis_after = cpu_seconds(redis_pid) if redis_pid else None
        for server in self.servers:
            if server.proc is not None and server.proc.poll() is not None:
                raise RuntimeError(f"{self.args[0]} exited during the load: {server.log_tail()}")
        cpu = None if None in before + after else sum(a - b for a, b in zip(after, before))  # type: ignore[operator]
        result = Run(load=load, cpu=cpu)
        if redis_before is not None and redis_after is not None:
            result.redis_cpu = redis_after - redis_before
        if calls is not None and redis is not None and load.requests:
            result.round_trips = (_top_level_calls(redis) - calls) / load.requests
        return result


def prepare_redis(redis: RedisProcess | None, replicas: int, flush: bool) -> None:
    """Put redis-server beside the load generator and, for a new router, empty it."""
    if redis is None or redis.proc is None:
        return
    _, load_cores = layout(replicas)
    pin(redis.proc.pid, load_cores if load_cores is not None else set(usable_cores()))
    if flush:
        with contextlib.closing(_redis_client(redis)) as client:
            client.flushall()


def measure(args: list[str], replicas: int, redis: RedisProcess | None = None, uses_redis: bool = False) -> Run:
    """Start `replicas` server processes with `args`, load them once, stop them."""
    prepare_redis(redis, replicas, flush=uses_redis)
    with Servers(args, replicas, redis if uses_redis else None) as servers:
        return servers.run(DURATION)


def router_args(store_url: str, members: int) -> list[str]:
    return ["router", "--members", str(members), "--store", store_url]


def _median(runs: list[Run]) -> Run:
    return sorted(runs, key=lambda r: r.load.rps)[len(runs) // 2]


def measure_row(store: str, store_url: str, members: int, replicas: int, redis: RedisProcess | None) -> Row:
    """The router and the ceiling, both running, loaded in turn ROUNDS times: the
    machine's ups and downs fall on both alike; each figure is the median run."""
    prepare_redis(redis, replicas, flush=store == "redis")
    routers, ceilings = [], []
    with Servers(["ceiling"], replicas) as ceiling, \
            Servers(router_args(store_url, members), replicas, redis if store == "redis" else None) as router:
        for _ in range(ROUNDS):
            ceilings.append(ceiling.run(DURATION))
            routers.append(router.run(DURATION))
    return Row(store, members, replicas, _median(routers), _median(ceilings), routers, ceilings)


def _ms(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value * 1e3:.{digits}f}"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


def _spread(runs: list[Run]) -> str:
    rates = sorted(r.load.rps for r in runs)
    return f"{rates[0]:,.0f}–{rates[-1]:,.0f}" if rates else "-"


def _ratio(a: float, b: float) -> float | None:
    return a / b if b else None


def run(redis: RedisProcess | None) -> str:
    tool = load_generator()
    rows: list[Row] = []
    stores = [("memory", "memory://")] + ([("redis", redis.url)] if redis is not None else [])
    for store, url in stores:  # one replica and two side by side in time, their ratio is a target
        rows.append(measure_row(store, url, SIZES[0], 1, redis))
        rows.append(measure_row(store, url, SIZES[0], 2, redis))
        for members in SIZES[1:]:
            rows.append(measure_row(store, url, members, 1, redis))
    probes = probing.run(redis)

    lines = []
    for r in rows:
        load, ceiling = r.router.load, r.ceiling.load
        lines.append([
            r.store, r.members, r.replicas, f"{load.rps:,.0f}", _spread(r.router_runs), _ms(r.router.cpu_per_request),
            _ms(load.p50, 2), _ms(load.p99, 2), sum(run.load.error_count for run in r.router_runs + r.ceiling_runs),
            f"{ceiling.rps:,.0f}", _spread(r.ceiling_runs), _ms(r.ceiling.cpu_per_request), _percent(r.of_ceiling),
            "-" if r.router.round_trips is None else f"{r.router.round_trips:.2f}",
            _ms(r.router.redis_per_request),
            _percent(load.cpu / load.seconds if load.cpu is not None and load.seconds else None),
        ])
    tool_note = ("wrk (one thread)" if tool == "wrk" else
                 "the Python load generator, because wrk is not installed: it costs far more CPU per request "
                 "than wrk, so these figures understate both servers (`scripts/ensure-bench-tools` installs wrk)")
    out = [table(
        f"Redirects: the router beside the bare-aiohttp 307 ceiling of the same run ({tool}, {CONNECTIONS} "
        f"connections, {REPOS:,} repository /build/ paths; median of {ROUNDS} runs of {DURATION:g} s, in turn)",
        ["store", "members", "processes", "req/s", "runs", "ms CPU/req", "p50 ms", "p99 ms", "errors",
         "ceiling req/s", "ceiling runs", "ceiling ms CPU/req", "of ceiling", "Redis round trips/req",
         "redis-server ms CPU/req", "load generator CPU"], lines)]
    out.append(f"\nLoad generator: {tool_note}. Cores: {layout_note()}. Router: bounded-affinity, sticky cookie "
               f"set, JSON logs at info, served as the ceiling is, abuse limits off (one client address). Figures from a shared "
               f"machine move between runs; the same-run ratios are what to compare.")
    out.append(probing.format_table(probes))
    out.append(summary(rows, probes))
    return "\n".join(out)


def summary(rows: list[Row], probes: list[probing.Probing]) -> str:
    """The ratios issue 18's "Done when" names, from this run's figures."""
    def row(store: str, members: int, replicas: int = 1) -> Row | None:
        return next((r for r in rows if (r.store, r.members, r.replicas) == (store, members, replicas)), None)

    lines = []
    for members, target in ((3, "≥ 80%"), (1000, "≥ 60%")):
        cells = [_percent(r.of_ceiling) if (r := row(s, members)) else "-" for s in ("memory", "redis")]
        lines.append([f"redirects / same-run ceiling, {members:,} members", target, *cells])
    memory3, redis3 = row("memory", 3), row("redis", 3)
    if memory3 and redis3:
        lines.append(["RedisStore / MemoryStore, 3 members", "≥ 70%", "-",
                      _percent(_ratio(redis3.router.load.rps, memory3.router.load.rps))])
    cells = []
    for store in ("memory", "redis"):
        one, two = row(store, 3), row(store, 3, 2)
        if one and two:
            router = _ratio(two.router.load.rps, one.router.load.rps)
            ceiling = _ratio(two.ceiling.load.rps, one.ceiling.load.rps)
            cells.append(f"{router:.2f}x (ceiling {ceiling:.2f}x)" if router and ceiling else "-")
        else:
            cells.append("-")
    lines.append(["two replicas / one, 3 members", "≥ 1.8x", *cells])
    by_store = {p.store: p for p in probes}
    lines.append([f"probing {probing.MEMBERS:,} members every {probing.PERIOD:g} s, % of a core", "< 10%",
                  *(f"{100 * by_store[s].probing:.1f}%" if s in by_store and by_store[s].probing is not None else "-"
                    for s in ("memory", "redis"))])
    return table("Issue 18's targets, this run", ["figure", "target", "MemoryStore", "RedisStore"], lines)
