"""The Store contract: MemoryStore and RedisStore held to the same behaviour.

Every test runs once per store implementation through the `store_url` / `make_store`
fixtures of tests/conftest.py (memory:// and a real redis-server)."""

from __future__ import annotations

import random

import pytest

from federation.members import MemberState, MemberStatus, Override
from federation.stores.protocol import MEMBER_FULL, REPO_CAP, LaunchState, LimitState, RateCheck, RecordResult, Store
from tests.support.clock import T0, FakeClock



@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def new_store(make_store):
    """Started stores of the kind under test; closed (and checked never degraded) afterwards."""
    made: list[Store] = []

    async def new(**kwargs) -> Store:
        store = make_store(**kwargs)
        await store.start()
        made.append(store)
        return store

    yield new
    for store in made:
        degraded = store.degraded
        await store.close()
        assert not degraded, "the store degraded during a contract test: redis errors were swallowed"


@pytest.fixture
async def store(new_store, clock) -> Store:
    return await new_store(clock=clock)


def status(name: str, **kw) -> MemberStatus:
    base = dict(state=MemberState.HEALTHY, reason="ok", quota=10, has_quota=True, total_pods=3, build_pods=1,
                user_pods=2, versions={"binderhub": "1.0.0", "nested": {"a": [1, 2]}}, checked_at=T0, latency=0.01,
                consecutive_failures=0)
    base.update(kw)
    return MemberStatus(name=name, **base)


# -- member status ----------------------------------------------------------------------
async def test_statuses_round_trip(store):
    assert await store.statuses() == {}
    a, b = status("a"), status("b", state=MemberState.FULL, quota=None, has_quota=False, latency=None)
    await store.put_status(a)
    await store.put_status(b)
    assert await store.statuses() == {"a": a, "b": b}
    newer = status("a", state=MemberState.UNHEALTHY, reason="timeout", consecutive_failures=2, checked_at=T0 + 5,
                   reachable=False)
    await store.put_status(newer)
    assert (await store.statuses())["a"] == newer
    state = await store.launch_state(None)
    assert isinstance(state, LaunchState)
    assert dict(state.statuses) == {"a": newer, "b": b}
    assert state.holders == frozenset()


async def test_statuses_returned_are_copies(store):
    await store.put_status(status("a"))
    got = await store.statuses()
    got.clear()
    assert set(await store.statuses()) == {"a"}


# -- overrides and ejections -------------------------------------------------------------
async def test_overrides_set_replace_clear(store):
    assert await store.overrides() == {}
    drain = Override(draining=True, by="admin", at=T0, note="maintenance")
    await store.set_override("a", drain)
    await store.set_override("b", Override(weight=0.5, by="ops", at=T0))
    assert await store.overrides() == {"a": drain, "b": Override(weight=0.5, by="ops", at=T0)}
    await store.set_override("a", Override(weight=2.0, at=T0 + 1))
    assert (await store.overrides())["a"] == Override(weight=2.0, at=T0 + 1)
    await store.set_override("a", None)
    await store.set_override("never-set", None)  # clearing nothing is fine
    assert await store.overrides() == {"b": Override(weight=0.5, by="ops", at=T0)}
    assert dict((await store.launch_state(None)).overrides) == {"b": Override(weight=0.5, by="ops", at=T0)}


async def test_ejections(store):
    assert await store.ejections() == {}
    await store.set_ejection("a", T0 + 30.25)
    await store.set_ejection("b", T0 + 10)
    assert await store.ejections() == {"a": T0 + 30.25, "b": T0 + 10}
    await store.set_ejection("a", T0 + 60)
    assert await store.ejections() == {"a": T0 + 60, "b": T0 + 10}
    assert dict((await store.launch_state("r")).ejections) == {"a": T0 + 60, "b": T0 + 10}


