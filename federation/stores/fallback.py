"""Degradation: a shared store that keeps answering while its server is away.

`FallbackStore` wraps a remote store (`federation.stores.redis.RedisBackend`, whose
methods raise when the server fails) and a local `MemoryStore`, with one mechanism for
every method (`_call`): try the remote within `op_timeout`; when it is unreachable, mark
the store degraded and answer from the local store, handing each write to the journal
method of the same name (`federation.stores.journal`) so it is pushed back later.

When the server cannot be reached (connection refused or reset, no answer in time, a
Sentinel with no master, a server still loading its data, a read-only former master:
the remote's `unreachable` errors) the store never raises; no call waits longer than
`op_timeout` (``socket_timeout + connect_timeout``, 1 s by default). That bound is this
wrapper's `asyncio.timeout` around each call: redis-py is given only the connect timeout,
because with a socket timeout it writes every command through `asyncio.wait_for`, which
loses cancellations on Python 3.11 (see `hub.tasks`). It sets ``degraded = True``, logs
``store degraded: redis unreachable at ...`` once, and answers from the local store,
which mirrors what this replica last read and wrote: the last statuses, overrides and
ejections, the image holders it read or learned, its own in-flight launches and its own
launch events (a `record_launch` limit then holds against this replica's own launches
only). While degraded, calls do not touch the server at all; a background service
retries (``PING``) with exponential back-off from `backoff_initial` up to `backoff_max`
seconds. Leases are granted while degraded, so every replica probes members itself.
Rate-limit windows are counted locally.

On reconnection, what this replica wrote while degraded is pushed back (`remote.push`)
before ``degraded`` turns False and ``store recovered`` is logged:

* in-flight launches that are still live, minus those settled locally meanwhile;
* learned images (an entry's expiry only ever moves forward);
* statuses, if newer (``checked_at``) than the server's: every replica probed while
  degraded and the leader overwrites them at its next probe anyway;
* overrides set or cleared, if newer (``at``) than the server's (an admin's change made
  during the outage is not lost);
* ejections (the later ``until`` wins);
* launch events (bounded by `log_length`).

Any other failure of a call (the server answers an error: a script's ``ResponseError``,
a key of the wrong type; or an answer that cannot be read) is not an outage: it is logged
as an error naming the call and the cause, counted (`errors`, `on_error`: the router's
``federation_store_errors_total``), and that one call is answered from the local store;
the store stays in normal operation and the next call goes to the server again.

Launches recorded before the outage are not pushed again: the server may have settled
some of them meanwhile (on another replica's probe), and re-adding those would
overcount. Rate-limit counters, per-repository in-flight launches and leases are not
pushed back: they are short-lived by nature, and while degraded each replica enforces the
limits alone.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Mapping, Protocol, Sequence

from hub.tasks import Backoff, BackgroundService

from ..members import MemberStatus, Override
from .journal import Journal
from .memory import MemoryStore
from .protocol import LaunchState, LimitState, RateCheck, RecordResult, Store

log = logging.getLogger("binderfed.store")

# Writes the local store takes before the remote call, whatever happens to it: it must
# know this replica's own writes if the server goes away later.
MIRRORED = frozenset({"put_status", "put_statuses", "settle_in_flight", "learn_image", "set_override",
                      "set_ejection"})
JOURNALED = MIRRORED | {"record_launch"}   # the writes pushed back after an outage (Journal's methods)


class Remote(Protocol):
    """What `FallbackStore` needs of the store it wraps, besides the `Store` methods."""

    unreachable: tuple[type[BaseException], ...]   # the errors that mean "the server is away"

    def describe(self) -> str: ...                 # where the server is, without credentials
    async def connect(self) -> None: ...           # first contact (set-up, first reads)
    async def ping(self) -> None: ...
    async def push(self, journal: Journal) -> None: ...   # write back what was journaled
    async def resync(self) -> None: ...            # read the server's state again after an outage
    async def aclose(self) -> None: ...


def describe_error(exc: BaseException, limit: int = 200) -> str:
    text = str(exc) or ("no answer in time" if isinstance(exc, TimeoutError) else "")
    if len(text) > limit:  # some redis errors embed the whole client's repr
        text = text[:limit] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class _Reconnector(BackgroundService):
    """While a store is degraded: PING with exponential backoff, push back what was
    written meanwhile, read the server's state again, turn the store back to normal and end."""

    def __init__(self, store: "FallbackStore") -> None:
        super().__init__("redis-store-reconnect")
        self.store = store

    async def run(self) -> None:
        store = self.store
        backoff = Backoff(store.backoff_initial, store.backoff_max)
        delay = backoff.next()
        while await self.pause(delay):
            try:
                async with asyncio.timeout(store.op_timeout):
                    await store.remote.ping()
                await store._push_journal()
                async with asyncio.timeout(store.op_timeout):
                    await store.remote.resync()   # launches read the server's state again, not the outage's
                await store._push_journal()       # what was written meanwhile (usually nothing)
            except store.remote.unreachable as exc:
                store.last_error = describe_error(exc)
                delay = backoff.next()
                log.debug("store still degraded (%s); next attempt in %.1f s", store.last_error, delay)
                continue
            except Exception as exc:  # noqa: BLE001 - the server is back but refuses the push: a bug
                store._failed("push", exc)
                log.error("dropping what this replica wrote while redis was away: it cannot be pushed back")
                store.journal = store.journal.fresh()
            # No await between the journal's last push and this line: nothing written
            # while degraded can be left behind.
            store._recovered()
            return


