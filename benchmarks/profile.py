"""Where a redirect's CPU time goes: the router sampled by py-spy under wrk load.

    pip install -e '.[profile]'     # py-spy, into the venv
    python -m benchmarks.profile [--seconds 10]

Not part of `make bench`: it needs py-spy, and ptrace rights over the router process
(root, or `kernel.yama.ptrace_scope` 0). For each store and size the router
(benchmarks/target.py, as in the redirect benchmark) is loaded twice: first without
the profiler, for its CPU time per redirect, then with py-spy attached (native frames
included, so numpy's C calls are seen), for the share of samples each item of the
redirect path takes. An item's time is its share times the unprofiled CPU time per
redirect. "+ limits" columns check and count every abuse limit (set too high to
refuse: the redirect benchmark runs without them, its load being one client
address). Samples are attributed to the innermost frame that names an item; the
bare-aiohttp ceiling, with its minimal response and with the router's whole response
(body, headers, cookie), says what aiohttp itself costs.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.support.redis_proc import RedisProcess

from .common import table
from .load import Server, get, pin, run_load, usable_cores
from .redirect import CONNECTIONS, REPOS, measure, router_args

# (item, substrings of a py-spy frame "function (file:line)"), innermost match wins, in this order.
ITEMS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("numpy calls (C, in placement and view)", ("numpy/",)),
    ("metrics: prometheus-client labels + inc/observe", ("prometheus_client/",)),
    ("sticky cookie (set_cookie, Set-Cookie header)", ("http/cookies.py", "set_cookie (aiohttp")),
    ("log line per launch (logging, JsonFormatter)", ("logging/__init__.py", "federation/logs.py")),
    ("Redis client (redis-py)", ("redis/",)),
    ("store read: JSON parsed (json.loads)", ("scan_once_unicode", "_parse_array_unicode", "_parse_object_unicode",
                                            "scanstring_unicode", "JSONDecoder.", "loads (json/__init__")),
    ("store read: statuses etc. decoded", ("_decode_",)),
    ("store read: mirrored into the fallback", ("_mirror (", "_if_changed (", "_mirror_holders (")),
    ("store read: in-flight counts", ("_counts (",)),
    ("store read: rest of launch_state", ("launch_state (",)),
    ("store record: record_launch", ("record_launch (",)),
    ("store: limit counters (limit_launch)", ("limit_launch (",)),
    ("view building (ViewBuilder)", ("federation/view.py", "view_for (")),
    ("placement: place() in Python", ("federation/policy.py", "federation/table.py")),
    ("launch path parsing", ("federation/spec.py", "parse_request (")),
    ("limit checks (bans only, unless + limits)", ("router/limits.py", "router/clients.py")),
    ("launch event dict", ("launch_event (",)),
    ("response object in the handler", ("Response.__init__ (aiohttp/web_response.py",)),
)
HANDLER = "handler's own code (handle_launch, admit, decide, record)"
AIOHTTP = "aiohttp outside the handler (parse, route, write)"
OTHER = "event loop, socket I/O, GC, other"
# (store, members, abuse limits checked)
CONFIGS = (("memory", 3, False), ("memory", 1000, False), ("redis", 3, False), ("redis", 1000, False),
           ("memory", 3, True), ("redis", 3, True))


def classify(frames: list[str]) -> str:
    for frame in reversed(frames):
        for item, patterns in ITEMS:
            if any(p in frame for p in patterns):
                return item
    if any("handle_launch (router/launch.py" in f for f in frames):
        return HANDLER
    if any("aiohttp/" in f for f in frames):
        return AIOHTTP
    return OTHER


def shares(raw: Path) -> dict[str, float]:
    """Share of samples per item from py-spy's raw (collapsed stacks) output."""
    counts: collections.Counter[str] = collections.Counter()
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if stack and n.isdigit():
            counts[classify(stack.split(";"))] += int(n)
    total = sum(counts.values()) or 1
    return {item: n / total for item, n in counts.items()}


def profile(store_url: str, members: int, limits: bool, seconds: int,
            redis: RedisProcess | None) -> tuple[float, dict[str, float]]:
    """(CPU seconds per redirect without the profiler, share per item with it)."""
    cores = usable_cores()
    server_core, load_core = ({cores[0]}, {cores[1]}) if len(cores) >= 2 else (None, None)
    args = router_args(store_url, members) + (["--limits"] if limits else [])
    unprofiled = measure(args, 1, redis, uses_redis=store_url.startswith("redis"))
    with Server(args, server_core) as router, tempfile.TemporaryDirectory() as tmp:
        get(router.port, "/build/gh/org/repo0/HEAD")
        run_load(router.port, 1, CONNECTIONS, REPOS, load_core)
        raw = Path(tmp) / "samples.txt"
        spy = subprocess.Popen([shutil.which("py-spy") or "py-spy", "record", "--pid", str(router.pid), "--native",
                                "--rate", "100", "--duration", str(seconds), "--format", "raw", "-o", str(raw)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        run_load(router.port, seconds, CONNECTIONS, REPOS, load_core)
        _, err = spy.communicate(timeout=seconds + 60)
        if spy.returncode != 0 or not raw.exists():
            raise RuntimeError(f"py-spy failed: {err.strip()[-300:]}")
        return unprofiled.cpu_per_request or 0.0, shares(raw)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=10, help="profiled load per configuration (default 10)")
    args = parser.parse_args()
    if shutil.which("py-spy") is None:
        print("py-spy is not installed: pip install -e '.[profile]' (or: pip install py-spy)", file=sys.stderr)
        return 2
    redis = RedisProcess()
    redis.start()
    try:
        if redis.proc is not None and len(usable_cores()) >= 2:
            pin(redis.proc.pid, {usable_cores()[1]})
        ceiling = measure(["ceiling"], 1)
        like_router = measure(["ceiling", "--router-response"], 1)
        results = {}
        for store, members, limits in CONFIGS:
            url = redis.url if store == "redis" else "memory://"
            results[(store, members, limits)] = profile(url, members, limits, args.seconds, redis)
    finally:
        redis.stop()
    items = [item for item, _ in ITEMS] + [HANDLER, AIOHTTP, OTHER]
    rows = []
    for item in sorted(items, key=lambda i: -sum(s.get(i, 0) * cpu for cpu, s in results.values())):
        cells = [f"{1e3 * cpu * s.get(item, 0):.3f} ({100 * s.get(item, 0):.0f}%)" for cpu, s in results.values()]
        rows.append([item, *cells])
    rows.append(["total CPU per redirect (unprofiled)", *(f"{1e3 * cpu:.3f}" for cpu, _ in results.values())])
    print(table("Where a redirect's CPU time goes (ms per redirect, share of samples)",
                ["item", *(f"{store} {members:,}{' + limits' if limits else ''}" for store, members, limits in CONFIGS)],
                rows))
    print(f"\nBare-aiohttp ceiling in this run: {1e3 * (ceiling.cpu_per_request or 0):.3f} ms per redirect "
          f"({ceiling.load.rps:,.0f} req/s); answering with the router's whole response (body, CORS and decision "
          f"headers, cookie): {1e3 * (like_router.cpu_per_request or 0):.3f} ms ({like_router.load.rps:,.0f} req/s).")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
