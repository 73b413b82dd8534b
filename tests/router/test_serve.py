"""`binderfed serve` as a process: graceful stop on SIGTERM, and what it says when it
cannot start (a bad config combination, an unopenable launch log, a busy port)."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import time

import aiohttp
import pytest
import yaml

from hub.events import Event, SSEDecoder
from tests.support.cli import run_binderfed
from tests.support.serve_proc import ServeProcess
from tests.support.waiting import eventually

LAUNCH = "/build/gh/binder-examples/requirements/HEAD"


def write_config(tmp_path, members, **router) -> str:
    config = {
        "members": [{"name": hub.settings.name, "url": hub.url} for hub in members],
        "health": {"period": 0.2, "failed_period": 0.4, "jitter": 0, "timeout": 1, "retries": 0},
        "router": {"port": 0, "forward": {"v2": "redirect", "build": "stream", "repo": "redirect"}, **router},
        "limits": {"enabled": False},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


async def healthy(http, url: str) -> bool:
    async with http.get(url + "/api/v1/members") as response:
        return all(m["state"] == "healthy" for m in (await response.json())["members"])


class Stream:
    """One relayed /build/ stream read in the background: its events and when it ended."""

    def __init__(self, http: aiohttp.ClientSession, url: str) -> None:
        self.events: list[dict] = []
        self.first = asyncio.Event()
        self.ended_at: float | None = None
        self.error: BaseException | None = None
        self.task = asyncio.create_task(self._read(http, url))

    async def _read(self, http, url) -> None:
        decoder = SSEDecoder()
        try:
            async with http.get(url + LAUNCH, headers={"Accept": "text/event-stream"},
                                timeout=aiohttp.ClientTimeout(total=120)) as response:
                assert response.status == 200
                async for chunk in response.content.iter_any():
                    for item in decoder.feed(chunk):
                        if isinstance(item, Event):
                            self.events.append(json.loads(item.data))
                            self.first.set()
        except (aiohttp.ClientError, AssertionError) as exc:
            self.error = exc
        finally:
            self.ended_at = time.monotonic()
            self.first.set()

    @property
    def final(self) -> dict | None:
        return self.events[-1] if self.events and self.events[-1].get("phase") in ("ready", "failed") else None


@pytest.fixture
async def serve_procs():
    procs: list[ServeProcess] = []

    def make(config, *args, **kwargs) -> ServeProcess:
        proc = ServeProcess(config, *args, **kwargs)
        procs.append(proc)
        return proc

    yield make
    for proc in procs:
        await proc.stop()


async def test_sigterm_mid_stream_lets_the_stream_finish_and_stops_being_ready_first(
        start_devhub, serve_procs, http, tmp_path):
    """SIGTERM while a relayed build is under way: /ready says 503 at once, the router
    keeps serving for the grace, the stream reaches its ready event (no cut), the
    stream's linger is cut short, and the process exits 0 well before its deadline."""
    hub = await start_devhub("alpha", build_seconds=2.5, launch_seconds=0.5, event_interval=0.2)
    config = write_config(tmp_path, [hub], shutdown={"grace": 1.0, "stream_deadline": 15}, stream={"linger": 60})
    router = serve_procs(config)
    url = await router.start()
    await eventually(lambda: healthy(http, url), timeout=10, what="the member healthy")

    stream = Stream(http, url)
    await asyncio.wait_for(stream.first.wait(), 10)
    assert stream.events and stream.final is None, stream.events
    sent = router.signal(signal.SIGTERM)

    async def not_ready():
        async with http.get(url + "/ready") as response:
            return response.status == 503 and (await response.json())["ready"] is False

    await eventually(not_ready, timeout=0.8, what="/ready answering 503 within the grace")
    async with http.get(url + "/health") as response:
        assert response.status == 200  # liveness: still alive
    # Still serving during the grace: a new launch is redirected as usual.
    async with http.get(url + "/v2/gh/binder-examples/requirements/HEAD", allow_redirects=False) as response:
        assert response.status == 307 and response.headers["Location"].startswith(hub.url)

    code = await router.wait(timeout=20)
    stopped = time.monotonic() - sent
    await asyncio.wait_for(stream.task, 5)
    assert code == 0, router.output()
    assert stream.error is None, stream.error
    assert stream.final is not None and stream.final["phase"] == "ready", stream.events[-3:]
    assert stream.ended_at is not None and stream.ended_at - sent < 15  # its 60 s linger was cut
    assert stopped < 15, f"took {stopped:.1f} s to stop"
    output = router.output()
    assert "shutting down: not ready any more" in output
    assert "1 finished" in output and "0 still running" in output, output
    print(f"\nSIGTERM to ready event: {stream.ended_at - sent:.2f} s; to exit: {stopped:.2f} s")


