"""HTTP client for the member BinderHub API (see DESIGN.md, "Member BinderHub API").

One `HubClient` wraps the process's single shared `aiohttp.ClientSession` (it never
creates or closes one) and gives every call its own timeout, independent of the
session's defaults. Redirects are never followed: a member answering 3xx is an error
(`MemberHTTPError`), so a redirect loop or a redirect to another host cannot hang a
call or send a visitor's headers elsewhere.

Errors, all subclasses of `MemberError` (defined in `hub.models`):

- `MemberUnreachable`: no HTTP answer (DNS, refused, reset, TLS, timeout); `.cause`
  is a short machine-readable word (`refused`, `timeout`, `dns`, `reset`, `error`).
- `MemberHTTPError`: an HTTP answer with an unexpected status; `.status`.
- `MemberResponseError`: an answer that does not follow the member API (not JSON,
  wrong shape, too large, malformed event stream).
- `MemberStalled`: an event stream that went silent for longer than the stall timeout.
- `MemberStreamEnded`: an event stream that ended (EOF or lost connection) before a
  `ready` or `failed` event.

Error messages are the client's own words (they become a member's public `reason`);
what the member sent (a body excerpt, a reason phrase, a redirect target) is in the
error's `detail`, for logs only.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
from types import TracebackType
from typing import Any, AsyncIterator, Mapping

import aiohttp
from yarl import URL

from .build_tokens import token_from_page
from .events import DEFAULT_MAX_SIZE, Comment, EventStreamError, SSEDecoder
from .models import BuildEvent, HealthReport, MemberError, MemberResponseError, parse_json, public_versions

__all__ = [
    "BuildStream",
    "HubClient",
    "MemberError",
    "MemberHTTPError",
    "MemberResponseError",
    "MemberStalled",
    "MemberStreamEnded",
    "MemberUnreachable",
]


class MemberUnreachable(MemberError):
    """No HTTP answer from the member: `cause` says why in one word."""

    def __init__(self, message: str, *, url: str | None = None, cause: str = "error") -> None:
        super().__init__(message, url=url)
        self.cause = cause


class MemberHTTPError(MemberError):
    """The member answered with an HTTP status the call does not accept."""

    def __init__(self, status: int, message: str = "", *, url: str | None = None, detail: str = "") -> None:
        super().__init__(message or f"member answered HTTP {status}", url=url, detail=detail)
        self.status = status


class MemberStalled(MemberError):
    """The member's event stream sent nothing (no event, no keepalive) for too long."""


class MemberStreamEnded(MemberError):
    """The member's event stream ended before a terminal (`ready`/`failed`) event."""


def _join(base_url: str, path: str) -> str:
    return base_url.rstrip("/") + "/" + path.lstrip("/")


def _unreachable(exc: BaseException, url: str, timeout: float | None = None) -> MemberUnreachable:
    """Turn a transport exception into a MemberUnreachable naming the cause."""
    if isinstance(exc, TimeoutError):
        after = f" after {timeout:g}s" if timeout is not None else ""
        return MemberUnreachable(f"{url}: timed out{after}", url=url, cause="timeout")
    os_error: BaseException | None = exc
    if isinstance(exc, aiohttp.ClientConnectorError):
        os_error = exc.os_error
    while os_error is not None and not isinstance(os_error, OSError):
        os_error = os_error.__cause__
    cause, detail = "error", str(exc) or type(exc).__name__
    if isinstance(os_error, socket.gaierror) or isinstance(exc, aiohttp.ClientConnectorDNSError):
        cause, detail = "dns", f"cannot resolve host ({os_error or exc})"
    elif isinstance(os_error, ConnectionRefusedError) or getattr(os_error, "errno", None) == errno.ECONNREFUSED:
        cause, detail = "refused", "connection refused"
    elif isinstance(exc, aiohttp.ServerDisconnectedError) or isinstance(os_error, ConnectionResetError):
        cause, detail = "reset", f"connection closed by member ({exc})"
    elif isinstance(os_error, OSError) and os_error.errno:
        detail = f"{os.strerror(os_error.errno)} ({exc})"
    return MemberUnreachable(f"{url}: {detail}", url=url, cause=cause)


