"""Reading the Redis store's hashes, and mirroring what was read into the local fallback.

Statuses, overrides and ejections come back from Redis as JSON text per member; most
reads find the same text as the last one, so decoded objects are reused (and mirrored
into the local `MemoryStore` only when something changed).
"""

from __future__ import annotations

import json
import logging
from typing import Any, Callable

from ..members import MemberStatus, Override
from .memory import MemoryStore

log = logging.getLogger("binderfed.store")

_UNREADABLE = object()


def pairs(flat: list[Any]) -> list[tuple[Any, Any]]:
    return list(zip(flat[0::2], flat[1::2]))


class Mirror:
    """Decodes what the Redis store reads and keeps the local fallback in step with it."""

    def __init__(self, local: MemoryStore):
        self.local = local
        self._decoded: dict[str, dict[str, tuple[str, Any]]] = {}   # kind -> member -> (raw, object)
        self._changed: dict[str, bool] = {}  # kind -> whether its last decode found anything new

    def forget(self) -> None:
        """The next reads mirror Redis whole into the fallback again (after an outage)."""
        self._changed.clear()

    def _decode(self, kind: str, flat: Any, parse: Callable[[str, str], Any]) -> dict[str, Any]:
        """Decode a hash read from Redis, reusing the objects of entries whose text has not changed
        (statuses change once per probe, launches read them many times a second)."""
        items = flat.items() if isinstance(flat, dict) else pairs(flat)
        previous = self._decoded.get(kind, {})
        cache: dict[str, tuple[str, Any]] = {}
        out: dict[str, Any] = {}
        changed = False
        for name, raw in items:
            hit = previous.get(name)
            if hit is not None and hit[0] == raw:
                value = hit[1]
            else:
                changed = True
                try:
                    value = parse(name, raw)
                except Exception as exc:  # one bad entry must not stop launches
                    log.warning("ignoring unreadable %s of member %s in redis: %s", kind, name, exc)
                    value = _UNREADABLE  # remembered, so the warning is not repeated on every read
            cache[name] = (raw, value)
            if value is not _UNREADABLE:
                out[name] = value
        self._decoded[kind] = cache
        self._changed[kind] = changed or len(cache) != len(previous)
        return out

    async def statuses(self, flat: Any) -> dict[str, MemberStatus]:
        statuses = self._decode("status", flat, lambda name, raw: MemberStatus.from_json(name, json.loads(raw)))
        if self._changed.get("status", True):
            for status in statuses.values():
                await self.local.put_status(status)
        return statuses

    async def overrides(self, flat: Any) -> dict[str, Override]:
        overrides = self._decode("override", flat, lambda name, raw: Override.from_json(json.loads(raw)))
        if self._changed.get("override", True):
            for name in (await self.local.overrides()).keys() - overrides.keys():
                await self.local.set_override(name, None)
            for name, override in overrides.items():
                await self.local.set_override(name, override)
        return overrides

    async def ejections(self, flat: Any) -> dict[str, float]:
        ejections = self._decode("ejection", flat, lambda name, raw: float(raw))
        if self._changed.get("ejection", True):
            for name, until in ejections.items():
                await self.local.set_ejection(name, until)
        return ejections

    async def holders(self, repo_key: str, scored: list[tuple[str, float]], now: float) -> None:
        live = {m for m, _ in scored}
        for member in self.local.holders(repo_key):
            if member not in live:
                await self.local.learn_image(repo_key, member, 0.0)  # expire it locally too
        for member, expiry in scored:
            await self.local.learn_image(repo_key, member, expiry - now)
