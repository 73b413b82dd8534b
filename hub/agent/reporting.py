"""One report from one moment of the cluster (pure): capacity, usage, cached images."""

from __future__ import annotations

from typing import Mapping

from .pods import NodeInfo
from ..report import Capacity, CachedImage, MemberReport, RunningRepo, Usage
from .settings import AgentSettings
from .specs import SpecBook


def build_report(settings: AgentSettings, nodes: list[NodeInfo], usage: Usage, specs: SpecBook,
                 now: float, version: str, running: Mapping[str, int] | None = None) -> MemberReport:
    """The report for one moment (pure)."""
    usable = [n for n in nodes if n.usable]
    per_slug: dict[str, int] = {}
    for node in usable:
        for slug in node.slugs:
            per_slug[slug] = per_slug.get(slug, 0) + 1
    cached, unmapped = [], 0
    for slug, count in sorted(per_slug.items()):
        spec = specs.spec_for(slug)
        if spec is None:
            unmapped += 1
        else:
            cached.append(CachedImage(spec=spec, slug=slug, nodes=count))
    return MemberReport(
        member=settings.member,
        timestamp=now,
        agent_version=version,
        capacity=Capacity(
            nodes=len(usable), pods=sum(n.pods for n in usable),
            cpu=round(sum(n.cpu for n in usable), 3), memory=sum(n.memory for n in usable),
        ),
        usage=usage,
        cached_images=tuple(cached),
        unmapped_images=unmapped,
        running=tuple(RunningRepo(spec, pods) for spec, pods in sorted((running or {}).items())),
    )
