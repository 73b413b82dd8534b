"""The metrics a dashboard or an alert reads, scraped from a live router and parsed with
prometheus_client's own text parser: the mybinder.org redirector's three metrics
exactly, one federation_health series per member, no stale gauges after a prober
leader change, counters present at 0 before their first event."""

from __future__ import annotations

import socket
from dataclasses import replace

from prometheus_client.parser import text_string_to_metric_families

from federation.members import Member
from federation.stores.factory import open_store
from tests.conftest import fast_config, member_of
from tests.support.waiting import eventually

LAUNCH = "/v2/gh/binder-examples/requirements/HEAD"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def scrape(http, router) -> dict:
    """{family name: (type, [(sample name, labels, value)])} of the router's /metrics."""
    async with http.get(router.url + "/metrics") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = await response.text()
    return {f.name: (f.type, [(s.name, s.labels, s.value) for s in f.samples])
            for f in text_string_to_metric_families(text)}


def samples(families: dict, name: str) -> list[tuple[str, dict, float]]:
    return families.get(name, ("", []))[1]


async def test_the_redirectors_three_metrics_exactly(start_router, start_devhub, http):
    alpha = await start_devhub("alpha", quota=20)                              # healthy, the prime
    beta = await start_devhub("beta", quota=20)                                # fails JupyterHub API
    beta.set_faults(unhealthy=True)
    gamma = await start_devhub("gamma", quota=2)                               # within pod_headroom of its quota
    delta = await start_devhub("delta", quota=20, version="2.0.0+other")       # another BinderHub version
    members = [member_of(alpha, prime=True), member_of(beta), member_of(gamma), member_of(delta),
               Member(name="epsilon", url=f"http://127.0.0.1:{closed_port()}")]  # unreachable
    config = fast_config(members, pod_headroom=2)
    config = replace(config, health=replace(config.health, versions_policy="prime"))
    router = await start_router(config)

    expected_health = {"alpha": ("", 1.0), "beta": ("JupyterHub API", 0.0), "gamma": ("Pod quota", 0.0),
                       "delta": ("versions", 0.0), "epsilon": ("unknown", 0.0)}

    async def health_as_expected():
        families = await scrape(http, router)
        got = {labels["member"]: (labels["reason"], value) for _, labels, value in samples(families, "federation_health")}
        return families if got == expected_health else None

    families = await eventually(health_as_expected, timeout=10, what="federation_health of every member")

    kind, health = families["federation_health"]
    assert kind == "gauge"
    assert {name for name, _, _ in health} == {"federation_health"}
    assert all(set(labels) == {"member", "reason"} for _, labels, _ in health)
    assert len(health) == len(members)  # exactly one series per member

    kind, checks = families["federation_health_check"]
    assert kind == "gauge" and all(set(labels) == {"member", "check"} for _, labels, _ in checks)
    by_member: dict[str, dict[str, float]] = {}
    for _, labels, value in checks:
        by_member.setdefault(labels["member"], {})[labels["check"]] = value
    assert by_member["alpha"] == {"versions": 1, "JupyterHub API": 1, "Docker registry": 1, "Pod quota": 1}
    assert by_member["beta"]["JupyterHub API"] == 0 and by_member["beta"]["Docker registry"] == 1
    assert by_member["delta"]["versions"] == 0
    assert "versions" not in by_member["beta"]  # /versions is not fetched from an unhealthy member
    assert "epsilon" not in by_member  # unreachable: no check answered (its federation_health says unknown)

    # Launches: the first chooses by the load balancer, the second follows the sticky cookie.
    async with http.get(router.url + LAUNCH, allow_redirects=False) as response:
        assert response.status == 307 and response.headers["X-Binder-Federation-Member"] == "alpha"
        cookie = response.cookies["binder-federation-member"].value
    async with http.get(router.url + LAUNCH, allow_redirects=False,
                        headers={"Cookie": f"binder-federation-member={cookie}"}) as response:
        assert response.status == 307 and response.headers["X-Binder-Federation-Reason"] == "cookie"
    families = await scrape(http, router)
    kind, redirects = families["federation_redirect_count"]
    assert kind == "gauge"
    assert {name for name, _, _ in redirects} == {"federation_redirect_count"}  # no _total
    assert {(labels["member"], labels["reason"]): value for _, labels, value in redirects} == {
        ("alpha", "load_balancer"): 1.0, ("alpha", "cookie"): 1.0}
    assert "federation_redirect_count_total" not in str(families)

    # The project's own probe histogram counts unreachable members' probes as failed.
    kind, durations = families["federation_health_check_duration_seconds"]
    assert kind == "histogram"
    failed = {labels["member"]: value for name, labels, value in durations
              if name.endswith("_count") and labels["result"] == "failed"}
    assert failed.get("epsilon", 0) >= 1 and failed.get("beta", 0) >= 1


