"""Loading and validating the router's YAML configuration.

The file is validated against `config/schema.json` before anything reads it, so
every error names the file, the key path and what was expected. What loading builds
is a `FederationConfig` of typed, frozen settings (`federation/settings.py`).
"""

from __future__ import annotations

import ipaddress
import json
import re
from functools import lru_cache
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, Mapping

import jsonschema
import yaml

from .admission import AdmissionError, admit, check_weight, host_rules
from .members import Member
from .placement.settings import DataRule, PolicySettings  # built here from the file's `policy`
from .placement.strategies import STRATEGIES
from .settings import (
    AdminSettings,
    AgentToken,
    BanRule,
    BuildTokenSettings,
    ConsulSettings,
    FORWARD_MODES,
    FederationConfig,
    ForwardModes,
    HealthSettings,
    LANDING_MODES,
    LandingProxySettings,
    LimitSettings,
    OutlierSettings,
    RateLimit,
    RepoCapRule,
    ReportSettings,
    RouterSettings,
    ShutdownSettings,
    StreamSettings,
)

# The settings types are re-exported: `federation.config` is the one import for a config.
__all__ = [
    "AdminSettings",
    "AgentToken",
    "BanRule",
    "BuildTokenSettings",
    "CONFIG_DIR",
    "ConfigError",
    "ConsulSettings",
    "DEMO_CONFIG",
    "DataRule",
    "FORWARD_MODES",
    "FederationConfig",
    "ForwardModes",
    "HealthSettings",
    "LANDING_MODES",
    "LandingProxySettings",
    "LimitSettings",
    "OutlierSettings",
    "PolicySettings",
    "RateLimit",
    "RepoCapRule",
    "ReportSettings",
    "RouterSettings",
    "SCHEMA_PATH",
    "ShutdownSettings",
    "StreamSettings",
    "check_runnable",
    "load",
    "parse",
    "schema",
    "validate",
]


def _config_files() -> Traversable:
    """The files of the repository's `config/` folder (schema, demo config, examples).

    `config/` is data, not a Python package (DESIGN.md), and the one place these files
    live. A wheel carries them as package data in `federation/config_files/`
    (pyproject.toml maps the folder there); an editable install or a plain checkout has
    no such directory and reads `config/` beside the packages.
    """
    packaged = resources.files("federation") / "config_files"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent / "config"


CONFIG_DIR = _config_files()
SCHEMA_PATH = CONFIG_DIR / "schema.json"
DEMO_CONFIG = CONFIG_DIR / "demo.yaml"


class ConfigError(Exception):
    """A configuration file is unreadable or invalid; the message says where and why."""

    def __init__(self, source: str, key: str, problem: str):
        self.source = source
        self.key = key
        self.problem = problem
        where = f"{source}: {key}" if key else source
        super().__init__(f"{where}: {problem}")


@lru_cache(maxsize=1)
def schema() -> dict[str, Any]:
    """config/schema.json with the placement strategies' names filled in from their registry."""
    loaded = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    loaded["properties"]["policy"]["properties"]["strategy"]["enum"] = list(STRATEGIES)
    return loaded


def _key_path(path: Any) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _explain(error: jsonschema.ValidationError) -> str:
    """Say what was expected in words an operator understands."""
    if error.validator == "additionalProperties":
        return f"unknown key ({error.message.split('(')[-1].rstrip(')')})"
    if error.validator == "required":
        return f"missing required key: {error.message}"
    if error.validator == "enum":
        return f"{error.instance!r} is not one of {', '.join(map(repr, error.validator_value))}"
    if error.validator == "type":
        return f"expected {error.validator_value}, got {type(error.instance).__name__} {error.instance!r}"
    if error.validator == "pattern":
        return f"{error.instance!r} does not have the expected form ({error.schema.get('description', error.validator_value)})"
    return error.message


def validate(data: Any, source: str) -> None:
    """Raise ConfigError for the first (most relevant) schema violation."""
    validator = jsonschema.Draft202012Validator(schema(), format_checker=jsonschema.FormatChecker())
    error = jsonschema.exceptions.best_match(validator.iter_errors(data))
    if error is not None:
        raise ConfigError(source, _key_path(error.absolute_path) or "(top level)", _explain(error))


