"""Client connections the router does not keep open for nothing.

A public server must not let a client hold a connection (a file descriptor) without
sending a request: thousands of idle or half-sent connections exhaust descriptors and
the router stops accepting anyone. Two limits, both in `router`:

- `header_timeout`: a new connection must deliver its first request's headers within
  this many seconds (a "slowloris" client trickling one header byte at a time is cut
  off: 408 if it sent anything, else just closed). `GuardedSite` enforces it with a
  thin wrapper around aiohttp's protocol that only watches for the end of the header
  block, so it works the same with every aiohttp version.
- `idle_timeout`: aiohttp's `keepalive_timeout` (`create_app` sets it): a connection
  waiting for its next request, complete or not, is closed after this many seconds.

Relayed `/build/` streams are requests in progress, not idle: neither limit cuts them.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Callable

from aiohttp import web

log = logging.getLogger("binderfed.router")

_TIMEOUT_ANSWER = (b"HTTP/1.1 408 Request Timeout\r\nContent-Type: text/plain; charset=utf-8\r\n"
                   b"Connection: close\r\nContent-Length: 54\r\n\r\n"
                   b"The request's headers did not arrive in time. Goodbye\n")


class _FirstRequestDeadline(asyncio.Protocol):
    """aiohttp's protocol for one connection, closed if its first request's headers take too long."""

    def __init__(self, inner: asyncio.Protocol, timeout: float, on_timeout: Callable[[bool], None]) -> None:
        self._inner = inner
        self._timeout = timeout
        self._on_timeout = on_timeout
        self._transport: asyncio.Transport | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self._tail = b""        # the last bytes seen, so a header end split across reads is found
        self._started = False   # any byte of a request arrived

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        if self._timeout > 0:
            self._deadline = asyncio.get_running_loop().call_later(self._timeout, self._expire)
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._deadline is not None:
            self._started = True
            window = self._tail + data
            if b"\n\r\n" in window or b"\n\n" in window:  # the end of the header block
                self._deadline.cancel()
                self._deadline = None
                self._tail = b""
            else:
                self._tail = window[-3:]
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def _expire(self) -> None:
        self._deadline = None
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        if self._started:
            transport.write(_TIMEOUT_ANSWER)
        transport.close()
        self._on_timeout(self._started)


class GuardedSite(web.BaseSite):
    """A TCP site whose connections get `header_timeout()` seconds for their first request's headers."""

    __slots__ = ("_host", "_port", "_header_timeout", "_on_timeout", "_reuse_port")

    def __init__(self, runner: web.BaseRunner, host: str, port: int, *, header_timeout: Callable[[], float],
                 on_timeout: Callable[[bool], None] | None = None, backlog: int = 128,
                 reuse_port: bool = False) -> None:
        super().__init__(runner, backlog=backlog)
        self._host = host
        self._port = port
        self._reuse_port = reuse_port  # several processes on one port (the benchmark's replicas)
        self._header_timeout = header_timeout
        self._on_timeout = on_timeout or (lambda started: None)

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None

        def protocol() -> asyncio.Protocol:
            # Read per connection: a config reload changes it for the next ones.
            return _FirstRequestDeadline(server(), self._header_timeout(), self._on_timeout)

        self._server = await asyncio.get_running_loop().create_server(
            protocol, self._host, self._port, backlog=self._backlog, reuse_port=self._reuse_port or None)