# -- in-flight launches -------------------------------------------------------------------
async def test_in_flight_counts_and_expiry(store, clock):
    assert await store.in_flight() == {}
    for _ in range(3):
        await store.record_launch("a", 10)
    await store.record_launch("b", 10)
    assert await store.in_flight() == {"a": 3, "b": 1}
    assert dict((await store.launch_state(None)).in_flight) == {"a": 3, "b": 1}
    clock.advance(5)
    await store.record_launch("a", 10)
    assert await store.in_flight() == {"a": 4, "b": 1}
    clock.advance(5)  # exactly at the expiry of the first four: expired
    assert await store.in_flight() == {"a": 1}
    assert dict((await store.launch_state("x")).in_flight) == {"a": 1}
    clock.advance(5)
    assert await store.in_flight() == {}
    assert dict((await store.launch_state(None)).in_flight) == {}


async def test_settle_forgets_oldest_live_launches(store, clock):
    await store.record_launch("a", 10)          # expires T0+10
    clock.advance(1)
    await store.record_launch("a", 10)          # T0+11
    clock.advance(1)
    await store.record_launch("a", 10)          # T0+12
    await store.record_launch("b", 10)
    await store.settle_in_flight("a", 2)
    assert await store.in_flight() == {"a": 1, "b": 1}
    clock.advance(9.5)                          # T0+11.5: only the newest launch of a is left
    assert await store.in_flight() == {"a": 1, "b": 1}
    await store.settle_in_flight("a", 0)
    await store.settle_in_flight("a", -3)       # fewer pods than before: nothing to forget
    assert await store.in_flight() == {"a": 1, "b": 1}
    await store.settle_in_flight("a", 5)        # more than in flight
    await store.settle_in_flight("unknown", 2)
    assert await store.in_flight() == {"b": 1}


async def test_settle_ignores_expired_launches(store, clock):
    await store.record_launch("a", 1)           # expires T0+1
    clock.advance(0.5)
    await store.record_launch("a", 10)          # expires T0+10.5
    clock.advance(1)                            # the first has expired, not yet swept
    await store.settle_in_flight("a", 1)        # one new pod: the live launch became it
    assert await store.in_flight() == {}


@pytest.mark.parametrize("seed", range(4))
async def test_in_flight_counts_follow_launches_settles_and_expiry_in_any_order(store, clock, seed):
    """Against a plain model, after every step of a random mix of launches (some with a
    limit), settles and time passing: what a launch reads and what the store counts."""
    rng = random.Random(seed)
    model: dict[str, list[float]] = {}

    def live() -> dict[str, int]:
        for expiries in model.values():
            expiries[:] = sorted(e for e in expiries if e > clock.now)
        return {m: len(e) for m, e in model.items() if e}

    for _ in range(60):
        member = rng.choice(["a", "b", "c", "d"])
        action = rng.random()
        if action < 0.5:
            limit = rng.choice([None, 1, 2, 3])
            result = await store.record_launch(member, 10.0, limit=limit)
            room = limit is None or live().get(member, 0) < limit
            assert bool(result) == room
            if room:
                model.setdefault(member, []).append(clock.now + 10.0)
        elif action < 0.7:
            seen = rng.randint(0, 3)
            await store.settle_in_flight(member, seen)
            expiries = model.get(member, [])
            live()
            del expiries[:seen]
        else:
            clock.advance(rng.choice([0.5, 1.0, 3.0, 7.0]))
        expected = live()
        assert (await store.launch_state("gh/x/y")).in_flight == expected
        assert await store.in_flight() == expected


async def test_record_launch_appends_event(store):
    await store.record_launch("a", 10, {"timestamp": T0, "member": "a", "repo": "gh/x/y"})
    await store.record_launch("a", 10)          # no event: counted, not logged
    assert await store.recent_launches(0) == [{"timestamp": T0, "member": "a", "repo": "gh/x/y"}]
    assert await store.in_flight() == {"a": 2}