def _http_error(response: aiohttp.ClientResponse, url: str) -> MemberHTTPError:
    status = response.status
    message = f"{url}: member answered HTTP {status}"
    detail = f"reason phrase {response.reason!r}" if response.reason else ""
    location = response.headers.get("Location")
    if 300 <= status < 400:
        message += " (redirect not followed)"
        if location:
            detail += f"{', ' if detail else ''}Location {location[:200]!r}"
    return MemberHTTPError(status, message, url=url, detail=detail)


class HubClient:
    """Calls one member's HTTP API through a shared session.

    `max_body_size` bounds JSON documents (`/health`, `/versions`); `max_event_size`
    bounds one line and one event of a `/build/` stream. `user_agent`, if given, is
    sent with every request.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        max_body_size: int = DEFAULT_MAX_SIZE,
        max_event_size: int = DEFAULT_MAX_SIZE,
        user_agent: str | None = None,
    ) -> None:
        self._session = session
        self.max_body_size = max_body_size
        self.max_event_size = max_event_size
        self._base_headers: dict[str, str] = {"User-Agent": user_agent} if user_agent else {}

    @property
    def session(self) -> aiohttp.ClientSession:
        return self._session

    # -- JSON documents ---------------------------------------------------------------

    async def health(self, base_url: str, timeout: float) -> HealthReport:
        """GET `<base>/health` and parse it; a 503 with a health document is a report too.

        A 503 without a JSON body (e.g. a load balancer's error page) raises
        `MemberHTTPError(503)`; any other status than 200/503 raises `MemberHTTPError`.
        """
        url = _join(base_url, "health")
        status, body = await self._get_body(url, timeout)
        if status not in (200, 503):
            raise MemberHTTPError(status, f"{url}: member answered HTTP {status} to a health check", url=url)
        try:
            document = parse_json(body, "health answer")
        except MemberResponseError as exc:
            if status == 503:
                raise MemberHTTPError(503, f"{url}: HTTP 503 without a JSON health document", url=url,
                                      detail=exc.detail) from None
            raise MemberResponseError(f"{url}: {exc}", url=url, detail=exc.detail) from None
        try:
            return HealthReport.from_json(document, status)
        except MemberResponseError as exc:
            raise MemberResponseError(f"{url}: {exc}", url=url, detail=exc.detail) from exc

    async def versions(self, base_url: str, timeout: float) -> dict[str, Any]:
        """GET `<base>/versions`: what is kept of the member's JSON object
        (`hub.models.public_versions`: `binderhub` and `builder_info`, bounded)."""
        url = _join(base_url, "versions")
        status, body = await self._get_body(url, timeout)
        if status != 200:
            raise MemberHTTPError(status, f"{url}: member answered HTTP {status} to /versions", url=url)
        try:
            document = parse_json(body, "versions answer")
        except MemberResponseError as exc:
            raise MemberResponseError(f"{url}: {exc}", url=url, detail=exc.detail) from None
        if not isinstance(document, dict):
            raise MemberResponseError(f"{url}: versions answer is not a JSON object", url=url)
        return public_versions(document)

    async def build_token(self, base_url: str, provider_spec: str, headers: Mapping[str, str] | None = None,
                          *, timeout: float) -> str | None:
        """The build token the member's `/v2/<provider_spec>` page embeds for a visitor (see
        `hub.build_tokens`), or None if its page has none (a BinderHub without build tokens).

        `headers` carry the visitor's address (`X-Forwarded-For` / `X-Real-Ip`). No Origin
        is sent, so the token is tied to the member's own host, which is also the Host of
        the `/build/` request it goes with. Raises `MemberError` subclasses as `health` does.
        """
        url = _join(base_url, "v2/" + provider_spec.lstrip("/"))
        status, body = await self._get_body(url, timeout, accept="text/html", headers=headers)
        if status != 200:
            raise MemberHTTPError(status, f"{url}: member answered HTTP {status} to its launch page", url=url)
        return token_from_page(body.decode("utf-8", "replace"))

    async def _get_body(self, url: str, timeout: float, *, accept: str = "application/json",
                        headers: Mapping[str, str] | None = None) -> tuple[int, bytes]:
        """GET `url` with an overall `timeout`; return (status, body) with the body size-capped."""
        limit = self.max_body_size
        headers = {**self._base_headers, **(headers or {}), "Accept": accept}
        try:
            async with asyncio.timeout(timeout):
                async with self._session.get(
                    URL(url, encoded=True),
                    headers=headers,
                    allow_redirects=False,
                    timeout=aiohttp.ClientTimeout(total=timeout),
                ) as response:
                    if 300 <= response.status < 400:
                        raise _http_error(response, url)
                    if response.content_length is not None and response.content_length > limit:
                        response.close()
                        raise MemberResponseError(
                            f"{url}: answer of {response.content_length} bytes is larger than {limit} bytes", url=url
                        )
                    body = bytearray()
                    async for chunk in response.content.iter_any():
                        body += chunk
                        if len(body) > limit:
                            response.close()
                            raise MemberResponseError(f"{url}: answer larger than {limit} bytes", url=url)
                    return response.status, bytes(body)
        except MemberError:
            raise
        except aiohttp.ClientResponseError as exc:  # the member's HTTP itself is malformed
            raise MemberResponseError(f"{url}: invalid HTTP answer", url=url, detail=str(exc.message)[:200]) from exc
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise _unreachable(exc, url, timeout) from exc

    # -- the build event stream -------------------------------------------------------

    def build_events(
        self,
        base_url: str,
        provider_spec: str,
        query: str = "",
        headers: Mapping[str, str] | None = None,
        *,
        connect_timeout: float,
        stall_timeout: float | None,
    ) -> "BuildStream":
        """Open `<base>/build/<provider_spec>?<query>` and iterate its events.

        `provider_spec` (e.g. `gh/org/repo/HEAD`) and `query` are sent exactly as given
        (already URL-escaped; nothing is re-encoded). `headers` are added to the request
        (the relay passes `X-Forwarded-For` / `X-Real-Ip`); `Accept: text/event-stream`
        is always sent. `connect_timeout` bounds everything up to the response headers;
        `stall_timeout` (None = no limit) bounds the silence between two items of the
        stream, where keepalive comments count as items but are not yielded.

        Returns a `BuildStream`, an async iterator of `BuildEvent` that is also an async
        context manager. The request is made on the first iteration. Iteration ends
        after the first terminal (`ready`/`failed`) event. Prefer::

            async with client.build_events(url, spec, connect_timeout=5, stall_timeout=60) as events:
                async for event in events:
                    ...

        which closes the upstream connection as soon as the block exits (break,
        exception, cancellation). `await events.aclose()` does the same explicitly.
        """
        url = _join(base_url, "build/" + provider_spec.lstrip("/"))
        query = query.lstrip("?")
        if query:
            url += "?" + query
        request_headers = {**self._base_headers, **(headers or {})}
        for name in [h for h in request_headers if h.lower() in ("accept", "cache-control")]:
            del request_headers[name]
        request_headers["Accept"] = "text/event-stream"
        request_headers["Cache-Control"] = "no-cache"
        return BuildStream(self, url, request_headers, connect_timeout, stall_timeout)


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
        client: HubClient,
        url: str,
        headers: Mapping[str, str],
        connect_timeout: float,
        stall_timeout: float | None,
    ) -> None:
        self.url = url
        self._state = _StreamState()
        self._gen = _stream_events(
            client.session, url, dict(headers), connect_timeout, stall_timeout, client.max_event_size, self._state
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
        raise _unreachable(exc, url, timeout) from exc
    if response.status != 200:
        response.close()
        raise _http_error(response, url)
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
