"""Router state: one protocol (`protocol`), an in-process and a Redis implementation.

- `protocol.py`: `Store`, `LaunchState`, `RecordResult`, `RateCheck`, `LimitState`.
- `memory.py`: `MemoryStore`, the embedded default (and Redis's local fallback).
- `redis.py`: `RedisStore`, shared by replicas; `redis_url.py` (store URLs),
  `redis_client.py`, `redis_mirror.py`, `snapshot.py` (what a launch reads locally),
  `scripts.py` and `lua/*.lua` (its scripts).
- `fallback.py`, `journal.py`: degradation while Redis is away, and the push back.
- `factory.py`: `open_store(url)`.
"""
