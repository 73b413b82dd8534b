"""What the configuration tells placement: the `policy` section of the config file.

`federation.config` reads the file and builds these; they live here because placement
is what reads them, and placement imports nothing of the configuration.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class DataRule:
    pattern: re.Pattern[str]
    site: str


@dataclass(frozen=True)
class PolicySettings:
    strategy: str = "bounded-affinity"
    pod_headroom: int = 0
    epsilon: float = 0.5  # bounded load; tuned with `binderfed simulate` (see federation.placement.bounded_load)
    tiers: tuple[str, ...] = ("data", "cache", "affinity")
    in_flight_ttl: float = 15.0
    cache_ttl: float = 86400.0
    panic: bool = True
    data_rules: tuple[DataRule, ...] = ()
