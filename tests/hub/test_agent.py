"""The member agent with the real `kubernetes` client against the Kubernetes API double.

Reports are read back from the real redis-server the agent publishes to, and checked
with the member's token exactly as the router checks them.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest
import redis.asyncio as redis
from kubernetes import client

from hub.agent import Agent, AgentSettings, RedisOutbox
from hub.agent.kube import KubeReader
from hub.agent.pods import node_info, pod_info
from hub.report import MemberReport, ReportError, report_key, unseal
from tests.support import k8s_cluster as cluster
from tests.support.k8s_double import KubeDouble
from tests.support.waiting import eventually

TOKEN = "member-a-report-token-0123456789"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def kube():
    double = KubeDouble()
    await double.start()
    cluster.populate(double)
    yield double
    await double.stop()


@pytest.fixture
async def reports(redis_url):
    connection = redis.Redis.from_url(redis_url)
    yield connection
    await connection.aclose()


@pytest.fixture
async def start_agent(kube, redis_server):
    agents: list[Agent] = []

    async def start(loader=None, **overrides) -> Agent:
        settings = AgentSettings(**{
            "member": "a", "image_prefix": cluster.PREFIX, "namespace": cluster.NAMESPACE,
            "specs": (cluster.SPEC_B,), "period": 0.1, "watch_timeout": 30, "request_timeout": 5.0,
            "backoff_initial": 0.05, "backoff_max": 0.4, **overrides,
        })
        agent = Agent(settings, KubeReader(loader or (lambda: client.Configuration(host=kube.url)), 5.0),
                      RedisOutbox(redis_server.url, settings.member), lambda: TOKEN)
        await agent.start()
        agents.append(agent)
        return agent

    yield start
    for agent in agents:
        await agent.stop()


async def published(connection, member: str = "a") -> MemberReport | None:
    raw = await connection.get(report_key(member))
    return unseal(raw, TOKEN) if raw is not None else None


async def next_report(connection, after: float = 0.0, member: str = "a") -> MemberReport:
    """The first report published with a timestamp later than `after`."""
    async def newer():
        report = await published(connection, member)
        return report if report is not None and report.timestamp > after else None
    return await eventually(newer, timeout=10, what="a new report in Redis")


def cached(report: MemberReport) -> dict[str, int]:
    return {c.spec: c.nodes for c in report.cached_images}


async def test_report_counts_capacity_and_cached_repositories(kube, reports, start_agent):
    await start_agent()
    report = await next_report(reports)

    expected = cluster.EXPECTED
    assert report.member == "a"
    assert (report.usage.user_pods, report.usage.build_pods) == (expected.user_pods, expected.build_pods)
    assert report.capacity.nodes == expected.nodes
    assert report.capacity.pods == expected.pods
    assert report.capacity.cpu == pytest.approx(expected.cpu)
    assert report.capacity.memory == expected.memory
    assert cached(report) == dict(expected.cached)
    assert report.unmapped_images == expected.unmapped
    assert {c.spec: c.slug for c in report.cached_images}[cluster.SPEC_A] == cluster.slug_of(cluster.IMAGE_A)
    # Running user servers per launch spec (finished pods and pods without a launch spec left out),
    # for the router's federation-wide cap on one repository (limits.repo_concurrency).
    assert {r.spec: r.pods for r in report.running} == {cluster.SPEC_A: 1, cluster.SPEC_Z: 1, "gh/evil/spoof/HEAD": 1}
    assert report.agent_version
    # Only its own namespace was ever asked for, and pods were listed once then watched.
    assert not [r for r in kube.requests if cluster.OTHER_NAMESPACE in r]
    assert kube.count("LIST pods binderhub") == 1
    assert kube.count("WATCH pods binderhub") >= 1


async def test_report_is_signed_with_the_member_token(kube, reports, start_agent):
    await start_agent()
    await next_report(reports)
    raw = await reports.get(report_key("a"))
    with pytest.raises(ReportError) as error:
        unseal(raw, "some-other-token-0123456789abcdef")
    assert error.value.kind == "bad_signature"
    assert 0 < await reports.ttl(report_key("a")) <= 300


async def test_pod_changes_arrive_by_watch_without_listing_again(kube, reports, start_agent):
    agent = await start_agent()
    first = await next_report(reports)
    kube.put_pod(cluster.user_pod("jupyter-new", cluster.IMAGE_U, "v2/gh/nobody/launched-this/HEAD"))
    kube.delete_pod(cluster.NAMESPACE, "build-org-2drepo-0f0f0f")

    async def updated():
        report = await published(reports)
        return report if report.usage.build_pods == 0 and report.usage.user_pods == first.usage.user_pods + 1 else None

    report = await eventually(updated, timeout=10, what="a report with the watched changes")
    # The new pod taught the agent which repository image U belongs to.
    assert cached(report)["gh/nobody/launched-this/HEAD"] == 1
    assert report.unmapped_images == cluster.EXPECTED.unmapped - 1
    assert kube.count("LIST pods binderhub") == 1
    assert agent.watchers[0].errors == 0


async def test_expired_watch_lists_again(kube, reports, start_agent):
    agent = await start_agent()
    await next_report(reports)
    await eventually(lambda: kube._watches, what="an open watch")
    kube.expire_history()
    kube.end_watches()
    kube.put_pod(cluster.user_pod("jupyter-during-gap", cluster.IMAGE_A, "v2/" + cluster.SPEC_A))
    await eventually(lambda: kube.count("LIST pods binderhub") == 2, what="a second pod list after 410 Gone")

    async def counted():
        report = await published(reports)
        return report.usage.user_pods == cluster.EXPECTED.user_pods + 1
    await eventually(counted, timeout=10, what="the pod created during the gap counted")
    assert agent.watchers[0].errors == 0  # 410 is routine, not an error


async def test_api_errors_then_recovery_keep_the_agent_running(kube, reports, start_agent):
    agent = await start_agent()
    await next_report(reports)
    kube.fail_with(500)
    await eventually(lambda: agent.watchers[0].errors >= 2 and agent.last_error == "HTTP 500",
                     what="the agent meeting HTTP 500s")
    # While the API fails nothing is published: the last report just ages.
    during = await published(reports)
    kube.put_pod(cluster.user_pod("jupyter-during-outage", cluster.IMAGE_A, "v2/" + cluster.SPEC_A))
    kube.fail_with(None)

    async def recovered():
        report = await published(reports)
        return report if report.timestamp > during.timestamp and report.usage.user_pods == cluster.EXPECTED.user_pods + 1 else None
    await eventually(recovered, timeout=10, what="a report after the API recovered")
    assert agent.is_running
    assert agent.last_error == ""


async def test_expired_token_is_read_again(kube, reports, start_agent, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("first-token")
    kube.require_token("first-token")
    loads = []

    def loader():
        # Like the in-cluster loader: credentials are read when the client is built.
        loads.append(1)
        configuration = client.Configuration(host=kube.url)
        configuration.api_key = {"authorization": "Bearer " + token_file.read_text().strip()}
        return configuration

    agent = await start_agent(loader=loader)
    first = await next_report(reports)
    token_file.write_text("rotated-token")
    kube.require_token("rotated-token")   # the old token now answers 401
    report = await next_report(reports, after=first.timestamp + 0.5)
    assert report.usage.user_pods == cluster.EXPECTED.user_pods
    assert len(loads) >= 2
    assert agent.is_running


async def test_learned_specs_survive_a_restart(kube, reports, start_agent):
    agent = await start_agent(specs=())
    await next_report(reports)
    await agent.stop()
    # Pod A is culled while the agent is away; its image stays on the nodes.
    kube.delete_pod(cluster.NAMESPACE, "jupyter-a")
    kube.delete_pod(cluster.NAMESPACE, "jupyter-done")
    await reports.delete(report_key("a"))
    await start_agent(specs=())
    report = await next_report(reports)
    assert cached(report)[cluster.SPEC_A] == 2


async def test_node_selector_limits_capacity_and_images(kube, reports, start_agent):
    await start_agent(node_selector="hub.jupyter.org/node-purpose=user")
    report = await next_report(reports)
    assert report.capacity.nodes == 1
    assert report.capacity.pods == 110
    assert cached(report)[cluster.SPEC_A] == 1


async def test_agent_stops_promptly_with_an_open_watch(kube, reports, start_agent):
    agent = await start_agent(watch_timeout=3600)
    await next_report(reports)
    await eventually(lambda: kube._watches, what="an open watch")
    await asyncio.wait_for(agent.stop(), timeout=5)


def test_objects_missing_optional_fields_are_tolerated():
    assert pod_info({}) is None
    assert pod_info({"metadata": {"labels": None}}) is None
    bare = pod_info({"metadata": {"labels": {"component": "singleuser-server"}}, "spec": {"containers": "junk"}})
    assert bare is not None and bare.active and bare.image is None and bare.spec is None
    node = node_info({"status": {"allocatable": {"pods": "many", "cpu": None}, "images": None}}, cluster.PREFIX)
    assert (node.name, node.usable, node.pods, node.cpu, node.slugs) == ("<unnamed>", False, 0, 0.0, frozenset())
    assert node_info("not a node", cluster.PREFIX).usable is False


async def test_cli_once_prints_a_report_from_a_kubeconfig(kube, tmp_path):
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "double",
        "clusters": [{"name": "double", "cluster": {"server": kube.url}}],
        "users": [{"name": "agent", "user": {"token": "kubeconfig-token"}}],
        "contexts": [{"name": "double", "context": {"cluster": "double", "user": "agent", "namespace": cluster.NAMESPACE}}],
    }))
    kube.require_token("kubeconfig-token")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "router.cli", "agent", "--once", "--member", "a",
        "--image-prefix", cluster.PREFIX, "--namespace", cluster.NAMESPACE, "--kubeconfig", str(kubeconfig),
        "--spec", cluster.SPEC_B, cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, err.decode()
    report = MemberReport.from_json(json.loads(out))
    assert cached(report) == dict(cluster.EXPECTED.cached)
    assert report.usage.user_pods == cluster.EXPECTED.user_pods


async def test_cli_refuses_to_start_without_a_token(tmp_path):
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "router.cli", "agent", "--member", "a", "--image-prefix", cluster.PREFIX,
        "--redis-url", "redis://127.0.0.1:1/0", "--token-file", str(tmp_path / "missing"),
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 2
    assert "missing" in err.decode()


async def test_cli_refuses_a_sentinel_redis_url_it_cannot_use(tmp_path):
    """redis+sentinel:// would crash the agent's Redis client at its first report; it is
    refused at start with a message naming the problem (the member chart's schema refuses it too)."""
    token = tmp_path / "token"
    token.write_text("a-report-token-0123456789abcdef")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "router.cli", "agent", "--member", "a", "--image-prefix", cluster.PREFIX,
        "--redis-url", "redis+sentinel://s3cret@10.0.0.1:26379/binderfed/0", "--token-file", str(token),
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 2
    assert "redis+sentinel://" in err.decode() and "Sentinel" in err.decode()
    assert "s3cret" not in err.decode()
