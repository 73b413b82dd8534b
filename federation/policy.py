"""Placement: which member takes a launch, and why.

`place()` is pure. It reads a `FederationView` snapshot, the launch and the policy
settings, and returns a `Decision`; it does no I/O, reads no clock (time is
`view.now`) and draws randomness only from the `random.Random` it is handed. The
router, the explain API, the tests and the simulator all call this one function.

How a launch is placed (DESIGN.md, "Placement"):

1. Admissible members: weight > 0, not draining, not ejected, probed healthy, and
   with free capacity (`quota - pods - in_flight - headroom > 0`, or capacity
   unknown/unlimited). Every member gets a `Candidate` saying why it is or is not.
2. A sticky cookie naming an admissible member wins (reason "cookie").
3. The configured strategy ranks the admissible members. A strategy is one pure
   function `(admissible, request, context, rng) -> Ranking`, registered in
   `STRATEGIES`; adding one is one function and one registry line.
4. Panic when nobody is admissible: ignore capacity, then health (Envoy-style),
   then give up (member None, reason "none").

Bounded load (strategy "bounded-affinity"). The federation's average load counts
the launch being placed, as in Mirrokni, Thorup & Zadimoghaddam, "Consistent
Hashing with Bounded Loads" (SODA 2018):

    avg = (sum(pods + in_flight) + 1) / sum(quota)      over admissible members with a quota

A member is overloaded when its `load_ratio()` exceeds

    bound = min((1 + eps) * avg,  1 - (1 - avg) / (1 + eps))

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
keeps them at their quota. `binderfed simulate` shows the effect on its default
scenario: with the first term alone bounded-affinity refused 31 (eps 0.25) to 43
(eps 0.5) launches, rendezvous 47; with both it refuses none and peaks below weighted
random. The default eps = 0.5 keeps the cache-hit rate within 1.5 points of plain
rendezvous there (0.25 costs about 2.5 points and refuses no fewer).

Overloaded members move behind every other member (keeping their relative order);
when that passes over the first choice, the decision's reason is "spill".
Members with unknown capacity are never overloaded and do not count in the average.

Rendezvous (highest random weight) scores are `-weight / ln(u)`, `u` in (0, 1)
taken from BLAKE2b-64 of `"<member name>\\0<repository key>"`, so every router
replica (and any other implementation) ranks a repository's members the same way.
The full weighted order of all members for one repository is memoised (see
`_RendezvousMemo`): a pure function's cache, it never changes a result, it only
saves re-hashing every member for every launch of a popular repository.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections import OrderedDict
from dataclasses import dataclass, field
from itertools import chain, compress
from typing import Any, Callable, Iterable, Iterator, Protocol, Sequence, overload

from .config import DataRule, PolicySettings
from .members import Member, MemberState
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

    `candidates` lists every member of the view with why it was or was not
    admissible. `place()` fills it with a lazily evaluated immutable sequence: writing
    the explanation of a thousand members costs more than placing the launch, and
    only the explain API and the launch log's debug mode read it.
    """

    member: Member | None
    reason: str  # "cookie" | "data" | "cache" | "affinity" | "spill" | "random" | "rendezvous" | "panic" | "prime" | "none"
    strategy: str
    ranking: tuple[str, ...]  # member names in failover order, first = chosen
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


class _Candidates(Sequence[Candidate]):
    """The candidates of one decision, built on first use from the (immutable) view."""

    __slots__ = ("_members", "_now", "_headroom", "_tiers", "_items")

    def __init__(self, members: tuple[MemberView, ...], now: float, headroom: int, tiers: Callable[[], dict[int, str]]):
        self._members = members
        self._now = now
        self._headroom = headroom
        self._tiers = tiers
        self._items: tuple[Candidate, ...] | None = None

    def _all(self) -> tuple[Candidate, ...]:
        if self._items is None:
            tiers = self._tiers()
            items = []
            for index, view in enumerate(self._members):
                why = why_not(view, self._now, self._headroom)
                items.append(
                    Candidate(
                        name=view.name,
                        admissible=why is None,
                        why=why or "admissible",
                        tier=tiers.get(index, ""),
                        load_ratio=view.load_ratio(),
                    )
                )
            self._items = tuple(items)
        return self._items

    @overload
    def __getitem__(self, index: int) -> Candidate: ...
    @overload
    def __getitem__(self, index: slice) -> tuple[Candidate, ...]: ...
    def __getitem__(self, index):  # type: ignore[no-untyped-def]
        return self._all()[index]

    def __len__(self) -> int:
        return len(self._members)

    def __iter__(self) -> Iterator[Candidate]:
        return iter(self._all())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sequence) and not isinstance(other, (str, bytes)):
            return self._all() == tuple(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._all())

    def __repr__(self) -> str:
        return repr(self._all())