class FallbackStore(Store):
    """A remote store answered from a local `MemoryStore` while the remote is away."""

    def __init__(self, remote: Remote, local: MemoryStore, *, op_timeout: float, backoff_initial: float,
                 backoff_max: float, log_length: int):
        super().__init__(local.clock)
        self.remote = remote
        self.local = local
        self.op_timeout = op_timeout
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.degraded = False
        self.last_error = ""
        self.errors = 0
        self.on_error = None
        self.journal = Journal(local.clock, log_length)
        self._reconnector = _Reconnector(self)
        self._closed = False

    # -- the one mechanism ----------------------------------------------------------------
    async def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """`remote.<name>(...)`, or the local answer while the remote is away (module docstring)."""
        mirrored = name in MIRRORED
        if mirrored:
            await getattr(self.local, name)(*args, **kwargs)
        if not self.degraded:
            try:
                async with asyncio.timeout(self.op_timeout):
                    return await getattr(self.remote, name)(*args, **kwargs)
            except self.remote.unreachable as exc:
                await self._degrade(exc)
            except Exception as exc:  # noqa: BLE001 - not an outage: say so loudly, keep serving
                self._failed(name, exc)
                return None if mirrored else await self._local(name, *args, **kwargs)
        result = None if mirrored else await self._local(name, *args, **kwargs)
        if name in JOURNALED:
            getattr(self.journal, name)(*args, result=result, **kwargs)
        return result

    async def _local(self, name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "acquire_lease":
            return True   # degraded: every replica probes members itself
        if name in ("release_lease", "refresh"):
            return None
        return await getattr(self.local, name)(*args, **kwargs)

    def _failed(self, name: str, exc: BaseException) -> None:
        self.errors += 1
        where = self.remote.describe()
        log.error("store error in %s.%s (redis at %s answered, this is not an outage): %s; answered from this "
                  "replica's memory", type(self).__name__, name, where, describe_error(exc), exc_info=exc,
                  extra={"store": where, "cause": describe_error(exc)})
        if self.on_error is not None:
            self.on_error()

    async def _degrade(self, exc: BaseException) -> None:
        cause = describe_error(exc)
        self.last_error = cause
        if self.degraded:
            return
        self.degraded = True
        where = self.remote.describe()
        log.warning("store degraded: redis unreachable at %s: %s", where, cause, extra={"store": where, "cause": cause})
        if not self._closed:
            await self._reconnector.start()  # a no-op while it runs

    def _recovered(self) -> None:
        self.degraded = False
        where = self.remote.describe()
        log.info("store recovered: redis reachable again at %s", where, extra={"store": where})

    async def _push_journal(self) -> None:
        while not self.journal.empty():
            journal, self.journal = self.journal, self.journal.fresh()
            try:
                async with asyncio.timeout(self.op_timeout * 4):
                    await self.remote.push(journal)
            except BaseException:
                self.journal.merge_older(journal)
                raise

    # -- lifecycle ----------------------------------------------------------------------
    async def start(self) -> None:
        """Connect; if the server is away, start degraded and keep retrying."""
        self._closed = False
        try:
            async with asyncio.timeout(self.op_timeout * 2):
                await self.remote.connect()
        except self.remote.unreachable as exc:
            await self._degrade(exc)
        except Exception as exc:  # the server answers, but not as a store can use it (ACLs, a proxy): say so
            log.error("redis at %s refused the store's set-up: %s", self.remote.describe(), describe_error(exc))
            await self._degrade(exc)

    async def close(self) -> None:
        self._closed = True
        await self._reconnector.stop()
        await self.remote.aclose()

    # -- the Store methods, each through `_call` ---------------------------------------------
    async def launch_state(self, repo_key: str | None) -> LaunchState:
        return await self._call("launch_state", repo_key)

    async def record_launch(self, member: str, ttl: float, event: Mapping[str, Any] | None = None, *,
                            limit: int | None = None, repo_key: str | None = None, repo_ttl: float = 0.0,
                            repo_cap: int | None = None) -> RecordResult:
        return await self._call("record_launch", member, ttl, event, limit=limit, repo_key=repo_key,
                                repo_ttl=repo_ttl, repo_cap=repo_cap if repo_key is not None else None)

    async def limit_launch(self, rates: Sequence[RateCheck], repo_key: str | None) -> LimitState:
        return await self._call("limit_launch", rates, repo_key)

    async def put_status(self, status: MemberStatus) -> None:
        await self._call("put_status", status)

    async def put_statuses(self, statuses: Sequence[MemberStatus], settled: Mapping[str, int]) -> None:
        await self._call("put_statuses", statuses, settled)

    async def statuses(self) -> dict[str, MemberStatus]:
        return await self._call("statuses")

    async def settle_in_flight(self, member: str, seen: int) -> None:
        await self._call("settle_in_flight", member, seen)

    async def in_flight(self) -> dict[str, int]:
        return await self._call("in_flight")

    async def learn_image(self, repo_key: str, member: str, ttl: float) -> None:
        await self._call("learn_image", repo_key, member, ttl)

    async def cache_size(self) -> int:
        return await self._call("cache_size")

    async def set_override(self, member: str, override: Override | None) -> None:
        await self._call("set_override", member, override)

    async def overrides(self) -> dict[str, Override]:
        return await self._call("overrides")

    async def set_ejection(self, member: str, until: float) -> None:
        await self._call("set_ejection", member, until)

    async def ejections(self) -> dict[str, float]:
        return await self._call("ejections")

    async def recent_launches(self, since: float) -> list[dict[str, Any]]:
        return await self._call("recent_launches", since)

    async def launches_per_minute(self, now: float, minutes: int = 60) -> list[int]:
        return await self._call("launches_per_minute", now, minutes)

    async def acquire_lease(self, name: str, holder: str, ttl: float) -> bool:
        return await self._call("acquire_lease", name, holder, ttl)

    async def release_lease(self, name: str, holder: str) -> None:
        await self._call("release_lease", name, holder)
