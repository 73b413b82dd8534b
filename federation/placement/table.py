"""The members of a view as arrays: the form placement computes on.

Placement looks at every member for every launch. At a thousand members a Python loop
over `MemberView` objects costs more than a whole decision may (DESIGN.md wants well
under a millisecond), so placement reads a `MemberTable` instead: one numpy array per
quantity, built once per view. The router's `ViewBuilder` (federation/placement/view.py)
builds one per change of the member set, statuses, overrides or ejections and only swaps
the in-flight counts per launch; time-dependent facts (an ejection ending) are compared
against `view.now` at placement time, so a table never goes stale by waiting.

Rendezvous scores are computed here too, for all members at once (`rendezvous_scores`):

    h = fmix64(B(name) XOR B(repository key))      B = BLAKE2b-64, big-endian
    u = ((h >> 11) + 0.5) / 2**53                   uniform in (0, 1), never 0 or 1
    score = weight / -ln(u)                         higher wins; -inf for weight <= 0

`fmix64` is MurmurHash3's 64-bit finaliser, a bijection whose every output bit depends
on every input bit, so one BLAKE2b per launch and a few vector operations per member
replace a BLAKE2b per member. Any implementation can reproduce the ranking from this
description; `rendezvous_score` is the one-member reference. (Beyond `SMALL` members the logarithm is numpy's, which on some CPUs differs from the C
library's by one unit in the last place, a score by two; only two scores that close
could rank differently, which no real pair of members and repository comes close to.)
"""

from __future__ import annotations

import hashlib
import math
from itertools import repeat
from dataclasses import dataclass
from typing import Any, Callable, MutableMapping, Mapping, NamedTuple, Sequence

import numpy as np

from ..members import Member, MemberState
from .member_view import MemberView

_MASK = (1 << 64) - 1
_C1 = 0xFF51AFD7ED558CCD
_C2 = 0xC4CEB9FE1A85EC53
_UNIT = 2.0**-53
UNLIMITED = 2**62  # the spare room of a member whose capacity is unknown or unlimited
# Up to this many members, per-member Python beats the fixed cost of numpy calls (measured:
# a numpy call on a small array costs about as much as 2-4 members' worth of Python).
SMALL = 8


def key_hash(text: str) -> int:
    """BLAKE2b-64 of a member name or repository key, as an unsigned integer.

    Not cached here: repository keys are the visitors' text, and a process-wide cache of
    them grows with every key anyone sends (one hash costs about a microsecond). Member
    names' hashes are kept by whoever builds tables (`MemberTable.of(..., hashes=)`).
    """
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def fmix64(x: int) -> int:
    """MurmurHash3's 64-bit finaliser, on one integer (the reference for the vector form)."""
    x ^= x >> 33
    x = (x * _C1) & _MASK
    x ^= x >> 33
    x = (x * _C2) & _MASK
    x ^= x >> 33
    return x


def unit_score(h: int, weight: float) -> float:
    """The weighted rendezvous score of one mixed hash `h` (see the module docstring)."""
    if weight <= 0:
        return -math.inf
    return weight / -math.log(((h >> 11) + 0.5) * _UNIT)


def rendezvous_score(name: str, repo_key: str, weight: float) -> float:
    """The weighted rendezvous score of one member for one repository (higher wins).

    The one-member reference of `MemberTable.rendezvous_scores`, which placement uses.
    """
    return unit_score(fmix64(key_hash(name) ^ key_hash(repo_key)), weight)


_S33 = np.uint64(33)
_S11 = np.uint64(11)
_V1 = np.uint64(_C1)
_V2 = np.uint64(_C2)


def rendezvous_scores(hashes: np.ndarray, weights: np.ndarray, repo_key: str) -> np.ndarray:
    """`unit_score(fmix64(hash ^ B(repo_key)), weight)` for every member at once."""
    x = hashes ^ np.uint64(key_hash(repo_key))
    x ^= x >> _S33
    x *= _V1  # uint64 arithmetic wraps modulo 2**64, as the finaliser wants
    x ^= x >> _S33
    x *= _V2
    x ^= x >> _S33
    x >>= _S11
    u = x.astype(np.float64)
    u += 0.5
    u *= _UNIT
    np.log(u, out=u)
    u *= -1.0  # > 0: u < 1 (at most 1 - 2**-54)
    scores = np.divide(weights, u, out=u)
    unweighted = weights <= 0
    if unweighted.any():
        scores[unweighted] = -np.inf
    return scores


