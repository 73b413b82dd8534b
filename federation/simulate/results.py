"""The figures of one simulated run (one strategy over one trace).

Figures, one row per strategy: launches; cache-hit rate (share of all launches that
landed on a member whose node cache held the image); builds; refused launches
(member full on arrival); launches no member could take (decision "none");
peak utilization (max over time of pods / quota: the max over members, and per
member); mean utilization (time average of all pods / all quota, until the last
arrival); data-local rate (of launches naming data, the share sent to a member
declaring that data site); time to ready, median and p95 (from the click to the
server being ready, over the launches a member accepted: redirect, then start-up,
pull or build, or the wait for a build of the same image already running there;
refused launches never get a server and are counted apart).
"""

from __future__ import annotations

import collections
import math
from dataclasses import dataclass, field
from typing import Any, Sequence

def percentile(values: Sequence[float], q: float) -> float | None:
    """The nearest-rank `q`-th percentile (a value that occurred), None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


@dataclass
class Result:
    strategy: str
    members: tuple[str, ...]
    launches: int = 0
    hits: int = 0
    pulls: int = 0
    builds: int = 0
    refused: int = 0
    unplaced: int = 0
    data_launches: int = 0
    data_local: int = 0
    peak: dict[str, float] = field(default_factory=dict)
    mean: dict[str, float] = field(default_factory=dict)
    mean_utilization: float = 0.0
    reasons: collections.Counter[str] = field(default_factory=collections.Counter)
    duration: float = 0.0  # simulated seconds until the last arrival
    wall: float = 0.0  # seconds the simulation took
    samples: list[tuple[float, tuple[float, ...]]] = field(default_factory=list, repr=False)
    ready_times: list[float] = field(default_factory=list, repr=False)  # click to ready, per accepted launch
    trace: dict[str, Any] = field(default_factory=dict)

    @property
    def hit_rate(self) -> float:
        return self.hits / self.launches if self.launches else 0.0

    @property
    def data_local_rate(self) -> float | None:
        return self.data_local / self.data_launches if self.data_launches else None

    @property
    def peak_utilization(self) -> float:
        return max(self.peak.values(), default=0.0)

    @property
    def ready_median(self) -> float | None:
        return percentile(self.ready_times, 50)

    @property
    def ready_p95(self) -> float | None:
        return percentile(self.ready_times, 95)

    def to_json(self) -> dict[str, Any]:
        return {
            "launches": self.launches,
            "cache_hit_rate": round(self.hit_rate, 6),
            "cache_hits": self.hits,
            "pulls": self.pulls,
            "builds": self.builds,
            "refused": self.refused,
            "no_member": self.unplaced,
            "peak_utilization": round(self.peak_utilization, 6),
            "peak_utilization_per_member": {name: round(value, 6) for name, value in self.peak.items()},
            "time_to_ready_median": None if self.ready_median is None else round(self.ready_median, 3),
            "time_to_ready_p95": None if self.ready_p95 is None else round(self.ready_p95, 3),
            "mean_utilization": round(self.mean_utilization, 6),
            "mean_utilization_per_member": {name: round(value, 6) for name, value in self.mean.items()},
            "data_launches": self.data_launches,
            "data_local_rate": None if self.data_local_rate is None else round(self.data_local_rate, 6),
            "reasons": dict(sorted(self.reasons.items())),
            "simulated_hours": round(self.duration / 3600, 3),
            "trace": self.trace,
        }
