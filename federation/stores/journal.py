"""What a replica wrote while its shared store was away, to push back when it returns.

`FallbackStore` hands every write it answered locally to the journal method of the
same name (`record_launch`, `put_status`, ...); the Redis store pushes the journal back
in one script (events in chunks of `PUSH_CHUNK`, `payloads`).
"""

from __future__ import annotations

import collections
import json
import math
import uuid
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, Sequence

from ..members import MemberStatus, Override
from .protocol import Clock, RecordResult

PUSH_CHUNK = 1000         # launch events per script when pushing back after an outage
JOURNAL_PRUNE = 10_000    # prune expired launches from the journal past this size


def event_ms(event: Mapping[str, Any]) -> int:
    """An event's timestamp in whole milliseconds (0 when it has none that can be read)."""
    try:
        ts = float(event.get("timestamp", 0) or 0)
    except (TypeError, ValueError):
        return 0
    return max(0, math.floor(ts * 1000)) if math.isfinite(ts) else 0


def event_json(event: Mapping[str, Any]) -> str:
    return json.dumps(dict(event), default=str)


@dataclass
class Journal:
    """Statuses, overrides, ejections, launches, images and events written while degraded."""

    clock: Clock
    log_length: int
    statuses: dict[str, MemberStatus] = field(default_factory=dict)
    overrides: dict[str, tuple[Override | None, float]] = field(default_factory=dict)  # (override, when)
    ejections: dict[str, float] = field(default_factory=dict)
    launches: list[tuple[str, str, float]] = field(default_factory=list)   # (member, launch id, expiry)
    images: dict[tuple[str, str], float] = field(default_factory=dict)     # (repo, member) -> expiry
    events: collections.deque[tuple[int, str]] = field(default_factory=collections.deque)  # (ms, JSON)

    def __post_init__(self) -> None:
        self.events = collections.deque(self.events, maxlen=self.log_length)

    def fresh(self) -> "Journal":
        return Journal(self.clock, self.log_length)

    def empty(self) -> bool:
        return not (self.statuses or self.overrides or self.ejections or self.launches or self.images
                    or self.events)

    # -- the writes, by the Store method that made them ----------------------------------
    def record_launch(self, member: str, ttl: float, event: Mapping[str, Any] | None = None, *,
                      result: RecordResult, **_: Any) -> None:
        if not result:
            return  # refused: nothing to push
        now = self.clock()
        # A new launch id: the push is an idempotent ZADD, so pushing twice cannot count it twice.
        self.launches.append((member, uuid.uuid4().hex, now + ttl))
        if len(self.launches) > JOURNAL_PRUNE and self.launches[0][2] <= now:
            self.launches = [entry for entry in self.launches if entry[2] > now]
        if event is not None:
            self.events.append((event_ms(event), event_json(event)))

    def put_status(self, status: MemberStatus, **_: Any) -> None:
        self.statuses[status.name] = status

    def put_statuses(self, statuses: Sequence[MemberStatus], settled: Mapping[str, int], **_: Any) -> None:
        for status in statuses:
            self.statuses[status.name] = status
        for member, seen in settled.items():
            self.settle_in_flight(member, seen)

    def settle_in_flight(self, member: str, seen: int, **_: Any) -> None:
        # Forget the same launches as the local store: the oldest live ones of this member.
        now = self.clock()
        mine = sorted((e, i) for i, (m, _, e) in enumerate(self.launches) if m == member and e > now)
        drop = {i for _, i in mine[:max(int(seen), 0)]}
        self.launches = [entry for i, entry in enumerate(self.launches) if i not in drop]

    def learn_image(self, repo_key: str, member: str, ttl: float, **_: Any) -> None:
        self.images[(repo_key, member)] = self.clock() + ttl

    def set_override(self, member: str, override: Override | None, **_: Any) -> None:
        self.overrides[member] = (override, self.clock())

    def set_ejection(self, member: str, until: float, **_: Any) -> None:
        self.ejections[member] = until

    # -- pushing back ----------------------------------------------------------------------
    def merge_older(self, older: "Journal") -> None:
        """Put back a journal whose push failed, under what was written since."""
        for name, status in older.statuses.items():
            self.statuses.setdefault(name, status)
        for name, override in older.overrides.items():
            self.overrides.setdefault(name, override)
        for name, until in older.ejections.items():
            self.ejections[name] = max(until, self.ejections.get(name, until))
        self.launches[:0] = older.launches
        for key, expiry in older.images.items():
            self.images[key] = max(expiry, self.images.get(key, expiry))
        self.events = collections.deque([*older.events, *self.events], maxlen=self.log_length)

    def payloads(self) -> Iterator[dict[str, list[list[str]]]]:
        """The push, chunk by chunk: everything with the first, then only events.

        A chunk's events leave the journal when the next chunk is asked for, so after a
        failed push (`merge_older`) only what was not pushed is pushed again."""
        first = True
        while first or self.events:
            now = self.clock()
            events = [self.events.popleft() for _ in range(min(PUSH_CHUNK, len(self.events)))]
            payload: dict[str, list[list[str]]] = {
                "statuses": [[n, json.dumps(s.to_json()), repr(s.checked_at)] for n, s in self.statuses.items()],
                "overrides": [[n, json.dumps(o.to_json()) if o is not None else "", repr(o.at if o else when)]
                              for n, (o, when) in self.overrides.items()],
                "ejections": [[n, repr(until)] for n, until in self.ejections.items()],
                "launches": [[m, i, repr(e)] for m, i, e in self.launches if e > now],
                "images": [[r, m, repr(e)] for (r, m), e in self.images.items() if e > now],
                "events": [[str(ms), event, str(ms // 60_000)] for ms, event in events],
            }
            try:
                yield payload
            except BaseException:
                self.events.extendleft(reversed(events))
                raise
            if first:  # pushed once; only events are left
                self.statuses.clear()
                self.overrides.clear()
                self.ejections.clear()
                self.launches.clear()
                self.images.clear()
                first = False
