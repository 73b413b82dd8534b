"""The status page at `/status`: the federation at a glance, for people.

`build_status_page()` is pure: a FederationView, the launches of each of the last 60
minutes and the time go in, a `StatusPage` (frozen dataclasses, every number already turned into the
text shown) comes out. The handler only gathers those inputs and renders
`templates/status.html` with it, so everything the page says is unit-testable
without a browser. Member fields come from `api.member_fields`, the one JSON shape
of a member, so the page and `/api/v1/members` cannot disagree.

The launch counts come from per-minute counters in the store
(`Store.launches_per_minute`), so a page costs the same whatever the traffic: it never
reads the launch log.

The page works without JavaScript: it refreshes itself with `<meta http-equiv=refresh>`,
which `?refresh=off` turns off (people who need more time to read, WCAG 2.2.1).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import aiohttp_jinja2
import jinja2
from aiohttp import web

from federation.members import MemberState
from federation.placement.view import FederationView

from .api import member_fields
from .context import CONTEXT
from .pages import html_page


MINUTES = 60               # the chart and the launch count cover the last 60 clock minutes
BUCKET = 60.0              # one chart bar per minute
DEFAULT_REFRESH = 30       # seconds between automatic reloads
MIN_REFRESH, MAX_REFRESH = 5, 3600

# Chart geometry, in SVG user units (the SVG scales to the page width).
CHART_WIDTH, CHART_HEIGHT, CHART_GAP = 600, 120, 2

# One shape per state (drawn by the template), so colour is never the only signal.
STATE_SHAPES = {
    MemberState.HEALTHY: "check",
    MemberState.FULL: "square",
    MemberState.UNHEALTHY: "cross",
    MemberState.EJECTED: "triangle",
    MemberState.DRAINING: "pause",
    MemberState.UNKNOWN: "question",
}


@dataclass(frozen=True)
class Capacity:
    """A member's pods as a bar: used / in flight / free, each as a share of the quota."""

    known: bool                 # False: no quota reported (unknown) or quota unlimited
    text: str                   # what the bar shows, in words (also its aria-label)
    used: int = 0
    in_flight: int = 0
    free: int = 0
    quota: int = 0
    used_pct: float = 0.0
    in_flight_pct: float = 0.0
    free_pct: float = 0.0


@dataclass(frozen=True)
class MemberRow:
    name: str
    url: str                    # shown as a link only when http(s) (see `link`)
    state: str                  # one of MemberState's words
    shape: str                  # icon shape for the state (STATE_SHAPES)
    reason: str
    marks: tuple[tuple[str, str], ...]  # (kind, text): draining, ejected, prime, weight, probe state under an override
    capacity: Capacity
    latency: str                # "12 ms" or "—"
    last_probe: str             # "4 s ago" or "never"
    versions: tuple[tuple[str, str], ...]
    data_sites: tuple[str, ...]
    region: str

    @property
    def link(self) -> str | None:
        # Members can come from Consul registrations: never render another scheme as a link.
        return self.url if self.url.startswith(("http://", "https://")) else None


@dataclass(frozen=True)
class ChartBar:
    x: float
    y: float
    width: float
    height: float
    count: int
    label: str                  # "12:03 UTC: 4 launches"


@dataclass(frozen=True)
class LaunchChart:
    bars: tuple[ChartBar, ...]
    width: int
    height: int
    peak: int
    total: int
    title: str
    description: str            # the text alternative of the whole chart


@dataclass(frozen=True)
class StatusPage:
    generated_at: str           # "2024-05-01 12:03:04 UTC"
    members: tuple[MemberRow, ...]
    healthy: int
    total: int
    launches_last_hour: int
    free_capacity: int          # free slots on members that take launches, where known
    free_capacity_note: str     # e.g. "plus 1 member with unlimited or unknown capacity"
    chart: LaunchChart
    refresh: int | None         # seconds, or None when automatic refresh is off
    strategy: str
    store_degraded: bool


