"""Loading and validating the router's YAML configuration.

The file is validated against `config/schema.json` before anything reads it, so
every error names the file, the key path and what was expected.
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass, field
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


@dataclass(frozen=True)
class OutlierSettings:
    """Passive health (`health.outlier`): eject members whose launches keep failing.

    Envoy-style: `consecutive_failures` infrastructure failures in a row eject a member
    for `base_ejection_time` x the number of times it was ejected (capped at
    `max_ejection_time`); never more than `max_ejection_percent` of the members at once.
    """

    enabled: bool = True
    consecutive_failures: int = 3
    base_ejection_time: float = 30.0
    max_ejection_time: float = 300.0
    max_ejection_percent: float = 50.0


@dataclass(frozen=True)
class HealthSettings:
    period: float = 10.0
    failed_period: float = 30.0
    jitter: float = 0.1
    timeout: float = 5.0
    retries: int = 1
    versions_policy: str = "ignore"
    outlier: OutlierSettings = field(default_factory=OutlierSettings)
    # Seconds the `prober` lease lasts without renewal: how long replicas go unprobed
    # after the leader dies. None: `prober_lease_ttl` derives it from the period.
    lease_ttl: float | None = None
    # Seconds after which a member's last probe result no longer counts (it reads as
    # `unknown`). None: `status_max_age` derives it from the periods.
    max_status_age: float | None = None

    @property
    def prober_lease_ttl(self) -> float:
        """`lease_ttl`, or by default max(2 × period, 5) seconds."""
        return self.lease_ttl if self.lease_ttl is not None else max(2 * self.period, 5.0)

    @property
    def status_max_age(self) -> float:
        """`max_status_age`, or by default 4 × the longer of the two periods, at least 60 s."""
        if self.max_status_age is not None:
            return self.max_status_age
        return max(4 * max(self.period, self.failed_period), 60.0)


FORWARD_MODES = ("redirect", "stream")


@dataclass(frozen=True)
class ForwardModes:
    """`router.forward` given per launch path family (a plain string applies to all)."""

    v2: str = "redirect"
    build: str = "redirect"
    repo: str = "redirect"


@dataclass(frozen=True)
class BuildTokenSettings:
    """`router.stream.build_token`: the secret that signs the router's own launch page's build
    tokens (read once at start: a file wins over the environment), and their lifetime."""

    secret_env: str = "BINDERFED_BUILD_TOKEN_SECRET"
    secret_file: str = ""
    expires: float = 300.0  # BinderHub's build_token_expires_seconds


@dataclass(frozen=True)
class StreamSettings:
    """`router.stream`: how the router relays a member's /build/ stream (forward: stream)."""

    stall_timeout: float = 60.0     # no event and no keepalive for this long: the member stalled
    max_attempts: int = 3           # members tried for one launch, the first choice included
    keepalive: float = 20.0         # the router's own `:keepalive` while upstream is quiet
    connect_timeout: float = 10.0   # up to the member's response headers
    linger: float = 60.0            # keep the stream open after the final event (as BinderHub does)
    build_token: BuildTokenSettings = field(default_factory=BuildTokenSettings)


@dataclass(frozen=True)
class LandingProxySettings:
    """`router.landing_proxy`: bounds on serving the prime member's pages (`landing: proxy`)."""

    connect_timeout: float = 5.0     # to open the connection to the prime
    timeout: float = 20.0            # until the prime's response headers (then 504)
    read_timeout: float = 20.0       # silence while its body streams
    total_timeout: float = 120.0     # one whole page or asset
    max_body_bytes: int = 50 * 1024 * 1024


LANDING_MODES = ("page", "prime", "proxy")


@dataclass(frozen=True)
class ShutdownSettings:
    """`router.shutdown`: the router's graceful stop on SIGTERM (router.serve)."""

    grace: float = 5.0             # seconds still serving after SIGTERM while /ready says 503
    stream_deadline: float = 30.0  # then seconds relayed streams get to reach their final event


@dataclass(frozen=True)
class RouterSettings:
    host: str = "127.0.0.1"
    port: int = 8080
    forward: str | ForwardModes = "redirect"
    sticky_cookie: str = "binder-federation-member"
    cookie_max_age_hours: float = 4.0
    # Where the secret that signs sticky values is found (router.sticky); none: random per process.
    cookie_secret_env: str = "BINDERFED_COOKIE_SECRET"
    cookie_secret_file: str = ""
    retry_after: int = 30
    landing: str = "page"
    landing_proxy: LandingProxySettings = field(default_factory=LandingProxySettings)
    header_timeout: float = 10.0   # seconds a new connection has for its first request's headers
    idle_timeout: float = 75.0     # seconds a connection may wait for its next request
    trusted_proxies: tuple[str, ...] = ()
    stream: StreamSettings = field(default_factory=StreamSettings)
    shutdown: ShutdownSettings = field(default_factory=ShutdownSettings)
    # `trusted_proxies` parsed, once per configuration (entries that are no network are
    # refused by `parse`, skipped here for configs built in code).
    trusted_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = field(
        init=False, compare=False, repr=False, default=())

    def __post_init__(self) -> None:
        networks = []
        for entry in self.trusted_proxies:
            try:
                networks.append(ipaddress.ip_network(entry.strip(), strict=False))
            except ValueError:
                pass
        object.__setattr__(self, "trusted_networks", tuple(networks))

    def forward_for(self, family: str) -> str:
        """"redirect" or "stream" for a launch path family ("v2", "build", "repo")."""
        if isinstance(self.forward, str):
            return self.forward
        return getattr(self.forward, family, "redirect")


