"""Placement's few-member path (Python lists) decides exactly as its array path (numpy).

For up to `SMALL` members `place()` computes admissibility, tiers, the load bound and the
overload checks on Python lists (federation/placement/place.py). Random small federations,
every registered strategy (and one written with numpy only), with and without a sticky
cookie: both paths must give the same decision, failover order and candidates, and draw
the same numbers from the rng.
"""

from __future__ import annotations

import collections
import random
import re

import numpy as np
import pytest

import federation.placement.place as place_module
from federation.config import DataRule, PolicySettings
from federation.members import Member, MemberState, MemberStatus, Override
from federation.placement.bounded_load import bounded_load
from federation.placement.member_view import MemberView
from federation.placement.place import place
from federation.placement.ranking import Context, Ranking
from federation.placement.strategies import STRATEGIES, Strategy
from federation.placement.table import SMALL
from federation.placement.view import FederationView, ViewBuilder

NOW = 1_000_000.0
REPOS = ("gh/a/one", "gh/b/two", "gh/c/three")
SITES = ("s1", "s2", "s3")
STATES = (MemberState.HEALTHY,) * 5 + (MemberState.FULL, MemberState.UNHEALTHY, MemberState.UNKNOWN)
TIERS = (("data", "cache", "affinity"), ("cache", "data", "affinity"), ("cache", "affinity"), ("data",), ())
CASES = 1500


class Launch:
    def __init__(self, repo_key: str, data_site: str | None):
        self.repo_key = repo_key
        self.data_site = data_site


def numpy_only(ctx: Context, rng: random.Random) -> Ranking:
    """A ranker written with numpy alone, as a new strategy might be: it reads the arrays."""
    assert ctx.ok.dtype == bool and ctx.admissible.dtype == np.intp and ctx.used.dtype == np.int64
    busy = ctx.used > np.median(ctx.used[ctx.admissible])
    group = busy.astype(np.int8)
    keys = ctx.table.weight * -1.0 + ctx.used * 1e-3 + ctx.ok * 0.0
    return Ranking(group, keys.__getitem__, ("quiet", "busy"))


def random_federation(rng: random.Random):
    n = rng.randint(1, SMALL)
    names = [f"m{i}" for i in range(n)]
    members, statuses, in_flight, overrides, ejections = [], {}, {}, {}, {}
    for name in names:
        members.append(Member(
            name=name, url=f"https://{name}.example.org", weight=rng.choice((0.0, 0.5, 1.0, 1.0, 2.0, 3.0)),
            prime=rng.random() < 0.3, data_sites=tuple(s for s in SITES[:2] if rng.random() < 0.3),
            cached_repos=tuple(r for r in REPOS if rng.random() < 0.2),
        ))
        quota = rng.choice((None, rng.randint(0, 5), rng.randint(1, 60)))
        pods = rng.randint(0, (quota or 40) + 3)
        statuses[name] = MemberStatus(
            name=name, state=rng.choice(STATES), reason=rng.choice(("ok", "")), quota=quota,
            has_quota=quota is not None, total_pods=pods, checked_at=NOW - 5, reachable=rng.random() < 0.8,
        )
        if rng.random() < 0.5:
            in_flight[name] = rng.randint(1, 12)
        if rng.random() < 0.15:
            overrides[name] = rng.choice((Override(draining=True), Override(weight=rng.choice((0.0, 2.0)))))
        if rng.random() < 0.15:
            ejections[name] = rng.choice((NOW - 5, NOW, NOW + 30))  # NOW: the boundary
    cache = {r: frozenset(x for x in (*names, "gone") if rng.random() < 0.3) for r in REPOS if rng.random() < 0.6}
    return members, statuses, in_flight, overrides, ejections, cache


def hand_built(members, statuses, in_flight, overrides, ejections, cache) -> FederationView:
    views = tuple(
        MemberView(member=m, status=statuses[m.name], in_flight=in_flight.get(m.name, 0),
                   override=overrides.get(m.name), ejected_until=ejections.get(m.name, 0.0))
        for m in members
    )
    return FederationView(members=views, now=NOW, cache=cache)


def decide(view: FederationView, launch: Launch, settings: PolicySettings, seed: int, sticky: str | None):
    rng = random.Random(seed)
    d = place(view, launch, settings, rng, sticky=sticky)
    # Everything a decision says, its lazy parts read out, and what was drawn from the rng.
    return (d.member, d.reason, d.strategy, d.data_site, tuple(d.ranking), tuple(d.candidates), rng.random())


def both_paths(monkeypatch, view: FederationView, launch: Launch, settings: PolicySettings, seed: int,
               sticky: str | None):
    """`decide` on the few-member path, then on the array path (as beyond SMALL members)."""
    few = decide(view, launch, settings, seed, sticky)
    with monkeypatch.context() as patch:
        patch.setattr(place_module, "SMALL", 0)
        return few, decide(view, launch, settings, seed, sticky)


def healthy(name: str, quota: int, pods: int) -> MemberStatus:
    return MemberStatus(name=name, state=MemberState.HEALTHY, quota=quota, has_quota=True, total_pods=pods,
                        checked_at=NOW - 5)


@pytest.fixture
def strategies(monkeypatch):
    monkeypatch.setitem(STRATEGIES, "numpy-only", Strategy(numpy_only, steps=(bounded_load,)))
    return sorted(STRATEGIES)


