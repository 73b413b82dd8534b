"""Weighted random order: the existing redirector's `random` load balancer."""

from __future__ import annotations

import random

import numpy as np

from ..ranking import Context, Ranking


def rank(ctx: Context, rng: random.Random) -> Ranking:
    """An exponential race: P(first) = weight / total weight, then the same for the rest."""
    draw = rng.random
    n = len(ctx.table.names)
    if ctx.small:
        # A few members: lists around the same numpy arithmetic (numpy's log1p, which
        # may differ from math.log1p in the last bit, so both paths draw the same race).
        admissible = ctx.admissible_list
        weights = ctx.table.python_lists[1]
        times = -np.log1p(-np.array([draw() for _ in admissible])) / np.array([weights[i] for i in admissible])
        race = [0.0] * n
        for i, time in zip(admissible, times.tolist()):
            race[i] = time
        return Ranking([0] * n, lambda members: [race[i] for i in members], ("random",))
    admissible = ctx.admissible
    race = np.zeros(n)
    race[admissible] = -np.log1p(-np.array([draw() for _ in range(len(admissible))])) / ctx.table.weight[admissible]
    return Ranking(np.zeros(n, dtype=np.int8), race.__getitem__, ("random",))
