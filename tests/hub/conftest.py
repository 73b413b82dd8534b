"""Shared helpers for the hub tests: fixture files, tiny servers on loopback, a session."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def fixture_path(name: str) -> Path:
    """Path of a file in tests/fixtures (see its README for where each file comes from)."""
    path = (FIXTURES / name).resolve()
    if not path.is_file():
        pytest.fail(f"fixture file {name!r} not found in {FIXTURES.resolve()}")
    return path


def free_port() -> int:
    """A port nothing listens on (bound then released), for connection-refused tests."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


ServeApp = Callable[[web.Application], Awaitable[str]]


@pytest.fixture
async def serve_app() -> AsyncIterator[ServeApp]:
    """`url = await serve_app(app)`: serve an aiohttp app on 127.0.0.1:<free port>.

    Handlers are cancelled when their client disconnects (so a test can observe it);
    every server is stopped at teardown.
    """
    runners: list[web.AppRunner] = []

    async def serve(app: web.Application) -> str:
        runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=0.5, access_log=None)
        await runner.setup()
        runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        return f"http://127.0.0.1:{runner.addresses[0][1]}"

    yield serve
    for runner in reversed(runners):
        await runner.cleanup()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """One client session for the test, closed at teardown."""
    async with aiohttp.ClientSession() as session:
        yield session
