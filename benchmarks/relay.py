"""Relay throughput: many concurrent relayed /build/ streams through one router process.

Three processes, so that only the router's own work is counted against it:

- the member: `tests.support.replay_member`, replaying the recorded BinderHub build in
  `tests/fixtures/binderhub-build-events.sse` (736 events, 119 kB) as fast as it can;
- the router: `python -m benchmarks.relay router`, one `create_app` in stream mode
  (`router.forward: stream`) with that one member; it reports its CPU time (user +
  system, from `resource.getrusage`, counted from when it is ready to serve) and its
  peak RSS when stopped;
- the clients: `python -m benchmarks.relay clients`, opening all streams at once and
  reading each to its end (the relay closes it after `ready`: no linger).

Events/s is every relayed event of every stream over the wall time from the first
request to the end of the last stream.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

from .common import percentile, table

STREAMS = 500
ROOT = Path(__file__).resolve().parent.parent
SPEC = "gh/binder-examples/octave/HEAD"


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else 65536, hard))


# -- the router process ----------------------------------------------------------------------


async def serve_router(member_url: str) -> None:
    from aiohttp import web

    from federation.config import FederationConfig, LimitSettings, PolicySettings, RouterSettings, StreamSettings
    from federation.members import Member, MemberState, MemberStatus
    from federation.stores.memory import MemoryStore
    from router.app import create_app
    from tests.support.replay_member import RECORDED_HUB

    config = FederationConfig(
        # The recording's ready URL is on the hub it was made on: the relay passes it on for a member declaring it.
        members=(Member(name="replay", url=member_url, hub_url=RECORDED_HUB),),
        policy=PolicySettings(in_flight_ttl=2),
        router=RouterSettings(port=0, cookie_max_age_hours=0, forward="stream", stream=StreamSettings(linger=0)),
        limits=LimitSettings(enabled=False),  # one load generator on 127.0.0.1 is one client
    )
    store = MemoryStore()
    app = create_app(config, store, probe=False)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, backlog=2048).start()
    await store.put_status(MemberStatus(name="replay", state=MemberState.HEALTHY, reason="ok", checked_at=time.time()))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    started = _cpu()
    print(f"ready {runner.addresses[0][1]}", flush=True)
    await stop.wait()
    cpu = _cpu() - started
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(json.dumps({"cpu_seconds": cpu, "peak_rss_mib": peak_kib / 1024}), flush=True)
    await runner.cleanup()


# -- the clients process ---------------------------------------------------------------------


async def run_clients(url: str, streams: int) -> dict:
    import aiohttp

    from hub.events import Event, SSEDecoder

    bodies: list[bytes] = []
    durations: list[float] = []
    errors: dict[str, int] = {}
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        async def one() -> None:
            started = time.perf_counter()
            try:
                async with session.get(f"{url}/build/{SPEC}", headers={"Accept": "text/event-stream"}) as response:
                    body = await response.read()
            except aiohttp.ClientError as exc:
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                return
            durations.append(time.perf_counter() - started)
            bodies.append(body)

        started = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(streams)))
        wall = time.perf_counter() - started
    # Decoded after the clock stopped, so the clients' parsing does not slow the router down.
    events = ready = 0
    for body in bodies:
        decoded = [item for item in SSEDecoder().feed(body) if isinstance(item, Event)]
        events += len(decoded)
        if decoded and json.loads(decoded[-1].data).get("phase") == "ready":
            ready += 1
        else:
            errors["no ready"] = errors.get("no ready", 0) + 1
    return {"streams": streams, "ready": ready, "events": events, "wall_seconds": wall, "errors": errors,
            "p50": percentile(durations, 50), "p99": percentile(durations, 99)}


# -- the benchmark ---------------------------------------------------------------------------


def _spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, *args], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})


def measure(streams: int = STREAMS) -> dict:
    member = _spawn("-m", "tests.support.replay_member")
    router = None
    try:
        line = member.stdout.readline()  # type: ignore[union-attr]
        if not line.startswith("listening on "):
            raise RuntimeError(f"replay member did not start: {line!r}")
        member_url = line.split()[-1]
        router = _spawn("-m", "benchmarks.relay", "router", "--member", member_url)
        line = router.stdout.readline()  # type: ignore[union-attr]
        if not line.startswith("ready "):
            raise RuntimeError(f"router did not start: {line!r}")
        port = int(line.split()[1])
        clients = _spawn("-m", "benchmarks.relay", "clients", "--url", f"http://127.0.0.1:{port}",
                         "--streams", str(streams))
        out, _ = clients.communicate(timeout=900)
        result = json.loads(out)
        router.send_signal(signal.SIGTERM)
        out, _ = router.communicate(timeout=60)
        result.update(json.loads(out.strip().splitlines()[-1]))
        return result
    finally:
        for proc in (router, member):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=10)


def run() -> str:
    r = measure(STREAMS)
    rate = r["events"] / r["wall_seconds"]
    per_event = r["cpu_seconds"] / r["events"] * 1e6 if r["events"] else float("nan")
    rows = [[r["streams"], r["ready"], r["events"], f"{r['wall_seconds']:.2f}", f"{rate:,.0f}",
             f"{r['cpu_seconds']:.2f}", f"{per_event:.1f}", f"{r['peak_rss_mib']:.0f}",
             f"{r['p50']:.2f}", f"{r['p99']:.2f}", sum(r["errors"].values())]]
    return table(
        f"Stream relay: {STREAMS} concurrent relayed streams of a recorded BinderHub build (736 events each) "
        "through one router process; member and clients in their own processes",
        ["streams", "ready", "events", "wall s", "events/s", "router CPU s", "CPU µs/event", "router peak RSS MiB",
         "stream p50 s", "stream p99 s", "errors"], rows)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.relay")
    sub = parser.add_subparsers(dest="role", required=True)
    router = sub.add_parser("router", help="serve one router in stream mode (prints 'ready <port>')")
    router.add_argument("--member", required=True)
    clients = sub.add_parser("clients", help="open --streams relayed streams at once and print figures")
    clients.add_argument("--url", required=True)
    clients.add_argument("--streams", type=int, default=STREAMS)
    sub.add_parser("run", help="the whole benchmark, as a table")
    args = parser.parse_args()
    _raise_fd_limit()
    if args.role == "router":
        asyncio.run(serve_router(args.member))
    elif args.role == "clients":
        print(json.dumps(asyncio.run(run_clients(args.url, args.streams))), flush=True)
    else:
        print(run())


if __name__ == "__main__":
    main()