async def streaming_router(start_devhub, serve_procs, http, tmp_path, **shutdown) -> tuple[ServeProcess, str, Stream]:
    """A router relaying one long build (a minute) from a dev member, its first event seen."""
    hub = await start_devhub("alpha", build_seconds=60, launch_seconds=1, event_interval=0.2)
    router = serve_procs(write_config(tmp_path, [hub], shutdown=shutdown))
    url = await router.start()
    await eventually(lambda: healthy(http, url), timeout=10, what="the member healthy")
    stream = Stream(http, url)
    await asyncio.wait_for(stream.first.wait(), 10)
    return router, url, stream


async def test_sigterm_ends_a_stream_past_its_deadline_with_a_final_event(start_devhub, serve_procs, http, tmp_path):
    router, _, stream = await streaming_router(start_devhub, serve_procs, http, tmp_path, grace=0.3, stream_deadline=1.0)
    sent = router.signal(signal.SIGTERM)
    code = await router.wait(timeout=20)
    stopped = time.monotonic() - sent
    await asyncio.wait_for(stream.task, 5)
    assert code == 0, router.output()
    final = stream.final
    assert final is not None, stream.events[-3:]
    assert final["phase"] == "failed" and final["status_code"] == 503
    assert "shutting down" in final["message"] and "launch again" in final["message"]
    assert 1.3 <= stopped < 10, f"took {stopped:.1f} s to stop"
    print(f"\nSIGTERM to exit with one stream ended at its deadline: {stopped:.2f} s")


async def test_a_second_signal_skips_the_waits(start_devhub, serve_procs, http, tmp_path):
    router, url, stream = await streaming_router(start_devhub, serve_procs, http, tmp_path, grace=30, stream_deadline=30)
    sent = router.signal(signal.SIGTERM)

    async def not_ready():
        async with http.get(url + "/ready") as response:
            return response.status == 503

    await eventually(not_ready, timeout=5, what="the first signal taken")
    router.signal(signal.SIGINT)
    code = await router.wait(timeout=15)
    await asyncio.wait_for(stream.task, 5)
    assert code == 0 and time.monotonic() - sent < 10
    assert stream.final is not None and stream.final["status_code"] == 503


async def test_reports_with_the_store_url_from_the_command_line_start(tmp_path, serve_procs, http, redis_url):
    """The chart passes a store URL with credentials as --store-url; agent reports read
    from that store must not make the router exit because the file has no store.url."""
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"router": {"port": 0}, "reports": {"enabled": True}}))
    refused = await run_binderfed("serve", "--config", str(path))
    assert refused.returncode == 1 and "reports.url" in refused.stderr
    router = serve_procs(path, f"--store-url={redis_url}")
    url = await router.start()
    async with http.get(url + "/health") as response:
        assert (await response.json())["store"] == "ok"
    assert "no Redis to read agent reports" not in router.output()
    checked = await run_binderfed("check-config", str(path), f"--store-url={redis_url}")
    assert checked.returncode == 0, checked.stderr
    assert (await run_binderfed("check-config", str(path))).returncode == 1


async def test_a_launch_log_it_cannot_open_is_reported_as_such(tmp_path):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"router": {"port": 0}, "launch_log": {"sink": f"file:{blocker}/launches.jsonl"}}))
    result = await run_binderfed("serve", "--config", str(path))
    assert result.returncode == 1
    assert "launch_log.sink" in result.stderr and "cannot open" in result.stderr, result.stderr
    assert "cannot listen" not in result.stderr


async def test_a_busy_port_is_reported_as_cannot_listen(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump({"router": {"port": port}}))
        result = await run_binderfed("serve", "--config", str(path))
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr, result.stderr


async def test_binderfed_host_sets_the_listen_address(tmp_path, serve_procs, http):
    """The image sets BINDERFED_HOST=0.0.0.0 (Dockerfile), so a mounted config without
    router.host is reachable through `docker run -p`."""
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"router": {"port": 0}}))
    router = serve_procs(path, env={"BINDERFED_HOST": "0.0.0.0"})
    url = await router.start()
    assert "router listening on http://0.0.0.0:" in router.output()
    async with http.get(url + "/ready") as response:
        assert response.status == 200 and (await response.json()) == {"ready": True}
