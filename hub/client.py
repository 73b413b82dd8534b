"""HTTP client for the member BinderHub API (see DESIGN.md, "Member BinderHub API").

One `HubClient` wraps the process's single shared `aiohttp.ClientSession` (it never
creates or closes one) and gives every call its own timeout, independent of the
session's defaults. Redirects are never followed: a member answering 3xx is an error
(`MemberHTTPError`), so a redirect loop or a redirect to another host cannot hang a
call or send a visitor's headers elsewhere.

Errors, all subclasses of `MemberError` (`hub.models`); the transport's own are in
`hub.member_errors`, the event stream is `hub.build_stream.BuildStream`:

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
from typing import Any, Mapping

import aiohttp
from yarl import URL

from .build_stream import BuildStream
from .build_tokens import token_from_page
from .events import DEFAULT_MAX_SIZE
from .member_errors import (
    MemberHTTPError,
    MemberStalled,
    MemberStreamEnded,
    MemberUnreachable,
    http_error,
    unreachable,
)
from .models import HealthReport, MemberError, MemberResponseError, parse_json, public_versions

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


def _join(base_url: str, path: str) -> str:
    return base_url.rstrip("/") + "/" + path.lstrip("/")


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
                        raise http_error(response, url)
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
            raise unreachable(exc, url, timeout) from exc

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
        return BuildStream(self.session, url, request_headers, connect_timeout, stall_timeout, self.max_event_size)

