"""The charts as Helm renders them: `helm template` and `helm lint --strict` (Helm
3.17.1, installed by `make tools`) for every values variant, every rendered manifest
validated with kubernetes-validate, and the router config in the rendered ConfigMap
checked by `binderfed check-config` with the flags the rendered Deployment passes.
Nothing here re-creates a template in Python: a broken template fails these tests.
"""

from __future__ import annotations

import base64
import json
import math
import re
import shutil

import kubernetes_validate
import pytest
import yaml
from packaging.version import Version

from federation import config as config_mod
from tests.charts.test_charts import (
    DASHBOARD, EXAMPLES, MEMBER_CHART, ROUTER_CHART, _parse_with, load_yaml,
)
from tests.support.cli import run_binderfed
from tests.support.helm import HELM_VERSION, helm, lint, rendered, template

ALERT_RULES = ROUTER_CHART / "alerts" / "federation-rules.yaml"
_KNOWN = kubernetes_validate.utils.all_versions()
CUSTOM_RESOURCES = {"ServiceMonitor", "PrometheusRule"}  # CRDs: kubernetes-validate has no schema for them


def floor_version(chart) -> str:
    """The chart's kubeVersion floor, e.g. ">=1.28.0-0" -> "1.28.0"."""
    match = re.fullmatch(r">=\s*(\d+\.\d+)\.\d+(-0)?", load_yaml(chart / "Chart.yaml")["kubeVersion"])
    assert match, "kubeVersion is expected as >=X.Y.Z-0"
    return match.group(1) + ".0"


def validation_versions(chart) -> tuple[str, ...]:
    floor = floor_version(chart)
    oldest = next(v for v in _KNOWN if Version(v) >= Version(floor))
    return tuple(dict.fromkeys((oldest, _KNOWN[-1])))


MEMBER_MINIMAL = {
    "member": {"name": "gesis", "url": "https://gesis.mybinder.org"},
    "federation": {"redis": {"url": "rediss://:pw@redis.mybinder.org:6380/0"}, "token": {"value": "a-report-token"}},
    "agent": {"imagePrefix": "gesiscss/binder-"},
}

ROUTER_VARIANTS = {
    "defaults": {},
    "docs/examples/values-router.yaml": load_yaml(EXAMPLES / "values-router.yaml"),
    "external redis": {"redis": {"enabled": False, "external": {"url": "rediss://redis.example.org:6380/0"}}},
    "external redis from a Secret, agent reports": {
        "redis": {"enabled": False, "external": {"existingSecret": "federation-store-url"}},
        "config": {"reports": {"enabled": True, "members": {"gesis": {"token_file": "/etc/binderfed-agent-tokens/gesis"}}},
                   "members": [{"name": "gesis", "url": "https://gesis.mybinder.org"}]},
        "agentTokens": {"existingSecret": "federation-agent-tokens"},
    },
    "one replica in memory": {"replicaCount": 1, "redis": {"enabled": False}},
    "everything on": {
        "adminToken": {"value": "an-admin-token"},
        "redis": {"auth": {"existingSecret": "federation-redis"}, "persistence": {"enabled": False}},
        "ingress": {"enabled": True, "host": "mybinder.org", "className": "nginx"},
        "autoscaling": {"enabled": True, "minReplicas": 3, "maxReplicas": 5},
        "podAntiAffinity": "hard",
        "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
                    "prometheusRule": {"enabled": True, "labels": {"release": "prometheus"}}},
        "config": {"router": {"forward": {"v2": "stream", "build": "stream", "repo": "redirect"},
                              "shutdown": {"grace": 8, "stream_deadline": 120.5}}},
    },
}
MEMBER_VARIANTS = {
    "minimal": MEMBER_MINIMAL,
    "docs/examples/values-member.yaml": load_yaml(EXAMPLES / "values-member.yaml"),
    "build namespace, specs, own service account": {
        **MEMBER_MINIMAL,
        "agent": {"imagePrefix": "gesiscss/binder-", "binderhubNamespace": "binder", "buildNamespace": "builds",
                  "specs": ["gh/binder-examples/requirements/HEAD"], "userNodeSelector": "hub.jupyter.org/node-purpose=user"},
        "serviceAccount": {"create": False, "name": "binder-federation-agent"},
    },
}
VARIANTS = [("router", name, values) for name, values in ROUTER_VARIANTS.items()] + [
    ("member", name, values) for name, values in MEMBER_VARIANTS.items()]
CHART_DIRS = {"router": ROUTER_CHART, "member": MEMBER_CHART}


def test_the_pinned_helm_is_installed():
    result = helm("version", "--template", "{{.Version}}")
    assert result.returncode == 0 and result.stdout.strip() == HELM_VERSION, result.stdout + result.stderr


