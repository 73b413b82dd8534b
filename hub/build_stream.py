"""A member's `/build/` event stream, read as `BuildEvent`s with stall and size limits.

`HubClient.build()` opens one; iterating it raises the errors `hub.client` lists.
"""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import AsyncIterator, Mapping

import aiohttp
from yarl import URL

from .events import Comment, EventStreamError, SSEDecoder
from .member_errors import MemberStalled, MemberStreamEnded, http_error, unreachable
from .models import BuildEvent, MemberResponseError


class _StreamState:
    """What the event generator and its BuildStream share (the generator must not
    reference the BuildStream, or dropping an unfinished stream would leave a cycle
    that only the cyclic GC collects, keeping the upstream connection open)."""

    __slots__ = ("response", "decoder")

    def __init__(self) -> None:
        self.response: aiohttp.ClientResponse | None = None
        self.decoder: SSEDecoder | None = None


class BuildStream:
    """Async iterator of a member's build events; also an async context manager.

    Raises (from iteration) `MemberUnreachable`, `MemberHTTPError`, `MemberResponseError`,
    `MemberStalled` or `MemberStreamEnded` as described in the module docstring.
    `decoder` exposes the underlying `SSEDecoder` (e.g. its `comments` count) once
    the stream is open. A stream dropped unfinished without `aclose()` is still closed
    (by the event loop's async-generator finaliser), but only `async with`/`aclose()`
    close it deterministically.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        url: str,
        headers: Mapping[str, str],
        connect_timeout: float,
        stall_timeout: float | None,
        max_event_size: int,
    ) -> None:
        self.url = url
        self._state = _StreamState()
        self._gen = _stream_events(
            session, url, dict(headers), connect_timeout, stall_timeout, max_event_size, self._state
        )

    @property
    def decoder(self) -> SSEDecoder | None:
        return self._state.decoder

    @property
    def response(self) -> aiohttp.ClientResponse | None:
        return self._state.response

    def __aiter__(self) -> "BuildStream":
        return self

    async def __anext__(self) -> BuildEvent:
        return await self._gen.__anext__()

    async def aclose(self) -> None:
        """Stop iterating and close the upstream connection (idempotent)."""
        await self._gen.aclose()
        if self._state.response is not None:
            self._state.response.close()

    async def __aenter__(self) -> "BuildStream":
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


async def _open_stream(
    session: aiohttp.ClientSession, url: str, headers: Mapping[str, str], timeout: float
) -> aiohttp.ClientResponse:
    try:
        async with asyncio.timeout(timeout):
            response = await session.get(
                URL(url, encoded=True),
                headers=headers,
                allow_redirects=False,
                # No total/read limit: builds can take an hour; stalls are ours to detect.
                timeout=aiohttp.ClientTimeout(total=None, connect=None, sock_connect=timeout, sock_read=None),
            )
    except aiohttp.ClientResponseError as exc:
        raise MemberResponseError(f"{url}: invalid HTTP answer", url=url, detail=str(exc.message)[:200]) from exc
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        raise unreachable(exc, url, timeout) from exc
    if response.status != 200:
        response.close()
        raise http_error(response, url)
    content_type = response.headers.get("Content-Type", "")
    if content_type.split(";")[0].strip().lower() != "text/event-stream":
        response.close()
        raise MemberResponseError(
            f"{url}: expected a text/event-stream answer", url=url, detail=f"Content-Type {content_type[:100]!r}"
        )
    return response


async def _stream_events(
    session: aiohttp.ClientSession,
    url: str,
    headers: Mapping[str, str],
    connect_timeout: float,
    stall: float | None,
    max_size: int,
    state: _StreamState,
) -> AsyncIterator[BuildEvent]:
    try:
        response = state.response = await _open_stream(session, url, headers, connect_timeout)
        decoder = state.decoder = SSEDecoder(max_line_size=max_size, max_event_size=max_size)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + stall if stall is not None else None
        while True:
            try:
                async with asyncio.timeout_at(deadline):
                    chunk = await response.content.readany()
            except TimeoutError:
                raise MemberStalled(f"{url}: event stream silent for more than {stall:g}s", url=url) from None
            except (aiohttp.ClientError, OSError) as exc:
                raise MemberStreamEnded(
                    f"{url}: connection lost during the event stream ({exc or type(exc).__name__})", url=url
                ) from exc
            if not chunk:
                raise MemberStreamEnded(f"{url}: member closed the event stream before a ready or failed event", url=url)
            try:
                items = decoder.feed(chunk)
            except EventStreamError as exc:
                raise MemberResponseError(f"{url}: malformed event stream: {exc}", url=url) from exc
            for item in items:
                if isinstance(item, Comment):
                    continue
                try:
                    event = BuildEvent.from_data(item.data)
                except MemberResponseError as exc:
                    raise MemberResponseError(f"{url}: {exc}", url=url, detail=exc.detail) from exc
                yield event
                if event.terminal:
                    return
            if items and stall is not None:
                # Time spent by the consumer between our yields is not member silence.
                deadline = loop.time() + stall
    finally:
        if state.response is not None:
            state.response.close()
