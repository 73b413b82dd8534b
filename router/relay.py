"""Stream mode for `/build/`: relay the chosen member's event stream, with failover.

(`router.forward: stream`, DESIGN.md "Forwarding".) The router opens the member's
`/build/` stream itself (`hub.client`) and passes every event on unchanged: the
member's `data:` payload is written again as is, in the same order. While the
member is quiet the router sends its own `:keepalive` comments.

If the member fails for infrastructure reasons before `ready` (`hub.failures`
decides which failures those are), the launch moves to the next member of the same
decision's ranking, and the client is told in a `message` event:

    id: beta.<signature>
    data: {"phase": "building", "message": "Member alpha failed (member full); trying member beta\\n"}

The event's `id` names the new member, signed (`router.sticky`): a browser's
EventSource sends it back as `Last-Event-ID` when it reconnects, and the router then
places the reconnected stream on that member again (like the sticky cookie, which
names the member relayed when the response headers went out, with the first event).
After `router.stream.max_attempts` members the client gets a final `failed` event
with `status_code` 503. A `failed` event that is not the member's fault (a build
error in the repository) is relayed once and not retried.

A `ready` event is relayed only when its server `url` is on the member's own origin
(`federation.members.Member.serves`: the member's URL or `hub_url`, or a subdomain of
either); anything else (another host, `javascript:`) would send the visitor, and the
server's token, where the member has no business sending them, so it counts as the
member answering outside the member API and the launch moves on to the next member.

What the member sees: the visitor's address in `X-Forwarded-For` / `X-Real-Ip`
(members rate-limit per visitor), and nothing else of the visitor's request: no
cookies, no `Authorization`, no federation credentials.

Build tokens: a launch from the router's own launch page (its `/build/` URL carries
the page's valid token, `router.launch_page.page_launch`) gets what the member's own
page would give it: before each attempt the relay fetches a build token from that
member's `/v2/` page (with the visitor's address) and passes it as `build_token=`,
so the member's per-visitor rate limit does not apply; a failover fetches one from
the next member (a token is tied to the member that issued it). The router's own
token never reaches a member. A member that cannot be reached for its page fails the
attempt like an unreachable `/build/`; a page without a token (an older BinderHub)
or an error answer means the launch goes on without one.

Every attempt is recorded like a redirect (in flight on its member, launch log,
`federation_launches` with reason `failover` after the first); a failed attempt's
in-flight count is released. Outcomes feed the image-cache map (`built`/`ready`) and
passive health (`health.outlier`).

A departed client, keepalives and the router's shutdown are seen by the sweep over
every relayed stream of the app (`router.active_streams`); a stream the stopping
router cannot relay to its end gets a final `failed` event of its own (503) here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from urllib.parse import quote

from aiohttp import web

from federation.config import FederationConfig
from federation.members import Member
from federation.membership import MembershipSnapshot
from federation.placement.decision import Decision
from federation.spec import LaunchRequest
from hub.client import MemberUnreachable
from hub.events import encode_comment, encode_event
from hub.failures import InfraFailure, classify_failure
from hub.models import BuildEvent, MemberError, MemberResponseError

from . import pipeline
from .active_streams import FINAL_WRITE_TIMEOUT, SHUTTING_DOWN, STREAMS
from .clients import forwarded_for, forwarded_headers
from .context import RouterContext
from .launch_page import TOKEN_PARAM, page_launch
from .pages import CORS_HEADERS
from .sticky_cookie import set_sticky_cookie, sticky_member

log = logging.getLogger("binderfed.relay")

FAILOVER_REASON = pipeline.FAILOVER_REASON
KEEPALIVE = encode_comment("keepalive")
COALESCE_BYTES = 64 * 1024  # relayed events queued at most before they are written


# The visitor's address (X-Forwarded-For / X-Real-Ip for the member) is router.clients'
# concern, shared with the abuse limits and the admin API. Every relayed stream of one
# app (the disconnect sweep, keepalives, shutdown) is router.active_streams'.


class _ClientGone(Exception):
    """Writing to the client failed: it disconnected."""


# -- one relayed launch -------------------------------------------------------------------


def _sticky(ctx: RouterContext, snapshot: MembershipSnapshot, request: web.Request,
            launch: LaunchRequest) -> str | None:
    """The member a reconnecting EventSource names (Last-Event-ID, a signed sticky value the
    router sent as a failover notice's id), else the sticky cookie's."""
    last_id = ctx.sticky.member(request.headers.get("Last-Event-ID"), launch.repo_key)
    if last_id is not None and snapshot.get(last_id) is not None:
        return last_id
    return sticky_member(ctx, snapshot.config, request, launch)


async def relay_build(request: web.Request, ctx: RouterContext, snapshot: MembershipSnapshot,
                      launch: LaunchRequest) -> web.StreamResponse:
    """Answer `/build/<provider>/<spec>` in stream mode (`snapshot`: the handler's one read of it)."""
    # Limits checked, placed and counted in flight on its member as a redirected launch is.
    admission = await pipeline.admit(ctx, snapshot, request, launch, _sticky(ctx, snapshot, request, launch))
    if admission.refusal is not None:
        return admission.refusal
    assert admission.decision is not None
    relay = _Relay(request, ctx, launch, admission.decision, snapshot.config)
    return await relay.run()


class _Relay:
    def __init__(self, request: web.Request, ctx: RouterContext, launch: LaunchRequest, decision: Decision,
                 config: FederationConfig) -> None:
        self.request = request
        self.ctx = ctx
        self.config = config  # the one it was admitted under, for the whole launch, even across a reload
        self.settings = self.config.router.stream
        self.launch = launch
        self.decision = decision
        self.streams = request.app[STREAMS]
        self.response: web.StreamResponse | None = None
        self.task = asyncio.current_task()
        self.started = time.monotonic()
        self.last_write = self.started
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._flush_scheduled = False
        self._flushing: asyncio.Task[None] | None = None
        self.member: Member = decision.member  # type: ignore[assignment]
        self.reason = decision.reason  # why self.member has the launch ("failover" after the first)
        self.last_phase = ""
        self.outcome: str | None = None
        self.stop_reason: str | None = None
        self.closed = False  # the handler is done with the stream: no more writes, no stop()
        self.headers = forwarded_headers(
            request.remote, forwarded_for(request), self.config.router.trusted_networks
        )
        # From the router's launch page: fetch each member's build token (the module docstring).
        self.page_launch, self.query = page_launch(request, launch)

    # -- what ActiveStreams asks ------------------------------------------------------

    def client_left(self) -> bool:
        transport = self.request.transport
        return transport is None or transport.is_closing()

    def keepalive_due(self, now: float) -> bool:
        return not self.closed and now - self.last_write >= self.settings.keepalive

    async def write_keepalive(self) -> None:
        self.last_write = time.monotonic()  # due again only a period later, even if the client is slow
        try:
            if not self.closed:
                await self._write(KEEPALIVE)
        except _ClientGone:
            self.stop("client left")

    def stop(self, why: str) -> None:
        if self.closed:
            return
        if self.stop_reason is None and self.task is not None and not self.task.done():
            self.stop_reason = why
            self.task.cancel()

    # -- the stream to the client -----------------------------------------------------

    # Events are written in batches: a relayed event is queued, and the queue is written
    # when the relay next waits for the member (a call_soon callback runs only then), when
    # it holds COALESCE_BYTES, or at once for what the client must see now (the final
    # event, a failover notice, a keepalive). A member sending a burst (a log tail, or a
    # fast replay) costs one write to the client instead of one per event; a member
    # sending one event at a time still gets each written as soon as it arrives.

    async def _send(self, data: bytes, *, now: bool = False) -> None:
        self._pending.append(data)
        self._pending_size += len(data)
        if now or self._pending_size >= COALESCE_BYTES:
            await self._write()
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush_later)

    def _flush_later(self) -> None:
        self._flush_scheduled = False
        if self._pending and (self._flushing is None or self._flushing.done()):
            self._flushing = asyncio.create_task(self._flush())

    async def _flush(self) -> None:
        try:
            while self._pending:
                await self._write()
        except _ClientGone:
            self.stop("client left")

    async def _write(self, data: bytes = b"") -> None:
        """Write everything queued, then `data`, in order; raise _ClientGone if the client left."""
        flushing = self._flushing
        if flushing is not None and not flushing.done() and flushing is not asyncio.current_task():
            await flushing  # the queue goes first; this also waits for a slow client (backpressure)
        if data:
            self._pending.append(data)
        if not self._pending:
            return
        chunk = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
        self._pending.clear()
        self._pending_size = 0
        self.last_write = time.monotonic()
        try:
            if self.response is None:
                await self._prepare()
            assert self.response is not None
            await self.response.write(chunk)
        except (ConnectionError, RuntimeError) as exc:
            raise _ClientGone() from exc

    async def _prepare(self) -> None:
        """Send the response headers, at the first write: a member that fails before its
        first event (refused, 5xx, full) is then not the one they and the cookie name."""
        member = self.member
        response = web.StreamResponse(headers={
            **CORS_HEADERS,
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",  # nginx in front of the router must not buffer the stream
            pipeline.MEMBER_HEADER: member.name,
            pipeline.REASON_HEADER: self.reason,
        })
        set_sticky_cookie(self.ctx, self.config, self.request, response, member.name, self.launch)
        self.response = response
        await response.prepare(self.request)

    async def run(self) -> web.StreamResponse:
        metrics = self.ctx.metrics
        self.streams.add(self)
        try:
            metrics.relayed_streams.inc()
            try:
                await self._attempts()
            finally:
                metrics.relayed_streams.dec()
            if self.settings.linger > 0 and not self.streams.closing.is_set():
                # As BinderHub does: let the client close first, or a careless EventSource
                # reconnects and launches again. A stopping router does not wait for that.
                # (asyncio.timeout, not wait_for: on Python 3.11 wait_for can lose a cancel, hub.tasks.)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.settings.linger):
                        await self.streams.closing.wait()
        except (_ClientGone, asyncio.CancelledError) as exc:
            # A cancellation of our own (stop()) ends this stream only; any other is re-raised.
            ours = isinstance(exc, asyncio.CancelledError) and (
                self.stop_reason is not None and self.task is not None and self.task.uncancel() == 0)
            if self.outcome is None and self.stop_reason == SHUTTING_DOWN and ours:
                await self._end_for_shutdown()
            elif self.outcome is None and self.stop_reason != SHUTTING_DOWN:
                self._finish("client_gone")
                log.info("client left launch %s on member %s", self.launch.provider_spec, self.member.name,
                         extra={"member": self.member.name, "repo_key": self.launch.repo_key})
            if isinstance(exc, asyncio.CancelledError) and not ours:
                raise
            # Nobody reads this answer any more (or the router is stopping).
            return self.response or web.Response(status=503, text="stream ended\n")
        finally:
            self.closed = True
            self.streams.discard(self)
            if self._flushing is not None and not self._flushing.done():
                self._flushing.cancel()
        response = self.response
        assert response is not None  # every way through _attempts ends with a write
        with contextlib.suppress(ConnectionError, RuntimeError):
            await response.write_eof()
        return response

    async def _end_for_shutdown(self) -> None:
        """The final event of a stream the stopping router cannot relay to its end."""
        self._finish("router_shutdown")
        message = (f"This router is shutting down and stopped following this launch on member {self.member.name} "
                   f"before it was ready. Please launch again; another router of the federation takes it.\n")
        log.warning("launch %s on member %s ended: the router is shutting down", self.launch.provider_spec,
                    self.member.name, extra={"member": self.member.name, "repo_key": self.launch.repo_key})
        event = encode_event(json.dumps({"phase": "failed", "status_code": 503, "message": message}))
        with contextlib.suppress(_ClientGone, TimeoutError):
            async with asyncio.timeout(FINAL_WRITE_TIMEOUT):
                await self._write(event)

    def _finish(self, outcome: str) -> None:
        if self.outcome is None:
            self.outcome = outcome
            self.ctx.metrics.launch_outcomes.labels(self.member.name, outcome).inc()

    async def _attempts(self) -> None:
        ctx, launch = self.ctx, self.launch
        tried: list[tuple[Member, InfraFailure]] = []
        while True:  # self.member's launch is recorded: by pipeline.admit(), then by pipeline.admit_next()
            member = self.member
            failure = await self._relay_from(member)
            if failure is None:
                return
            tried.append((member, failure))
            await self._member_failed(member, failure)
            following = None
            if len(tried) < self.settings.max_attempts:
                following = await pipeline.admit_next(ctx, launch, self.decision, {m.name for m, _ in tried})
            if following is None:
                await self._give_up(tried)
                return
            ctx.metrics.failovers.labels(failure.cause.value).inc()
            message = f"Member {member.name} failed ({failure.detail}); trying member {following.name}\n"
            log.warning("launch %s: member %s failed (%s: %s); trying member %s", launch.provider_spec, member.name,
                        failure.cause.value, failure.detail, following.name,
                        extra={"member": member.name, "cause": failure.cause.value, "next": following.name,
                               "repo_key": launch.repo_key})
            self.member, self.reason = following, FAILOVER_REASON
            event = encode_event(json.dumps({"phase": self.last_phase or "waiting", "message": message}))
            sticky = ctx.sticky.sign(following.name, launch.repo_key)
            await self._write(f"id: {sticky}\n".encode() + event)

    async def _member_failed(self, member: Member, failure: InfraFailure) -> None:
        ctx = self.ctx
        ctx.metrics.relay_failures.labels(member.name, failure.cause.value).inc()
        # The attempt will not become a pod there: stop counting it in flight.
        await ctx.store.settle_in_flight(member.name, 1)
        await ctx.outlier.failure(member.name, failure.cause.value)

    async def _give_up(self, tried: list[tuple[Member, InfraFailure]]) -> None:
        retry = self.config.router.retry_after
        summary = "; ".join(f"{m.name}: {f.detail}" for m, f in tried)
        message = (f"No member of this Binder federation could start this launch ({summary}). "
                   f"Please try again in {retry} seconds.\n")
        log.warning("launch %s failed on every member tried (%s)", self.launch.provider_spec, summary,
                    extra={"member": self.member.name, "repo_key": self.launch.repo_key})
        self._finish("failed_infra")
        await self._write(encode_event(json.dumps({"phase": "failed", "status_code": 503, "message": message})))

    async def _relay_from(self, member: Member) -> InfraFailure | None:
        """Relay `member`'s stream to its end. None: a terminal event was relayed;
        else the infrastructure failure that ended it (nothing of it was relayed)."""
        ctx, launch, settings = self.ctx, self.launch, self.settings
        assert ctx.client is not None
        learned = False
        try:
            query = await self._member_query(member)
            stream = ctx.client.build_events(
                member.url, launch.provider_spec, query, self.headers,
                connect_timeout=settings.connect_timeout, stall_timeout=settings.stall_timeout,
            )
            async with stream:
                async for event in stream:
                    phase = event.phase.lower()
                    if phase == "failed":
                        failure = classify_failure(event)
                        if failure is not None:
                            return failure
                    if phase == "ready" and not self._ready_url_ok(member, event):
                        return classify_failure(MemberResponseError("ready event with a server URL outside the "
                                                                    "member's own origin"))
                    if event.phase:
                        self.last_phase = event.phase
                    if not learned and phase in ("built", "ready"):
                        learned = True
                        await ctx.store.learn_image(launch.repo_key, member.name, self.config.policy.cache_ttl)
                    await self._send(encode_event(event.raw), now=phase in ("ready", "failed"))
                    if phase == "ready":
                        self._ready(member)
                        return None
                    if phase == "failed":
                        self._finish("failed_build")
                        log.info("launch %s failed on member %s: %s", launch.provider_spec, member.name,
                                 event.message.strip()[:200],
                                 extra={"member": member.name, "repo_key": launch.repo_key})
                        return None
        except MemberError as exc:
            failure = classify_failure(exc)
            assert failure is not None  # every MemberError is an infrastructure failure
            log.info("relay from member %s ended: %s", member.name, exc, extra={"member": member.name})
            return failure
        # The client ends a stream only after a ready or failed event or by raising.
        return classify_failure(MemberError("stream ended without a final event"))  # pragma: no cover

    async def _member_query(self, member: Member) -> str:
        """The query for `member`'s /build/: the visitor's, with the member's own build token
        for a launch from the router's page. Raises MemberUnreachable when the member's page
        cannot be reached at all (the attempt then fails over like an unreachable /build/)."""
        if not self.page_launch:
            return self.query
        assert self.ctx.client is not None
        try:
            token = await self.ctx.client.build_token(member.url, self.launch.provider_spec, self.headers,
                                                      timeout=self.settings.connect_timeout)
        except MemberUnreachable:
            raise
        except MemberError as exc:
            log.warning("launch %s: no build token from member %s (%s); relayed without one, under its rate limit",
                        self.launch.provider_spec, member.name, exc, extra={"member": member.name})
            return self.query
        if token is None:
            log.info("member %s embeds no build token in its launch page; relayed without one", member.name,
                     extra={"member": member.name})
            return self.query
        return self.query + ("&" if self.query else "") + f"{TOKEN_PARAM}={quote(token, safe='')}"

    def _ready_url_ok(self, member: Member, event: BuildEvent) -> bool:
        url = event.data.get("url")
        if isinstance(url, str) and member.serves(url):
            return True
        log.warning("launch %s: member %s sent a ready event whose server URL %r is not on its own origin; "
                    "not relayed", self.launch.provider_spec, member.name, str(url)[:200],
                    extra={"member": member.name, "repo_key": self.launch.repo_key})
        return False

    def _ready(self, member: Member) -> None:
        self._finish("ready")
        self.ctx.metrics.time_to_ready.observe(time.monotonic() - self.started)
        self.ctx.outlier.success(member.name)
        log.info("launch %s ready on member %s", self.launch.provider_spec, member.name,
                 extra={"member": member.name, "repo_key": self.launch.repo_key})