@pytest.mark.parametrize("chart, variant, values", VARIANTS, ids=[f"{c}: {n}" for c, n, _ in VARIANTS])
def test_chart_renders_lints_and_validates(chart, variant, values):
    path = CHART_DIRS[chart]
    linted = lint(path, values)
    assert linted.returncode == 0, linted.stdout + linted.stderr
    result = rendered(path, values, kube_version=floor_version(path))
    documents = result.documents
    assert any(d["kind"] == "Deployment" for d in documents)
    for doc in documents:
        if doc["kind"] in CUSTOM_RESOURCES:
            continue
        for version in validation_versions(path):
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{doc['kind']} {doc['metadata']['name']} invalid for Kubernetes {version}: {exc}")
    names = [(d["kind"], d["metadata"].get("namespace", ""), d["metadata"]["name"]) for d in documents]
    assert len(names) == len(set(names)), f"duplicate manifests: {names}"


def test_a_broken_template_fails_render_and_lint(tmp_path):
    """What these tests rest on: a template error is an error (here an unclosed action)."""
    broken = tmp_path / "binder-federation"
    shutil.copytree(ROUTER_CHART, broken)
    deployment = broken / "templates" / "deployment.yaml"
    deployment.write_text(deployment.read_text().replace("{{ .Values.replicaCount }}", "{{ .Values.replicaCount"))
    assert template(broken).returncode != 0
    assert lint(broken).returncode != 0


# -- the router chart ---------------------------------------------------------------------------

ROUTER_CONFIG_VARIANTS = sorted(ROUTER_VARIANTS)


def router_container(result) -> dict:
    return result.one("Deployment")["spec"]["template"]["spec"]["containers"][0]


def with_secrets(arg: str) -> str:
    """A container argument as the kubelet passes it: $(VAR) expanded (from a Secret)."""
    return arg.replace("$(BINDERFED_REDIS_PASSWORD)", "s3cret").replace(
        "$(BINDERFED_STORE_URL)", "rediss://:s3cret@redis.example.org:6380/0")


@pytest.mark.parametrize("variant", ROUTER_CONFIG_VARIANTS)
async def test_rendered_router_config_passes_check_config(variant, tmp_path):
    result = rendered(ROUTER_CHART, ROUTER_VARIANTS[variant])
    text = result.one("ConfigMap", "binder-federation")["data"]["config.yaml"]
    container = router_container(result)
    args = [with_secrets(a) for a in container["args"]]
    assert args[0] == "serve"
    parsed = _parse_with("router.serve", args[1:])
    assert parsed.config == "/etc/binderfed/config.yaml"
    path = tmp_path / "config.yaml"
    path.write_text(text)
    store_flags = [a for a in args if a.startswith("--store-url=")]
    checked = await run_binderfed("check-config", str(path), *store_flags)
    assert checked.returncode == 0, checked.stderr
    assert ": ok (" in checked.stdout and "s3cret" not in checked.stdout
    cfg = config_mod.load(path)
    assert (cfg.router.host, cfg.router.port) == ("0.0.0.0", container["ports"][0]["containerPort"])
    members = (ROUTER_VARIANTS[variant].get("config") or {}).get("members", [])
    assert [m.name for m in cfg.members] == [m["name"] for m in members]


def test_default_router_values_use_the_in_cluster_redis():
    result = rendered(ROUTER_CHART)
    config = yaml.safe_load(result.one("ConfigMap", "binder-federation")["data"]["config.yaml"])
    redis_service = next(d for d in result.documents if d["kind"] == "Service" and d["metadata"]["name"].endswith("-redis"))
    assert config["store"]["url"] == f"redis://{redis_service['metadata']['name']}:6379/0"
    assert result.one("Deployment")["spec"]["replicas"] > 1


def test_config_edits_do_not_roll_the_router_pods():
    """The router reloads its config file: an edit changes the ConfigMap, not the pod template."""
    before = rendered(ROUTER_CHART)
    after = rendered(ROUTER_CHART, {"config": {"members": [{"name": "gesis", "url": "https://gesis.mybinder.org"}],
                                                "health": {"period": 20}}})
    assert before.one("ConfigMap", "binder-federation") != after.one("ConfigMap", "binder-federation")
    assert before.one("Deployment")["spec"]["template"] == after.one("Deployment")["spec"]["template"]


