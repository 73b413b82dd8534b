"""The status page: its model (pure), its HTML (parser-checked, no JavaScript needed)
and what a person sees in headless Chromium, against real dev members."""

from __future__ import annotations

import time

import html5lib
import pytest
from yarl import URL

from federation.members import Member, MemberState, MemberStatus, Override
from federation.stores.memory import MemoryStore
from federation.stores.factory import open_store
from federation.placement.member_view import MemberView
from federation.placement.view import FederationView
from router.status import MINUTES, build_status_page
from tests.conftest import fast_config, member_of, member_states
from tests.support.browser import ARTIFACTS, browser  # noqa: F401  (fixture)
from tests.support.waiting import eventually

NOW = 1_700_000_000.0


def view_of(*members: MemberView) -> FederationView:
    return FederationView(members=members, now=NOW)


def member_view(name: str, state=MemberState.HEALTHY, *, quota: int | None = 10, pods: int = 0, in_flight: int = 0,
                override: Override | None = None, ejected_until: float = 0.0, checked_ago: float | None = 3.0,
                **member_fields) -> MemberView:
    status = MemberStatus(
        name=name, state=state, reason=f"{state.value} because test", quota=quota, has_quota=quota is not None,
        total_pods=pods, checked_at=NOW - checked_ago if checked_ago is not None else 0.0,
        latency=0.0123 if checked_ago is not None else None,
        versions={"binderhub": "1.0.0", "builder_info": {"build_image": "r2d:2024"}},
    )
    member = Member(name=name, url=f"https://{name}.example.org", **member_fields)
    return MemberView(member=member, status=status, in_flight=in_flight, override=override,
                      ejected_until=ejected_until)


# -- the page model ------------------------------------------------------------------


def test_summary_counts_healthy_members_recent_launches_and_free_capacity():
    view = view_of(
        member_view("alpha", quota=20, pods=5, in_flight=2),
        member_view("beta", quota=None),                                  # healthy, capacity unknown
        member_view("gamma", MemberState.FULL, quota=4, pods=4),
        member_view("delta", MemberState.UNHEALTHY),
    )
    per_minute = [5] + [0] * 58 + [2]      # 61 minutes: only the last 60 count
    page = build_status_page(view, [9] + per_minute, NOW, headroom=1)
    assert (page.healthy, page.total) == (2, 4)
    assert page.launches_last_hour == 7
    assert page.free_capacity == 20 - 5 - 2 - 1
    assert page.free_capacity_note == "plus 1 healthy member with unlimited or unknown capacity"


def test_rows_show_state_reason_capacity_probe_and_marks():
    view = view_of(
        member_view("alpha", quota=20, pods=5, in_flight=3, prime=True, data_sites=("zenodo.org",), region="eu"),
        member_view("beta", override=Override(draining=True, by="ops", note="upgrade")),
        member_view("gamma", MemberState.UNHEALTHY, ejected_until=NOW + 90),
        member_view("delta", MemberState.UNKNOWN, quota=None, checked_ago=None),
    )
    rows = {r.name: r for r in build_status_page(view, [], NOW).members}

    alpha = rows["alpha"]
    assert (alpha.state, alpha.shape) == ("healthy", "check")
    assert alpha.capacity.text == "5 used, 3 in flight, 12 free of 20"
    assert (alpha.capacity.used_pct, alpha.capacity.in_flight_pct, alpha.capacity.free_pct) == (25.0, 15.0, 60.0)
    assert alpha.latency == "12 ms" and alpha.last_probe == "3 s ago"
    assert alpha.versions == (("BinderHub", "1.0.0"), ("builder", "r2d:2024"))
    assert alpha.data_sites == ("zenodo.org",) and alpha.region == "eu"
    assert ("prime", "prime") in alpha.marks

    beta = rows["beta"]
    assert (beta.state, beta.shape) == ("draining", "pause")
    assert beta.reason == "drained by ops: upgrade"
    assert ("draining", "draining") in beta.marks
    assert ("probe", "probe: healthy") in beta.marks   # what the override hides

    gamma = rows["gamma"]
    assert gamma.state == "ejected" and ("ejected", "ejected for 90 s more") in gamma.marks

    delta = rows["delta"]
    assert (delta.state, delta.last_probe, delta.latency) == ("unknown", "never", "—")
    assert not delta.capacity.known
    assert "capacity unknown" in delta.capacity.text