async def test_record_launch_with_a_limit_counts_only_while_there_is_room(store, clock):
    assert bool(await store.record_launch("a", 10, {"timestamp": T0, "n": 0}, limit=2)) is True
    clock.advance(1)
    assert bool(await store.record_launch("a", 10, {"timestamp": T0 + 1, "n": 1}, limit=2)) is True
    assert bool(await store.record_launch("a", 10, {"timestamp": T0 + 1, "n": 2}, limit=2)) is False  # full
    assert bool(await store.record_launch("a", 10, limit=0)) is False
    assert bool(await store.record_launch("b", 10, limit=1)) is True       # limits are per member
    assert await store.in_flight() == {"a": 2, "b": 1}
    assert [e["n"] for e in await store.recent_launches(0)] == [0, 1]   # a refused launch is not logged
    assert bool(await store.record_launch("a", 10)) is True                # no limit: always counted
    clock.advance(9)                                                 # the first launch of a has expired
    assert bool(await store.record_launch("a", 10, limit=3)) is True
    assert bool(await store.record_launch("a", 10, limit=3)) is False
    assert await store.in_flight() == {"a": 3, "b": 1}


# -- image-cache map ---------------------------------------------------------------------
async def test_images_learn_age_out_and_holders(store, clock):
    assert (await store.launch_state("gh/x/y")).holders == frozenset()
    assert await store.cache_size() == 0
    await store.learn_image("gh/x/y", "a", 100)
    await store.learn_image("gh/x/y", "b", 10)
    await store.learn_image("gh/o/p", "a", 50)
    assert (await store.launch_state("gh/x/y")).holders == {"a", "b"}
    assert (await store.launch_state("gh/o/p")).holders == {"a"}
    assert await store.cache_size() == 3
    assert (await store.launch_state("gh/x/y")).holders == {"a", "b"}
    assert (await store.launch_state("gh/none")).holders == frozenset()
    assert (await store.launch_state(None)).holders == frozenset()
    clock.advance(10)                            # b's entry expires (expiry <= now)
    assert (await store.launch_state("gh/x/y")).holders == {"a"}
    assert await store.cache_size() == 2
    await store.learn_image("gh/x/y", "b", 10)   # seen again: back, refreshed
    assert (await store.launch_state("gh/x/y")).holders == {"a", "b"}
    clock.advance(45)
    await store.learn_image("gh/x/y", "a", 100)  # refresh a on x/y; a on o/p is 5 s from its end
    clock.advance(6)
    assert (await store.launch_state("gh/o/p")).holders == frozenset()
    assert (await store.launch_state("gh/x/y")).holders == {"a"}
    assert await store.cache_size() == 1
    clock.advance(100)
    assert await store.cache_size() == 0
    assert (await store.launch_state("gh/x/y")).holders == frozenset()


async def test_cache_size_counts_live_entries_without_reading_them(store, clock):
    for i in range(20):
        await store.learn_image(f"gh/r/{i}", "a", 5 if i % 2 else 50)
        await store.learn_image(f"gh/r/{i}", "b", 50)
    await store.learn_image("gh/r/0", "a", 50)  # refreshing an entry does not count it twice
    assert await store.cache_size() == 40
    clock.advance(5)
    assert await store.cache_size() == 30


# -- launch log -------------------------------------------------------------------------
async def test_recent_launches_since(store):
    for i, ts in enumerate([T0, T0 + 1.5, T0 + 2, T0 + 3.25]):
        await store.record_launch("a", 60, {"timestamp": ts, "n": i, "decision": {"ranking": ["a", "b"]}})
    assert [e["n"] for e in await store.recent_launches(0)] == [0, 1, 2, 3]
    assert [e["n"] for e in await store.recent_launches(T0 + 1.5)] == [1, 2, 3]
    assert [e["n"] for e in await store.recent_launches(T0 + 1.6)] == [2, 3]
    assert [e["n"] for e in await store.recent_launches(T0 + 3.2501)] == []
    assert (await store.recent_launches(T0 + 3))[0] == {"timestamp": T0 + 3.25, "n": 3,
                                                         "decision": {"ranking": ["a", "b"]}}


async def test_recent_launches_out_of_order_timestamps(store):
    """Replicas' clocks differ a little: an event may be older than the one logged before it."""
    await store.record_launch("a", 60, {"timestamp": T0 + 10, "n": 0})
    await store.record_launch("a", 60, {"timestamp": T0 + 5, "n": 1})
    await store.record_launch("a", 60, {"timestamp": T0 + 12, "n": 2})
    await store.record_launch("a", 60, {"n": 3})  # no timestamp: only `since <= 0` shows it
    assert [e["n"] for e in await store.recent_launches(0)] == [0, 1, 2, 3]
    assert [e["n"] for e in await store.recent_launches(T0 + 5)] == [0, 1, 2]
    assert [e["n"] for e in await store.recent_launches(T0 + 6)] == [0, 2]
    assert [e["n"] for e in await store.recent_launches(T0 + 11)] == [2]