def parse(data: Any, source: str = "<config>") -> FederationConfig:
    """Validate a decoded config document and build the typed configuration."""
    if data is None:
        data = {}
    validate(data, source)
    members = tuple(_member(m, index, source) for index, m in enumerate(data.get("members", [])))
    _check_unique(members, source)
    health_data = dict(data.get("health", {}))
    health = HealthSettings(outlier=OutlierSettings(**health_data.pop("outlier", {})), **health_data)
    policy_data = dict(data.get("policy", {}))
    rules = tuple(
        DataRule(re.compile(rule["pattern"]), rule["site"]) for rule in policy_data.pop("data_rules", [])
    )
    if "tiers" in policy_data:
        policy_data["tiers"] = tuple(policy_data["tiers"])
    policy = PolicySettings(data_rules=rules, **policy_data)
    router_data = dict(data.get("router", {}))
    if "trusted_proxies" in router_data:
        router_data["trusted_proxies"] = tuple(router_data["trusted_proxies"])
        for index, entry in enumerate(router_data["trusted_proxies"]):
            try:
                ipaddress.ip_network(entry.strip(), strict=False)
            except ValueError:
                raise ConfigError(source, f"router.trusted_proxies[{index}]",
                                  f"{entry!r} is not an IP address or CIDR network (such as 10.0.0.0/8)") from None
    if isinstance(router_data.get("forward"), dict):
        router_data["forward"] = ForwardModes(**router_data["forward"])
    stream_data = dict(router_data.get("stream", {}))
    stream_data["build_token"] = BuildTokenSettings(**stream_data.get("build_token", {}))
    router_data["stream"] = StreamSettings(**stream_data)
    router_data["landing_proxy"] = LandingProxySettings(**router_data.get("landing_proxy", {}))
    router_data["shutdown"] = ShutdownSettings(**router_data.get("shutdown", {}))
    return FederationConfig(
        members=members,
        health=health,
        policy=policy,
        router=RouterSettings(**router_data),
        store_url=data.get("store", {}).get("url", "memory://"),
        launch_log=data.get("launch_log", {}).get("sink", "none"),
        consul=_consul(data.get("consul", {}), source),
        admin=AdminSettings(**data.get("admin", {})),
        reports=_reports(data.get("reports", {})),
        limits=_limits(data.get("limits", {})),
        source=source,
    )


def load(path: str | Path) -> FederationConfig:
    """Read, validate and parse a YAML config file."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(str(path), "", f"cannot read file: {exc.strerror or exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(str(path), where, f"not valid YAML: {getattr(exc, 'problem', exc)}") from exc
    return parse(data, str(path))


def _limits(data: Mapping[str, Any]) -> LimitSettings:
    settings = dict(data)
    for name in ("per_client", "per_repo"):
        if name in settings:
            default = getattr(LimitSettings(), name)
            given = settings[name]
            settings[name] = RateLimit(int(given.get("launches", default.launches)),
                                       float(given.get("window", default.window)))
    # Patterns were checked by the schema's "regex" format; compile errors cannot happen here.
    # Case-insensitive, as BinderHub's banned_specs: GitHub does not tell Org/Repo from org/repo.
    settings["banned"] = tuple(BanRule(re.compile(rule["pattern"], re.IGNORECASE), rule.get("message", ""))
                               for rule in settings.get("banned", []))
    # As BinderHub's spec_config: re.match (from the start), ignoring case.
    settings["repo_concurrency_overrides"] = tuple(
        RepoCapRule(re.compile(rule["pattern"], re.IGNORECASE), int(rule["concurrency"]))
        for rule in settings.get("repo_concurrency_overrides", []))
    if "repo_launch_ttl" in settings:
        settings["repo_launch_ttl"] = float(settings["repo_launch_ttl"])
    return LimitSettings(**settings)


def _reports(data: Mapping[str, Any]) -> ReportSettings:
    settings_data = dict(data)
    tokens = tuple(
        AgentToken(member=name, token_env=ref.get("token_env", ""), token_file=ref.get("token_file", ""))
        for name, ref in sorted(settings_data.pop("members", {}).items())
    )
    return ReportSettings(members=tokens, **settings_data)


def check_runnable(cfg: FederationConfig) -> None:
    """Checks of the config a router will run with, command-line overrides applied.

    Not part of `parse`: `binderfed serve --store-url` (the chart passes a store URL
    with credentials that way) may supply what the file leaves out.
    """
    if cfg.reports.enabled and cfg.reports.redis_url(cfg.store_url) is None:
        raise ConfigError(cfg.source, "reports.url", "agent reports travel through Redis: set reports.url, "
                          "or use a redis:// or rediss:// store.url (or --store-url)")


def _member(data: Mapping[str, Any], index: int, source: str) -> Member:
    try:
        member = Member(
            name=data["name"],
            url=data["url"].rstrip("/"),
            weight=check_weight(data.get("weight", 1)),   # NaN and .inf pass the schema's minimum
            prime=bool(data.get("prime", False)),
            data_sites=tuple(data.get("data_sites", ())),
            region=data.get("region", ""),
            cached_repos=tuple(data.get("cached_repos", ())),
            source="config",
            hub_url=data.get("hub_url", "").rstrip("/"),
        )
        # The operator's own file: trusted for the addresses it names (no host rules).
        return admit(member)
    except AdmissionError as exc:
        raise ConfigError(source, f"members[{index}].{exc.field}", exc.why) from None


def _consul(data: Mapping[str, Any], source: str) -> ConsulSettings:
    settings = dict(data)
    if "allowed_hosts" in settings:
        settings["allowed_hosts"] = tuple(settings["allowed_hosts"])
        for index, entry in enumerate(settings["allowed_hosts"]):
            try:
                host_rules([entry])
            except ValueError as exc:
                raise ConfigError(source, f"consul.allowed_hosts[{index}]", str(exc)) from None
    return ConsulSettings(**settings)


def _check_unique(members: tuple[Member, ...], source: str) -> None:
    seen: dict[str, int] = {}
    for index, member in enumerate(members):
        if member.name in seen:
            raise ConfigError(
                source, f"members[{index}].name", f"duplicate member name {member.name!r} (also members[{seen[member.name]}])"
            )
        seen[member.name] = index
