"""Member agent reports on the router side: verify one, then fold it into placement's view.

Pure functions only; reading reports from Redis on a period is
`health.report_ingest.ReportIngest`. A report is *accepted* when

- the Redis key it was found under, its envelope and the report itself all name the
  same member, and that member is in the member set with a configured token;
- its HMAC-SHA256 signature matches that token (`hub.report.unseal`);
- it is at most `max_age` seconds old (and not from the future by more than the
  allowed clock skew).

Anything else is ignored with one of the `RESULTS` below, which label the
`federation_agent_reports` metric.

Folding an accepted report: every cached image becomes an image-cache entry
(repository key → member) that lives until the report would turn stale; and, for a
member whose `/health` has no `Pod quota` check (so its capacity is otherwise
unknown), the report's allocatable pods and BinderHub pods stand in for quota and
pod counts.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Collection, Mapping

from hub.models import HealthReport
from hub.report import MemberReport, ReportError, envelope_member, unseal

from .spec import SpecError, parse_launch

ACCEPTED = "accepted"
STALE = "stale"
UNKNOWN_MEMBER = "unknown_member"
BAD_SIGNATURE = "bad_signature"
MALFORMED = "malformed"
RESULTS = (ACCEPTED, STALE, UNKNOWN_MEMBER, BAD_SIGNATURE, MALFORMED)

# Agents' clocks may run a little ahead of the router's.
CLOCK_SKEW = 30.0


@dataclass(frozen=True)
class Verdict:
    result: str                       # one of RESULTS
    member: str                       # the member the report claims to be from ("" if unreadable)
    report: MemberReport | None = None
    detail: str = ""                  # why it was not accepted, for the log

    @property
    def accepted(self) -> bool:
        return self.result == ACCEPTED


def check(
    key_member: str,
    raw: str | bytes,
    tokens: Mapping[str, str],
    members: Collection[str],
    now: float,
    max_age: float,
) -> Verdict:
    """Decide whether the envelope found under `key_member`'s key can be used."""
    try:
        claimed, _, _ = envelope_member(raw)
    except ReportError as exc:
        return Verdict(MALFORMED, key_member, detail=str(exc))
    if claimed != key_member:
        return Verdict(MALFORMED, key_member, detail=f"envelope of {claimed!r} stored under the key of {key_member!r}")
    token = tokens.get(key_member)
    if key_member not in members or token is None:
        why = "not a member of the federation" if key_member not in members else "no agent token is configured for it"
        return Verdict(UNKNOWN_MEMBER, key_member, detail=why)
    try:
        report = unseal(raw, token)
    except ReportError as exc:
        result = BAD_SIGNATURE if exc.kind == "bad_signature" else MALFORMED
        return Verdict(result, key_member, detail=str(exc))
    age = now - report.timestamp
    if age > max_age:
        return Verdict(STALE, key_member, report, detail=f"report is {age:.0f} s old (limit {max_age:.0f} s)")
    if age < -CLOCK_SKEW:
        return Verdict(STALE, key_member, report,
                       detail=f"report is dated {-age:.0f} s in the future (agent clock skew?)")
    return Verdict(ACCEPTED, key_member, report)


def fresh(report: MemberReport | None, now: float, max_age: float) -> bool:
    return report is not None and -CLOCK_SKEW <= now - report.timestamp <= max_age


def cached_repositories(report: MemberReport) -> tuple[dict[str, int], list[str]]:
    """(repository key → node count, specs that are not launch specs) of a report's images.

    Several specs (refs, spellings) can name one repository; it counts with its
    best-spread image.
    """
    repos: dict[str, int] = {}
    invalid: list[str] = []
    for image in report.cached_images:
        try:
            request = parse_launch("/v2/" + image.spec)
        except SpecError:
            invalid.append(image.spec)
            continue
        repos[request.repo_key] = max(repos.get(request.repo_key, 0), image.nodes)
    return repos, invalid


def running_repositories(report: MemberReport) -> dict[str, int]:
    """Repository key → user servers running on the member, from a report's running specs.

    Several specs (refs, spellings) of one repository add up; specs that are not launch
    specs are left out.
    """
    repos: dict[str, int] = {}
    for running in report.running:
        try:
            request = parse_launch("/v2/" + running.spec)
        except SpecError:
            continue
        repos[request.repo_key] = repos.get(request.repo_key, 0) + running.pods
    return repos


def cache_ttl(report: MemberReport, now: float, max_age: float) -> float:
    """Seconds an image-cache entry from `report` stays: until the report turns stale."""
    return max(0.0, report.timestamp + max_age - now)


def with_reported_capacity(health: HealthReport, report: MemberReport) -> HealthReport:
    """A health report without a `Pod quota` check, completed from the agent's report.

    The quota becomes the pods the member's ready nodes can hold; the pod counts are
    the BinderHub pods the agent counted. Health reports that carry their own quota
    check are returned unchanged: the member's own count is authoritative.
    """
    if health.has_quota_check:
        return health
    return replace(
        health,
        has_quota_check=True,
        quota=report.capacity.pods,
        total_pods=report.usage.total_pods,
        build_pods=report.usage.build_pods,
        user_pods=report.usage.user_pods,
    )