def build_status_page(
    view: FederationView,
    per_minute: Sequence[int],
    now: float,
    *,
    headroom: int = 0,
    refresh: int | None = DEFAULT_REFRESH,
    strategy: str = "",
    store_degraded: bool = False,
) -> StatusPage:
    """The status page model. Pure: no I/O, no clock.

    `per_minute`: launches in each of the last `MINUTES` clock minutes, oldest first (the
    last one is the minute `now` falls in), as `Store.launches_per_minute` answers.
    """
    members = [member_fields(m, now, headroom) for m in view.members]
    rows = tuple(_row(m, now, headroom) for m in members)
    healthy = [m for m in members if m["state"] == MemberState.HEALTHY.value]
    free_known = [m["free"] for m in healthy if m["free"] is not None]
    unknown = len(healthy) - len(free_known)
    note = ""
    if unknown:
        note = f"plus {unknown} healthy member{'s' if unknown != 1 else ''} with unlimited or unknown capacity"
    counts = [max(int(n), 0) for n in list(per_minute)[-MINUTES:]]
    counts = [0] * (MINUTES - len(counts)) + counts
    return StatusPage(
        generated_at=_clock_text(now, seconds=True),
        members=rows,
        healthy=len(healthy),
        total=len(members),
        launches_last_hour=sum(counts),
        free_capacity=sum(max(free, 0) for free in free_known),
        free_capacity_note=note,
        chart=_chart(counts, now),
        refresh=refresh,
        strategy=strategy,
        store_degraded=store_degraded,
    )


def _row(m: Mapping[str, Any], now: float, headroom: int) -> MemberRow:
    status = m["status"]
    state = MemberState(m["state"])
    marks: list[tuple[str, str]] = []
    if m["prime"]:
        marks.append(("prime", "prime"))
    if m["draining"]:
        marks.append(("draining", "draining"))
    if m["ejected_until"] is not None:
        marks.append(("ejected", f"ejected for {_duration(m['ejected_until'] - now)} more"))
    if m["weight"] == 0:
        marks.append(("weight", "weight 0: out of rotation"))
    elif m["weight"] != m["configured_weight"]:
        marks.append(("weight", f"weight {m['weight']:g} (configured {m['configured_weight']:g})"))
    if status["state"] != state.value:
        # An override hides what the probes see; an operator wants both.
        marks.append(("probe", f"probe: {status['state']}"))
    checked_at = status["checked_at"]
    latency = status["latency"]
    return MemberRow(
        name=m["name"],
        url=m["url"],
        state=state.value,
        shape=STATE_SHAPES[state],
        reason=m["reason"],
        marks=tuple(marks),
        capacity=_capacity(status, m["in_flight"], m["free"], headroom),
        latency=f"{latency * 1000:.0f} ms" if isinstance(latency, (int, float)) else "—",
        last_probe=f"{_duration(now - checked_at)} ago" if checked_at else "never",
        versions=_versions(status["versions"]),
        data_sites=tuple(m["data_sites"]),
        region=m["region"],
    )


def _capacity(status: Mapping[str, Any], in_flight: int, free: int | None, headroom: int) -> Capacity:
    used = status["total_pods"]
    quota = status["quota"]
    if quota is None:
        what = "unlimited quota" if status["has_quota"] else "capacity unknown (no pod quota reported)"
        text = f"{used} used, {in_flight} in flight, {what}"
        return Capacity(known=False, text=text, used=used, in_flight=in_flight)
    free_slots = max(free if free is not None else 0, 0)
    text = f"{used} used, {in_flight} in flight, {free_slots} free of {quota}"
    if headroom:
        text += f" ({headroom} kept as headroom)"

    def pct(n: int) -> float:
        return round(100.0 * n / quota, 1) if quota > 0 else 0.0

    # Shares are cut so that the bar never overflows when pods exceed the quota.
    used_pct = min(pct(used), 100.0)
    in_flight_pct = min(pct(in_flight), round(100.0 - used_pct, 1))
    free_pct = min(pct(free_slots), round(100.0 - used_pct - in_flight_pct, 1))
    return Capacity(known=True, text=text, used=used, in_flight=in_flight, free=free_slots, quota=quota,
                    used_pct=used_pct, in_flight_pct=max(in_flight_pct, 0.0), free_pct=max(free_pct, 0.0))