class once:
    """A computed attribute kept after its first read: `functools.cached_property` without
    its lock (Python 3.11 takes one on every first read, which costs more than the lists
    placement derives with it)."""

    def __init__(self, compute: Callable[[Any], Any]):
        self.compute = compute
        self.name = compute.__name__
        self.__doc__ = compute.__doc__

    def __get__(self, instance: Any, owner: type | None = None) -> Any:
        if instance is None:
            return self
        value = instance.__dict__[self.name] = self.compute(instance)
        return value


class Few(NamedTuple):
    """A small table's arrays as Python lists: for up to `SMALL` members `place()` computes
    on these, since a numpy call on a tiny array costs more than the loop it replaces."""

    ready: list[bool]
    ejected_until: list[float]
    has_quota: list[bool]
    quota: list[int]
    pods: list[int]
    spare: list[int]


@dataclass(frozen=True, eq=False)
class MemberTable:
    """What placement reads of every member, one array per quantity, in view order.

    The in-flight counts come in two forms, `in_flight` (an array) and `in_flight_list`:
    a table holds the one it was made with (the list for up to `SMALL` members) and
    derives the other on first read.
    """

    members: tuple[Member, ...]
    names: tuple[str, ...]
    index: Mapping[str, int]              # member name -> position
    weight: np.ndarray                    # float64: effective weight (an override's, else the declared one)
    hashes: np.ndarray                    # uint64: key_hash(name)
    ready: np.ndarray                     # bool: not draining, weight > 0, probed healthy
    ejected_until: np.ndarray             # float64: passive health (admissible once <= now)
    last_ejection_end: float              # max(ejected_until): no ejection to check once now is past it
    has_quota: np.ndarray                 # bool: capacity known and limited
    quota: np.ndarray                     # int64: the quota (0 where unknown); a row of quota_pods
    pods: np.ndarray                      # int64: pods at the last probe; a row of quota_pods
    spare: np.ndarray                     # int64: quota - pods (UNLIMITED where capacity is unknown)
    quota_pods: np.ndarray                # int64 (2, n): quota and pods stacked, to sum both in one call
    sites: Mapping[str, np.ndarray]       # data site -> members declaring it
    declared: Mapping[str, tuple[int, ...]]  # repository key -> members declaring its image cached
    python_lists: tuple[list[int], list[float]]  # hashes and weights as Python numbers, for a few members
    few: Few | None                       # the arrays above as lists, for up to SMALL members (else None)

    @once
    def in_flight(self) -> np.ndarray:
        """int64: launches sent there that the probe cannot show yet."""
        return np.array(self.in_flight_list, dtype=np.int64).reshape(len(self.names))

    @once
    def in_flight_list(self) -> list[int]:
        return self.in_flight.tolist()

    def in_flight_of(self, i: int) -> int:
        """Member `i`'s in-flight count, from whichever form the table holds."""
        return self.in_flight_list[i] if self.few is not None else int(self.in_flight[i])

    def rendezvous_scores(self, repo_key: str, members: np.ndarray | None = None) -> np.ndarray:
        """The weighted rendezvous scores for one repository (higher ranks first) of
        some members (indices), or of all."""
        n = len(self.names) if members is None else len(members)
        if n > SMALL:
            if members is None:
                return rendezvous_scores(self.hashes, self.weight, repo_key)
            return rendezvous_scores(self.hashes[members], self.weight[members], repo_key)
        # A few members: Python per member costs less than a dozen numpy calls.
        return np.array(self.scores(repo_key, None if members is None else members.tolist()),
                        dtype=np.float64).reshape(n)

    def scores(self, repo_key: str, members: list[int] | None = None) -> list[float]:
        """`rendezvous_scores` one member at a time, as a list (for a few members)."""
        hashes, weights = self.python_lists
        r = key_hash(repo_key)
        scores = []
        for i in range(len(hashes)) if members is None else members:
            # unit_score(fmix64(h ^ r), w), inlined: the calls cost more than the arithmetic
            h, w = hashes[i], weights[i]
            if w <= 0:
                scores.append(-math.inf)
                continue
            x = h ^ r
            x ^= x >> 33
            x = (x * _C1) & _MASK
            x ^= x >> 33
            x = (x * _C2) & _MASK
            x ^= x >> 33
            scores.append(w / -math.log(((x >> 11) + 0.5) * _UNIT))
        return scores

    @classmethod
    def of(cls, views: Sequence[MemberView], hashes: MutableMapping[str, int] | None = None) -> MemberTable:
        """The table of some member views (one pass; the cost a `ViewBuilder` pays once per change).

        `hashes`: member name -> `key_hash(name)`, reused and filled in (a builder's own cache).
        """
        n = len(views)
        members = tuple(v.member for v in views)
        names = tuple(m.name for m in members)
        weights = [v.weight for v in views]
        ready = [
            not v.draining and w > 0 and v.status.state is MemberState.HEALTHY for v, w in zip(views, weights)
        ]
        quotas = [v.status.quota for v in views]
        pods = [v.status.total_pods for v in views]
        quota_list = [q or 0 for q in quotas]
        has_quota_list = [q is not None for q in quotas]
        quota_pods = np.array([quota_list, pods], dtype=np.int64).reshape(2, n)
        has_quota = np.array(has_quota_list, dtype=bool).reshape(n)
        known = hashes if hashes is not None else {}
        member_hashes = []
        for name in names:
            h = known.get(name)
            if h is None:
                h = known[name] = key_hash(name)
            member_hashes.append(h)
        ejected_until = [v.ejected_until for v in views]
        sites: dict[str, list[int]] = {}
        declared: dict[str, list[int]] = {}
        for i, m in enumerate(members):
            for site in m.data_sites:
                sites.setdefault(site, []).append(i)
            for repo in m.cached_repos:
                declared.setdefault(repo, []).append(i)
        in_flight = [v.in_flight for v in views]
        spare = np.where(has_quota, quota_pods[0] - quota_pods[1], UNLIMITED)
        few = Few(ready, ejected_until, has_quota_list, quota_list, pods, spare.tolist()) if n <= SMALL else None
        table = cls(
            members=members,
            names=names,
            index={name: i for i, name in enumerate(names)},
            weight=np.array(weights, dtype=np.float64).reshape(n),
            hashes=np.array(member_hashes, dtype=np.uint64).reshape(n),
            ready=np.array(ready, dtype=bool).reshape(n),
            ejected_until=np.array(ejected_until, dtype=np.float64).reshape(n),
            last_ejection_end=max(ejected_until, default=0.0),
            has_quota=has_quota,
            quota=quota_pods[0],
            pods=quota_pods[1],
            quota_pods=quota_pods,
            spare=spare,
            sites={site: np.array(ix, dtype=np.intp) for site, ix in sites.items()},
            declared={repo: tuple(ix) for repo, ix in declared.items()},
            python_lists=(member_hashes, [float(w) for w in weights]),
            few=few,
        )
        table.__dict__["in_flight_list" if few is not None else "in_flight"] = (
            in_flight if few is not None else np.array(in_flight, dtype=np.int64).reshape(n))
        return table

    def with_in_flight(self, in_flight: Mapping[str, int]) -> MemberTable:
        """The same table with other in-flight counts (members not named have none)."""
        # A shallow copy by hand: dataclasses.replace() or copy.copy() cost more than the rest of this.
        table = object.__new__(MemberTable)
        fields = table.__dict__
        fields.update(self.__dict__)
        if self.few is not None:  # a few members: a list; the array only if somebody reads it
            fields.pop("in_flight", None)
            fields["in_flight_list"] = [int(in_flight.get(name, 0)) for name in self.names]
            return table
        fields.pop("in_flight_list", None)
        counts = np.zeros(len(self.names), dtype=np.int64)
        index = self.index
        if len(in_flight) <= SMALL:
            for name, count in in_flight.items():
                i = index.get(name)
                if i is not None:
                    counts[i] = count
        else:  # C-level passes and one array assignment: a Python loop per member costs twice as much
            k = len(in_flight)
            positions = np.fromiter(map(index.get, in_flight, repeat(-1)), dtype=np.intp, count=k)
            values = np.fromiter(in_flight.values(), dtype=np.int64, count=k)
            known = positions >= 0   # members that left the view since the store counted them
            counts[positions[known]] = values[known]
        fields["in_flight"] = counts
        return table
