"""Members of the federation and what the federation knows about each one."""

from __future__ import annotations

import enum
import ipaddress
import math
from dataclasses import dataclass, field, replace
from typing import Any, Mapping
from urllib.parse import urlsplit

from hub.models import check_count

MAX_REASON = 500  # characters of a status reason kept


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
    hub_url: str = ""                        # its JupyterHub's public URL, where that is another host

    def with_url(self, url: str) -> "Member":
        return replace(self, url=url.rstrip("/"))

    def serves(self, url: str) -> bool:
        """Whether a user server URL (a `ready` event's `url`) is on this member's own origin.

        That is the origin of its URL or of its `hub_url`, or a subdomain of either host
        with the same scheme and port (BinderHubs commonly serve their JupyterHub at
        `hub.<their host>`). Anything else (another host, `javascript:`, credentials in
        the URL) is not the member's to send a visitor to.
        """
        try:
            target = urlsplit(url)
            target_port = _port(target)
        except ValueError:
            return False
        host = (target.hostname or "").rstrip(".")
        if target.scheme not in ("http", "https") or not host or "@" in target.netloc:
            return False
        for base_url in (self.url, self.hub_url):
            if not base_url:
                continue
            base = urlsplit(base_url)
            base_host = (base.hostname or "").rstrip(".")
            if target.scheme != base.scheme.lower() or target_port != _port(base):
                continue
            if host == base_host or (not _is_ip(base_host) and host.endswith("." + base_host)):
                return True
        return False


def _port(parts) -> int:
    return parts.port or (443 if parts.scheme.lower() == "https" else 80)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


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
    # False when the last probe got no HTTP answer at all: panic never sends a launch there.
    reachable: bool = True

    def __post_init__(self) -> None:
        # Counts come from members (and back from a shared store): bounded here, so no
        # status placement reads can carry a number that overflows its arithmetic.
        if self.quota is not None:
            check_count(self.quota, "quota")
        for name in ("total_pods", "build_pods", "user_pods", "consecutive_failures"):
            check_count(getattr(self, name), name)
        if not math.isfinite(self.checked_at):
            raise ValueError(f"checked_at must be a finite number, not {self.checked_at!r}")
        if self.latency is not None and not (math.isfinite(self.latency) and self.latency >= 0):
            raise ValueError(f"latency must be a finite number >= 0, not {self.latency!r}")

    def aged(self, now: float, max_age: float) -> "MemberStatus":
        """This status, or `unknown` when its probe result is older than `max_age` seconds.

        A status nobody refreshes (the prober stopped, or stuck on one member) must not
        keep a member in rotation on what it said long ago. The reason names the limit,
        not the age, so an aged status stays equal to itself from one read to the next.
        """
        if self.state is MemberState.UNKNOWN or now - self.checked_at <= max_age:
            return self
        return replace(self, state=MemberState.UNKNOWN, reachable=True,
                       reason=f"no probe result in the last {max_age:g} s (last known: {self.state.value})")

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
            "reachable": self.reachable,
        }

    @classmethod
    def from_json(cls, name: str, data: Mapping[str, Any]) -> "MemberStatus":
        """Parse `to_json`'s shape (read back from a shared store); ValueError for anything else."""
        if not isinstance(data, Mapping):
            raise ValueError("status is not a JSON object")
        quota = data.get("quota")
        latency = data.get("latency")
        versions = data.get("versions") or {}
        if not isinstance(versions, Mapping):
            raise ValueError("versions is not an object")
        return cls(
            name=name,
            state=MemberState(data.get("state", "unknown")),
            reason=str(data.get("reason", ""))[:MAX_REASON],
            quota=None if quota is None else check_count(quota, "quota"),
            has_quota=bool(data.get("has_quota", False)),
            total_pods=check_count(data.get("total_pods", 0), "total_pods"),
            build_pods=check_count(data.get("build_pods", 0), "build_pods"),
            user_pods=check_count(data.get("user_pods", 0), "user_pods"),
            versions=dict(versions),
            checked_at=_number(data.get("checked_at", 0.0), "checked_at"),
            latency=None if latency is None else _number(latency, "latency"),
            consecutive_failures=check_count(data.get("consecutive_failures", 0), "consecutive_failures"),
            checks=tuple((str(c[0]), bool(c[1])) for c in data.get("checks") or ()
                         if isinstance(c, (list, tuple)) and len(c) == 2),
            reachable=bool(data.get("reachable", True)),
        )


def _number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} is not a number")
    try:
        return float(value)
    except OverflowError:  # an integer too large for a float
        raise ValueError(f"{name} is out of range") from None


def fresh_statuses(statuses: Mapping[str, MemberStatus], now: float, max_age: float) -> Mapping[str, MemberStatus]:
    """`statuses` with every one older than `max_age` seconds turned `unknown` (`MemberStatus.aged`)."""
    stale = {name: status.aged(now, max_age) for name, status in statuses.items()
             if status.state is not MemberState.UNKNOWN and now - status.checked_at > max_age}
    return {**statuses, **stale} if stale else statuses


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
