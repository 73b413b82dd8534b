"""A test double of a member BinderHub that replays a recorded `/build/` stream.

It speaks just enough of the member API (DESIGN.md) for a router to relay from it:
`/health` (healthy, unlimited pod quota), `/versions`, and `/build/<provider>/<spec>`
answering `text/event-stream` with the recording's bytes exactly as recorded (for
example `tests/fixtures/binderhub-build-events.sse`, a real BinderHub build), cut
into chunks of `chunk_size` bytes at arbitrary places. Every `/build/` request's
path, query and headers are kept in `requests` for assertions.

Run as a process for the benchmarks: `python -m tests.support.replay_member
--recording FILE [--port N]` prints `listening on <url>` and serves until SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path
from typing import Any

from aiohttp import web

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "binderhub-build-events.sse"
# The JupyterHub of the BinderHub the recording was made on (its `ready` event's server URL):
# a member replaying the recording declares it as its `hub_url`, or the relay, which passes
# on only ready URLs of the member's own origin, would not relay it.
RECORDED_HUB = "http://192.168.105.2:30902"


class ReplayMember:
    def __init__(self, recording: bytes, *, chunk_size: int = 4096, name: str = "replay") -> None:
        self.recording = recording
        self.chunk_size = chunk_size
        self.name = name
        self.requests: list[dict[str, Any]] = []
        self.record_requests = True
        self._runner: web.AppRunner | None = None
        self.url = ""

    def create_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/health", self._health)
        app.router.add_get("/versions", self._versions)
        app.router.add_get("/build/{tail:.+}", self._build)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        self._runner = web.AppRunner(self.create_app(), access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port, backlog=2048).start()
        self.url = f"http://{host}:{self._runner.addresses[0][1]}"
        return self.url

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "checks": [
            {"service": "JupyterHub API", "ok": True},
            {"service": "Docker registry", "ok": True},
            {"service": "Pod quota", "ok": True, "total_pods": 0, "build_pods": 0, "user_pods": 0, "quota": None,
             "_ignore_failure": True},
        ]})

    async def _versions(self, request: web.Request) -> web.Response:
        return web.json_response({"binderhub": "replay", "builder_info": {}})

    async def _build(self, request: web.Request) -> web.StreamResponse:
        if self.record_requests:
            self.requests.append({"path": request.rel_url.raw_path, "query": request.rel_url.raw_query_string,
                                  "headers": dict(request.headers)})
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        data, size = self.recording, self.chunk_size
        try:
            for start in range(0, len(data), size):
                await response.write(data[start:start + size])
            await response.write_eof()
        except (ConnectionError, RuntimeError):
            pass  # the client left
        return response


async def _serve(recording: Path, port: int, chunk_size: int) -> None:
    member = ReplayMember(recording.read_bytes(), chunk_size=chunk_size)
    member.record_requests = False  # a long benchmark must not grow a list forever
    url = await member.start("127.0.0.1", port)
    print(f"listening on {url}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await member.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.support.replay_member")
    parser.add_argument("--recording", type=Path, default=FIXTURE)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--chunk-size", type=int, default=4096)
    args = parser.parse_args(argv)
    asyncio.run(_serve(args.recording, args.port, args.chunk_size))
    return 0


if __name__ == "__main__":
    sys.exit(main())