@pytest.mark.parametrize("shutdown", [None, {"grace": 8, "stream_deadline": 120.5}])
def test_probes_and_termination_grace_match_the_shutdown_settings(shutdown):
    values = {"config": {"router": {"shutdown": shutdown}}} if shutdown else {}
    result = rendered(ROUTER_CHART, values)
    pod = result.one("Deployment")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert "lifecycle" not in container  # no preStop sleep: the router's own grace does that
    config = yaml.safe_load(result.one("ConfigMap", "binder-federation")["data"]["config.yaml"])
    settings = config_mod.parse(config).router.shutdown
    if shutdown:
        assert (settings.grace, settings.stream_deadline) == (8, 120.5)
    assert pod["terminationGracePeriodSeconds"] == math.ceil(settings.grace + settings.stream_deadline) + 10


@pytest.mark.parametrize("existing", ["", "federation-keys"])
def test_every_replica_gets_the_same_cookie_and_build_token_secrets(existing):
    """The keys that sign sticky cookies and build tokens come from one Secret for every pod,
    so a cookie or a launch page one replica made holds on the others."""
    result = rendered(ROUTER_CHART, {"replicaSecrets": {"existingSecret": existing}} if existing else None)
    container = result.one("Deployment")["spec"]["template"]["spec"]["containers"][0]
    env = {entry["name"]: entry for entry in container["env"]}
    config = config_mod.parse(yaml.safe_load(result.one("ConfigMap", "binder-federation")["data"]["config.yaml"]))
    for variable, key in ((config.router.cookie_secret_env, "cookie-secret"),
                          (config.router.stream.build_token.secret_env, "build-token-secret")):
        reference = env[variable]["valueFrom"]["secretKeyRef"]
        assert reference["key"] == key
        if existing:
            assert reference["name"] == existing
        else:
            secret = result.one("Secret", reference["name"])
            assert len(base64.b64decode(secret["data"][key])) >= 32
    names = [d["metadata"]["name"] for d in result.documents if d["kind"] == "Secret"]
    assert any(name.endswith("-replicas") for name in names) == (not existing)


def test_pod_disruption_budget_only_with_more_than_one_replica():
    kinds = lambda result: [d["kind"] for d in result.documents]  # noqa: E731
    assert "PodDisruptionBudget" in kinds(rendered(ROUTER_CHART))
    single = rendered(ROUTER_CHART, {"replicaCount": 1, "redis": {"enabled": False}})
    assert "PodDisruptionBudget" not in kinds(single)  # minAvailable 1 of 1 would block every node drain
    scaled = rendered(ROUTER_CHART, {"autoscaling": {"enabled": True, "minReplicas": 1, "maxReplicas": 3}})
    assert "PodDisruptionBudget" not in kinds(scaled)


@pytest.mark.parametrize("values, message", [
    ({"redis": {"enabled": False}}, "more than one router replica needs the shared store"),
    ({"ingress": {"enabled": True}}, "ingress.enabled=true needs ingress.host"),
    ({"autoscaling": {"enabled": True, "minReplicas": 7, "maxReplicas": 3}}, "autoscaling.minReplicas (7) is above autoscaling.maxReplicas (3)"),
    ({"podDisruptionBudget": {"minAvailable": 2}}, "podDisruptionBudget.minAvailable (2) must be below the replica count (2)"),
    ({"config": {"router": {"port": 9000}}}, "config.router"),
    ({"config": {"router": {"shutdown": {"grace": -1}}}}, "config.router.shutdown.grace"),
], ids=["memory with replicas", "ingress without host", "hpa min above max", "pdb blocks drains", "chart-owned key",
        "negative grace"])
def test_router_chart_refuses(values, message):
    result = template(ROUTER_CHART, values)
    assert result.returncode != 0 and message in result.stderr, result.stderr


def test_dashboard_configmap_carries_the_dashboard_for_grafanas_sidecar():
    configmap = rendered(ROUTER_CHART).one("ConfigMap", "-dashboards")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(configmap["data"]["federation.json"]) == json.loads(DASHBOARD.read_text())


