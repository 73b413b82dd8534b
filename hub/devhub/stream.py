"""Writing one `/build/` event stream: events, keepalive comments, a client that left."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any, Mapping

from aiohttp import web

from ..events import encode_comment, encode_event


class ClientGone(Exception):
    """The client of an event stream disconnected."""


class EventStream:
    """Serialises event and keepalive writes on one streaming response."""

    def __init__(self, request: web.Request, response: web.StreamResponse, keepalive: float) -> None:
        self._request = request
        self._response = response
        self._keepalive = keepalive
        self._lock = asyncio.Lock()
        self._keepalive_task: asyncio.Task[None] | None = None

    async def write(self, data: bytes) -> None:
        async with self._lock:
            try:
                await self._response.write(data)
            except (ConnectionError, RuntimeError) as exc:
                raise ClientGone() from exc

    async def emit(self, event: Mapping[str, Any]) -> None:
        await self.write(encode_event(json.dumps(event)))

    def start_keepalive(self) -> None:
        self._keepalive_task = asyncio.create_task(self._keepalive_loop())

    async def stop_keepalive(self) -> None:
        task, self._keepalive_task = self._keepalive_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _keepalive_loop(self) -> None:
        while True:
            await asyncio.sleep(self._keepalive)
            try:
                await self.write(encode_comment("keepalive"))
            except ClientGone:
                return

    async def wait_client_gone(self) -> None:
        """Stay silent until the client disconnects, then raise ClientGone."""
        await self.stop_keepalive()
        while True:
            transport = self._request.transport
            if transport is None or transport.is_closing():
                raise ClientGone()
            await asyncio.sleep(0.05)


class CollectedStream(EventStream):
    """Runs a launch for a client without JavaScript: events are kept, not written."""

    def __init__(self, request: web.Request) -> None:
        super().__init__(request, web.StreamResponse(), keepalive=3600)
        self.events: list[Mapping[str, Any]] = []

    async def write(self, data: bytes) -> None:
        if self._request.transport is None or self._request.transport.is_closing():
            raise ClientGone()

    async def emit(self, event: Mapping[str, Any]) -> None:
        await self.write(b"")
        self.events.append(event)