def _versions(versions: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    out = []
    if versions.get("binderhub"):
        out.append(("BinderHub", str(versions["binderhub"])))
    builder = versions.get("builder_info")
    if isinstance(builder, Mapping):
        image = builder.get("build_image") or builder.get("repo2docker-version")
        if image:
            out.append(("builder", str(image)))
    return tuple(out)


def _chart(counts: list[int], now: float) -> LaunchChart:
    n = MINUTES
    start = (int(now // BUCKET) - n + 1) * BUCKET   # the first bar's minute
    peak = max(counts)
    total = sum(counts)
    slot = CHART_WIDTH / n
    bars = []
    for i, count in enumerate(counts):
        height = round(CHART_HEIGHT * count / peak, 1) if peak else 0.0
        minute = _clock_text(start + i * BUCKET)
        bars.append(ChartBar(
            x=round(i * slot + CHART_GAP / 2, 1), y=round(CHART_HEIGHT - height, 1),
            width=round(slot - CHART_GAP, 1), height=height, count=count,
            label=f"{minute}: {count} launch{'es' if count != 1 else ''}",
        ))
    if total:
        busiest = counts.index(peak)
        last5 = sum(counts[-5:])
        description = (
            f"{total} launch{'es' if total != 1 else ''} in the last hour; busiest minute "
            f"{_clock_text(start + busiest * BUCKET)} with {peak}; {last5} in the last 5 minutes."
        )
    else:
        description = "No launches in the last hour."
    return LaunchChart(bars=tuple(bars), width=CHART_WIDTH, height=CHART_HEIGHT, peak=peak, total=total,
                       title="Launches per minute over the last hour", description=description)


def _clock_text(t: float, seconds: bool = False) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC" if seconds else "%H:%M UTC", time.gmtime(t))


def _duration(seconds: float) -> str:
    seconds = max(seconds, 0.0)
    if seconds < 1:
        return "<1 s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.0f} days"


# -- the handler -------------------------------------------------------------------------


def setup(app: web.Application) -> None:
    """Template engine (shared by every router page rendered from `templates/`) and the route."""
    if aiohttp_jinja2.APP_KEY not in app:
        aiohttp_jinja2.setup(
            app,
            # Package data (pyproject.toml): found in a checkout and in an installed wheel alike.
            loader=jinja2.PackageLoader("router", "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,  # a typo in a template is an error in tests, not a blank
        )
    app.router.add_get("/status", status_page)


def _refresh(query: Mapping[str, str]) -> int | None:
    """`?refresh=` as seconds (clamped to a sane range), None for off; ValueError if unreadable."""
    text = query.get("refresh", "").strip().lower()
    if not text:
        return DEFAULT_REFRESH
    if text in ("off", "0", "no", "false"):
        return None
    seconds = int(text)  # ValueError for anything else
    return min(max(seconds, MIN_REFRESH), MAX_REFRESH)


async def status_page(request: web.Request) -> web.StreamResponse:
    ctx = request.app[CONTEXT]
    try:
        refresh = _refresh(request.query)
    except ValueError:
        return html_page("Bad refresh value",
                         "<p>The <code>refresh</code> parameter must be a number of seconds or <code>off</code>.</p>",
                         status=400)
    view = await ctx.view_for(None)
    per_minute = await ctx.store.launches_per_minute(view.now, MINUTES)
    page = build_status_page(
        view, per_minute, view.now,
        headroom=ctx.config.policy.pod_headroom,
        refresh=refresh,
        strategy=ctx.config.policy.strategy,
        store_degraded=ctx.store.degraded,
    )
    response = aiohttp_jinja2.render_template("status.html", request, {"page": page})
    response.headers["Cache-Control"] = "no-cache"
    return response