def test_the_few_member_path_decides_as_the_array_path(monkeypatch, strategies):
    rng = random.Random(18)
    reasons: collections.Counter[str] = collections.Counter()
    builder = ViewBuilder()
    for case in range(CASES):
        parts = random_federation(rng)
        names = [m.name for m in parts[0]]
        launch = Launch(rng.choice(REPOS), rng.choice((None, None, *SITES)))
        settings = PolicySettings(
            strategy=rng.choice(strategies), pod_headroom=rng.randint(0, 3), epsilon=rng.choice((0.25, 0.5, 1.0)),
            tiers=rng.choice(TIERS), panic=rng.random() < 0.9,
            data_rules=(DataRule(re.compile(r"gh/b/.*"), "s2"),) if rng.random() < 0.3 else (),
        )
        sticky = rng.choice((None, None, "nobody", *names))
        views = (hand_built(*parts), builder.build(*parts, NOW))
        for view in views:
            assert view.table.few is not None and len(view.table.names) <= SMALL  # the few-member path runs
            few, arrays = both_paths(monkeypatch, view, launch, settings, case, sticky)
            assert few == arrays, (case, settings, sticky, parts)
            reasons[few[1]] += 1
    # The cases reach every branch worth comparing.
    assert {"cookie", "spill", "data", "cache", "affinity", "random", "rendezvous", "panic", "none"} <= set(reasons)
    assert reasons["quiet"] + reasons["busy"] > 0


def test_a_builder_table_holds_the_same_in_flight_counts_in_both_forms():
    members = tuple(Member(name=f"m{i}", url=f"https://m{i}.example.org") for i in range(3))
    statuses = {m.name: MemberStatus(name=m.name, state=MemberState.HEALTHY, quota=10, has_quota=True)
                for m in members}
    builder = ViewBuilder()
    for counts in ({}, {"m1": 4}, {"m0": 1, "m2": 7, "elsewhere": 3}):
        table = builder.build(members, statuses, counts, {}, {}, {}, NOW).table
        expected = [counts.get(m.name, 0) for m in members]
        assert table.in_flight_list == expected
        assert table.in_flight.tolist() == expected and table.in_flight.dtype == np.int64
        assert [table.in_flight_of(i) for i in range(3)] == expected


def boundary_federation(ejected_until: float):
    """Alpha holds the launch's image and sits exactly at bounded load's floor: with
    epsilon 1 the bound is max(2 x 9/44, 1/2) = 1/2 at this low load, and alpha runs 5 of
    10. Gamma (3 of 4) is over it, so bounded load has somebody to pass over."""
    members = [Member(name="alpha", url="https://alpha.example.org", cached_repos=("gh/a/one",)),
               Member(name="beta", url="https://beta.example.org"),
               Member(name="gamma", url="https://gamma.example.org")]
    statuses = {"alpha": healthy("alpha", 10, 5), "beta": healthy("beta", 30, 0), "gamma": healthy("gamma", 4, 3)}
    return members, statuses, {}, {}, {"alpha": ejected_until}, {}


@pytest.mark.parametrize("ejected_until, on_alpha", [
    (0.0, True),       # exactly at the load bound is not over it: alpha keeps the launch, as "cache"
    (NOW, True),       # an ejection ending this instant is over
    (NOW + 1, False),  # still ejected: somebody else
])
def test_both_paths_agree_on_the_boundaries(monkeypatch, ejected_until, on_alpha):
    """The comparisons that the random cases rarely hit exactly: a load equal to the bound,
    an ejection ending at this instant. Both paths agree, and the answer itself is pinned."""
    parts = boundary_federation(ejected_until)
    settings = PolicySettings(strategy="bounded-affinity", pod_headroom=0, epsilon=1.0)
    for view in (hand_built(*parts), ViewBuilder().build(*parts, NOW)):
        few, arrays = both_paths(monkeypatch, view, Launch("gh/a/one", None), settings, 0, None)
        assert few == arrays
        if on_alpha:
            assert (few[0].name, few[1]) == ("alpha", "cache")
        else:
            assert few[0].name != "alpha"


def test_both_paths_pass_over_exactly_the_members_above_the_bound(monkeypatch):
    """Alpha (the image holder, 3 of 4) is over the bound of 1/2, so the launch spills;
    beta sits exactly at it (5 of 10) and is not passed over, so rendezvous order decides
    between beta and gamma, and for gh/a/one beta ranks first."""
    members = [Member(name="alpha", url="https://alpha.example.org", cached_repos=("gh/a/one",)),
               Member(name="beta", url="https://beta.example.org"),
               Member(name="gamma", url="https://gamma.example.org")]
    statuses = {"alpha": healthy("alpha", 4, 3), "beta": healthy("beta", 10, 5), "gamma": healthy("gamma", 30, 0)}
    parts = (members, statuses, {}, {}, {}, {})
    settings = PolicySettings(strategy="bounded-affinity", pod_headroom=0, epsilon=1.0)
    for view in (hand_built(*parts), ViewBuilder().build(*parts, NOW)):
        few, arrays = both_paths(monkeypatch, view, Launch("gh/a/one", None), settings, 0, None)
        assert few == arrays
        assert (few[0].name, few[1]) == ("beta", "spill") and few[4] == ("beta", "gamma", "alpha")
