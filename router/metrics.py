"""Prometheus metrics of one router process.

Each app gets its own registry so tests can run several routers in one process.

The mybinder.org redirector's three metrics are exported exactly as it exports them,
so its dashboards and alerts keep working (docs/operator-guide.md):

- `federation_health{member,reason}` (gauge): 1 if the member's health checks pass,
  else 0; `reason` is "" when healthy, else the failing check ("versions", a /health
  check's service name, "Pod quota" when near its quota, "unknown" for errors).
  Unlike the redirector, which leaves the series of an earlier reason behind (so
  `max(federation_health) by (member)` can read 1 for a failing member), a member has
  exactly one series here.
- `federation_health_check{member,check}` (gauge): 1/0 per check of the last probe.
- `federation_redirect_count{member,reason}` (a gauge that only goes up, no `_total`):
  launches sent to each member, reason "cookie" or "load_balancer".

Member gauges are exported by every replica from the store's statuses at scrape time
(`export_members`), not by the prober when it probes: a replica that lost the prober
lease then never exports what it saw when it last led.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from federation.members import Member, MemberState, MemberStatus
from federation.placement.view import FederationView
from hub.failures import FailureCause

DECISION_BUCKETS = (1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 0.1)
# Causes of federation_refused_launches_total, exported at 0 from the start so dashboards
# and alerts see every series: an HTTP request too malformed to parse (router.malformed),
# a malformed launch path, no member to take the launch, and the abuse limits of
# router.limits.
REFUSAL_CAUSES = ("bad_request", "bad_path", "no_member", "rate_limit_client", "rate_limit_repo", "repo_cap", "banned")
# A cached image launches in seconds; a fresh build takes minutes, up to an hour.
READY_BUCKETS = (1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600)
# Label values of counters exported at 0 from the start (or from a member's arrival): a
# series that appears with its first increment reads 0 in rate() and increase().
ADMIN_ACTIONS = ("drain", "undrain", "weight", "clear")
RELOAD_RESULTS = ("ok", "error")
OUTCOMES = ("ready", "failed_build", "failed_infra", "client_gone", "router_shutdown")
REPORT_RESULTS = ("accepted", "stale", "unknown_member", "bad_signature", "malformed")
PROBE_RESULTS = ("ok", "failed")
QUOTA_CHECK = "Pod quota"


def redirector_reason(status: MemberStatus) -> str:
    """The `reason` label of federation_health, as the mybinder.org redirector sets it."""
    if status.state == MemberState.HEALTHY:
        return ""
    if status.state == MemberState.FULL:
        return QUOTA_CHECK  # the redirector's "approaching pod quota"
    failing = next((name for name, ok in status.checks if not ok and name != QUOTA_CHECK), None)
    return failing or "unknown"


def redirect_reason(decision_reason: str) -> str:
    """The `reason` label of federation_redirect_count: the redirector knows two."""
    return "cookie" if decision_reason == "cookie" else "load_balancer"


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        # Labelled children of the per-launch metrics, bound once (count_launch, observe_decision).
        self._launch_children: dict[tuple[str, str, str], tuple] = {}
        self._decision_children: dict[str, Histogram] = {}
        # The redirector's three (see the module docstring).
        self.health = Gauge(
            "federation_health",
            "Overall health check status for each member: 1 = healthy, 0 = unhealthy. 'member' is the federation "
            "member. 'reason' is the check that failed, if unhealthy ('' when healthy, 'Pod quota' near its quota, "
            "'unknown' for errors). One series per member.",
            ["member", "reason"], registry=r,
        )
        self.health_check = Gauge(
            "federation_health_check",
            "Individual health check status for each member: 1 = healthy, 0 = unhealthy. 'member' is the "
            "federation member. 'check' is the name of the check ('versions' or a /health check's service).",
            ["member", "check"], registry=r,
        )
        self.redirects = Gauge(
            "federation_redirect_count",
            "Number of requests routed to each member. 'member' is the federation member. 'reason' is cookie or "
            "load_balancer (federation_launches_total has the detailed reasons).",
            ["member", "reason"], registry=r,
        )
        self.probe_seconds = Histogram(
            "federation_health_check_duration_seconds",
            "Duration of the active health checks (probes) of members made by this replica, by result (ok: healthy "
            "or full; failed: unhealthy or unreachable, timed out included).",
            ["member", "result"], registry=r,
        )
        self.launches = Counter(
            "federation_launches", "Launches routed, by member, decision reason and path family.",
            ["member", "reason", "family"], registry=r,
        )
        self.refused = Counter(
            "federation_refused_launches",
            "Launch requests the router answered itself, by cause (" + ", ".join(REFUSAL_CAUSES) + ").",
            ["cause"], registry=r,
        )
        for cause in REFUSAL_CAUSES:
            self.refused.labels(cause)
        self.decision_seconds = Histogram(
            "federation_decision_seconds", "Time to decide where a launch goes (store read + placement).",
            ["strategy"], buckets=DECISION_BUCKETS, registry=r,
        )
        self.member_state = Gauge("federation_member_state", "1 for the member's current state.", ["member", "state"], registry=r)
        self.member_pods = Gauge("federation_member_pods", "Pods the member reports, by kind.", ["member", "kind"], registry=r)
        self.member_quota = Gauge("federation_member_quota", "The member's pod quota (-1: unknown or unlimited).", ["member"], registry=r)
        self.in_flight = Gauge("federation_in_flight_launches", "Launches sent to a member not yet visible in its pod count.", ["member"], registry=r)
        self.cache_entries = Gauge("federation_image_cache_entries", "Live (repository, member) entries of the image-cache map.", registry=r)
        self.store_degraded = Gauge("federation_store_degraded", "1 while the shared store is unreachable and this replica routes alone.", registry=r)
        self.prober_leader = Gauge("federation_prober_leader", "1 if this replica holds the prober lease.", registry=r)
        self.agent_reports = Counter(
            "federation_agent_reports",
            "Member agent reports read, by member ('' if not a member) and result "
            "(accepted, stale, unknown_member, bad_signature, malformed).",
            ["member", "result"], registry=r,
        )
        self.config_reloads = Counter(
            "federation_config_reload", "Config file reloads, by result (ok: applied; error: rejected, last good config kept).",
            ["result"], registry=r,
        )
        # Named like Prometheus's own; 1 at start: the app is built from a validated config.
        self.config_valid = Gauge(
            "federation_config_last_reload_successful", "1 if the last config file reload succeeded (0: last good config kept).",
            registry=r,
        )
        self.config_valid.set(1)
        for result in RELOAD_RESULTS:
            self.config_reloads.labels(result)
        self.source_up = Gauge("federation_membership_source_up", "1 if the membership source answered its last query.", ["source"], registry=r)
        self.source_members = Gauge("federation_membership_source_members", "Members the source currently declares.", ["source"], registry=r)
        self.admin_changes = Counter(
            "federation_admin_changes", "Member overrides changed through the admin API, by action (" + ", ".join(ADMIN_ACTIONS) + ").",
            ["action"], registry=r,
        )
        for action in ADMIN_ACTIONS:
            self.admin_changes.labels(action)
        # Stream relay (router.forward: stream) and passive health.
        self.launch_outcomes = Counter(
            "federation_launch_outcomes",
            "Relayed launches by final outcome (" + ", ".join(OUTCOMES) + ") and the member that had the launch last.",
            ["member", "outcome"], registry=r,
        )
        self.failovers = Counter(
            "federation_failovers", "Relayed launches moved to the next member, by the cause of the failure.",
            ["cause"], registry=r,
        )
        for cause in FailureCause:
            self.failovers.labels(cause.value)
        self.relay_failures = Counter(
            "federation_relay_failures", "Infrastructure failures of members seen by the stream relay, by member and cause.",
            ["member", "cause"], registry=r,
        )
        self.time_to_ready = Histogram(
            "federation_time_to_ready_seconds",
            "Seconds from a relayed /build/ request to its ready event, failovers included.",
            buckets=READY_BUCKETS, registry=r,
        )
        self.relayed_streams = Gauge("federation_relayed_streams", "/build/ streams being relayed right now.", registry=r)
        self.ejections = Counter(
            "federation_ejections", "Passive-health ejections made by this replica, by member.", ["member"], registry=r,
        )
        self.ejected = Gauge("federation_ejected", "1 while the member is ejected by passive health.", ["member"], registry=r)
        # Robustness of the router itself (router.connections, federation.stores.fallback).
        self.header_timeouts = Counter(
            "federation_header_timeouts",
            "Client connections closed because their first request's headers did not arrive within "
            "router.header_timeout seconds.", registry=r,
        )
        self.store_errors = Counter(
            "federation_store_errors",
            "Shared-store calls that failed other than by a lost connection or a timeout (a bug or a broken "
            "store: see the log), answered from this replica's memory.", registry=r,
        )

    def observe_probe(self, member: Member, status: MemberStatus, previous: MemberStatus | None) -> None:
        """The prober's observer: the duration of one probe made by this replica."""
        result = "ok" if status.state in (MemberState.HEALTHY, MemberState.FULL) else "failed"
        if status.latency is not None:
            self.probe_seconds.labels(member.name, result).observe(status.latency)

    def export_members(self, view: FederationView) -> None:
        """Set every member gauge from one view of the store (at scrape time, on every replica).

        The gauges are rebuilt whole, with no await in between, so a member that left,
        a reason or a check that changed, leaves no series behind.
        """
        for gauge in (self.health, self.health_check, self.member_state, self.member_pods, self.member_quota,
                      self.in_flight):
            gauge.clear()
        for m in view.members:
            name, status, current = m.name, m.status, m.state(view.now)
            for state in MemberState:
                self.member_state.labels(name, state.value).set(1 if state == current else 0)
            self.in_flight.labels(name).set(m.in_flight)
            if status.state == MemberState.UNKNOWN:
                continue  # not probed yet: the redirector too exports nothing before a first check
            self.health.labels(name, redirector_reason(status)).set(1 if status.state == MemberState.HEALTHY else 0)
            for check, ok in status.checks:
                self.health_check.labels(name, check).set(1 if ok else 0)
            for kind in ("total", "build", "user"):
                self.member_pods.labels(name, kind).set(getattr(status, f"{kind}_pods"))
            self.member_quota.labels(name).set(status.quota if status.quota is not None else -1)

    def know_member(self, name: str, *, reports: bool = False) -> None:
        """Export a new member's counters at 0 (`reports`: it may send agent reports)."""
        self.ejections.labels(name)
        for outcome in OUTCOMES:
            self.launch_outcomes.labels(name, outcome)
        for cause in FailureCause:
            self.relay_failures.labels(name, cause.value)
        if reports:
            for result in REPORT_RESULTS:
                self.agent_reports.labels(name, result)

    def observe_redirect(self, member: str, decision_reason: str) -> None:
        self.redirects.labels(member, redirect_reason(decision_reason)).inc()

    def count_launch(self, member: str, decision_reason: str, family: str) -> None:
        """One routed launch: federation_launches_total and federation_redirect_count.

        The hot path: the labelled children are bound once per label set and kept
        (`labels()` validates and locks on every call); `forget_member` drops them.
        """
        key = (member, decision_reason, family)
        children = self._launch_children.get(key)
        if children is None:
            children = (self.launches.labels(member, decision_reason, family),
                        self.redirects.labels(member, redirect_reason(decision_reason)))
            self._launch_children[key] = children
        children[0].inc()
        children[1].inc()

    def observe_decision(self, strategy: str, seconds: float) -> None:
        child = self._decision_children.get(strategy)
        if child is None:
            child = self._decision_children[strategy] = self.decision_seconds.labels(strategy)
        child.observe(seconds)

    def observe_ejection(self, member: str, event: str) -> None:
        """Passive health's observer (health.outlier): "ejected", "seen" or "returned"."""
        if event == "ejected":
            self.ejections.labels(member).inc()
        self.ejected.labels(member).set(0 if event == "returned" else 1)

    def observe_reload(self, result: str) -> None:
        self.config_reloads.labels(result).inc()
        self.config_valid.set(1 if result == "ok" else 0)

    def observe_source(self, source: str, up: bool, members: int) -> None:
        self.source_up.labels(source).set(1 if up else 0)
        self.source_members.labels(source).set(members)

    def forget_member(self, name: str) -> None:
        """A member left: its series go (the member gauges go at the next scrape anyway)."""
        self._launch_children = {k: c for k, c in self._launch_children.items() if k[0] != name}
        for metric in (self.health, self.health_check, self.member_state, self.member_pods, self.member_quota,
                       self.in_flight, self.redirects, self.ejected, self.ejections, self.launch_outcomes,
                       self.agent_reports, self.relay_failures, self.probe_seconds, self.launches):
            _remove_member(metric, name)

    def render(self) -> bytes:
        return generate_latest(self.registry)


def _remove_member(metric, name: str) -> None:
    """Remove every series of `metric` whose first label (member) is `name`."""
    # prometheus_client keeps a labelled metric's children keyed by their label values.
    for values in list(metric._metrics):  # noqa: SLF001 - no public way to list children
        if values and values[0] == name:
            try:
                metric.remove(*values)
            except KeyError:
                pass
