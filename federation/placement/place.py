"""Placement: which member takes a launch, and why.

`place()` is pure. It reads a `FederationView` snapshot, the launch and the policy
settings, and returns a `Decision`; it does no I/O, reads no clock (time is
`view.now`) and draws randomness only from the `random.Random` it is handed. The
router, the explain API, the tests and the simulator all call this one function.

How a launch is placed (DESIGN.md, "Placement"):

1. Admissible members: weight > 0, not draining, not ejected, probed healthy, and
   with free capacity (`quota - pods - in_flight - headroom > 0`, or capacity
   unknown/unlimited). Every member gets a `Candidate` saying why it is or is not.
2. A sticky cookie naming an admissible member wins (reason "cookie"), unless bounded
   load passes that member over: a cookie never piles launches onto an overloaded
   member (the launch goes where bounded load sends it, reason "spill" or its tier).
3. The configured strategy ranks the admissible members. A strategy is one pure
   function `(context, rng) -> Ranking`, registered in `STRATEGIES`; adding one is
   one function and one registry line.
4. Panic when nobody is admissible: ignore capacity, then health (Envoy-style),
   then give up (member None, reason "none").

Bounded load (strategy "bounded-affinity"). The federation's average load counts
the launch being placed, as in Mirrokni, Thorup & Zadimoghaddam, "Consistent
Hashing with Bounded Loads" (SODA 2018):

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
when that passes over the first choice, the decision's reason is "spill".
Members with unknown capacity are never overloaded and do not count in the average.

Rendezvous (highest random weight) scores are `weight / -ln(u)` with `u` in (0, 1)
drawn from the member's name and the repository key by a documented hash (see
`federation.table`), so every router replica (and any other implementation) ranks a
repository's members the same way. Placement computes on a `MemberTable`, the view's
members as numpy arrays, and scores all members with a few vector operations: the
decision stays well under a millisecond at a thousand members (`make bench`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Protocol, Sequence

import numpy as np

from .config import DataRule, PolicySettings
from .members import Member, MemberState
from .table import SMALL, MemberTable, fmix64, key_hash, unit_score
from .view import FederationView, MemberView

__all__ = [
    "Candidate",
    "Context",
    "Decision",
    "Placeable",
    "Ranking",
    "STRATEGIES",
    "Strategy",
    "data_site",
    "place",
]

HEALTHY = MemberState.HEALTHY
FULL = MemberState.FULL

TIERS = ("data", "cache", "affinity")


class Placeable(Protocol):
    """What placement needs to know about a launch (`federation.spec.LaunchRequest` is one)."""

    @property
    def repo_key(self) -> str: ...

    @property
    def data_site(self) -> str | None: ...


# --------------------------------------------------------------------------------------
# The decision and its explanation
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    """One member as the decision saw it."""

    name: str
    admissible: bool
    why: str  # "admissible", "draining", "weight 0", "ejected", "unhealthy: ...", "unknown: ...", "full: ..."
    tier: str = ""  # "data" | "cache" | "affinity" | "": the bounded-affinity tier that ranked it
    load_ratio: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "admissible": self.admissible,
            "why": self.why,
            "tier": self.tier,
            "load_ratio": self.load_ratio,
        }


@dataclass(frozen=True)
class Decision:
    """Where a launch goes, why, and where it goes next if that member fails.

    `ranking` lists the admissible members in failover order; `candidates` lists every
    member of the view with why it was or was not admissible. `place()` fills both with
    lazily evaluated immutable sequences: sorting or explaining a thousand members costs
    more than placing the launch, and only stream mode's failover and the explain API
    read them.
    """

    member: Member | None
    reason: str  # "cookie" | "data" | "cache" | "affinity" | "spill" | "random" | "rendezvous" | "panic" | "prime" | "none"
    strategy: str
    ranking: Sequence[str]  # member names in failover order, first = chosen
    candidates: Sequence[Candidate] = ()
    data_site: str | None = None

    @property
    def placed(self) -> bool:
        return self.member is not None

    def to_json(self) -> dict[str, Any]:
        """The explain API's JSON shape of a decision (produced only here)."""
        return {
            "member": self.member.name if self.member is not None else None,
            "url": self.member.url if self.member is not None else None,
            "reason": self.reason,
            "strategy": self.strategy,
            "data_site": self.data_site,
            "ranking": list(self.ranking),
            "candidates": [c.to_json() for c in self.candidates],
        }


