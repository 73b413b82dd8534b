"""The strategy registry: one line per strategy, its name, its ranker and the steps after it.

A ranker is one pure function `rank(ctx, rng) -> Ranking` in its own module here
(federation/placement/ranking.py says what it reads and answers). A step after it
(bounded load) reorders any ranker's answer. Adding a strategy is a module with a
`rank` and one line below; the config schema, the chart schema (scripts/sync_chart_schema.py),
the config reference and the simulator take their list of strategies from here.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..bounded_load import bounded_load
from ..ranking import Ranker, Step
from .rendezvous import rank as rendezvous
from .tiers import rank as tiers
from .weighted_random import rank as weighted_random


@dataclass(frozen=True)
class Strategy:
    rank: Ranker
    steps: tuple[Step, ...] = ()  # applied in order to the ranker's answer


STRATEGIES: dict[str, Strategy] = {
    "random": Strategy(weighted_random),
    "rendezvous": Strategy(rendezvous),
    "bounded-affinity": Strategy(tiers, steps=(bounded_load,)),
}
