"""The Redis store's Lua scripts: files under `lua/`, read once, each run as one EVALSHA.

A script's first line may name the shared functions it calls (``-- uses: add_event,
extend_ttl``); those files are put in front of it, so each function is written once.
"""

from __future__ import annotations

from functools import lru_cache
from importlib.resources import files

USES = "-- uses:"


@lru_cache(maxsize=None)
def source(name: str) -> str:
    """The text of script `name` (lua/<name>.lua) with the functions it uses in front."""
    text = files(__package__).joinpath("lua", f"{name}.lua").read_text(encoding="utf-8")
    first = text.split("\n", 1)[0]
    if not first.startswith(USES):
        return text
    uses = [used.strip() for used in first[len(USES):].split(",") if used.strip()]
    return "".join(source(used) for used in uses) + text
