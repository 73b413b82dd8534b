"""A load generator meant to run in its own process: GET launch URLs without
following redirects, for a fixed time, and print one JSON line of figures."""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import aiohttp
from yarl import URL


async def generate(base: str, duration: float, concurrency: int, repos: int, expect: int) -> dict:
    latencies: list[float] = []
    errors: dict[str, int] = {}
    deadline = time.monotonic() + duration
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        async def worker(wid: int) -> None:
            i = wid
            while time.monotonic() < deadline:
                url = URL(f"{base}/v2/gh/org/repo{i % repos}/HEAD?urlpath=lab", encoded=True)
                i += concurrency
                started = time.perf_counter()
                try:
                    async with session.get(url, allow_redirects=False) as response:
                        await response.read()
                        status = response.status
                except aiohttp.ClientError as exc:
                    errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                    continue
                latencies.append(time.perf_counter() - started)
                if status != expect:
                    errors[str(status)] = errors.get(str(status), 0) + 1

        started = time.monotonic()
        await asyncio.gather(*(worker(w) for w in range(concurrency)))
        elapsed = time.monotonic() - started
    latencies.sort()
    pick = lambda q: latencies[min(len(latencies) - 1, int(q * (len(latencies) - 1)))] if latencies else float("nan")
    return {"requests": len(latencies), "errors": errors, "rps": len(latencies) / elapsed,
            "p50": pick(0.50), "p99": pick(0.99)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--duration", type=float, default=5)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--repos", type=int, default=1000)
    parser.add_argument("--expect", type=int, default=307)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(generate(args.url, args.duration, args.concurrency, args.repos, args.expect))))


if __name__ == "__main__":
    main()