def why_not(view: MemberView, now: float, headroom: int) -> str | None:
    """Why a member is not admissible, in words; None when it is admissible."""
    if view.draining:
        return "draining"
    if view.weight <= 0:
        return "weight 0"
    if view.ejected(now):
        return "ejected"
    status = view.status
    state = status.state
    if state is not HEALTHY and state is not FULL:
        return f"{state.value}: {status.reason}" if status.reason else state.value
    free = view.free(headroom)
    if free is not None and free <= 0:
        return (
            f"full: {max(free, 0)} free of quota {status.quota} "
            f"({status.total_pods} pods, {view.in_flight} in flight, headroom {headroom})"
        )
    if state is FULL:  # the probe said full although the numbers leave room (or are unknown)
        return f"full: {status.reason}" if status.reason else "full"
    return None


class _Lazy(Sequence):
    """An immutable sequence computed on first use (a decision's explanation and failover
    order cost more than the decision itself at a thousand members, and most launches
    never read them)."""

    __slots__ = ("_compute", "_items", "_length")

    def __init__(self, compute: Callable[[], tuple], length: int):
        self._compute: Callable[[], tuple] | None = compute
        self._items: tuple | None = None
        self._length = length

    def _all(self) -> tuple:
        if self._items is None:
            assert self._compute is not None
            self._items = self._compute()
            self._compute = None  # let go of the arrays it held
        return self._items

    def __getitem__(self, index):  # type: ignore[no-untyped-def]
        return self._all()[index]

    def __len__(self) -> int:
        return self._length

    def __iter__(self) -> Iterator:
        return iter(self._all())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sequence) and not isinstance(other, (str, bytes)):
            return self._all() == tuple(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._all())

    def __repr__(self) -> str:
        return repr(self._all())


def _candidates(view: FederationView, headroom: int, tiers: Callable[[], dict[int, str]]) -> Sequence[Candidate]:
    """Every member of a view with why it was or was not admissible, built on first use."""
    now = view.now

    def compute() -> tuple[Candidate, ...]:
        labels = tiers()
        items = []
        for index, member in enumerate(view.members):
            why = why_not(member, now, headroom)
            items.append(Candidate(name=member.name, admissible=why is None, why=why or "admissible",
                                   tier=labels.get(index, ""), load_ratio=member.load_ratio()))
        return tuple(items)

    return _Lazy(compute, len(view.table.names))


# --------------------------------------------------------------------------------------
# Strategies
# --------------------------------------------------------------------------------------


class Ranking:
    """A strategy's answer: the admissible members ordered by `(group, key)`, ascending.

    `group` is indexed by member position in the view: `group[i]` is the position in
    `labels` of the label member `i` is ranked under. `keys(members)` gives the keys
    that order some members within their group (lower first); it is asked only for the
    members that matter, so a launch whose image sits on two members hashes two. Only
    admissible members are read. `demoted`, when given, names the members to move
    behind all others (bounded load); it is called only when the whole order is read.
    `spilled` says that bounded load passed over the strategy's first choice. `place()`
    takes `first()`, a linear scan, and sorts the rest only when somebody reads the
    failover order.
    """

    __slots__ = ("group", "keys", "labels", "spilled", "demoted", "overloaded", "_first")

    def __init__(self, group: np.ndarray, keys: Callable[[np.ndarray], np.ndarray], labels: tuple[str, ...],
                 spilled: bool = False, demoted: Callable[[], np.ndarray | None] | None = None,
                 overloaded: Callable[[int], bool] | None = None):
        self.group = group
        self.keys = keys
        self.labels = labels
        self.spilled = spilled
        self.demoted = demoted
        # Whether bounded load passes member i over (None: the strategy has no bounded load);
        # a sticky cookie naming such a member is not honoured.
        self.overloaded = overloaded
        self._first: int | None = None

    def first(self, admissible: np.ndarray) -> int:
        """The admissible member ranked first (`demoted` must not include it)."""
        if self._first is None:
            if len(admissible) <= SMALL:  # a few members: Python costs less than numpy calls
                group = self.group.tolist()
                members = admissible.tolist()
                top = min(group[i] for i in members)
                best = [i for i in members if group[i] == top]
                keys = self.keys(np.array(best)).tolist() if len(best) > 1 else [0]
                self._first = best[keys.index(min(keys))]
            else:
                groups = self.group[admissible]
                best = admissible[groups == groups.min()]
                self._first = int(best[np.argmin(self.keys(best))]) if len(best) > 1 else int(best[0])
        return self._first

    def order(self, admissible: np.ndarray) -> np.ndarray:
        """All admissible members in ranking order."""
        group = self.group[admissible]
        demoted = self.demoted() if self.demoted is not None else None
        if demoted is not None:
            group = group + demoted[admissible].view(np.int8) * np.int8(len(self.labels))
        return admissible[np.lexsort((self.keys(admissible), group))]


