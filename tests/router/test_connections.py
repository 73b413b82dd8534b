"""Client connections cannot be held for nothing, and an error flood is a few log lines.

Routers here are served the way `binderfed serve` serves them (`router.serve.listen`),
and spoken to byte for byte on raw sockets. The last test runs `binderfed serve` in a
process with few file descriptors and opens more connections than it can accept.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import resource
import socket
import sys
import time
from dataclasses import replace

import aiohttp
import pytest

from federation.members import Member, MemberState, MemberStatus
from federation.stores.memory import MemoryStore
from router.app import create_app
from router.context import CONTEXT
from router.serve import listen
from tests.conftest import fast_config, member_of
from tests.support.cli import REPO
from tests.support.clock import FakeClock
from tests.support.streams import LAUNCH, mark_healthy, read_events, stream_config
from tests.support.waiting import eventually


@pytest.fixture
async def serve():
    """`port, ctx = await serve(config)`: a router behind router.serve.listen, cleaned up at teardown."""
    runners = []

    async def start(config, store=None):
        store = store or MemoryStore()
        app = create_app(config, store, probe=False)
        runner, port = await listen(app, "127.0.0.1", 0)
        runners.append(runner)
        for m in config.members:
            await store.put_status(MemberStatus(name=m.name, state=MemberState.HEALTHY, reason="ok",
                                                checked_at=time.time()))
        return port, app

    yield start
    for runner in runners:
        await runner.cleanup()


def timeouts(config, header: float = 0.3, idle: float = 0.3):
    return replace(config, router=replace(config.router, header_timeout=header, idle_timeout=idle))


MEMBERS = [Member(name="alpha", url="http://127.0.0.1:9/alpha")]


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> bytes:
    """Everything the router sends until it closes the connection (failing if it does not within `seconds`)."""
    try:
        return await asyncio.wait_for(reader.read(), seconds)
    except asyncio.TimeoutError:
        raise AssertionError(f"the router kept the connection open for more than {seconds} s") from None


async def test_a_connection_that_sends_nothing_is_closed(serve):
    port, app = await serve(timeouts(fast_config(MEMBERS), header=0.3, idle=60))
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    assert await closed_within(reader, 10) == b""          # nothing to answer: just closed
    writer.close()


async def test_headers_trickled_byte_by_byte_get_a_408_and_the_connection_closed(serve):
    port, app = await serve(timeouts(fast_config(MEMBERS), header=0.5, idle=60))
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n")

    async def trickle() -> None:
        for byte in b"X-Slow: " + b"a" * 200:
            if writer.is_closing():
                return
            writer.write(bytes([byte]))
            await asyncio.sleep(0.05)

    dripping = asyncio.create_task(trickle())
    answer = await closed_within(reader, 10)
    dripping.cancel()
    writer.close()
    assert answer.startswith(b"HTTP/1.1 408 Request Timeout") and b"did not arrive in time" in answer
    # The router still serves, and counted the connection it closed.
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert (await closed_within(reader, 10)).startswith(b"HTTP/1.1 200")
    writer.close()
    assert app[CONTEXT].metrics.registry.get_sample_value("federation_header_timeouts_total") == 1


async def test_a_kept_alive_connection_idle_or_half_sent_is_closed(serve):
    port, _ = await serve(timeouts(fast_config(MEMBERS), header=60, idle=0.5))
    for second_request in (b"", b"GET /health HTTP/1.1\r\nHost: x\r\n"):   # idle, then an incomplete one
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        length = int(re.search(rb"Content-Length: (\d+)", head).group(1))
        await asyncio.wait_for(reader.readexactly(length), 10)        # a complete answer; the connection stays open
        writer.write(second_request)
        assert await closed_within(reader, 10) == b""
        writer.close()


async def test_a_relayed_stream_outlives_both_timeouts(serve, start_devhub):
    hub = await start_devhub("slow", build_seconds=1.5, event_interval=0.5)
    store = MemoryStore()
    config = timeouts(stream_config([member_of(hub)]), header=0.3, idle=0.3)
    port, _ = await serve(config, store)
    await mark_healthy(store, "slow")
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{port}{LAUNCH}") as response:
            events = await read_events(response)
    assert json.loads(events[-1].data)["phase"] == "ready"


# -- descriptor exhaustion: a few log lines, not thousands -----------------------------------------


def _limit_descriptors() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (48, 48))


async def test_running_out_of_descriptors_logs_a_line_per_interval_not_a_flood(tmp_path):
    config = tmp_path / "federation.yaml"
    config.write_text("members:\n  - name: alpha\n    url: http://127.0.0.1:9\nrouter:\n  port: 0\n"
                      "  header_timeout: 2\nlimits:\n  enabled: false\n")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "router.cli", "serve", "--config", str(config), "--log-format", "text",
        cwd=REPO, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        preexec_fn=_limit_descriptors)
    lines: list[str] = []

    async def read_log() -> None:
        assert proc.stderr is not None
        while line := await proc.stderr.readline():
            lines.append(line.decode(errors="replace"))

    reading = asyncio.create_task(read_log())
    sockets: list[socket.socket] = []
    try:
        listening = await eventually(lambda: next((re.search(r"listening on http://127.0.0.1:(\d+)", line)
                                                   for line in lines if "listening on" in line), None),
                                     timeout=20, what="the router to listen")
        port = int(listening.group(1))
        # Far more connections than descriptors: the kernel queues them, accept() fails with EMFILE.
        for _ in range(150):
            sock = socket.socket()
            sock.setblocking(False)
            sock.connect_ex(("127.0.0.1", port))
            sockets.append(sock)
        await asyncio.sleep(0)
        await eventually(lambda: any("out of system resource" in line for line in lines), timeout=10,
                         what="the accept failure to be logged")
        flood_started = time.monotonic()
        await eventually(lambda: time.monotonic() - flood_started > 3, timeout=10, interval=0.2,
                         what="three seconds of exhaustion")
        during = [line for line in lines if "out of system resource" in line]
        # Without the rate limit this is hundreds of ERROR lines (and their tracebacks) per second.
        assert 1 <= len(during) <= 2, len(during)
        for sock in sockets:
            sock.close()
        sockets.clear()
        # Once the clients leave (or the header timeout closes their connections) the router serves again.

        async def serves() -> bool:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                return False
            writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            try:
                answer = await asyncio.wait_for(reader.read(), 5)
            except asyncio.TimeoutError:
                answer = b""
            writer.close()
            return answer.startswith(b"HTTP/1.1 200")

        await eventually(serves, timeout=20, interval=0.2, what="the router to serve again")
    finally:
        for sock in sockets:
            sock.close()
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 20)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()
        reading.cancel()


def test_the_repeat_filter_lets_one_line_per_interval_through_with_a_count():
    from federation.logs import RepeatFilter

    clock = FakeClock(0.0)
    repeats = RepeatFilter(interval=10, clock=clock)

    def record(msg: str, level: int = logging.ERROR, name: str = "binderfed.x") -> logging.LogRecord:
        return logging.LogRecord(name, level, __file__, 1, msg, ("arg",), None)

    assert repeats.filter(record("failed: %s"))
    assert [repeats.filter(record("failed: %s")) for _ in range(5)] == [False] * 5
    assert repeats.filter(record("another error %s"))                     # another message: its own count
    assert all(repeats.filter(record("launch %s", logging.INFO)) for _ in range(3))   # not errors: untouched
    assert repeats.filter(record("socket.accept() out of system resource", logging.ERROR, "asyncio"))
    clock.advance(11.0)
    line = record("failed: %s")
    assert repeats.filter(line)
    assert line.getMessage() == "failed: arg (and 5 more like it in the last 11 s)"
