"""Failures a dev member can be told to inject, at start or while it runs."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Mapping

STALL_PHASES = ("waiting", "fetching", "building", "pushing", "built", "launching")


@dataclass(frozen=True)
class DevHubFaults:
    """Failures to inject.

    - `unhealthy`: `/health` answers 503 with the JupyterHub API check failing.
    - `health_delay`: seconds to wait before answering `/health` (large = hang).
    - `garbage_health`: `/health` answers 200 with a non-JSON body.
    - `build_refuse`: `/build/` answers HTTP 500.
    - `build_full`: `/build/` always answers the too-many-users `failed` event.
    - `stall_after`: a phase name; right after the first event of that phase the
      stream goes silent (no more events, no keepalives) until the client leaves.
    - `fail_repos`: regular expressions; a launch whose `<provider>/<spec>` matches
      one (`re.search`, escaped or unescaped form) fails with a build error after
      its building phase.
    """

    unhealthy: bool = False
    health_delay: float = 0.0
    build_refuse: bool = False
    build_full: bool = False
    stall_after: str | None = None
    fail_repos: tuple[str, ...] = ()
    garbage_health: bool = False

    def __post_init__(self) -> None:
        for name in ("unhealthy", "build_refuse", "build_full", "garbage_health"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"fault {name!r} must be true or false")
        delay = self.health_delay
        if isinstance(delay, bool) or not isinstance(delay, (int, float)) or delay < 0:
            raise ValueError("fault 'health_delay' must be a non-negative number of seconds")
        if self.stall_after is not None and self.stall_after not in STALL_PHASES:
            raise ValueError(f"fault 'stall_after' must be null or one of {', '.join(STALL_PHASES)}")
        repos = self.fail_repos
        if isinstance(repos, str) or not all(isinstance(r, str) for r in repos):
            raise ValueError("fault 'fail_repos' must be a list of regular expressions")
        for pattern in repos:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"fault 'fail_repos': invalid regular expression {pattern!r}: {exc}") from None
        object.__setattr__(self, "fail_repos", tuple(repos))

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["fail_repos"] = list(self.fail_repos)
        return data

    def updated(self, changes: Mapping[str, Any]) -> "DevHubFaults":
        """A copy with `changes` applied; unknown names or bad values raise ValueError."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ValueError(f"unknown fault(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        values = dict(changes)
        if isinstance(values.get("fail_repos"), list):
            values["fail_repos"] = tuple(values["fail_repos"])
        return replace(self, **values)

    def fails(self, *texts: str) -> bool:
        return any(re.search(pattern, text) for pattern in self.fail_repos for text in texts)