@dataclass
class Context:
    """What a strategy may read about one launch; built once by `place()`, read-only.

    Arrays are indexed by member position in the view (`table`'s order).
    """

    view: FederationView
    settings: PolicySettings
    request: Placeable
    data_site: str | None
    table: MemberTable
    ok: np.ndarray  # bool: admissible
    admissible: np.ndarray  # indices of the admissible members, view order
    used: np.ndarray  # int64: pods + in flight

    def rendezvous_keys(self, members: np.ndarray) -> np.ndarray:
        """Some members' negated weighted rendezvous scores for this repository (lower ranks first)."""
        keys = self.table.rendezvous_scores(self.request.repo_key, members)
        return np.negative(keys, out=keys)

    def load_bound(self) -> float | None:
        """The load ratio above which an admissible member is overloaded (module docstring).

        None when no admissible member has a known quota."""
        table = self.table
        counted = self.ok & table.has_quota
        quota, pods = (table.quota_pods @ counted).tolist()
        if quota <= 0:
            return None
        average = (pods + int(table.in_flight @ counted) + 1) / quota
        grow = 1.0 + self.settings.epsilon
        # Never below eps / (1 + eps): at low load affinity holds (module docstring).
        return max(min(grow * average, 1.0 - (1.0 - average) / grow), self.settings.epsilon / grow)

    def is_overloaded(self, member: int, bound: float) -> bool:
        table = self.table
        return bool(table.has_quota[member]) and int(self.used[member]) > int(table.quota[member]) * bound

    def overloaded(self, bound: float) -> np.ndarray | None:
        """Admissible members with a quota whose load ratio exceeds `bound`; None when
        nobody is, or when everybody is (bounded load never leaves nobody)."""
        table = self.table
        # load ratio > bound, multiplied out: counted members have quota > 0
        over = self.used > table.quota * bound
        over &= self.ok
        over &= table.has_quota
        if not over.any() or over[self.admissible].all():
            return None
        return over


Strategy = Callable[[Context, random.Random], Ranking]


def strategy_random(ctx: Context, rng: random.Random) -> Ranking:
    """Weighted random order (exponential race: P(first) = weight / total weight)."""
    admissible = ctx.admissible
    draw = rng.random
    race = np.zeros(len(ctx.ok))
    race[admissible] = -np.log1p(-np.array([draw() for _ in range(len(admissible))])) / ctx.table.weight[admissible]
    return Ranking(np.zeros(len(ctx.ok), dtype=np.int8), race.__getitem__, ("random",))


def strategy_rendezvous(ctx: Context, rng: random.Random) -> Ranking:
    """Weighted rendezvous hashing over the repository key: the existing redirector's affinity."""
    return Ranking(np.zeros(len(ctx.ok), dtype=np.int8), ctx.rendezvous_keys, ("rendezvous",))


def strategy_bounded_affinity(ctx: Context, rng: random.Random) -> Ranking:
    """Data-near members, then image holders, then rendezvous affinity; overloaded ones last.

    Each tier is ordered by rendezvous; a member sits in the first tier of
    `settings.tiers` that selects it, and members no tier selects go last as
    "affinity". Bounded load then moves overloaded members behind all the others.
    """
    labels = _explicit_tiers(ctx.settings.tiers)
    affinity = len(labels)
    group = np.empty(len(ctx.ok), dtype=np.int8)
    group.fill(affinity)
    for position in range(affinity - 1, -1, -1):  # the first tier selecting a member wins
        chosen = _tier_members(ctx, labels[position])
        if chosen:
            group[chosen] = position
    # Overloaded members sit in the same groups again, after all the others.
    ranking = Ranking(group, ctx.rendezvous_keys, (*labels, "affinity") * 2)

    bound = ctx.load_bound()
    if bound is None:
        return ranking
    # The first choice is the first non-overloaded member whenever it is not overloaded
    # itself: the whole overloaded set is needed only when it is, or for the full order.
    first = ranking.first(ctx.admissible)
    if not ctx.is_overloaded(first, bound):
        ranking.demoted = lambda: ctx.overloaded(bound)
        ranking.overloaded = lambda i: ctx.is_overloaded(i, bound)
        return ranking
    over = ctx.overloaded(bound)
    if over is None:  # everybody is overloaded: nobody is passed over
        return ranking
    group += over.view(np.int8) * np.int8(affinity + 1)
    return Ranking(group, ranking.keys, ranking.labels, spilled=True, overloaded=lambda i: bool(over[i]))


