"""The dashboard and the alert rules against a real Prometheus.

- `promtool check rules` and `promtool test rules` (tests/charts/alerts/) on the alert
  rules the chart ships;
- two router replicas sharing a real Redis, with dev members (one from Consul), a
  real Prometheus scraping both every second; launches, a failover with a passive-health
  ejection, a drain through the admin API, a config edit (a broken one, then a good
  one), agent reports and a member stop; then every dashboard query and every alert
  rule is evaluated through Prometheus's HTTP API, and the values are the ones a person
  would expect: healthy members excludes the drained and the ejected one, the stopped
  member shows as a failed health check, the drain counts although it was the first.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import aiohttp
import redis.asyncio as aioredis
import yaml

from federation import config as config_mod
from federation.member_cli import Registration, register_member
from federation.stores.factory import open_store
from hub.report import CachedImage, Capacity, MemberReport, Usage, report_key, seal
from tests.charts.test_charts import DASHBOARD, ROUTER_CHART
from tests.support.consul_double import ConsulDouble
from tests.support.prometheus import PrometheusProcess, binary
from tests.support.waiting import eventually

ROOT = Path(__file__).resolve().parents[2]
RULES = ROUTER_CHART / "alerts" / "federation-rules.yaml"
RULE_TESTS = Path(__file__).parent / "alerts" / "federation-rules.test.yaml"
RATE_WINDOW = "1m"  # stands for Grafana's $__rate_interval: the whole test fits in it
TOKENS = {"alpha": "alpha-report-token-0123456789abcdef", "beta": "beta-report-token-0123456789abcdef"}
ADMIN_TOKEN = "admin-token-0123456789abcdef"


def test_promtool_checks_and_unit_tests_the_alert_rules():
    checked = subprocess.run([binary("promtool"), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    rules = [r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
    assert f"SUCCESS: {len(rules)} rules found" in checked.stdout
    tested = subprocess.run([binary("promtool"), "test", "rules", str(RULE_TESTS)], capture_output=True, text=True,
                            timeout=60, cwd=RULE_TESTS.parent)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    # Every shipped alert has a unit test that makes it fire.
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    fired = {case["alertname"] for test in tests for case in test["alert_rule_test"] if case["exp_alerts"]}
    assert fired == set(rules)


# -- the dashboard's queries ----------------------------------------------------------------------


def dashboard_targets() -> list[tuple[str, str]]:
    """(panel title, PromQL with the dashboard variables filled in) for every panel target."""
    dashboard = json.loads(DASHBOARD.read_text())
    out = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"].replace("$__rate_interval", RATE_WINDOW).replace("$member", ".*")
            assert "$" not in expr, f"{panel['title']}: unknown variable in {expr}"
            out.append((panel["title"], expr))
    return out


def values(result: list[dict], *labels: str) -> dict:
    """{label values (one label: the value itself): float value} of an instant query result."""
    out = {}
    for item in result:
        key = tuple(item["metric"].get(label, "") for label in labels)
        out[key[0] if len(labels) == 1 else key] = float(item["value"][1])
    return out


def scalar(result: list[dict]) -> float:
    assert len(result) == 1, result
    return float(result[0]["value"][1])


def config_yaml(hubs: dict, consul: ConsulDouble, redis_url: str, tmp_path: Path, weight: float = 1) -> str:
    return yaml.safe_dump({
        "members": [{"name": "alpha", "url": hubs["alpha"].url, "prime": True},
                    {"name": "beta", "url": hubs["beta"].url},
                    {"name": "delta", "url": hubs["delta"].url, "weight": weight}],
        "health": {"period": 0.3, "failed_period": 0.5, "jitter": 0, "timeout": 1, "retries": 0, "lease_ttl": 3,
                   "outlier": {"consecutive_failures": 2, "base_ejection_time": 300}},
        "policy": {"pod_headroom": 1},
        "router": {"port": 0, "forward": {"v2": "redirect", "build": "stream", "repo": "redirect"},
                   "stream": {"linger": 0, "stall_timeout": 5, "connect_timeout": 2}},
        "store": {"url": redis_url},
        "limits": {"enabled": False},
        "admin": {"token_file": str(tmp_path / "admin.token")},
        "reports": {"enabled": True, "period": 0.2, "max_age": 120,
                    "members": {name: {"token_file": str(tmp_path / f"{name}.token")} for name in TOKENS}},
        # The Consul member runs on loopback: an operator lists the address it may use.
        "consul": {"enabled": True, "url": consul.url, "wait": 2, "allowed_hosts": ["127.0.0.1"]},
    })


async def launch(http, url: str, path: str) -> dict:
    """One launch; a /build/ stream is read to its final event. Returns what it saw."""
    if not path.startswith("/build/"):
        async with http.get(url + path, allow_redirects=False) as response:
            return {"status": response.status, "member": response.headers.get("X-Binder-Federation-Member")}
    phase, member = "", None
    async with http.get(url + path, headers={"Accept": "text/event-stream"}) as response:
        member = response.headers.get("X-Binder-Federation-Member")
        async for raw in response.content:
            line = raw.decode().strip()
            if line.startswith("data:"):
                phase = json.loads(line[5:]).get("phase", phase)
                if phase in ("ready", "failed"):
                    break
    return {"status": response.status, "phase": phase, "member": member}


async def test_dashboard_and_alerts_on_a_real_prometheus(start_router, start_devhub, redis_url, consul_double, tmp_path):
    consul = consul_double
    started = time.monotonic()
    hubs = {name: await start_devhub(name, quota=20) for name in ("alpha", "beta", "gamma", "delta")}
    await register_member(consul.url, Registration(name="gamma", url=hubs["gamma"].url, check=False))
    (tmp_path / "admin.token").write_text(ADMIN_TOKEN)
    for name, token in TOKENS.items():
        (tmp_path / f"{name}.token").write_text(token)
    path = tmp_path / "federation.yaml"
    path.write_text(config_yaml(hubs, consul, redis_url, tmp_path))
    routers = [await start_router(config_mod.load(path), store=open_store(redis_url), config_path=path, seed=i)
               for i in range(2)]
    prometheus = PrometheusProcess(tmp_path / "prometheus", [r.url.removeprefix("http://") for r in routers],
                                   rule_files=(RULES,))
    await prometheus.start()
    inbox = aioredis.Redis.from_url(redis_url)
    # No cookie jar: each launch is placed afresh (a sticky cookie would make every reason "cookie").
    http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20), cookie_jar=aiohttp.DummyCookieJar())
    a, b = routers
    try:
        async def promql(expr: str) -> list[dict]:
            return await prometheus.query(http, expr)

        async def seen(expr: str, what: str, timeout: float = 20.0) -> list[dict]:
            """Poll Prometheus until `expr` returns something (it scraped what the test did)."""
            return await eventually(lambda: promql(expr), timeout=timeout, interval=0.25, what=what)

        async def next_scrapes(n: int = 1) -> None:
            """Wait until Prometheus scraped both replicas `n` more times."""
            now = time.time()
            await seen(f"min(timestamp(federation_prober_leader)) > {now + n - 1}", f"{n} more scrapes")

        await seen('count(federation_member_state{state="healthy"} == 1) == 8', "4 healthy members on both replicas")

        # Agent reports: alpha's signed with its token, beta's with a wrong one.
        report = MemberReport(member="alpha", timestamp=time.time(), agent_version="test",
                              capacity=Capacity(nodes=1, pods=20, cpu=8.0, memory=32 * 1024 ** 3),
                              usage=Usage(user_pods=0, build_pods=0),
                              cached_images=(CachedImage(spec="gh/binder-examples/julia/HEAD", slug="unused-000000", nodes=1),))
        await inbox.set(report_key("alpha"), seal(report, TOKENS["alpha"]), ex=300)
        await inbox.set(report_key("beta"), seal(replace(report, member="beta"), "wrong-token"), ex=300)

        # Launches through both replicas: redirects, relayed builds (the same repository
        # twice: the second has the image cached), a malformed path.
        # (A label set's first event shows in rate() only from a scrape before it on, as with
        # any Prometheus counter born at its first increment: so two rounds, a scrape apart.)
        for _ in range(2):
            for router, repo in ((a, "requirements"), (b, "julia"), (a, "r-conda")):
                assert (await launch(http, router.url, f"/v2/gh/binder-examples/{repo}/HEAD"))["status"] == 307
            for router in (a, b):
                assert (await launch(http, router.url, "/build/gh/binder-examples/requirements/HEAD"))["phase"] == "ready"
            await next_scrapes()
        assert (await launch(http, a.url, "/v2/not-a-provider/x"))["status"] == 400

        # A failover and a passive-health ejection: beta refuses builds while it passes its checks.
        hubs["beta"].set_faults(build_refuse=True)

        async def placed_on_beta() -> str | None:
            for i in range(100):
                candidate = f"/build/gh/org/repo-{i}/HEAD"
                async with http.get(a.url + "/api/v1/place", params={"path": candidate}) as response:
                    if (await response.json())["member"] == "beta":
                        return candidate
            return None

        failovers = 0
        while failovers < 6:  # outlier.consecutive_failures is 2
            async with http.get(a.url + "/api/v1/members") as response:
                if {m["name"]: m["state"] for m in (await response.json())["members"]}["beta"] == "ejected":
                    break
            launch_path = await placed_on_beta()
            assert launch_path is not None, "no repository placed on beta"
            outcome = await launch(http, a.url, launch_path)
            assert outcome["phase"] == "ready" and outcome["member"] != "beta", outcome
            failovers += 1
        await seen('max(federation_member_state{member="beta",state="ejected"}) == 1', "beta ejected")
        hubs["beta"].set_faults(build_refuse=False)

        # The operator drains alpha, through the other replica.
        async with http.post(f"{b.url}/api/v1/admin/members/alpha/drain",
                             headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as response:
            assert response.status == 200, await response.text()

        # A broken config edit is rejected (alert expression true), then a good one applied.
        path.write_text("members: [nonsense\n")
        await seen("min(federation_config_last_reload_successful) == 0", "the broken config seen")
        rules = {rule["alert"]: rule for g in yaml.safe_load(RULES.read_text())["groups"] for rule in g["rules"]}
        assert await promql(rules["BinderFederationConfigReloadFailed"]["expr"])
        path.write_text(config_yaml(hubs, consul, redis_url, tmp_path, weight=2))
        await seen("min(federation_config_last_reload_successful) == 1", "the repaired config seen")

        # A member stops.
        await hubs["gamma"].stop()
        await seen('count(federation_health{member="gamma",reason="unknown"} == 0) == 2', "gamma unreachable, both replicas")
        await seen('count(federation_member_state{member="alpha",state="draining"} == 1) == 2', "alpha draining, both replicas")
        await seen('sum(federation_agent_reports_total{result="bad_signature"}) > 0', "beta's report rejected")
        await next_scrapes(2)  # so rate() and increase() see the last events

        # -- every dashboard query returns data ---------------------------------------------------
        panels: dict[str, list[list[dict]]] = {}
        for title, expr in dashboard_targets():
            result = await promql(expr)
            assert result, f"panel {title!r} returns no data: {expr}"
            panels.setdefault(title, []).append(result)
        members = await prometheus.api(http, "label/member/values", **{"match[]": "federation_member_state"})
        assert sorted(members) == ["alpha", "beta", "delta", "gamma"]  # the $member variable

        def panel(title: str, target: int = 0) -> list[dict]:
            return panels[title][target]

        # ... and the values a person would expect.
        assert scalar(panel("Healthy members")) == 1  # delta: alpha is drained, beta ejected, gamma down
        assert scalar(panel("Draining members")) == 1 and scalar(panel("Ejected members")) == 1
        assert scalar(panel("Full members")) == 0
        assert {(k[0], k[1]) for k in values(panel("Member state now"), "member", "state")} == {
            ("alpha", "draining"), ("beta", "ejected"), ("gamma", "unhealthy"), ("delta", "healthy")}
        assert values(panel("Failing health checks now"), "member", "reason") == {("gamma", "unknown"): 0.0}
        assert values(panel("Failed health checks"), "member").get("gamma", 0) > 0  # unreachable probes count
        assert set(values(panel("Health-check latency p95"), "member")) >= {"alpha", "beta", "delta"}
        checks = values(panel("Health checks per member (redirector metric)"), "member", "check")
        assert checks[("delta", "JupyterHub API")] == 1 and ("gamma", "JupyterHub API") not in checks
        redirects = values(panel("Redirects (redirector metric)"), "member", "reason")
        assert redirects and {reason for _, reason in redirects} == {"load_balancer"}
        assert scalar(panel("Launches / s")) > 0
        assert values(panel("Refused launches by cause"), "cause")["bad_path"] > 0
        # Where a repository's image is cached depends on load (bounded affinity spills): a
        # ratio, and cache among the reasons.
        assert 0 <= scalar(panel("Image-cache hit ratio")) <= 1
        assert "cache" in values(panel("Launches by decision reason"), "reason")
        assert "failover" in values(panel("Launches by decision reason"), "reason")
        assert scalar(panel("Decision latency p99")) > 0
        assert scalar(panel("Prober leaders")) == 1 and scalar(panel("Replicas routing alone")) == 0
        assert scalar(panel("Image-cache entries")) >= 1
        assert values(panel("Relayed launches by outcome"), "outcome")["ready"] > 0
        assert values(panel("Failovers by cause"), "cause")["http_5xx"] > 0
        assert values(panel("Relay failures per member"), "member", "cause")[("beta", "http_5xx")] > 0
        assert values(panel("Passive-health ejections"), "member")["beta"] > 0  # the first ejection counts
        assert scalar(panel("Ejections (1 h)")) >= 1
        assert scalar(panel("Relayed streams now")) == 0 and scalar(panel("Time to ready p95")) > 0
        assert values(panel("Ejected by passive health"), "member").get("beta") == 1
        assert scalar(panel("Admin changes (24 h)")) >= 1  # the first drain is not lost
        assert values(panel("Admin changes"), "action")["drain"] > 0
        assert values(panel("Agent reports by result"), "result")["accepted"] > 0
        assert values(panel("Agent reports rejected per member"), "member", "result")[("beta", "bad_signature")] > 0
        assert scalar(panel("Agent reports rejected / s")) > 0
        assert scalar(panel("Sources down")) == 0 and scalar(panel("Members from Consul")) == 1
        assert values(panel("Membership source up"), "source") == {"consul": 1.0}
        assert values(panel("Config reloads"), "result")["ok"] > 0
        assert values(panel("Config reloads"), "result")["error"] > 0
        assert scalar(panel("Config reload OK")) == 1
        quota = values(panel("Pods and quota per member", 1), "member")
        assert quota == {"alpha": 20.0, "beta": 20.0, "delta": 20.0}  # gamma's quota is unknown now

        # -- every alert rule: Prometheus loaded it, and its expression says what is wrong ----------
        loaded = await prometheus.api(http, "rules")
        state = {r["name"]: r for g in loaded["groups"] for r in g["rules"]}
        assert set(state) == set(rules)
        assert all(r["health"] == "ok" for r in state.values()), [r for r in state.values() if r["health"] != "ok"]
        expected = {
            "BinderFederationNoHealthyMember": set(),
            "BinderFederationLaunchesRefused": set(),
            "BinderFederationMemberUnhealthy": {(("member", "gamma"), ("reason", "unknown"))},
            "BinderFederationCapacityLow": set(),
            "BinderFederationRelayFailing": set(),
            "BinderFederationMemberEjectedRepeatedly": set(),
            "BinderFederationStoreDegraded": set(),
            "BinderFederationProberLeader": set(),
            "BinderFederationConfigReloadFailed": set(),
            "BinderFederationMembershipSourceDown": set(),
            "BinderFederationAgentReportsRejected": {(("member", "beta"), ("result", "bad_signature"))},
        }
        assert set(expected) == set(rules)
        for name, rule in rules.items():
            result = await promql(rule["expr"])
            assert {tuple(sorted(item["metric"].items())) for item in result} == expected[name], name
        # Prometheus itself evaluates the rules: the unhealthy member is pending (for: 10m).
        assert state["BinderFederationMemberUnhealthy"]["state"] == "pending"
        assert {a["labels"]["member"] for a in state["BinderFederationMemberUnhealthy"]["alerts"]} == {"gamma"}
        print(f"\nmonitoring test: {len(dashboard_targets())} dashboard queries and {len(rules)} alert rules "
              f"evaluated, {time.monotonic() - started:.1f} s")
    finally:
        await http.close()
        await inbox.aclose()
        prometheus.stop()


def test_dashboard_variable_is_a_label_query():
    dashboard = json.loads(DASHBOARD.read_text())
    (member,) = [v for v in dashboard["templating"]["list"] if v["type"] == "query"]
    assert re.fullmatch(r"label_values\(federation_member_state, member\)", member["query"]["query"])
