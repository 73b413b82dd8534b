"""Weighted random order: the existing redirector's `random` load balancer."""

from __future__ import annotations

import random

import numpy as np

from ..ranking import Context, Ranking


def rank(ctx: Context, rng: random.Random) -> Ranking:
    """An exponential race: P(first) = weight / total weight, then the same for the rest."""
    admissible = ctx.admissible
    draw = rng.random
    race = np.zeros(len(ctx.ok))
    race[admissible] = -np.log1p(-np.array([draw() for _ in range(len(admissible))])) / ctx.table.weight[admissible]
    return Ranking(np.zeros(len(ctx.ok), dtype=np.int8), race.__getitem__, ("random",))
