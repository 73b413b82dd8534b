"""Weighted rendezvous hashing over the repository key: the existing redirector's affinity."""

from __future__ import annotations

import random

import numpy as np

from ..ranking import Context, Ranking


def rank(ctx: Context, rng: random.Random) -> Ranking:
    """Every admissible member by its rendezvous score for the repository (federation.placement.table)."""
    return Ranking(np.zeros(len(ctx.ok), dtype=np.int8), ctx.rendezvous_keys, ("rendezvous",))
