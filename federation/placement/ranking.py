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
from typing import Any, Callable, Protocol, Sequence

import numpy as np

from .settings import PolicySettings
from .table import MemberTable, once
from .view import FederationView


class Placeable(Protocol):
    """What placement needs to know about a launch (`federation.spec.LaunchRequest` is one)."""

    @property
    def repo_key(self) -> str: ...

    @property
    def data_site(self) -> str | None: ...


class Context:
    """What a strategy may read about one launch; built once by `place()`, read-only.

    Arrays and lists are indexed by member position in the view (`table`'s order).
    Admissibility comes in two forms, numpy arrays (`ok`, `admissible`, `used`) and
    Python lists (`ok_list`, `admissible_list`, `used_list`): `place()` computes the
    lists for up to `SMALL` members (`small`; numpy calls on tiny arrays cost more than
    the loops they replace) and the arrays beyond, and the other form is derived on
    first read, so a ranker written either way works on both.
    """

    def __init__(self, view: FederationView, settings: PolicySettings, request: Placeable, data_site: str | None,
                 table: MemberTable, small: bool, ok: list[bool] | np.ndarray, admissible: list[int] | np.ndarray):
        self.view = view
        self.settings = settings
        self.request = request
        self.data_site = data_site
        self.table = table
        self.small = small
        if small:
            self.ok_list, self.admissible_list = ok, admissible
        else:
            self.ok, self.admissible = ok, admissible
            self.used = table.pods + table.in_flight  # needed by bounded load; derived later it costs more

    @once
    def ok(self) -> np.ndarray:  # bool: admissible
        return np.array(self.ok_list, dtype=bool).reshape(len(self.ok_list))

    @once
    def admissible(self) -> np.ndarray:  # indices of the admissible members, view order
        return np.array(self.admissible_list, dtype=np.intp).reshape(len(self.admissible_list))

    @once
    def used(self) -> np.ndarray:  # int64: pods + in flight
        return self.table.pods + self.table.in_flight

    @once
    def ok_list(self) -> list[bool]:
        return self.ok.tolist()

    @once
    def admissible_list(self) -> list[int]:
        return self.admissible.tolist()

    @once
    def used_list(self) -> list[int]:
        few = self.table.few
        if few is None:
            return self.used.tolist()
        return [pods + flying for pods, flying in zip(few.pods, self.table.in_flight_list)]

    def rendezvous_keys(self, members: list[int] | np.ndarray) -> list[float] | np.ndarray:
        """Some members' negated weighted rendezvous scores for this repository (lower ranks first);
        a list for a list of members (a few), an array for an array."""
        if isinstance(members, list):
            return [-score for score in self.table.scores(self.request.repo_key, members)]
        keys = self.table.rendezvous_scores(self.request.repo_key, members)
        return np.negative(keys, out=keys)


class Ranking:
    """A strategy's answer: the admissible members ordered by `(group, key)`, ascending.

    `group` is indexed by member position in the view: `group[i]` is the position in
    `labels` of the label member `i` is ranked under (the decision's reason when it is
    first); an int8 array, or a list on a few-member placement (`Context.small`).
    `keys(members)` gives the keys that order some members within their group (lower
    first), as a sequence as long as `members`: a list of member positions on a
    few-member placement, an array otherwise (numpy indexing takes either). It is asked
    only for the members that matter, so a launch whose image sits on two members
    hashes two. Only admissible members are read.

    Steps after the strategy may fill the rest: `demoted`, the members to move behind
    all others (bools by member position, or None), called only when the whole order is
    read; `spilled`, that a step passed over the strategy's first choice;
    `overloaded(i)`, whether member i is passed over (a sticky cookie naming such a
    member is not honoured; None: nobody is).
    """

    __slots__ = ("group", "keys", "labels", "spilled", "demoted", "overloaded", "_first")

    def __init__(self, group: np.ndarray | list[int], keys: Callable[[Any], Sequence[float]],
                 labels: tuple[str, ...], spilled: bool = False,
                 demoted: Callable[[], np.ndarray | list[bool] | None] | None = None,
                 overloaded: Callable[[int], bool] | None = None):
        self.group = group
        self.keys = keys
        self.labels = labels
        self.spilled = spilled
        self.demoted = demoted
        self.overloaded = overloaded
        self._first: int | None = None

    def group_list(self) -> list[int]:
        """`group` as a list (for a few members)."""
        group = self.group
        return group if isinstance(group, list) else group.tolist()

    def first(self, ctx: Context) -> int:
        """The admissible member ranked first (`demoted` must not include it)."""
        if self._first is None:
            if ctx.small:  # a few members: Python costs less than numpy calls
                group = self.group_list()
                members = ctx.admissible_list
                groups = [group[i] for i in members]
                top = min(groups)
                best = [i for i, g in zip(members, groups) if g == top]
                if len(best) > 1:
                    keys = self.keys(best)
                    keys = keys if isinstance(keys, list) else np.asarray(keys).tolist()
                    self._first = best[keys.index(min(keys))]
                else:
                    self._first = best[0]
            else:
                admissible = ctx.admissible
                groups = self.group[admissible]  # an array beyond a few members
                best = admissible[groups == groups.min()]
                self._first = int(best[np.argmin(self.keys(best))]) if len(best) > 1 else int(best[0])
        return self._first

    def order(self, admissible: np.ndarray) -> np.ndarray:
        """All admissible members in ranking order."""
        group = np.asarray(self.group)[admissible]
        demoted = self.demoted() if self.demoted is not None else None
        if demoted is not None:
            group = group + np.asarray(demoted, dtype=bool)[admissible].view(np.int8) * np.int8(len(self.labels))
        return admissible[np.lexsort((np.asarray(self.keys(admissible)), group))]


Ranker = Callable[[Context, random.Random], Ranking]
Step = Callable[[Context, Ranking], Ranking]
