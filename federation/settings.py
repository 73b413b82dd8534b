"""The router's configuration as typed, immutable settings: what `federation.config` builds.

One frozen dataclass per section of the YAML file (`config/schema.json` documents each
key; docs/config-reference.md is generated from it). The defaults here are the defaults
of a file that leaves a key out. `PolicySettings` (the file's `policy`) lives with
placement (`federation/placement/settings.py`), which is all that reads it.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

from .members import Member
from .placement.settings import PolicySettings


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