# -- rate limits --------------------------------------------------------------------------
async def test_launches_per_minute_count_recorded_events_by_their_minute(store, clock):
    minute = int(T0 // 60) * 60
    assert await store.launches_per_minute(T0, 3) == [0, 0, 0]
    await store.record_launch("a", 10, {"timestamp": minute - 61})       # two minutes back
    await store.record_launch("a", 10, {"timestamp": minute - 1})        # the minute before
    await store.record_launch("b", 10, {"timestamp": minute + 1})
    await store.record_launch("b", 10, {"timestamp": minute + 59.9})
    await store.record_launch("b", 10)                                 # no event: not a logged launch
    await store.record_launch("a", 10, {"timestamp": minute}, limit=0)  # refused: not counted
    assert await store.launches_per_minute(minute + 30, 3) == [1, 1, 2]
    assert await store.launches_per_minute(minute + 90, 2) == [2, 0]
    assert len(await store.launches_per_minute(minute, 60)) == 60


async def test_a_rate_is_a_fixed_window(store, clock):
    async def launch(key: str) -> LimitState:
        return await store.limit_launch([RateCheck(key, 2, 10)], None)

    assert (await launch("ip:1")).refused is None
    clock.advance(1)
    assert (await launch("ip:1")).refused is None
    clock.advance(1)
    assert await launch("ip:1") == LimitState(0, 8.0, 0)         # the third in its window: until it ends
    assert await launch("ip:1") == LimitState(0, 8.0, 0)
    assert (await launch("ip:2")).refused is None                # keys are independent
    clock.advance(8)                                             # the window of ip:1 is over
    assert (await launch("ip:1")).refused is None
    clock.advance(2.5)
    assert (await launch("ip:1")).refused is None
    state = await launch("ip:1")
    assert state.refused == 0 and state.retry_after == pytest.approx(7.5)


async def test_limit_launch_counts_every_rate_and_stops_at_the_first_refusal(store, clock):
    client, repo = RateCheck("client:1", 2, 10), RateCheck("repo:gh/x/y", 3, 60)
    assert await store.limit_launch([client, repo], None) == LimitState(None, 0.0, 0)
    clock.advance(1)
    assert await store.limit_launch([client, repo], None) == LimitState(None, 0.0, 0)
    clock.advance(1)
    state = await store.limit_launch([client, repo], None)       # third launch of client:1 in its window
    assert state.refused == 0 and state.retry_after == pytest.approx(8.0)
    other = RateCheck("client:2", 2, 10)
    assert (await store.limit_launch([other, repo], None)).refused is None   # repo: third hit, allowed
    state = await store.limit_launch([other, repo], None)         # repo: fourth hit in its window
    assert state.refused == 1 and state.retry_after == pytest.approx(58.0)
    # The refused client's launches did not count against the repository: only two of
    # client:1's launches reached the repo counter, and two of client:2's.
    clock.advance(8)                                              # client:1's window is over, the repo's is not
    state = await store.limit_launch([client, repo], None)
    assert state.refused == 1 and state.retry_after == pytest.approx(50.0)
    # One key, one counter, whatever rates it is checked with (client:1 has one launch in its new window).
    assert (await store.limit_launch([client], None)).refused is None
    assert await store.limit_launch([client], None) == LimitState(0, 10.0, 0)
    assert await store.limit_launch([], None) == LimitState(None, 0.0, 0)


async def test_repo_in_flight_counts_recorded_launches_until_their_ttl(store, clock):
    assert (await store.limit_launch([], "gh/x/y")).repo_in_flight == 0
    assert bool(await store.record_launch("a", 10, repo_key="gh/x/y", repo_ttl=100)) is True
    clock.advance(1)
    assert bool(await store.record_launch("b", 10, {"timestamp": T0 + 1}, repo_key="gh/x/y", repo_ttl=100)) is True
    await store.record_launch("a", 10, repo_key="gh/other/repo", repo_ttl=100)
    await store.record_launch("a", 10)                            # no repository: not counted for any
    assert bool(await store.record_launch("a", 10, limit=0, repo_key="gh/x/y", repo_ttl=100)) is False  # not recorded
    assert (await store.limit_launch([], "gh/x/y")).repo_in_flight == 2
    assert (await store.limit_launch([RateCheck("c", 5, 10)], "gh/other/repo")) == LimitState(None, 0.0, 1)
    clock.advance(20)                                             # member in-flight counts are over, repo's are not
    assert await store.in_flight() == {}
    await store.settle_in_flight("a", 5)
    assert (await store.limit_launch([], "gh/x/y")).repo_in_flight == 2
    await store.record_launch("c", 10, repo_key="gh/x/y", repo_ttl=30)   # a shorter ttl (config reload)
    clock.advance(79.5)                                           # T0+100.5: the first expired, the second not
    assert (await store.limit_launch([], "gh/x/y")).repo_in_flight == 1
    clock.advance(1)                                              # T0+101.5: both expired
    assert (await store.limit_launch([], "gh/x/y")).repo_in_flight == 0
    assert (await store.limit_launch([], "gh/other/repo")).repo_in_flight == 0


async def test_record_launch_checks_the_repository_cap_in_the_same_step(store, clock):
    assert await store.record_launch("a", 10, repo_key="gh/x/y", repo_ttl=100, repo_cap=2) == RecordResult(True)
    assert await store.record_launch("b", 10, {"timestamp": T0}, repo_key="gh/x/y", repo_ttl=100, repo_cap=2)
    # At the cap: refused, saying so, and nothing of it counted or logged.
    assert await store.record_launch("a", 10, {"timestamp": T0}, repo_key="gh/x/y", repo_ttl=100,
                                     repo_cap=2) == RecordResult(False, REPO_CAP, 2)
    assert await store.in_flight() == {"a": 1, "b": 1}
    assert len(await store.recent_launches(0)) == 1
    # The cap is checked before the member's room: placing the launch elsewhere cannot help it.
    assert await store.record_launch("a", 10, limit=0, repo_key="gh/x/y", repo_ttl=100,
                                     repo_cap=2) == RecordResult(False, REPO_CAP, 2)
    assert await store.record_launch("a", 10, limit=0, repo_key="gh/x/y", repo_ttl=100,
                                     repo_cap=3) == RecordResult(False, MEMBER_FULL)
    assert await store.record_launch("c", 10, repo_key="gh/other/repo", repo_ttl=100, repo_cap=0) == RecordResult(
        False, REPO_CAP, 0)                                     # no room at all (its servers fill the cap)
    assert await store.record_launch("c", 10, repo_key="gh/x/y", repo_ttl=100)   # no cap given: counted
    clock.advance(101)                                          # all of the repository's launches expired
    assert await store.record_launch("a", 10, repo_key="gh/x/y", repo_ttl=100, repo_cap=1)


# -- leases -----------------------------------------------------------------------------
async def test_lease_exclusive_renew_expire_release(store, clock):
    assert await store.acquire_lease("prober", "r1", 10) is True
    assert await store.acquire_lease("prober", "r2", 10) is False      # exclusive
    assert await store.acquire_lease("other", "r2", 10) is True        # leases are independent
    clock.advance(8)
    assert await store.acquire_lease("prober", "r1", 10) is True       # renewed by its holder until T0+18
    clock.advance(8)
    assert await store.acquire_lease("prober", "r2", 10) is False      # would have expired without renewal
    clock.advance(2)                                                    # T0+18: expired
    assert await store.acquire_lease("prober", "r2", 10) is True
    assert await store.acquire_lease("prober", "r1", 10) is False
    await store.release_lease("prober", "r1")                           # not the holder: no effect
    assert await store.acquire_lease("prober", "r1", 10) is False
    await store.release_lease("prober", "r2")
    assert await store.acquire_lease("prober", "r1", 10) is True
    await store.release_lease("nothing-held", "r1")
    await store.release_lease("nothing-held", "")


async def test_not_degraded(store):
    assert store.degraded is False