def test_prometheus_rule_carries_the_alert_rules_file():
    result = rendered(ROUTER_CHART, {"metrics": {"prometheusRule": {"enabled": True, "labels": {"release": "prom"}}}})
    rule = result.one("PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1" and rule["metadata"]["labels"]["release"] == "prom"
    assert rule["spec"] == load_yaml(ALERT_RULES)
    assert "PrometheusRule" not in [d["kind"] for d in rendered(ROUTER_CHART).documents]


# -- the member chart ---------------------------------------------------------------------------


def test_member_chart_has_no_dependencies_and_renders_offline():
    """It goes beside an existing BinderHub release: no binderhub subchart to fetch."""
    assert "dependencies" not in load_yaml(MEMBER_CHART / "Chart.yaml")
    assert not (MEMBER_CHART / "charts").exists()
    result = rendered(MEMBER_CHART, MEMBER_MINIMAL)  # helm runs with an empty home: no repositories
    assert {d["kind"] for d in result.documents} == {
        "ServiceAccount", "Secret", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding", "Deployment"}


def test_member_kube_version_is_not_below_binderhubs():
    # The binderhub chart's kubeVersion is ">=1.28.0-0".
    assert Version(floor_version(MEMBER_CHART)) >= Version("1.28.0")
    assert template(MEMBER_CHART, MEMBER_MINIMAL, kube_version="1.27.0").returncode != 0


@pytest.mark.parametrize("variant", sorted(MEMBER_VARIANTS))
def test_member_agent_is_started_with_flags_binderfed_agent_accepts(variant, monkeypatch):
    values = MEMBER_VARIANTS[variant]
    result = rendered(MEMBER_CHART, values)
    pod = result.one("Deployment")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["args"][0] == "agent"
    (env,) = container["env"]
    assert env["name"] == "BINDERFED_AGENT_REDIS_URL" and "secretKeyRef" in env["valueFrom"]
    assert not any("--redis-url" in a for a in container["args"]), "the Redis URL carries a password"
    monkeypatch.setenv("BINDERFED_AGENT_REDIS_URL", "redis://:secret@redis.example.org:6379/0")
    parsed = _parse_with("hub.agent.cli", container["args"][1:])
    assert parsed.member == values["member"]["name"]
    assert parsed.image_prefix == values["agent"]["imagePrefix"]
    assert parsed.namespace == (values["agent"].get("binderhubNamespace") or "federation")
    assert parsed.token_file == "/etc/binderfed/token/token"
    assert parsed.redis_url == "redis://:secret@redis.example.org:6379/0"
    # The token and the URL come from the Secret the chart wrote, or the one given.
    secrets = {d["metadata"]["name"]: d for d in result.documents if d["kind"] == "Secret"}
    reference = env["valueFrom"]["secretKeyRef"]
    token = next(v for v in pod["volumes"] if v["name"] == "token")["secret"]
    if values["federation"]["redis"].get("existingSecret"):
        assert not secrets and reference == {"name": values["federation"]["redis"]["existingSecret"],
                                             "key": values["federation"]["redis"]["key"]}
    else:
        (secret,) = secrets.values()
        assert reference == {"name": secret["metadata"]["name"], "key": "redis-url"}
        assert token["secretName"] == secret["metadata"]["name"] and token["items"] == [{"key": "token", "path": "token"}]
        assert set(secret["data"]) == {"redis-url", "token"}


def test_member_secret_keys_cannot_collide():
    same_key = {**MEMBER_MINIMAL, "federation": {**MEMBER_MINIMAL["federation"],
                                                 "redis": {"url": "redis://r:6379/0", "key": "token"}}}
    secret = rendered(MEMBER_CHART, same_key).one("Secret")
    assert set(secret["data"]) == {"redis-url", "token"}  # the chart's own Secret has fixed keys
    shared = {**MEMBER_MINIMAL, "federation": {"redis": {"existingSecret": "federation", "key": "k"},
                                               "token": {"existingSecret": "federation", "key": "k"}}}
    result = template(MEMBER_CHART, shared)
    assert result.returncode != 0 and "two different keys" in result.stderr, result.stderr


@pytest.mark.parametrize("change, message", [
    ({"member": {"name": ""}}, "member.name is required"),
    ({"agent": {"imagePrefix": ""}}, "agent.imagePrefix is required"),
    ({"federation": {"redis": {"url": "redis+sentinel://pw@10.0.0.1:26379/binderfed/0"}}}, "federation.redis.url"),
    ({"binderhubEnabled": True}, "binderhubEnabled"),
], ids=["no name", "no image prefix", "sentinel url", "old subchart switch"])
def test_member_chart_refuses(change, message):
    values = yaml.safe_load(json.dumps(MEMBER_MINIMAL))
    for key, value in change.items():
        values[key] = {**values.get(key, {}), **value} if isinstance(value, dict) else value
    result = template(MEMBER_CHART, values)
    assert result.returncode != 0 and message in result.stderr, result.stderr


def test_member_rbac_is_least_privilege():
    result = rendered(MEMBER_CHART, MEMBER_VARIANTS["build namespace, specs, own service account"])
    rules = {(d["kind"], d["metadata"].get("namespace", "")): d["rules"] for d in result.documents
             if d["kind"] in ("Role", "ClusterRole")}
    pods = [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]
    assert rules == {("Role", "binder"): pods, ("Role", "builds"): pods,
                     ("ClusterRole", ""): [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list"]}]}
    assert "ServiceAccount" not in [d["kind"] for d in result.documents]
