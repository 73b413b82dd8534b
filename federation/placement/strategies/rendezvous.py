"""Weighted rendezvous hashing over the repository key: the existing redirector's affinity."""

from __future__ import annotations

import random

import numpy as np

from ..ranking import Context, Ranking


def rank(ctx: Context, rng: random.Random) -> Ranking:
    """Every admissible member by its rendezvous score for the repository (federation.placement.table)."""
    n = len(ctx.table.names)
    group = [0] * n if ctx.small else np.zeros(n, dtype=np.int8)  # a list for a few members (Context)
    return Ranking(group, ctx.rendezvous_keys, ("rendezvous",))
