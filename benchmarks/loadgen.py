"""The Python load generator, used only where wrk is not installed: GET launch URLs
without following redirects for a fixed time, and print one JSON line of figures
(the shape benchmarks/paths.lua prints for wrk).

It asks for the same paths as the wrk script (`/build/gh/org/repo<i>/HEAD`, i in
turn over `--repos` repositories), but costs far more CPU per request than wrk, so
on a small machine it caps what it can measure well below a server's own limit."""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import aiohttp
from yarl import URL


async def generate(base: str, duration: float, concurrency: int, repos: int) -> dict:
    latencies: list[float] = []
    errors = {"connect": 0, "read": 0, "write": 0, "timeout": 0, "not 307": 0}
    deadline = time.monotonic() + duration
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=5)
    # No cookie jar: like wrk, every request comes without the sticky cookie (a first visit).
    async with aiohttp.ClientSession(connector=connector, timeout=timeout, cookie_jar=aiohttp.DummyCookieJar()) as session:
        async def worker(wid: int) -> None:
            i = wid
            while time.monotonic() < deadline:
                url = URL(f"{base}/build/gh/org/repo{i % repos}/HEAD", encoded=True)
                i += concurrency
                started = time.perf_counter()
                try:
                    async with session.get(url, allow_redirects=False) as response:
                        await response.read()
                        status = response.status
                except asyncio.TimeoutError:
                    errors["timeout"] += 1
                    continue
                except aiohttp.ClientConnectorError:
                    errors["connect"] += 1
                    continue
                except aiohttp.ClientError:
                    errors["read"] += 1
                    continue
                latencies.append(time.perf_counter() - started)
                if status != 307:  # a /build/ refusal is a 200 event stream: only a 307 is a redirect
                    errors["not 307"] += 1

        started = time.monotonic()
        await asyncio.gather(*(worker(w) for w in range(concurrency)))
        elapsed = time.monotonic() - started
    latencies.sort()
    pick = lambda q: latencies[min(len(latencies) - 1, int(q * (len(latencies) - 1)))] if latencies else 0.0  # noqa: E731
    return {"requests": len(latencies), "duration_us": int(elapsed * 1e6), "errors": errors,
            "p50_us": int(pick(0.50) * 1e6), "p99_us": int(pick(0.99) * 1e6)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--duration", type=float, default=5)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--repos", type=int, default=1000)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(generate(args.url, args.duration, args.concurrency, args.repos))))


if __name__ == "__main__":
    main()