# --------------------------------------------------------------------------------------
# Strategies
# --------------------------------------------------------------------------------------


@dataclass
class Ranking:
    """A strategy's answer: groups of member indices (into `Context.members`) in
    failover order, each labelled with the reason its members got.

    `spilled` says that bounded load passed over the strategy's first choice.
    """

    groups: list[tuple[str, list[int]]]
    spilled: bool = False


@dataclass
class Context:
    """What a strategy may read besides the admissible members; built once per launch.

    Member indices refer to `members` (the view's order). Everything here is filled by
    `place()`'s single pass over the members and must be treated as read-only.
    """

    view: FederationView
    settings: PolicySettings
    request: Placeable
    data_site: str | None
    members: tuple[MemberView, ...]
    names: list[str]  # every member's name
    weights: list[float]  # every member's effective weight
    flags: bytearray  # 1 for admissible members
    admissible: list[int]  # admissible members, view order
    ratios: dict[int, float]  # load ratio of each admissible member with a known quota
    sited: list[int]  # admissible members declaring data sites
    declared: list[int]  # admissible members declaring cached repositories
    load: int  # pods + in flight of the admissible members with a known quota
    quota: int  # and their total quota
    _order: list[int] | None = field(default=None, repr=False)
    _rank: list[int] | None = field(default=None, repr=False)

    def average_load(self) -> float:
        """Federation load ratio counting the launch being placed (0 when no quota is known)."""
        return (self.load + 1) / self.quota if self.quota > 0 else 0.0

    def load_bound(self) -> float:
        """The load ratio above which an admissible member is overloaded (see the module docstring)."""
        average = self.average_load()
        grow = 1.0 + self.settings.epsilon
        return min(grow * average, 1.0 - (1.0 - average) / grow)

    def overloaded(self) -> set[int]:
        """Admissible members with a quota whose load ratio is above `load_bound()`."""
        ratios = self.ratios
        if not ratios:
            return set()
        bound = self.load_bound()
        if max(ratios.values()) <= bound:
            return set()
        return {i for i, ratio in ratios.items() if ratio > bound}

    def rank(self) -> list[int]:
        """Rendezvous position of every member of the view for this repository (0 = first)."""
        if self._rank is None:
            self._order, self._rank = _MEMO.order(self.request.repo_key, self.names, self.weights)
        return self._rank

    def rendezvous(self, exclude: Iterable[int] = ()) -> list[int]:
        """Admissible members not in `exclude`, in weighted rendezvous order for this repository."""
        self.rank()
        order = self._order
        assert order is not None
        flags = self.flags
        if exclude:
            flags = bytearray(flags)
            for i in exclude:
                flags[i] = 0
        elif len(self.admissible) == len(order):
            return list(order)
        return list(compress(order, map(flags.__getitem__, order)))

    def first_in_rendezvous(self) -> int:
        """The admissible member that rendezvous ranks first for this repository."""
        self.rank()
        assert self._order is not None
        return next(compress(self._order, map(self.flags.__getitem__, self._order)))

    def by_rank(self, indices: Iterable[int]) -> list[int]:
        """Some members sorted into rendezvous order."""
        return sorted(indices, key=self.rank().__getitem__)

    def index(self, name: str) -> int:
        """The index of the member called `name`, or -1."""
        try:
            return self.names.index(name)
        except ValueError:
            return -1

    def is_admissible(self, index: int) -> bool:
        return index >= 0 and self.flags[index] == 1


Strategy = Callable[[Sequence[int], Placeable, Context, random.Random], Ranking]


def strategy_random(admissible: Sequence[int], request: Placeable, ctx: Context, rng: random.Random) -> Ranking:
    """Weighted random order (exponential race: P(first) = weight / total weight)."""
    weights = ctx.weights
    log = math.log
    draw = rng.random
    keys = [-log(1.0 - draw()) / weights[i] for i in admissible]
    order = sorted(range(len(keys)), key=keys.__getitem__)
    return Ranking([("random", [admissible[k] for k in order])])