def test_capacity_bar_never_overflows_when_pods_exceed_the_quota():
    row = build_status_page(view_of(member_view("a", MemberState.FULL, quota=10, pods=12, in_flight=3)), [], NOW).members[0]
    c = row.capacity
    assert c.text == "12 used, 3 in flight, 0 free of 10"
    assert c.used_pct + c.in_flight_pct + c.free_pct <= 100.0


def test_chart_has_one_bar_per_minute_and_a_text_alternative():
    chart = build_status_page(view_of(), [1] + [0] * 58 + [4], NOW).chart
    assert len(chart.bars) == MINUTES
    counts = [bar.count for bar in chart.bars]
    assert counts[0] == 1 and counts[-1] == 4 and sum(counts) == 5
    assert chart.peak == 4 and chart.total == 5
    assert chart.bars[-1].height == chart.height and chart.bars[1].height == 0
    assert "5 launches in the last hour" in chart.description
    assert "4 in the last 5 minutes" in chart.description
    assert build_status_page(view_of(), [], NOW).chart.description == "No launches in the last hour."
    assert len(build_status_page(view_of(), [3], NOW).chart.bars) == MINUTES   # fewer minutes: the older ones are 0


# -- the page over HTTP --------------------------------------------------------------


@pytest.fixture
async def federation(start_devhub, start_router, http):
    """alpha healthy, beta full (quota 0), gamma draining, delta down: one router over them."""
    async def start(store):
        hubs = {name: await start_devhub(name, quota=quota) for name, quota in
                (("alpha", 20), ("beta", 0), ("gamma", 20), ("delta", 20))}
        members = [member_of(hubs["alpha"], data_sites=("zenodo.org",), region="eu-west"),
                   member_of(hubs["beta"]), member_of(hubs["gamma"]), member_of(hubs["delta"])]
        router = await start_router(fast_config(members), store=store)
        await store.set_override("gamma", Override(draining=True, by="test", note="maintenance"))
        await hubs["delta"].stop()
        expected = {"alpha": "healthy", "beta": "full", "gamma": "draining", "delta": "unhealthy"}

        async def settled():
            return await member_states(http, router) == expected
        await eventually(settled, timeout=10, what=f"member states {expected}")
        for _ in range(3):  # real launches, so the launch log has something to draw
            async with http.get(URL(router.url + "/v2/gh/binder-examples/requirements/HEAD?urlpath=lab", encoded=True),
                                allow_redirects=False) as response:
                assert response.status == 307
        return router

    return start


async def test_status_page_html_has_everything_without_javascript_and_parses_cleanly(federation, make_store, http):
    router = await federation(make_store())
    async with http.get(router.url + "/status") as response:
        assert response.status == 200
        assert response.content_type == "text/html"
        assert response.headers["Cache-Control"] == "no-cache"
        text = await response.text()

    parser = html5lib.HTMLParser(strict=False)
    document = parser.parse(text)
    assert parser.errors == [], parser.errors
    assert "<script" not in text.lower()  # nothing depends on JavaScript
    assert '<meta http-equiv="refresh" content="30">' in text

    ns = {"h": "http://www.w3.org/1999/xhtml"}

    def row_text(name: str) -> str:
        row = document.find(f".//h:tr[@data-member='{name}']", ns)
        assert row is not None, f"no row for {name}"
        return " ".join("".join(row.itertext()).split())

    assert "healthy" in row_text("alpha") and "zenodo.org" in row_text("alpha") and "eu-west" in row_text("alpha")
    assert "0 used, 3 in flight, 17 free of 20" in row_text("alpha")
    assert "full" in row_text("beta") and "of 0" in row_text("beta")
    assert "draining" in row_text("gamma") and "drained by test: maintenance" in row_text("gamma")
    assert "unhealthy" in row_text("delta") and "unreachable" in row_text("delta")
    def summary(key: str) -> str:
        return " ".join("".join(document.find(f".//h:dd[@id='summary-{key}']", ns).itertext()).split())

    assert summary("healthy") == "1 of 4"
    assert summary("launches") == "3"
    assert summary("free") == "17 pods"   # alpha: 20 - 3 in flight; the others take no launches
    assert "3 launches in the last hour" in text   # the chart's text alternative
    assert document.find(".//h:table/h:caption", ns) is not None
    assert len(document.findall(".//h:thead//h:th[@scope='col']", ns)) == 6
    assert len(document.findall(".//h:tbody//h:th[@scope='row']", ns)) == 4


