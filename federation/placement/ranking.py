"""The ranking machinery every strategy shares: what a ranker reads, what it answers.

A strategy's ranker is one pure function of one signature,

    rank(ctx: Context, rng: random.Random) -> Ranking

that orders the admissible members of one launch. `Context` is what it may read
(built once per launch by `place()`); `Ranking` is its answer, in a form that lets
`place()` take the first member with a linear scan and sort the rest only when
somebody reads the failover order. Steps applied after a strategy (bounded load) are
functions `(ctx, ranking) -> Ranking` of the same shape.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np

from .settings import PolicySettings
from .table import SMALL, MemberTable
from .view import FederationView


class Placeable(Protocol):
    """What placement needs to know about a launch (`federation.spec.LaunchRequest` is one)."""

    @property
    def repo_key(self) -> str: ...

    @property
    def data_site(self) -> str | None: ...


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


class Ranking:
    """A strategy's answer: the admissible members ordered by `(group, key)`, ascending.

    `group` is indexed by member position in the view: `group[i]` is the position in
    `labels` of the label member `i` is ranked under (the decision's reason when it is
    first). `keys(members)` gives the keys that order some members within their group
    (lower first); it is asked only for the members that matter, so a launch whose
    image sits on two members hashes two. Only admissible members are read.

    Steps after the strategy may fill the rest: `demoted`, the members to move behind
    all others, called only when the whole order is read; `spilled`, that a step passed
    over the strategy's first choice; `overloaded(i)`, whether member i is passed over
    (a sticky cookie naming such a member is not honoured; None: nobody is).
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


Ranker = Callable[[Context, random.Random], Ranking]
Step = Callable[[Context, Ranking], Ranking]
