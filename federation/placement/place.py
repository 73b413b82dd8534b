"""`place()`: which member takes a launch, and why.

`place()` is pure. It reads a `FederationView` snapshot, the launch and the policy
settings, and returns a `Decision`; it does no I/O, reads no clock (time is
`view.now`) and draws randomness only from the `random.Random` it is handed. The
router, the explain API, the tests and the simulator all call this one function.

How a launch is placed (DESIGN.md, "Placement"), one step after the other:

1. Admissible members: weight > 0, not draining, not ejected, probed healthy, and
   with free capacity (`quota - pods - in_flight - headroom > 0`, or capacity
   unknown/unlimited). Every member gets a `Candidate` saying why it is or is not.
2. Nobody admissible: panic (federation/placement/panic.py), whatever the strategy.
3. The configured strategy's ranker orders the admissible members
   (federation/placement/strategies/), then the steps its registry line names reorder
   that ranking (bounded load, federation/placement/bounded_load.py).
4. A sticky cookie naming an admissible member wins (reason "cookie"), unless a step
   passes that member over: a cookie never piles launches onto an overloaded member.

Placement computes on a `MemberTable`, the view's members as numpy arrays, and scores
all members with a few vector operations: the decision stays well under a millisecond
at a thousand members (`make bench`). For up to `SMALL` members (the typical federation
has three) it computes the same on Python lists instead (`Context.small`), since there
a numpy call costs more than the loop it replaces; tests/federation/test_small_path.py
holds the two to the same decisions.
"""

from __future__ import annotations

import random
from typing import Sequence

from .decision import Decision, Lazy, candidates
from .panic import panic
from .ranking import Context, Placeable
from .settings import DataRule, PolicySettings
from .strategies import STRATEGIES
from .table import SMALL, MemberTable
from .view import FederationView

TIERS = ("data", "cache", "affinity")


def data_site(request: Placeable, rules: Sequence[DataRule]) -> str | None:
    """The data site a launch names: its provider's, else the first matching data rule's."""
    site = getattr(request, "data_site", None)
    if site:
        return site
    key = request.repo_key
    for rule in rules:
        if rule.pattern.match(key):
            return rule.site
    return None


def admissible_few(table: MemberTable, headroom: int, now: float) -> tuple[list[bool], list[int]]:
    """Admissibility for up to `SMALL` members, on lists: (ok by member, admissible positions).

    The rules of why_not(), as `place()` applies them to arrays beyond SMALL members; on
    a few members each numpy call costs more than this loop."""
    few = table.few
    assert few is not None
    ejections = table.last_ejection_end > now
    ok, admissible = [], []
    for i, flying in enumerate(table.in_flight_list):
        good = few.ready[i] and few.spare[i] - flying > headroom and (not ejections or few.ejected_until[i] <= now)
        ok.append(good)
        if good:
            admissible.append(i)
    return ok, admissible


def place(
    view: FederationView,
    request: Placeable,
    settings: PolicySettings,
    rng: random.Random,
    sticky: str | None = None,
) -> Decision:
    """Pick the member for one launch. Pure: see the module docstring."""
    try:
        strategy = STRATEGIES[settings.strategy]
    except KeyError:
        raise ValueError(
            f"unknown placement strategy {settings.strategy!r}; known: {', '.join(sorted(STRATEGIES))}"
        ) from None
    site = data_site(request, settings.data_rules)
    now = view.now
    headroom = settings.pod_headroom
    table = view.table

    small = len(table.names) <= SMALL and table.few is not None
    if small:
        ok, admissible = admissible_few(table, headroom, now)
    else:
        # Admissibility, the rules of why_not() on arrays: written as a loop over the
        # members, this alone would cost more than a whole decision may.
        ok = table.spare - table.in_flight > headroom
        ok &= table.ready
        if table.last_ejection_end > now:
            ok &= table.ejected_until <= now
        admissible = ok.nonzero()[0]
    ctx = Context(view, settings, request, site, table, small, ok, admissible)
    if not len(admissible):
        return panic(ctx)

    ranking = strategy.rank(ctx, rng)
    for step in strategy.steps:
        ranking = step(ctx, ranking)
    first = ranking.first(ctx)
    labels = ranking.labels
    reason = "spill" if ranking.spilled else labels[ranking.group[first]]
    if sticky is not None:
        chosen = table.index.get(sticky, -1)
        if chosen >= 0 and ok[chosen] and not (ranking.overloaded is not None and ranking.overloaded(chosen)):
            first, reason = chosen, "cookie"

    def order() -> list[int]:
        ordered: list[int] = ranking.order(ctx.admissible).tolist()
        if ordered[0] != first:  # a sticky cookie
            ordered.remove(first)
            ordered.insert(0, first)
        return ordered

    def tiers() -> dict[int, str]:
        group = ranking.group
        named = ((i, labels[group[i]]) for i in ctx.admissible_list)
        return {i: label for i, label in named if label in TIERS}

    names = table.names
    return Decision(
        member=table.members[first],
        reason=reason,
        strategy=settings.strategy,
        ranking=Lazy(lambda: tuple(map(names.__getitem__, order())), len(admissible)),
        candidates=candidates(view, headroom, tiers),
        data_site=site,
    )
