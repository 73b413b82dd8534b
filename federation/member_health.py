"""Member health rules: what one probe of a member's /health and /versions means.

`assess()` turns one probe's outcome into the member's state and its reason in our
own words. It is pure (no I/O, no clock), so the prober (`health.prober`), which
probes real members, and the simulator (`federation.simulate`), which probes modelled
ones, judge a member by the same rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from hub.models import MAX_COUNT, HealthReport

from .members import MemberState, MemberStatus


@dataclass(frozen=True)
class ProbeResult:
    """What one probe of one member saw: a health report or the error that prevented one."""

    report: HealthReport | None
    versions: Mapping[str, Any]
    error: str = ""              # in our own words: becomes the member's public reason
    unreachable: bool = False
    latency: float | None = None
    detail: str = ""             # what the member sent (an excerpt), for the log only


def assess(
    name: str,
    result: ProbeResult,
    previous: MemberStatus | None,
    headroom: int,
    reference_version: str | None,
    now: float,
) -> MemberStatus:
    """Turn one probe result into the member's status (pure)."""
    failures = min((previous.consecutive_failures if previous else 0) + 1, MAX_COUNT)
    if result.report is None:
        return MemberStatus(
            name=name, state=MemberState.UNHEALTHY, reason=result.error, checked_at=now,
            latency=result.latency, consecutive_failures=failures,
            versions=previous.versions if previous else {}, reachable=not result.unreachable,
        )
    report = result.report
    version = result.versions.get("binderhub") if result.versions else None
    version_differs = reference_version is not None and version is not None and version != reference_version
    # "versions" is a check when /versions was fetched and compared (as the redirector's).
    # Only BinderHub's own check names: the checks reach the API and metric labels.
    checks = ((("versions", not version_differs),) if result.versions else ()) + report.public_checks
    base = dict(
        name=name, quota=report.quota, has_quota=report.has_quota_check, total_pods=report.total_pods,
        build_pods=report.build_pods, user_pods=report.user_pods, versions=dict(result.versions),
        checked_at=now, latency=result.latency, checks=checks,
    )
    if not report.ok:
        failed = ", ".join(report.public_failed_checks) or f"HTTP {report.http_status}"
        return MemberStatus(state=MemberState.UNHEALTHY, reason=f"failed checks: {failed}",
                            consecutive_failures=failures, **base)
    if version_differs:
        return MemberStatus(state=MemberState.UNHEALTHY,
                            reason=f"runs BinderHub {version}, federation expects {reference_version}",
                            consecutive_failures=failures, **base)
    if report.quota is not None and report.quota - report.total_pods <= headroom:
        return MemberStatus(state=MemberState.FULL,
                            reason=f"full: {report.total_pods} of {report.quota} pods (headroom {headroom})", **base)
    if not report.has_quota_check:
        reason = "ok (capacity unknown: no Pod quota check)"
    elif report.quota is None:
        reason = "ok (no pod quota)"
    else:
        reason = f"ok: {report.total_pods} of {report.quota} pods"
    return MemberStatus(state=MemberState.HEALTHY, reason=reason, **base)
