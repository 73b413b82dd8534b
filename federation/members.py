"""Members of the federation and what the federation knows about each one."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from typing import Any, Mapping


class MemberState(str, enum.Enum):
    """One word per member, shown everywhere (API, metrics, status page, logs)."""

    HEALTHY = "healthy"      # takes launches
    FULL = "full"            # healthy but no free capacity
    UNHEALTHY = "unhealthy"  # failed active checks
    EJECTED = "ejected"      # passive health took it out for a while
    DRAINING = "draining"    # operator took it out; still probed
    UNKNOWN = "unknown"      # not probed yet

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Member:
    """A member BinderHub as declared by a membership source."""

    name: str
    url: str                                 # base URL, no trailing slash
    weight: float = 1.0
    prime: bool = False
    data_sites: tuple[str, ...] = ()
    region: str = ""
    cached_repos: tuple[str, ...] = ()       # repository keys the operator says are cached there
    source: str = "config"

    def with_url(self, url: str) -> "Member":
        return replace(self, url=url.rstrip("/"))


@dataclass(frozen=True)
class MemberStatus:
    """The result of the latest active probe of one member."""

    name: str
    state: MemberState = MemberState.UNKNOWN
    reason: str = "not probed yet"
    quota: int | None = None           # None: unlimited or unknown (see has_quota)
    has_quota: bool = False            # False: member reports no Pod quota check
    total_pods: int = 0
    build_pods: int = 0
    user_pods: int = 0
    versions: Mapping[str, Any] = field(default_factory=dict)
    checked_at: float = 0.0            # unix time of the last probe, 0 = never
    latency: float | None = None       # seconds the last /health took (to fail, if it did)
    consecutive_failures: int = 0
    # Each check of the last probe as (name, ok): "versions" first when the versions
    # policy compared them, then the member's /health checks in its order. Empty when
    # the member gave no usable /health (unreachable, not the member API).
    checks: tuple[tuple[str, bool], ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "state": self.state.value,
            "reason": self.reason,
            "quota": self.quota,
            "has_quota": self.has_quota,
            "total_pods": self.total_pods,
            "build_pods": self.build_pods,
            "user_pods": self.user_pods,
            "versions": dict(self.versions),
            "checked_at": self.checked_at,
            "latency": self.latency,
            "consecutive_failures": self.consecutive_failures,
            "checks": [[name, ok] for name, ok in self.checks],
        }

    @classmethod
    def from_json(cls, name: str, data: Mapping[str, Any]) -> "MemberStatus":
        return cls(
            name=name,
            state=MemberState(data.get("state", "unknown")),
            reason=str(data.get("reason", "")),
            quota=data.get("quota"),
            has_quota=bool(data.get("has_quota", False)),
            total_pods=int(data.get("total_pods", 0)),
            build_pods=int(data.get("build_pods", 0)),
            user_pods=int(data.get("user_pods", 0)),
            versions=dict(data.get("versions") or {}),
            checked_at=float(data.get("checked_at", 0.0)),
            latency=data.get("latency"),
            consecutive_failures=int(data.get("consecutive_failures", 0)),
            checks=tuple((str(c[0]), bool(c[1])) for c in data.get("checks") or ()
                         if isinstance(c, (list, tuple)) and len(c) == 2),
        )


@dataclass(frozen=True)
class Override:
    """An operator's runtime change to a member (admin API), shared by all replicas."""

    draining: bool = False
    weight: float | None = None
    by: str = ""
    at: float = 0.0
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"draining": self.draining, "weight": self.weight, "by": self.by, "at": self.at, "note": self.note}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Override":
        return cls(
            draining=bool(data.get("draining", False)),
            weight=data.get("weight"),
            by=str(data.get("by", "")),
            at=float(data.get("at", 0.0)),
            note=str(data.get("note", "")),
        )
