"""Locality tiers: data-near members, then image holders, then rendezvous affinity.

Each tier is ordered by rendezvous; a member sits in the first tier of
`settings.tiers` that selects it, and members no tier selects go last as "affinity".
The `bounded-affinity` strategy is this ranker followed by bounded load.
"""

from __future__ import annotations

import random

import numpy as np

from ..ranking import Context, Ranking


def rank(ctx: Context, rng: random.Random) -> Ranking:
    labels = _explicit_tiers(ctx.settings.tiers)
    affinity = len(labels)
    n = len(ctx.table.names)
    if ctx.small:  # a few members: a list costs less than the numpy calls that fill an array
        group: list[int] | np.ndarray = [affinity] * n
    else:
        group = np.empty(n, dtype=np.int8)
        group.fill(affinity)
    for position in range(affinity - 1, -1, -1):  # the first tier selecting a member wins
        chosen = _tier_members(ctx, labels[position])
        if not chosen:
            continue
        if ctx.small:
            for i in chosen:
                group[i] = position
        else:
            group[chosen] = position
    return Ranking(group, ctx.rendezvous_keys, (*labels, "affinity"))


def _explicit_tiers(tiers: tuple[str, ...]) -> tuple[str, ...]:
    """The configured tiers before "affinity" (which selects everybody left)."""
    return tiers[: tiers.index("affinity")] if "affinity" in tiers else tiers


def _tier_members(ctx: Context, tier: str) -> list[int]:
    """The members a tier selects (admissible or not)."""
    table = ctx.table
    if tier == "data":
        site = ctx.data_site
        return table.sites[site].tolist() if site is not None and site in table.sites else []
    if tier == "cache":
        key = ctx.request.repo_key
        chosen = list(table.declared.get(key, ()))
        index = table.index
        for name in ctx.view.cache.get(key) or ():
            i = index.get(name)
            if i is not None:
                chosen.append(i)
        return chosen
    return []
