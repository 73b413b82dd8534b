"""`make soak`: the router under steady launch traffic for a long time (default 10 minutes).

Everything runs as its own process, as in production: a private `redis-server`, three
or more dev members (`binderfed devhub`), the router (`binderfed serve` with a generated
config: Redis store, abuse limits on, forwarding by redirect) and a load generator
(`python -m benchmarks.soak load`). The load generator sends launches at a steady rate
from many simulated visitors (distinct `X-Forwarded-For` addresses; the router trusts
127.0.0.1 as its proxy), over many repositories, with a small share of

- launches it follows to the member's `/build/` stream until `ready`, so members hold
  real (simulated) servers and their pod counts move;
- launches from one abusive visitor, which the per-client limit must refuse (429);
- launches of a few viral repositories, more than the per-repository limit allows (429);
- launches of a banned repository (403);
- malformed launch paths (400).

Every minute it reports what it saw: requests, answers by kind, p50/p99 latency of
the router's answers. The soak samples the router's resident memory (`VmRSS` from
`/proc/<pid>/status`) at start, after each minute and at the end: a leak shows as
growth that keeps going minute after minute (the first minute also fills caches and
connection pools). The report ends with totals and the RSS growth.

    python -m benchmarks.soak --minutes 10 [--rate 100] [--members 3] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.redis_proc import RedisProcess, free_port

from .common import percentile, table

BANNED_ORG = "soak-banned-org"
ABUSER = "203.0.113.66"  # TEST-NET-3: one visitor launching far more than the per-client limit allows
ABUSER_SHARE = 0.02
BANNED_SHARE = 0.01
MALFORMED_SHARE = 0.01
VIRAL_SHARE = 0.05
FOLLOW_SHARE = 0.03     # launches followed to the member's /build/ stream until ready
PER_CLIENT = 30         # launches per client per window (turned on here; the default is off)
REPOS = 2000
CLIENTS = 20000


# -- the load generator (its own process) -----------------------------------------------------


@dataclass
class Minute:
    """What the load generator saw in one minute."""

    index: int
    latencies: list[float] = field(default_factory=list)
    kinds: dict[str, int] = field(default_factory=dict)
    followed: int = 0
    ready: int = 0
    follow_errors: dict[str, int] = field(default_factory=dict)

    def count(self, kind: str) -> None:
        self.kinds[kind] = self.kinds.get(kind, 0) + 1

    def to_json(self) -> dict[str, Any]:
        return {"minute": self.index, "requests": len(self.latencies), "kinds": self.kinds,
                "p50": percentile(self.latencies, 50), "p99": percentile(self.latencies, 99),
                "max": max(self.latencies, default=float("nan")), "followed": self.followed, "ready": self.ready,
                "follow_errors": self.follow_errors}


def _kind(status: int, path: str) -> str:
    """Name an answer: expected refusals by what they are, anything else by status."""
    return {307: "redirect", 400: "refused_bad_path", 403: "refused_banned", 429: "refused_rate_limit",
            503: "no_member_503"}.get(status, f"http_{status}")


async def _follow(session: Any, location: str, now: Any) -> None:
    """Follow a /build/ redirect to the member's event stream until its final event.

    `now()` is the current minute: an outcome counts in the minute it happened."""
    import aiohttp
    from yarl import URL

    now().followed += 1
    try:
        async with session.get(URL(location, encoded=True), headers={"Accept": "text/event-stream"},
                               timeout=aiohttp.ClientTimeout(total=60)) as response:
            async for line in response.content:
                if line.startswith(b"data:"):
                    phase = json.loads(line[5:]).get("phase")
                    if phase == "ready":
                        now().ready += 1
                        return
                    if phase == "failed":
                        now().follow_errors["failed"] = now().follow_errors.get("failed", 0) + 1
                        return
            now().follow_errors["ended"] = now().follow_errors.get("ended", 0) + 1
    except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
        name = type(exc).__name__
        now().follow_errors[name] = now().follow_errors.get(name, 0) + 1


async def generate(url: str, minutes: float, rate: float, concurrency: int, seed: int) -> None:
    import aiohttp
    from yarl import URL

    rng = random.Random(seed)
    started = time.monotonic()
    deadline = started + minutes * 60
    current = Minute(0)
    semaphore = asyncio.Semaphore(concurrency)
    follows: set[asyncio.Task[None]] = set()

    def request_path() -> tuple[str, dict[str, str]]:
        roll = rng.random()
        # A few viral repositories (more launches than the per-repository limit allows) and a long tail.
        repo = f"soak-org/viral{rng.randrange(3)}" if rng.random() < VIRAL_SHARE else f"soak-org/repo{rng.randrange(REPOS)}"
        family = "build" if rng.random() < 0.5 else "v2"
        client = f"10.{rng.randrange(64)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
        if roll < ABUSER_SHARE:
            client = ABUSER
        elif roll < ABUSER_SHARE + BANNED_SHARE:
            repo = f"{BANNED_ORG}/miner"
        elif roll < ABUSER_SHARE + BANNED_SHARE + MALFORMED_SHARE:
            return rng.choice(["/v2/gh/a/../b/HEAD", "/v2/nope/x", "/build/gh/a%00b/c/HEAD", "/v2/gh//x/HEAD"]), \
                {"X-Forwarded-For": client}
        return f"/{family}/gh/{repo}/HEAD?urlpath=lab", {"X-Forwarded-For": client}

    connector = aiohttp.TCPConnector(limit=concurrency * 2)
    async with aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar()) as session:
        async def one(path: str, headers: dict[str, str], minute: Minute) -> None:
            async with semaphore:
                t0 = time.perf_counter()
                try:
                    async with session.get(URL(url + path, encoded=True), headers=headers,
                                           allow_redirects=False, timeout=aiohttp.ClientTimeout(total=30)) as response:
                        body = await response.read()
                        status, location = response.status, response.headers.get("Location", "")
                    if status == 200 and body.startswith(b"data:"):
                        # A refusal of /build/ is in band: an HTTP 200 stream with one failed event.
                        status = int(json.loads(body[5:]).get("status_code", 200))
                except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
                    minute.count(f"error_{type(exc).__name__}")
                    return
                minute.latencies.append(time.perf_counter() - t0)
                minute.count(_kind(status, path))
            if status == 307 and path.startswith("/build/") and rng.random() < FOLLOW_SHARE * 2:
                task = asyncio.create_task(_follow(session, location, lambda: current))
                follows.add(task)
                task.add_done_callback(follows.discard)

        interval = 1.0 / rate
        next_at = time.monotonic()
        pending: set[asyncio.Task[None]] = set()
        while True:
            now = time.monotonic()
            if now >= deadline:
                break
            index = int((now - started) // 60)
            if index != current.index:
                print(json.dumps(current.to_json()), flush=True)
                current = Minute(index)
            if now < next_at:
                await asyncio.sleep(next_at - now)
                continue
            next_at += interval
            if next_at < now - 1:  # fell behind (the router was slow): do not burst to catch up
                next_at = now
            path, headers = request_path()
            task = asyncio.create_task(one(path, headers, current))
            pending.add(task)
            task.add_done_callback(pending.discard)
        await asyncio.gather(*pending, *follows, return_exceptions=True)
        print(json.dumps(current.to_json()), flush=True)


# -- the soak (processes and the report) -------------------------------------------------------


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def wait_port(port: int, proc: subprocess.Popen[bytes], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on port {port} within {timeout} s")


def router_config(members: list[tuple[str, str]], redis_url: str, port: int) -> str:
    lines = ["members:"]
    for i, (name, url) in enumerate(members):
        lines += [f"  - name: {name}", f"    url: {url}"] + (["    prime: true"] if i == 0 else [])
    lines += [
        "health:", "  period: 2", "  failed_period: 4", "  timeout: 2",
        "policy:", "  pod_headroom: 1", "  in_flight_ttl: 4",
        "router:", "  host: 127.0.0.1", f"  port: {port}", "  trusted_proxies: [127.0.0.1/32]",
        "  cookie_max_age_hours: 0",
        "store:", f"  url: {redis_url}",
        # Every counting limit on (the defaults count nothing), so the soak exercises them all.
        "limits:", "  enabled: true", f"  per_client: {{launches: {PER_CLIENT}, window: 600}}",
        "  per_repo: {launches: 60, window: 600}", "  repo_concurrency: 100",
        "  banned:", f"    - pattern: '^gh/{BANNED_ORG}/'", "      message: 'This repository mines cryptocurrency.'",
    ]
    return "\n".join(lines) + "\n"


def soak(minutes: float, rate: float, n_members: int, concurrency: int, seed: int) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="binderfed-soak-"))
    binderfed = shutil.which("binderfed", path=str(Path(sys.executable).parent)) or "binderfed"
    procs: list[subprocess.Popen[bytes]] = []
    redis_proc = RedisProcess()
    redis_proc.start()
    try:
        members = []
        for i in range(n_members):
            name, port = f"member{i + 1}", free_port()
            log = open(workdir / f"{name}.log", "wb")
            proc = subprocess.Popen([binderfed, "devhub", "--port", str(port), "--name", name, "--quota", "400",
                                     "--build-seconds", "1", "--launch-seconds", "0.5", "--event-interval", "0.1",
                                     "--idle-cull-seconds", "20", "--seed", str(seed + i)],
                                    stdout=log, stderr=subprocess.STDOUT)
            procs.append(proc)
            wait_port(port, proc, name)
            members.append((name, f"http://127.0.0.1:{port}"))
        router_port = free_port()
        config_path = workdir / "router.yaml"
        config_path.write_text(router_config(members, redis_proc.url, router_port))
        router_log = open(workdir / "router.log", "wb")
        router = subprocess.Popen([binderfed, "serve", "--config", str(config_path), "--log-format", "text",
                                   "--log-level", "warning"], stdout=router_log, stderr=subprocess.STDOUT)
        procs.append(router)
        wait_port(router_port, router, "router")
        time.sleep(5)  # members probed healthy (health.period 2 s)
        rss = [("start", 0.0, rss_kib(router.pid))]
        print(f"soak: router pid {router.pid} RSS {rss[0][2]} KiB; {n_members} members; {rate:g} launches/s "
              f"for {minutes:g} min; logs in {workdir}", flush=True)
        load = subprocess.Popen([sys.executable, "-m", "benchmarks.soak", "load", "--url", f"http://127.0.0.1:{router_port}",
                                 "--minutes", str(minutes), "--rate", str(rate), "--concurrency", str(concurrency),
                                 "--seed", str(seed)], stdout=subprocess.PIPE)
        procs.append(load)
        t0 = time.monotonic()
        per_minute: list[dict[str, Any]] = []
        assert load.stdout is not None
        for line in load.stdout:
            record = json.loads(line)
            record["rss_kib"] = rss_kib(router.pid)
            per_minute.append(record)
            rss.append((f"minute {record['minute'] + 1}", time.monotonic() - t0, record["rss_kib"]))
            print(f"soak: minute {record['minute'] + 1}: {record['requests']} requests, p99 "
                  f"{record['p99'] * 1000:.1f} ms, RSS {record['rss_kib']} KiB, {record['kinds']}", flush=True)
        load.wait()
        if router.poll() is not None:
            raise RuntimeError(f"the router exited with {router.returncode} during the soak (see {workdir}/router.log)")
        rss.append(("end", time.monotonic() - t0, rss_kib(router.pid)))
        router_log.flush()
        log_text = (workdir / "router.log").read_text(errors="replace")
        return {
            "minutes": minutes, "rate": rate, "members": n_members, "per_minute": per_minute, "rss": rss,
            "router_log": {"lines": len(log_text.splitlines()), "errors": log_text.count(" ERROR "),
                           "tracebacks": log_text.count("Traceback")},
            "workdir": str(workdir),
        }
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in reversed(procs):
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        redis_proc.stop()


def report(result: dict[str, Any]) -> str:
    rows = []
    totals: dict[str, int] = {}
    requests = followed = ready = 0
    follow_errors: dict[str, int] = {}
    for m in result["per_minute"]:
        for kind, n in m["kinds"].items():
            totals[kind] = totals.get(kind, 0) + n
        for kind, n in m["follow_errors"].items():
            follow_errors[kind] = follow_errors.get(kind, 0) + n
        requests += m["requests"]
        followed += m["followed"]
        ready += m["ready"]
        unexpected = sum(n for k, n in m["kinds"].items() if k.startswith(("http_", "error_")))
        rows.append([m["minute"] + 1, m["requests"], m["kinds"].get("redirect", 0),
                     m["kinds"].get("refused_rate_limit", 0), m["kinds"].get("refused_banned", 0),
                     m["kinds"].get("refused_bad_path", 0), m["kinds"].get("no_member_503", 0), unexpected,
                     f"{m['p50'] * 1000:.1f}", f"{m['p99'] * 1000:.1f}", f"{m['max'] * 1000:.0f}",
                     f"{m['rss_kib'] / 1024:.1f}"])
    out = [table(f"Soak: {result['minutes']:g} min at {result['rate']:g} launches/s, {result['members']} dev members, "
                 "Redis store, limits on",
                 ["minute", "requests", "307", "429", "403", "400", "503", "unexpected", "p50 ms", "p99 ms", "max ms",
                  "RSS MiB"], rows)]
    rss = result["rss"]
    start, warm, end = rss[0][2], (rss[1][2] if len(rss) > 2 else rss[0][2]), rss[-1][2]
    out.append("")
    out.append(f"requests answered: {requests}; answers by kind: {json.dumps(dict(sorted(totals.items())))}")
    unexpected = {k: n for k, n in totals.items() if k.startswith(("http_", "error_"))}
    out.append(f"errors (5xx, unexpected statuses, connection errors): {sum(unexpected.values())} {unexpected or ''}")
    out.append(f"followed to the member's /build/ stream: {followed}, ready: {ready}, other: {follow_errors or 0}")
    out.append(f"router log: {result['router_log']['lines']} lines, {result['router_log']['errors']} ERROR, "
               f"{result['router_log']['tracebacks']} tracebacks")
    out.append(f"router RSS: start {start / 1024:.1f} MiB, after minute 1 {warm / 1024:.1f} MiB, end {end / 1024:.1f} MiB; "
               f"growth start→end {(end - start) / 1024:+.1f} MiB ({(end - start) / start * 100:+.1f}%), "
               f"minute 1→end {(end - warm) / 1024:+.1f} MiB ({(end - warm) / warm * 100:+.1f}%)")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", nargs="?", default="soak", choices=["soak", "load"],
                        help="soak (default): run everything; load: only the load generator (run by the soak)")
    parser.add_argument("--minutes", type=float, default=float(os.environ.get("SOAK_MINUTES", 10)))
    parser.add_argument("--rate", type=float, default=100.0, help="launch requests per second (default %(default)s)")
    parser.add_argument("--members", type=int, default=3, help="dev members (default %(default)s)")
    parser.add_argument("--concurrency", type=int, default=64, help="most requests in flight (default %(default)s)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--url", help="router URL (load mode)")
    parser.add_argument("--json", help="also write the raw figures here")
    args = parser.parse_args(argv)
    if args.mode == "load":
        asyncio.run(generate(args.url, args.minutes, args.rate, args.concurrency, args.seed))
        return 0
    result = soak(args.minutes, args.rate, args.members, args.concurrency, args.seed)
    print(report(result), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
