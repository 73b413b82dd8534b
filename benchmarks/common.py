"""Helpers shared by the benchmarks: synthetic federations, percentiles, tables."""

from __future__ import annotations

import statistics
import time

from federation.members import Member, MemberState, MemberStatus


def members(n: int) -> list[Member]:
    return [Member(name=f"m{i:04d}", url=f"http://127.0.0.1:{20000 + i}", weight=1 + i % 3,
                   prime=(i == 0), data_sites=("zenodo.org",) if i % 10 == 0 else ()) for i in range(n)]


def healthy_statuses(ms: list[Member], quota: int = 10_000, pods: int = 0) -> dict[str, MemberStatus]:
    return {m.name: MemberStatus(name=m.name, state=MemberState.HEALTHY, reason="ok", quota=quota, has_quota=True,
                                 total_pods=pods + i % 50, checked_at=time.time()) for i, m in enumerate(ms)}


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def summary(samples: list[float]) -> dict[str, float]:
    return {"p50": percentile(samples, 50), "p99": percentile(samples, 99), "mean": statistics.fmean(samples)}


def table(title: str, header: list[str], rows: list[list[object]]) -> str:
    cells = [header] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    line = lambda row: "| " + " | ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([f"\n### {title}\n", line(cells[0]), sep] + [line(r) for r in cells[1:]])