def strategy_rendezvous(admissible: Sequence[int], request: Placeable, ctx: Context, rng: random.Random) -> Ranking:
    """Weighted rendezvous hashing over the repository key: the existing redirector's affinity."""
    return Ranking([("rendezvous", ctx.rendezvous())])


def strategy_bounded_affinity(
    admissible: Sequence[int], request: Placeable, ctx: Context, rng: random.Random
) -> Ranking:
    """Data-near members, then image holders, then rendezvous affinity; overloaded ones last.

    Each tier is ordered by rendezvous; a member sits in the first tier of
    `settings.tiers` that selects it, and members no tier selects go last as
    "affinity". Bounded load then moves overloaded members behind all the others.
    """
    members = ctx.members
    tiers: list[tuple[str, list[int]]] = []
    taken: set[int] = set()
    for tier in ctx.settings.tiers:
        if tier == "affinity":
            break  # affinity selects everybody left
        chosen: set[int] = set()
        if tier == "data":
            site = ctx.data_site
            if site is not None:
                chosen = {i for i in ctx.sited if site in members[i].member.data_sites}
        elif tier == "cache":
            key = request.repo_key
            chosen = {i for i in ctx.declared if key in members[i].member.cached_repos}
            for name in ctx.view.cache.get(key) or ():
                i = ctx.index(name)
                if ctx.is_admissible(i):
                    chosen.add(i)
        chosen -= taken
        if chosen:
            tiers.append((tier, ctx.by_rank(chosen)))
            taken |= chosen

    over = ctx.overloaded()
    if len(over) == len(admissible):
        over = set()  # cannot happen with the average counting everybody; never leave nobody
    groups = [(label, [i for i in group if i not in over]) for label, group in tiers]
    groups.append(("affinity", ctx.rendezvous(taken | over)))
    if not over:
        return Ranking(groups)
    groups += [(label, [i for i in group if i in over]) for label, group in tiers]
    groups.append(("affinity", ctx.by_rank(over - taken)))
    first = tiers[0][1][0] if tiers else ctx.first_in_rendezvous()
    return Ranking(groups, spilled=first in over)


STRATEGIES: dict[str, Strategy] = {
    "random": strategy_random,
    "rendezvous": strategy_rendezvous,
    "bounded-affinity": strategy_bounded_affinity,
}


# --------------------------------------------------------------------------------------
# Rendezvous hashing
# --------------------------------------------------------------------------------------


def rendezvous_score(name: str, repo_key: str, weight: float) -> float:
    """The weighted rendezvous score of one member for one repository (higher wins)."""
    digest = hashlib.blake2b(name.encode() + b"\0" + repo_key.encode(), digest_size=8).digest()
    return _score(int.from_bytes(digest, "big"), weight)


_UNIT = 2.0**-53


def _score(h: int, weight: float) -> float:
    if weight <= 0:
        return -math.inf
    u = ((h >> 11) + 0.5) * _UNIT  # uniform in (0, 1), never 0 or 1
    return weight / -math.log(u)


class _MemberSet:
    """Per member set (names and weights): hash prefixes and recent repositories' orders."""

    __slots__ = ("prefixes", "weights", "orders", "capacity")

    def __init__(self, names: tuple[str, ...], weights: tuple[float, ...], capacity: int):
        self.prefixes = [hashlib.blake2b(name.encode() + b"\0", digest_size=8) for name in names]
        self.weights = weights
        self.orders: OrderedDict[str, tuple[list[int], list[int]]] = OrderedDict()
        self.capacity = capacity

    def order(self, repo_key: str) -> tuple[list[int], list[int]]:
        hit = self.orders.get(repo_key)
        if hit is not None:
            self.orders.move_to_end(repo_key)
            return hit
        # rendezvous_score() for every member, unrolled: this is the cost of a repository
        # the memo has not seen, one BLAKE2b per member.
        data = repo_key.encode()
        digests = []
        add = digests.append
        for prefix in self.prefixes:
            h = prefix.copy()
            h.update(data)
            add(h.digest())
        from_bytes, log, unit = int.from_bytes, math.log, _UNIT
        scores = [
            weight / -log(((from_bytes(digest, "big") >> 11) + 0.5) * unit) if weight > 0 else -math.inf
            for digest, weight in zip(digests, self.weights)
        ]
        order = sorted(range(len(scores)), key=scores.__getitem__, reverse=True)
        rank = [0] * len(order)
        for position, index in enumerate(order):
            rank[index] = position
        entry = (order, rank)
        self.orders[repo_key] = entry
        if len(self.orders) > self.capacity:
            self.orders.popitem(last=False)
        return entry


