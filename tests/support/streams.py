"""Helpers for tests of stream mode (router.forward: stream): configs, stores, event streams."""

from __future__ import annotations

import json
import time
from dataclasses import replace

import aiohttp

from federation.config import FederationConfig, StreamSettings
from federation.members import Member, MemberState, MemberStatus
from federation.spec import parse_launch
from hub.events import Event, SSEDecoder
from tests.conftest import fast_config

LAUNCH = "/build/gh/binder-examples/requirements/HEAD"
COOKIE = "binder-federation-member"


def stream_config(members: list[Member], forward="stream", trusted=(), **stream) -> FederationConfig:
    """`fast_config` in stream mode; the stream closes right after its last event (no linger)."""
    cfg = fast_config(members)
    settings = StreamSettings(**{"linger": 0, "stall_timeout": 5, "connect_timeout": 2, **stream})
    return replace(cfg, router=replace(cfg.router, forward=forward, stream=settings, trusted_proxies=tuple(trusted)))


def sticky(router, member: str, path: str = LAUNCH) -> str:
    """The signed sticky value (cookie, failover event id) `router` hands out for `member` and the launch at `path`."""
    return router.ctx.sticky.sign(member, parse_launch(path.split("?")[0]).repo_key)


def sticky_member(router, value: str, path: str = LAUNCH) -> str | None:
    """The member a sticky value names for the launch at `path`, if `router` signed it."""
    return router.ctx.sticky.member(value, parse_launch(path.split("?")[0]).repo_key)


async def mark_healthy(store, *names: str) -> None:
    """What a prober would have written a moment ago. Tests of failover run without
    probes, so a member can fail between two probes, as it does in production."""
    for name in names:
        await store.put_status(MemberStatus(name=name, state=MemberState.HEALTHY, reason="ok", checked_at=time.time()))


async def read_events(response: aiohttp.ClientResponse, *, stop_at_terminal: bool = True) -> list[Event]:
    """The events of an event stream, up to the first ready/failed (or the stream's end)."""
    decoder = SSEDecoder()
    events: list[Event] = []
    async for chunk in response.content.iter_any():
        for item in decoder.feed(chunk):
            if isinstance(item, Event):
                events.append(item)
                if stop_at_terminal and json.loads(item.data).get("phase") in ("ready", "failed"):
                    return events
    return events


def phases(events: list[Event]) -> list[str]:
    return [json.loads(e.data).get("phase", "") for e in events]
