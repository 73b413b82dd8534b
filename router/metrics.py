"""Prometheus metrics of one router process.

Each app gets its own registry so tests can run several routers in one process.
The existing mybinder.org redirector's names (`federation_health`,
`federation_health_check`, `federation_redirect_count`) keep their meaning.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from federation.members import Member, MemberState, MemberStatus

DECISION_BUCKETS = (1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 0.1)
# Causes of federation_refused_launches_total, exported at 0 from the start so dashboards
# and alerts see every series: an HTTP request too malformed to parse (router.malformed),
# a malformed launch path, no member to take the launch, and the abuse limits of
# router.limits.
REFUSAL_CAUSES = ("bad_request", "bad_path", "no_member", "rate_limit_client", "rate_limit_repo", "repo_cap", "banned")
# A cached image launches in seconds; a fresh build takes minutes, up to an hour.
READY_BUCKETS = (1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.health = Gauge("federation_health", "1 if the member takes launches (healthy), else 0.", ["host"], registry=r)
        self.health_check = Histogram(
            "federation_health_check", "Duration of active health checks of members, by result.",
            ["host", "result"], registry=r,
        )
        self.redirects = Counter("federation_redirect_count", "Launches redirected to each member.", ["host"], registry=r)
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
        self.source_up = Gauge("federation_membership_source_up", "1 if the membership source answered its last query.", ["source"], registry=r)
        self.source_members = Gauge("federation_membership_source_members", "Members the source currently declares.", ["source"], registry=r)
        self.admin_changes = Counter("federation_admin_changes", "Member overrides changed through the admin API, by action.", ["action"], registry=r)
        # Stream relay (router.forward: stream) and passive health.
        self.launch_outcomes = Counter(
            "federation_launch_outcomes",
            "Relayed launches by final outcome (ready, failed_build, failed_infra, client_gone) and the member "
            "that had the launch last.",
            ["member", "outcome"], registry=r,
        )
        self.failovers = Counter(
            "federation_failovers", "Relayed launches moved to the next member, by the cause of the failure.",
            ["cause"], registry=r,
        )
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
        # Robustness of the router itself (router.connections, federation.redis_store).
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
        result = "ok" if status.state in (MemberState.HEALTHY, MemberState.FULL) else "failed"
        if status.latency is not None:
            self.health_check.labels(member.name, result).observe(status.latency)
        self.health.labels(member.name).set(1 if status.state == MemberState.HEALTHY else 0)
        for kind in ("total", "build", "user"):
            self.member_pods.labels(member.name, kind).set(getattr(status, f"{kind}_pods"))
        self.member_quota.labels(member.name).set(status.quota if status.quota is not None else -1)

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

    def set_states(self, states: dict[str, MemberState]) -> None:
        for name, current in states.items():
            for state in MemberState:
                self.member_state.labels(name, state.value).set(1 if state == current else 0)

    def forget_member(self, name: str) -> None:
        for gauge in (self.health, self.member_quota, self.in_flight):
            try:
                gauge.remove(name)
            except KeyError:
                pass
        for state in MemberState:
            try:
                self.member_state.remove(name, state.value)
            except KeyError:
                pass
        for kind in ("total", "build", "user"):
            try:
                self.member_pods.remove(name, kind)
            except KeyError:
                pass

    def render(self) -> bytes:
        return generate_latest(self.registry)