class _RendezvousMemo:
    """Memo of `rendezvous order(repo, names, weights)`, a pure function.

    Bounded: a few member sets (the set changes when members join, leave or change
    weight) and, per set, the most recent repositories up to about `budget`
    member entries in all (1000 members keep 1000 repositories, 5 keep 16384).
    """

    def __init__(self, sets: int = 4, budget: int = 1_000_000):
        self._sets: OrderedDict[tuple[tuple[str, ...], tuple[float, ...]], _MemberSet] = OrderedDict()
        self._max_sets = sets
        self._budget = budget
        # The member set of the previous call: usually the same, and comparing two lists
        # of the same objects is cheaper than hashing them into a key.
        self._last: tuple[list[str], list[float], _MemberSet] | None = None

    def order(self, repo_key: str, names: list[str], weights: list[float]) -> tuple[list[int], list[int]]:
        last = self._last
        if last is not None and last[0] == names and last[1] == weights:
            return last[2].order(repo_key)
        key = (tuple(names), tuple(weights))
        member_set = self._sets.get(key)
        if member_set is None:
            capacity = max(64, min(16384, self._budget // max(1, len(names))))
            member_set = self._sets[key] = _MemberSet(key[0], key[1], capacity)
            if len(self._sets) > self._max_sets:
                self._sets.popitem(last=False)
        else:
            self._sets.move_to_end(key)
        self._last = (list(names), list(weights), member_set)
        return member_set.order(repo_key)


_MEMO = _RendezvousMemo()


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
    members = view.members
    now = view.now
    headroom = settings.pod_headroom

    # One pass over the members: admissibility (the rules of why_not(), inlined
    # because this loop is most of the cost of placement at a thousand members),
    # every member's name and weight (the rendezvous memo's key), the load of the
    # admissible members with a quota, and who declares data sites or cached images.
    count = len(members)
    names: list[str] = [""] * count
    weights: list[float] = [0.0] * count
    flags = bytearray(count)
    ratios: dict[int, float] = {}
    sited: list[int] = []
    declared: list[int] = []
    load = quota_sum = 0
    index = -1
    for mv in members:
        index += 1
        member = mv.member
        names[index] = member.name
        override = mv.override
        if override is None:
            weight = weights[index] = member.weight
        else:
            weight = weights[index] = member.weight if override.weight is None else float(override.weight)
            if override.draining:
                continue
        if weight <= 0 or mv.ejected_until > now:
            continue
        status = mv.status
        if status.state is not HEALTHY:
            continue
        quota = status.quota
        if quota is not None:
            used = status.total_pods + mv.in_flight
            if quota - used - headroom <= 0:
                continue
            ratios[index] = used / quota
            load += used
            quota_sum += quota
        flags[index] = 1
        if member.data_sites:
            sited.append(index)
        if member.cached_repos:
            declared.append(index)

    admissible = list(compress(range(count), flags))
    ctx = Context(
        view, settings, request, site, members, names, weights, flags, admissible, ratios, sited, declared, load, quota_sum
    )
    if not admissible:
        return _panic(ctx, now, headroom)

    ranking = strategy(admissible, request, ctx, rng)
    groups = [(label, group) for label, group in ranking.groups if group]
    order = groups[0][1] if len(groups) == 1 else list(chain.from_iterable(group for _, group in groups))
    reason = "spill" if ranking.spilled else groups[0][0]
    if sticky is not None:
        chosen = ctx.index(sticky)
        if ctx.is_admissible(chosen):
            if order[0] != chosen:
                order = [chosen] + [i for i in order if i != chosen]
            reason = "cookie"

    def tiers() -> dict[int, str]:
        return {i: label for label, group in groups if label in TIERS for i in group}

    return Decision(
        member=members[order[0]].member,
        reason=reason,
        strategy=settings.strategy,
        ranking=tuple(map(names.__getitem__, order)),
        candidates=_Candidates(members, now, headroom, tiers),
        data_site=site,
    )


def _panic(ctx: Context, now: float, headroom: int) -> Decision:
    """Nobody is admissible: ignore capacity, then health, then give up."""
    settings = ctx.settings
    members = ctx.members
    names = ctx.names

    def decision(member: Member | None, reason: str, order: list[int]) -> Decision:
        return Decision(
            member=member,
            reason=reason,
            strategy=settings.strategy,
            ranking=tuple(names[i] for i in order),
            candidates=_Candidates(members, now, headroom, dict),
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