async def test_a_reason_change_leaves_no_stale_series(start_router, start_devhub, http):
    """max(federation_health) by (member) reads the truth: the healthy series goes when
    the member fails (the redirector keeps it at 1 next to the failing one)."""
    alpha = await start_devhub("alpha", quota=20)
    router = await start_router(fast_config([member_of(alpha)]))

    async def health(expected):
        got = [(labels["reason"], value) for _, labels, value in samples(await scrape(http, router), "federation_health")]
        return got == expected

    await eventually(lambda: health([("", 1.0)]), timeout=10, what="alpha healthy")
    alpha.set_faults(unhealthy=True)
    await eventually(lambda: health([("JupyterHub API", 0.0)]), timeout=10, what="alpha's one series failing")
    await alpha.stop()
    await eventually(lambda: health([("unknown", 0.0)]), timeout=10, what="alpha's one series unknown")


async def test_the_old_prober_leader_exports_the_store_not_what_it_saw(start_router, start_devhub, http, redis_url):
    alpha = await start_devhub("alpha", quota=20)
    config = fast_config([member_of(alpha)])
    config = replace(config, health=replace(config.health, lease_ttl=1.0))
    first = await start_router(config, store=open_store(redis_url), seed=0)

    async def health_of(router):
        return {labels["member"]: (labels["reason"], value)
                for _, labels, value in samples(await scrape(http, router), "federation_health")}

    await eventually(lambda: first.ctx.prober.is_leader, timeout=10, what="the first replica leading")
    await eventually(lambda: _equals(health_of(first), {"alpha": ("", 1.0)}), timeout=10, what="alpha healthy")
    second = await start_router(config, store=open_store(redis_url), seed=1)
    await first.ctx.prober.stop()  # as on a lost lease: the first replica probes no more
    await eventually(lambda: second.ctx.prober.is_leader, timeout=10, what="the second replica leading")
    alpha.set_faults(unhealthy=True)
    for router in (second, first):
        await eventually(lambda: _equals(health_of(router), {"alpha": ("JupyterHub API", 0.0)}), timeout=10,
                         what="every replica exporting alpha's failing checks")
    families = await scrape(http, first)
    assert samples(families, "federation_prober_leader")[0][2] == 0
    states = {labels["state"]: value for _, labels, value in samples(families, "federation_member_state")}
    assert states["unhealthy"] == 1 and states["healthy"] == 0


async def _equals(awaitable, expected) -> bool:
    return await awaitable == expected


async def test_counters_are_exported_at_zero_before_their_first_event(start_router, start_devhub, http):
    alpha = await start_devhub("alpha", quota=20)
    router = await start_router(fast_config([member_of(alpha)]))
    families = await scrape(http, router)

    def values(name):
        return {tuple(sorted(labels.items())): value for sample, labels, value in samples(families, name)
                if sample.endswith("_total")}

    assert values("federation_admin_changes") == {(("action", a),): 0.0 for a in ("drain", "undrain", "weight", "clear")}
    assert values("federation_config_reload") == {(("result", "ok"),): 0.0, (("result", "error"),): 0.0}
    assert (("cause", "unreachable"),) in values("federation_failovers")
    outcomes = {dict(k)["outcome"] for k in values("federation_launch_outcomes") if dict(k)["member"] == "alpha"}
    assert outcomes == {"ready", "failed_build", "failed_infra", "client_gone", "router_shutdown"}
    assert values("federation_ejections") == {(("member", "alpha"),): 0.0}
