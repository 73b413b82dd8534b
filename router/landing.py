"""`router.landing: proxy`: the prime member's pages on the federation's domain.

The mybinder.org redirector answers every path it does not own (`/`, the about page,
BinderHub's static assets, `/versions`, ...) with the prime host's answer, so the
public domain keeps its front page. With `landing: proxy` the router does the same for
GET and HEAD on every path it has no route for, streaming the prime's answer through
with the bounds of `router.landing_proxy` (connect, response-header, read-silence and
total timeouts; a body size cap). Paths the router owns (launches, `/health`,
`/metrics`, `/status`, `/api/...`, badges, its launch script) are never proxied. With
`landing: page` or `prime` those other paths are 404, as before.

What passes, and why:

- to the prime: the visitor's content negotiation and cache validators (`Accept*`,
  `If-*`, `Range`, `Cache-Control`, `Pragma`, `User-Agent`), the visitor's address
  (`X-Forwarded-For`, `X-Real-Ip`, believed as everywhere: `router.clients`) and the
  public host and scheme (`X-Forwarded-Host`, `X-Forwarded-Proto`). Not the visitor's
  cookies or `Authorization`: the domain's cookies are the federation's (the sticky
  cookie, ...), not the prime's, and a page served to everyone needs no credentials.
- back to the visitor: the status, the body as it is (still compressed: the client is
  asked not to decompress) and the headers except hop-by-hop ones and `Set-Cookie` (a
  member must not plant cookies on the federation's domain). A redirect to the prime
  itself becomes relative, so the visitor stays on the federation's domain; a
  redirect to a member is kept; any other is refused, since the router only ever
  sends visitors to members.

Failures are answered by the router, never as a 500: no prime configured (503), the
prime unreachable or answering HTTP 500 or a redirect elsewhere (502), no response
headers in time (504), each with a page and a log line. A body that breaks a bound
after its headers were sent is cut (the connection is closed, so the visitor's
browser sees an incomplete answer, not a short one) and logged.
"""

from __future__ import annotations

import asyncio
import html
import logging

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from federation.members import Member

from .clients import forwarded_for, forwarded_headers, is_trusted_proxy
from .context import CONTEXT, RouterContext
from .pages import html_page

log = logging.getLogger("binderfed.router")

# Request headers passed to the prime (see the module docstring).
REQUEST_HEADERS = (
    "Accept", "Accept-Encoding", "Accept-Language", "Cache-Control", "Pragma", "User-Agent",
    "If-Match", "If-None-Match", "If-Modified-Since", "If-Unmodified-Since", "If-Range", "Range",
)
# RFC 9110 section 7.6.1, plus the non-standard ones still seen in the wild.
HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection",
    "te", "trailer", "trailers", "transfer-encoding", "upgrade",
})
DROPPED_RESPONSE_HEADERS = HOP_BY_HOP | {"set-cookie", "set-cookie2"}
# Paths under these prefixes are the router's own even where no route answers GET.
OWN_PREFIXES = ("/api/",)
CHUNK = 64 * 1024


class _Refused(Exception):
    """The prime's answer cannot be passed on; `response` is the router's answer instead."""

    def __init__(self, response: web.Response) -> None:
        self.response = response


def prime_member(ctx: RouterContext) -> Member | None:
    return next((m for m in ctx.membership.members() if m.prime), None)


async def handle(request: web.Request) -> web.StreamResponse:
    """Every GET/HEAD without a route of its own: the prime's answer (`landing: proxy`) or 404."""
    ctx = request.app[CONTEXT]
    if ctx.config.router.landing != "proxy" or request.path.startswith(OWN_PREFIXES):
        raise web.HTTPNotFound()
    prime = prime_member(ctx)
    if prime is None:
        log.warning("landing: proxy, but no member is prime: cannot serve %s", request.path[:200])
        return _page(503, "No front page here", "This Binder federation has no prime member to serve this page.")
    try:
        return await _proxy(request, ctx, prime)
    except _Refused as refused:
        return refused.response


def _page(status: int, title: str, message: str) -> web.Response:
    return html_page(title, f"<p>{html.escape(message)}</p>", status=status,
                     headers={"Cache-Control": "no-store"})


def _request_headers(request: web.Request, ctx: RouterContext) -> CIMultiDict[str]:
    headers: CIMultiDict[str] = CIMultiDict()
    for name in REQUEST_HEADERS:
        for value in request.headers.getall(name, ()):
            headers.add(name, value)
    trusted = ctx.config.router.trusted_networks
    headers.update(forwarded_headers(request.remote, forwarded_for(request), trusted))
    # The public host and scheme: a trusted proxy's word for them, else what the router saw.
    peer_trusted = is_trusted_proxy(request.remote, trusted)
    host = request.headers.get("X-Forwarded-Host") if peer_trusted else None
    proto = request.headers.get("X-Forwarded-Proto") if peer_trusted else None
    headers["X-Forwarded-Host"] = host or request.host
    headers["X-Forwarded-Proto"] = proto or request.scheme
    return headers