async def test_status_counts_launches_from_per_minute_counters_shared_by_replicas(start_router, redis_url, http):
    members = [Member(name="alpha", url="http://127.0.0.1:9/a")]
    routers = []
    for _ in range(2):
        store = open_store(redis_url)
        routers.append(await start_router(fast_config(members), store=store, probe=False))
        await store.put_status(MemberStatus(name="alpha", state=MemberState.HEALTHY, reason="ok", checked_at=time.time()))
    for i in range(8):
        async with http.get(routers[i % 2].url + f"/v2/gh/org/repo{i}/HEAD", allow_redirects=False) as response:
            assert response.status == 307

    async def no_log_reading(since):   # the page must never read the launch log
        raise AssertionError("the status page read the launch log")

    for router in routers:
        router.ctx.store.recent_launches = no_log_reading
        async with http.get(router.url + "/status") as response:
            assert response.status == 200
            text = await response.text()
        assert "8 launches in the last hour" in text
        assert not router.ctx.store.degraded


async def test_refresh_can_be_turned_off_and_bad_values_are_refused(start_router, http):
    router = await start_router(fast_config([]), probe=False)
    async with http.get(router.url + "/status?refresh=off") as response:
        text = await response.text()
        assert response.status == 200 and "http-equiv" not in text and "No members are configured" in text
    async with http.get(router.url + "/status?refresh=7") as response:
        assert '<meta http-equiv="refresh" content="7">' in await response.text()
    async with http.get(router.url + "/status?refresh=soon") as response:
        assert response.status == 400
        assert "refresh" in await response.text()


async def test_status_page_in_headless_chromium(federation, browser, http):  # noqa: F811
    router = await federation(MemoryStore())
    await browser.get(router.url + "/status?refresh=off")
    assert "1 of 4 members healthy" in await browser.script("return document.title")
    assert "full" in await browser.text("tr[data-member='beta'] td")
    assert "draining" in await browser.text("tr[data-member='gamma'] td")
    assert "unhealthy" in await browser.text("tr[data-member='delta'] td")
    assert "healthy" in await browser.text("tr[data-member='alpha'] td")
    assert "1 of 4" in await browser.text("#summary-healthy")
    assert await browser.text("#summary-launches") == "3"
    # The capacity bar of alpha: in-flight launches take width, and the bar has words for it.
    label = await browser.script(
        "return document.querySelector(\"tr[data-member='alpha'] .bar\").getAttribute('aria-label')")
    assert label == "0 used, 3 in flight, 17 free of 20"
    flight_width = await browser.script(
        "return document.querySelector(\"tr[data-member='alpha'] .seg-flight\").getBoundingClientRect().width")
    assert flight_width > 0
    await full_page_screenshot(browser, 1280, ARTIFACTS / "status.png")
    # Readable on a phone: the page itself does not scroll sideways (the table becomes cards).
    await browser.emulate(390, 844, mobile=True)
    await browser.get(router.url + "/status?refresh=off")
    assert await browser.script("return window.innerWidth") == 390
    overflow = await browser.script("return document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0
    await full_page_screenshot(browser, 390, ARTIFACTS / "status-phone.png", mobile=True)


async def full_page_screenshot(browser, width: int, path, mobile: bool = False) -> None:  # noqa: F811
    """A screenshot of the whole page: make the viewport as tall as the page first."""
    await browser.emulate(width, 900, mobile=mobile)
    height = await browser.script("return document.documentElement.scrollHeight")
    await browser.emulate(width, int(height), mobile=mobile)
    shot = await browser.screenshot(path)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_member_names_link_only_to_http_urls_and_text_is_escaped():
    import aiohttp_jinja2

    from router.app import create_app

    evil = Member(name="evil", url="javascript:alert(1)")
    view = view_of(
        MemberView(member=evil, status=MemberStatus(name="evil", reason="<script>alert(1)</script>")),
        member_view("good"),
    )
    page = build_status_page(view, [], NOW)
    assert page.members[0].link is None and page.members[1].link == "https://good.example.org"
    env = aiohttp_jinja2.get_env(create_app(fast_config([]), MemoryStore(), probe=False))  # the app's own settings
    text = env.get_template("status.html").render(page=page)
    assert "javascript:" not in text
    assert "<script>" not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