def _explicit_tiers(tiers: tuple[str, ...]) -> tuple[str, ...]:
    """The configured tiers before "affinity" (which selects everybody left)."""
    return tiers[: tiers.index("affinity")] if "affinity" in tiers else tiers


def _tier_members(ctx: Context, tier: str) -> list[int]:
    """The members a bounded-affinity tier selects (admissible or not)."""
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


STRATEGIES: dict[str, Strategy] = {
    "random": strategy_random,
    "rendezvous": strategy_rendezvous,
    "bounded-affinity": strategy_bounded_affinity,
}


def rendezvous_score(name: str, repo_key: str, weight: float) -> float:
    """The weighted rendezvous score of one member for one repository (higher wins).

    The one-member reference of `MemberTable.rendezvous_scores`, which placement uses.
    """
    return unit_score(fmix64(key_hash(name) ^ key_hash(repo_key)), weight)


# --------------------------------------------------------------------------------------
# Placement
# --------------------------------------------------------------------------------------


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

    # Admissibility, the rules of why_not() on arrays: written as a loop over the
    # members, this alone would cost more than a whole decision may.
    in_flight = table.in_flight
    ok = table.spare - in_flight > headroom
    ok &= table.ready
    if table.last_ejection_end > now:
        ok &= table.ejected_until <= now
    admissible = ok.nonzero()[0]
    ctx = Context(view, settings, request, site, table, ok, admissible, table.pods + in_flight)
    if not len(admissible):
        return _panic(ctx, now, headroom)

    ranking = strategy(ctx, rng)
    first = ranking.first(admissible)
    labels = ranking.labels
    reason = "spill" if ranking.spilled else labels[ranking.group[first]]
    if sticky is not None:
        chosen = table.index.get(sticky, -1)
        if chosen >= 0 and ok[chosen] and not (ranking.overloaded is not None and ranking.overloaded(chosen)):
            first, reason = chosen, "cookie"

    def order() -> list[int]:
        ordered: list[int] = ranking.order(admissible).tolist()
        if ordered[0] != first:  # a sticky cookie
            ordered.remove(first)
            ordered.insert(0, first)
        return ordered

    def tiers() -> dict[int, str]:
        group = ranking.group
        named = ((i, labels[group[i]]) for i in admissible.tolist())
        return {i: label for i, label in named if label in TIERS}

    names = table.names
    return Decision(
        member=table.members[first],
        reason=reason,
        strategy=settings.strategy,
        ranking=_Lazy(lambda: tuple(map(names.__getitem__, order())), len(admissible)),
        candidates=_candidates(view, headroom, tiers),
        data_site=site,
    )


def _panic(ctx: Context, now: float, headroom: int) -> Decision:
    """Nobody is admissible: ignore capacity, then health, then give up."""
    settings = ctx.settings
    members = ctx.view.members
    names = ctx.table.names

    def decision(member: Member | None, reason: str, order: list[int]) -> Decision:
        return Decision(
            member=member,
            reason=reason,
            strategy=settings.strategy,
            ranking=tuple(names[i] for i in order),
            candidates=_candidates(ctx.view, headroom, dict),
            data_site=ctx.data_site,
        )

    if not settings.panic:
        return decision(None, "none", [])

    usable = [i for i, mv in enumerate(members) if not mv.draining and mv.weight > 0]

    # (a) Ignore capacity: healthy-but-full members, least loaded first.
    full = [
        i for i in usable if members[i].status.state in (HEALTHY, FULL) and not members[i].ejected(now)
    ]
    if full:

        def by_load(i: int) -> tuple[bool, float]:
            ratio = members[i].load_ratio()
            return (ratio is None, ratio or 0.0)

        full.sort(key=by_load)
        return decision(members[full[0]].member, "panic", full)

    # (b) Ignore health too, but not members that cannot even be reached: prime first.
    reachable = [i for i in usable if not members[i].status.reason.startswith("unreachable")]
    if reachable:
        reachable.sort(key=lambda i: not members[i].member.prime)
        chosen = members[reachable[0]].member
        return decision(chosen, "prime" if chosen.prime else "panic", reachable)

    return decision(None, "none", [])
