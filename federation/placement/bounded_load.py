"""Bounded load: a step after a strategy that passes overloaded members over.

A strategy's registry line names it (`bounded-affinity` is the locality tiers plus this
step); it applies to any strategy's ranking. The federation's average load counts the
launch being placed, as in Mirrokni, Thorup & Zadimoghaddam, "Consistent Hashing with
Bounded Loads" (SODA 2018):

    avg = (sum(pods + in_flight) + 1) / sum(quota)      over admissible members with a quota

A member is overloaded when its `load_ratio()` exceeds

    bound = max(min((1 + eps) * avg,  1 - (1 - avg) / (1 + eps)),  eps / (1 + eps))

The first term is the paper's: with equal quotas it is its capacity
`ceil((1 + eps) * (m + 1) / n)` up to the integer boundary, and measuring loads as
ratios generalises it to members of different sizes. Counting the `+1` means a
single launch to an empty federation is never spilled (every ratio is 0 and the
bound is positive), while a viral repository starts spreading as soon as its member
runs `eps` ahead of the others. The second term is the same rule applied to free
capacity: a member must keep at least `1 / (1 + eps)` of the federation's average
free share. It binds above an average load of `1 / (2 + eps)` (40 % for eps = 0.5),
where the first term no longer protects anyone (at 85 % average load 1.5 x 0.85 > 1)
although that is exactly where stale pod counts overfill members whose affinity
keeps them at their quota. The floor `eps / (1 + eps)` (a third for eps = 0.5; the
second term's value for an empty federation, so it never lifts that term) keeps
affinity while balance does not matter yet: at low load the first term is tiny
(about 0.2 % for the first launch into a 950-pod federation), so without the floor a
single launch on a 50-pod member put it over the bound and its repositories spilled
to emptier members, at the cost of their image caches. Now no member is passed over
before it is a third full.

`binderfed simulate` shows the effect. On its default scenario, with the first term
(and the floor) alone bounded-affinity refused 40 (eps 0.25) to 57 (eps 0.5)
launches, rendezvous 39; with both terms it refuses none and peaks 5 points below weighted random
(95 % against 100 %), with or without the floor. The default eps = 0.5 keeps the
cache-hit rate within 1 point of plain rendezvous there (75.7 % against 76.4 %;
0.25 costs about 1.5 points and refuses no fewer). On the low-load scenario
(`--scenario low-load`, about 6 % in use) bounded-affinity without the floor spilled
279 launches and hit the cache 0.7 points less than rendezvous (75.4 % against
76.1 %); with the floor it spills none and places exactly as rendezvous does.

Overloaded members move behind every other member (keeping their relative order);
when that passes over the first choice, the decision's reason is "spill", and a
sticky cookie naming an overloaded member is not honoured. Members with unknown
capacity are never overloaded and do not count in the average; when every member is
overloaded nobody is passed over.
"""

from __future__ import annotations

import numpy as np

from .ranking import Context, Ranking


def bounded_load(ctx: Context, ranking: Ranking) -> Ranking:
    """`ranking` with the overloaded members moved behind all others (the step)."""
    bound = load_bound(ctx)
    if bound is None:
        return ranking
    # The first choice stands whenever it is not overloaded itself: the whole
    # overloaded set is needed only when it is, or for the full order.
    first = ranking.first(ctx)
    if not is_overloaded(ctx, first, bound):
        ranking.demoted = lambda: overloaded(ctx, bound)
        ranking.overloaded = lambda i: is_overloaded(ctx, i, bound)
        return ranking
    over = overloaded(ctx, bound)
    if over is None:  # everybody is overloaded: nobody is passed over
        return ranking
    # Overloaded members sit in the same groups again, after all the others.
    behind = len(ranking.labels)
    if ctx.small:
        group: list[int] | np.ndarray = [g + behind if o else g for g, o in zip(ranking.group_list(), over)]
    else:
        group = ranking.group + over.view(np.int8) * np.int8(behind)
    return Ranking(group, ranking.keys, ranking.labels * 2, spilled=True, overloaded=lambda i: bool(over[i]))


def load_bound(ctx: Context) -> float | None:
    """The load ratio above which an admissible member is overloaded (module docstring).

    None when no admissible member has a known quota."""
    table = ctx.table
    if ctx.small:  # a few members: sums in Python cost less than the numpy calls
        few = table.few
        assert few is not None
        has_quota, quotas, used = few.has_quota, few.quota, ctx.used_list
        quota = pods = 0
        for i in ctx.admissible_list:
            if has_quota[i]:
                quota += quotas[i]
                pods += used[i]
    else:
        counted_mask = ctx.ok & table.has_quota
        quota, pods = (table.quota_pods @ counted_mask).tolist()
        pods += int(table.in_flight @ counted_mask)
    if quota <= 0:
        return None
    average = (pods + 1) / quota
    epsilon = ctx.settings.epsilon
    grow = 1.0 + epsilon
    # Never below eps / (1 + eps): at low load affinity holds (module docstring).
    return max(min(grow * average, 1.0 - (1.0 - average) / grow), epsilon / grow)


def is_overloaded(ctx: Context, member: int, bound: float) -> bool:
    table = ctx.table
    if ctx.small:
        few = table.few
        assert few is not None
        return few.has_quota[member] and ctx.used_list[member] > few.quota[member] * bound
    return bool(table.has_quota[member]) and int(ctx.used[member]) > int(table.quota[member]) * bound


def overloaded(ctx: Context, bound: float) -> np.ndarray | list[bool] | None:
    """Admissible members with a quota whose load ratio exceeds `bound` (bools by member,
    a list for a few); None when nobody is, or when everybody is (bounded load never
    leaves nobody)."""
    table = ctx.table
    if ctx.small:
        few = table.few
        assert few is not None
        used = ctx.used_list
        over = [good and has and count > quota * bound
                for good, has, count, quota in zip(ctx.ok_list, few.has_quota, used, few.quota)]
        if not any(over) or all([over[i] for i in ctx.admissible_list]):
            return None
        return over
    # load ratio > bound, multiplied out: counted members have quota > 0
    over = ctx.used > table.quota * bound
    over &= ctx.ok
    over &= table.has_quota
    if not over.any() or over[ctx.admissible].all():
        return None
    return over
