"""Verifying and folding member agent reports (pure functions of federation.reports)."""

from __future__ import annotations

from hub.models import HealthReport
from hub.report import Capacity, CachedImage, MemberReport, Usage, seal
from federation.reports import (
    ACCEPTED, BAD_SIGNATURE, CLOCK_SKEW, MALFORMED, STALE, UNKNOWN_MEMBER,
    cache_ttl, cached_repositories, check, with_reported_capacity,
)

TOKEN = "a-token-0123456789abcdef0123456789"
NOW = 1_700_000_000.0


def report(member: str = "a", timestamp: float = NOW, images=()) -> MemberReport:
    return MemberReport(member=member, timestamp=timestamp, agent_version="t",
                        capacity=Capacity(nodes=2, pods=220, cpu=8.0, memory=1), usage=Usage(3, 1),
                        cached_images=tuple(images))


def verdict(raw, key: str = "a", members=("a", "b"), tokens=None, max_age: float = 60.0):
    return check(key, raw, tokens if tokens is not None else {"a": TOKEN}, set(members), NOW, max_age)


def test_results():
    assert verdict(seal(report(), TOKEN)).result == ACCEPTED
    assert verdict(seal(report(timestamp=NOW - 61), TOKEN)).result == STALE
    assert verdict(seal(report(timestamp=NOW + CLOCK_SKEW + 1), TOKEN)).result == STALE
    assert verdict(seal(report(timestamp=NOW + 5), TOKEN)).result == ACCEPTED   # small skew is fine
    assert verdict(seal(report(), "wrong-token-0123456789abcdef")).result == BAD_SIGNATURE
    assert verdict(seal(report("c"), TOKEN), key="c").result == UNKNOWN_MEMBER      # not a member
    assert verdict(seal(report("b"), TOKEN), key="b").result == UNKNOWN_MEMBER      # member without a token
    assert verdict(seal(report("a"), TOKEN), key="b").result == MALFORMED           # under another member's key
    assert verdict(b"{}").result == MALFORMED
    assert verdict("[1, 2]").result == MALFORMED
    tampered = seal(report(), TOKEN).replace('\\"user_pods\\":3', '\\"user_pods\\":0')
    assert "user_pods" in tampered and verdict(tampered).result == BAD_SIGNATURE


def test_a_signed_but_invalid_report_is_malformed():
    import json
    from hub.report import _signature  # the agent's own signing, over a body that is no report

    body = json.dumps({"member": "a", "timestamp": NOW, "capacity": {}, "usage": {}})
    raw = json.dumps({"member": "a", "report": body, "signature": _signature(TOKEN, body)})
    result = verdict(raw)
    assert result.result == MALFORMED and "capacity" in result.detail


def test_specs_fold_into_repository_keys():
    images = [CachedImage("gh/Org/Repo/HEAD", "org-2drepo-aaaaaa", 1), CachedImage("gh/org/repo/main", "x-bbbbbb", 3),
              CachedImage("zenodo/10.5281/zenodo.3242074", "zenodo-2d3242074-cccccc", 2),
              CachedImage("gh/../etc", "bad-dddddd", 1)]
    repos, invalid = cached_repositories(report(images=images))
    assert repos == {"gh/org/repo": 3, "zenodo/10.5281/zenodo.3242074": 2}
    assert invalid == ["gh/../etc"]
    assert cache_ttl(report(timestamp=NOW - 20), NOW, 60) == 40
    assert cache_ttl(report(timestamp=NOW - 90), NOW, 60) == 0


def test_capacity_is_filled_only_where_health_has_none():
    without = HealthReport(ok=True, http_status=200)
    filled = with_reported_capacity(without, report())
    assert (filled.has_quota_check, filled.quota, filled.total_pods, filled.user_pods, filled.build_pods) == (True, 220, 4, 3, 1)
    own = HealthReport(ok=True, http_status=200, has_quota_check=True, quota=None, total_pods=9)
    assert with_reported_capacity(own, report()) is own
