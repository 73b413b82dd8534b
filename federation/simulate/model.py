"""The modelled members: their quotas, weights, image caches, data sites and timings.

The members:

- a member answers `/health` from a cache refreshed at most every
  `--health-cache` seconds (BinderHub caches each check for about 15 s);
- a launch reaches its member `--redirect-delay` seconds after the decision
  (redirect, page load, opening `/build/`). It is *refused* when the member's true
  pod count is already at its quota; refused launches are not retried;
- an accepted launch holds one pod slot from its arrival until its session ends
  (build pod, then user pod). Start-up takes `--start-time` when the member's node
  cache holds the image (a *cache hit*), `--pull-time` when the image was built
  somewhere in the federation before (pulled from the peer registry), otherwise a
  *build* of the repository's build time (log-normal per repository, median
  `--build-median` s, deterministic per repository and seed). A launch arriving
  while the same image is being built on that member waits for that build;
- each member keeps an LRU image cache of `cache` images (default: its quota,
  about one image per pod slot); an image enters it when built or pulled there.

Members (`--members`): comma-separated `[name=]quota[:weight=W][:cache=N][:sites=a+b]`.
Weights default to the quota (operators weight members by capacity). Default
scenario: `m1=50,m2=100:sites=zenodo.org,m3=150,m4=250:sites=dataverse.harvard.edu,m5=400`.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from statistics import NormalDist

from ..members import Member

DEFAULT_MEMBERS = "m1=50,m2=100:sites=zenodo.org,m3=150,m4=250:sites=dataverse.harvard.edu,m5=400"


@dataclass(frozen=True)
class SimMember:
    name: str
    quota: int
    weight: float
    cache: int  # images the member's nodes keep (LRU)
    data_sites: tuple[str, ...] = ()

    def member(self) -> Member:
        return Member(
            name=self.name, url=f"https://{self.name}.sim.invalid", weight=self.weight, data_sites=self.data_sites
        )


@dataclass(frozen=True)
class Model:
    """Timings of the member model (see the module docstring)."""

    probe_period: float = 10.0
    health_cache: float = 15.0
    redirect_delay: float = 2.0
    start_time: float = 15.0
    pull_time: float = 90.0
    build_median: float = 300.0
    build_sigma: float = 0.8
    build_max: float = 3600.0
    sample_period: float = 60.0


def parse_members(spec: str, cache: int | None = None) -> tuple[SimMember, ...]:
    """`[name=]quota[:weight=W][:cache=N][:sites=a+b],...` -> members (ValueError when malformed)."""
    members: list[SimMember] = []
    for position, entry in enumerate(part.strip() for part in spec.split(",")):
        if not entry:
            continue
        head, *options = entry.split(":")
        name, _, quota_text = head.rpartition("=")
        name = name or f"m{position + 1}"
        try:
            quota = int(quota_text)
        except ValueError:
            raise ValueError(f"member {entry!r}: quota {quota_text!r} is not an integer") from None
        if quota <= 0:
            raise ValueError(f"member {entry!r}: quota must be positive")
        values: dict[str, str] = {}
        for option in options:
            key, sep, value = option.partition("=")
            if not sep or key not in ("weight", "cache", "sites"):
                raise ValueError(f"member {entry!r}: unknown option {option!r} (expected weight=, cache= or sites=)")
            values[key] = value
        try:
            weight = float(values.get("weight", quota))
            images = int(values["cache"]) if "cache" in values else (cache if cache is not None else quota)
        except ValueError as exc:
            raise ValueError(f"member {entry!r}: {exc}") from None
        sites = tuple(s for s in values.get("sites", "").split("+") if s)
        members.append(SimMember(name=name, quota=quota, weight=weight, cache=max(1, images), data_sites=sites))
    names = [m.name for m in members]
    if not members:
        raise ValueError("no members given")
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate member names in {spec!r}")
    return tuple(members)


def build_time(repo_key: str, seed: int, model: Model) -> float:
    """A repository's build time: log-normal around `model.build_median`, the same for a seed and repository."""
    digest = hashlib.blake2b(f"{seed}\0{repo_key}".encode(), digest_size=8).digest()
    u = (int.from_bytes(digest, "big") + 0.5) / 2.0**64
    z = NormalDist().inv_cdf(u)
    return min(model.build_max, model.build_median * math.exp(model.build_sigma * z))