@dataclass(frozen=True)
class ConsulSettings:
    enabled: bool = False
    url: str = "http://127.0.0.1:8500"
    service: str = "binder-federation"
    datacenter: str = ""
    token_env: str = "CONSUL_HTTP_TOKEN"
    token_file: str = ""
    wait: float = 60.0
    exclude_critical: bool = True
    retry_max: float = 30.0
    # Hosts a registration may point at (federation.admission); empty: none is admitted.
    allowed_hosts: tuple[str, ...] = ()


@dataclass(frozen=True)
class AdminSettings:
    token_env: str = "BINDERFED_ADMIN_TOKEN"
    token_file: str = ""


@dataclass(frozen=True)
class AgentToken:
    """Where the token that signs one member agent's reports is found (never the token itself)."""

    member: str
    token_env: str = ""
    token_file: str = ""


@dataclass(frozen=True)
class ReportSettings:
    """Member agent reports (`binderfed agent`, docs/agent.md), read from Redis."""

    enabled: bool = False
    url: str = ""                     # Redis the agents write to; "" = store.url when that is Redis
    period: float = 10.0
    max_age: float = 120.0
    members: tuple[AgentToken, ...] = ()

    def redis_url(self, store_url: str) -> str | None:
        if self.url:
            return self.url
        if store_url.startswith(("redis://", "rediss://")):
            return store_url
        return None


@dataclass(frozen=True)
class RateLimit:
    """At most `launches` launches per fixed window of `window` seconds; 0 launches = no limit."""

    launches: int
    window: float = 600.0

    @property
    def active(self) -> bool:
        return self.launches > 0


@dataclass(frozen=True)
class BanRule:
    """A repository refused at the federation edge: `pattern` is searched (ignoring case) in `<provider>/<spec>`."""

    pattern: re.Pattern[str]
    message: str = ""


@dataclass(frozen=True)
class RepoCapRule:
    """A repository cap other than `repo_concurrency` for launches whose `<provider>/<spec>` matches
    `pattern` (from its start, ignoring case), like a BinderHub `spec_config` entry with a `quota`."""

    pattern: re.Pattern[str]
    concurrency: int


@dataclass(frozen=True)
class LimitSettings:
    """`limits`: abuse limits applied before a launch is placed (router.limits).

    Counting limits (`per_client`, `per_repo`, the repository cap) apply while `enabled`;
    the ban list always applies. Counters live in the store, so replicas share them.
    The defaults refuse nothing but banned repositories: members see the visitor's
    address and rate-limit it themselves, and a workshop or a viral repository must not
    be turned away at the edge. `router.limits.repo_cap` says which cap a launch has.
    """

    enabled: bool = True
    per_client: RateLimit = field(default_factory=lambda: RateLimit(0, 600.0))
    per_repo: RateLimit = field(default_factory=lambda: RateLimit(0, 600.0))
    repo_concurrency: int = 0       # launches of one repository in progress at once; 0 = no cap
    repo_concurrency_overrides: tuple[RepoCapRule, ...] = ()
    repo_launch_ttl: float = 300.0  # seconds one launch counts towards the repository cap
    banned: tuple[BanRule, ...] = ()

    def ban_for(self, provider_spec: str) -> BanRule | None:
        """The first ban rule whose pattern is found in `provider_spec`, if any."""
        return next((rule for rule in self.banned if rule.pattern.search(provider_spec)), None)


@dataclass(frozen=True)
class FederationConfig:
    members: tuple[Member, ...] = ()
    health: HealthSettings = field(default_factory=HealthSettings)
    policy: PolicySettings = field(default_factory=PolicySettings)
    router: RouterSettings = field(default_factory=RouterSettings)
    store_url: str = "memory://"
    launch_log: str = "none"
    consul: ConsulSettings = field(default_factory=ConsulSettings)
    admin: AdminSettings = field(default_factory=AdminSettings)
    reports: ReportSettings = field(default_factory=ReportSettings)
    limits: LimitSettings = field(default_factory=LimitSettings)
    source: str = "<defaults>"


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