def _location(location: str, prime: Member, ctx: RouterContext) -> str | None:
    """The Location to pass on for a redirect of the prime, or None if it leads elsewhere."""
    target = URL(location)
    if not target.is_absolute():
        return location
    for member in ctx.membership.members():
        base = member.url.rstrip("/")
        if location == base or location.startswith(base + "/") or location.startswith(base + "?"):
            if member.name == prime.name:
                return location[len(base):] or "/"   # the prime itself: stay on the federation's domain
            return location
    return None


async def _proxy(request: web.Request, ctx: RouterContext, prime: Member) -> web.StreamResponse:
    assert ctx.session is not None
    settings = ctx.config.router.landing_proxy
    url = prime.url.rstrip("/") + request.raw_path   # raw_path: the path and query as the visitor wrote them
    what = f"{request.method} {request.raw_path[:200]}"
    try:
        async with asyncio.timeout(settings.timeout):
            upstream = await ctx.session.request(
                request.method, URL(url, encoded=True), headers=_request_headers(request, ctx),
                allow_redirects=False, auto_decompress=False,
                timeout=aiohttp.ClientTimeout(total=settings.total_timeout, sock_connect=settings.connect_timeout,
                                              sock_read=settings.read_timeout),
            )
    except TimeoutError:
        log.warning("landing proxy: prime member %s gave no answer to %s within %gs", prime.name, what,
                    settings.timeout, extra={"member": prime.name})
        return _page(504, "The front page is not answering",
                     f"Member {prime.name}, which serves this page, did not answer in time. Please try again.")
    except (aiohttp.ClientError, OSError) as exc:
        log.warning("landing proxy: prime member %s unreachable for %s: %s", prime.name, what,
                    str(exc) or type(exc).__name__, extra={"member": prime.name})
        return _page(502, "The front page is not reachable",
                     f"Member {prime.name}, which serves this page, cannot be reached right now. Please try again.")
    try:
        return await _pass_on(request, upstream, prime, ctx, what)
    finally:
        upstream.release()


async def _pass_on(request: web.Request, upstream: aiohttp.ClientResponse, prime: Member, ctx: RouterContext,
                   what: str) -> web.StreamResponse:
    settings = ctx.config.router.landing_proxy
    if upstream.status == 500:
        log.warning("landing proxy: prime member %s answered HTTP 500 to %s", prime.name, what,
                    extra={"member": prime.name})
        raise _Refused(_page(502, "The front page failed",
                             f"Member {prime.name}, which serves this page, had an internal error. Please try again."))
    connection_named = {token.strip().lower() for value in upstream.headers.getall("Connection", ())
                        for token in value.split(",")}
    headers: CIMultiDict[str] = CIMultiDict()
    for name, value in upstream.headers.items():
        lowered = name.lower()
        if lowered in DROPPED_RESPONSE_HEADERS or lowered in connection_named:
            continue
        if lowered == "location":
            location = _location(value, prime, ctx)
            if location is None:
                log.warning("landing proxy: prime member %s redirected %s to %r, which is not a member; refused",
                            prime.name, what, value[:200], extra={"member": prime.name})
                raise _Refused(_page(502, "The front page points elsewhere",
                                     f"Member {prime.name} redirected this page outside the federation."))
            value = location
        headers.add(name, value)
    length = upstream.content_length
    if length is not None and length > settings.max_body_bytes:
        log.warning("landing proxy: prime member %s answered %s with %d bytes, over the %d of "
                    "router.landing_proxy.max_body_bytes", prime.name, what, length, settings.max_body_bytes,
                    extra={"member": prime.name})
        raise _Refused(_page(502, "The page is too large", "This page is larger than this federation passes on."))
    if request.method == "HEAD":
        return web.Response(status=upstream.status, reason=upstream.reason, headers=headers)
    response = web.StreamResponse(status=upstream.status, reason=upstream.reason, headers=headers)
    if length is not None:
        response.content_length = length
    await response.prepare(request)
    sent = 0
    try:
        async for chunk in upstream.content.iter_chunked(CHUNK):
            sent += len(chunk)
            if sent > settings.max_body_bytes:
                raise _Cut(f"body over the {settings.max_body_bytes} bytes of router.landing_proxy.max_body_bytes")
            await response.write(chunk)
    except _Cut as cut:
        _cut(request, response, prime, what, str(cut))
        return response
    except (TimeoutError, aiohttp.ClientError) as exc:   # the prime fell silent, took too long or went away
        _cut(request, response, prime, what, str(exc) or type(exc).__name__)
        return response
    except (ConnectionError, RuntimeError):              # the visitor left
        response.force_close()
        return response
    await response.write_eof()
    return response


class _Cut(Exception):
    pass


def _cut(request: web.Request, response: web.StreamResponse, prime: Member, what: str, why: str) -> None:
    """End an answer whose headers are out without a clean end, so it is not taken as complete."""
    log.warning("landing proxy: answer of prime member %s to %s cut: %s", prime.name, what, why,
                extra={"member": prime.name})
    response.force_close()
    if request.transport is not None:
        request.transport.abort()


def setup(app: web.Application) -> None:
    """Register the catch-all; call it after every other route (aiohttp tries routes in order)."""
    app.router.add_get("/{tail:.*}", handle)
