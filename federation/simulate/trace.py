"""Launch traces for the simulator: a synthetic one, or a JSONL file of launch events.

Synthetic trace (`TraceParams`; seeded, deterministic):

- `launches` (100 000) launches of `repos` (10 000) GitHub repositories whose
  popularity follows a Zipf law with exponent `zipf` (1.1);
- Poisson arrivals at `rate` launches per second (0.45: with the default session
  lengths that offers about half the default federation's 950 pods);
- a *viral* repository (`gh/viral/notebook`, never seen before) during a burst that
  spans launches `burst_start` (0.4) to `burst_start + burst_length` (0.6) of the
  trace: its launches come on top of the usual traffic and make up `viral_share`
  (0.4) of all launches in the burst (the arrival rate rises to `rate / (1 - share)`,
  offering about 80 % of the federation during the burst);
- `data_share` (0.1) of the other launches name data: Zenodo (`zenodo.org`) or
  Harvard Dataverse (`dataverse.harvard.edu`) records, half each, `data_repos`
  (1 000) records with the same Zipf law;
- session lengths are log-normal with median `session_median` (600 s) and shape
  `session_sigma` (1.0), cut at `session_max` (6 h, BinderHub's maximum age).

Scenarios (`--scenario`, `SCENARIOS`): `default` is the trace above. `low-load` is
a quiet federation: 20 000 launches at 0.05 per second (about 6 % of the pods in
use, members far from full), no viral burst and no data launches, so that bounded
load is the only difference between rendezvous and bounded-affinity; there
bounded-affinity must place like rendezvous (affinity holds while balance does not
matter). With the default 10 % data launches added (`--data-share 0.1`)
bounded-affinity trails rendezvous by about 0.2 points of cache hits there: its data
tier sends every data launch to the data site's one member (data-local 100 % against
about 25 %), whose image cache then holds both.

JSONL trace (`--trace`): one launch event per line, BinderHub's launch-event shape
`{"timestamp": ..., "provider": ..., "spec": ...}`. The timestamp is Unix seconds or
ISO 8601; the provider is the URL prefix (`gh`) or the event archive's name
(`GitHub`). Each spec goes through `federation.spec.parse_launch`. Lines that are not
JSON, lack a field or do not parse are skipped and counted. Session lengths are
drawn from the model above (seeded).
"""

from __future__ import annotations

import bisect
import json
import math
import random
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from hub import providers

# The router's own parser: a trace sees its launches as the router would.
from ..spec import parse_launch

VIRAL_REPO = "gh/viral/notebook"


@dataclass(frozen=True, slots=True)
class TraceLaunch:
    """One launch of a trace; a `policy.Placeable`."""

    time: float  # seconds since the start of the trace
    repo_key: str
    data_site: str | None
    session: float  # seconds the visitor keeps the server once it is ready


@dataclass(frozen=True)
class TraceParams:
    """The synthetic trace (see the module docstring)."""

    launches: int = 100_000
    repos: int = 10_000
    zipf: float = 1.1
    rate: float = 0.45
    viral_share: float = 0.4
    burst_start: float = 0.4
    burst_length: float = 0.2
    data_share: float = 0.1
    data_repos: int = 1_000
    session_median: float = 600.0
    session_sigma: float = 1.0
    session_max: float = 6 * 3600.0
    seed: int = 1


# Named synthetic scenarios (`--scenario`); trace flags given on the command line override them.
SCENARIOS: dict[str, TraceParams] = {
    # Busy: about half the federation in use, 80 % during the viral burst.
    "default": TraceParams(),
    # Quiet: about 6 % in use, no burst and no data launches, so that bounded load is the
    # only difference between rendezvous and bounded-affinity (see the module docstring).
    "low-load": TraceParams(launches=20_000, rate=0.05, viral_share=0.0, data_share=0.0),
}


@dataclass(frozen=True)
class Trace:
    launches: tuple[TraceLaunch, ...]
    source: str
    bad_lines: int = 0


def _zipf_cumulative(n: int, exponent: float) -> list[float]:
    total = 0.0
    cumulative = []
    for rank in range(1, n + 1):
        total += rank**-exponent
        cumulative.append(total)
    return cumulative


def _session(rng: random.Random, params: TraceParams) -> float:
    return min(params.session_max, rng.lognormvariate(math.log(params.session_median), params.session_sigma))


def synthetic_trace(params: TraceParams = TraceParams()) -> Trace:
    """A Zipf trace with a viral burst and data launches (see the module docstring)."""
    if not 0 <= params.viral_share < 1:
        raise ValueError("viral_share must be in [0, 1)")
    rng = random.Random(params.seed)
    code = _zipf_cumulative(params.repos, params.zipf)
    data = _zipf_cumulative(max(1, params.data_repos), params.zipf)
    burst_from = int(params.launches * params.burst_start)
    burst_to = int(params.launches * (params.burst_start + params.burst_length))
    burst_rate = params.rate / (1.0 - params.viral_share)
    launches = []
    now = 0.0
    for index in range(params.launches):
        in_burst = burst_from <= index < burst_to
        now += rng.expovariate(burst_rate if in_burst else params.rate)
        site = None
        if in_burst and rng.random() < params.viral_share:
            key = VIRAL_REPO
        elif rng.random() < params.data_share:
            record = bisect.bisect(data, rng.random() * data[-1])
            if record % 2:
                key, site = f"zenodo/10.5281/zenodo.{1000000 + record}", "zenodo.org"
            else:
                key, site = f"dataverse/10.7910/dvn/sim{record:05d}", "dataverse.harvard.edu"
        else:
            repo = bisect.bisect(code, rng.random() * code[-1])
            key = f"gh/user{repo}/repo{repo}"
        launches.append(TraceLaunch(now, key, site, _session(rng, params)))
    return Trace(tuple(launches), source=f"synthetic (seed {params.seed})")


def _timestamp(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("timestamp is a boolean")
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise ValueError("timestamp is not finite")
        return float(value)
    if isinstance(value, str):
        return datetime.fromisoformat(value.strip()).timestamp()
    raise ValueError("timestamp is neither a number nor an ISO 8601 string")


def read_trace(path: str | Path, params: TraceParams = TraceParams()) -> Trace:
    """Read a JSONL launch-event trace; bad lines are skipped and counted."""
    rng = random.Random(params.seed)
    rows: list[tuple[float, str, str | None]] = []
    bad = 0
    with open(path, encoding="utf-8", errors="replace") as lines:
        for line in lines:
            if not line.strip():
                continue
            try:
                event = json.loads(line)
                if not isinstance(event, dict):
                    raise ValueError("not a JSON object")
                when = _timestamp(event["timestamp"])
                # The event archive names the provider (`GitHub`); the path needs its prefix (`gh`).
                named = providers.by_name(str(event["provider"]))
                provider = named.prefix if named is not None else str(event["provider"])
                spec = str(event["spec"]).strip("/")
                request = parse_launch(f"/v2/{provider}/{spec}")
            except (ValueError, KeyError, TypeError, OverflowError):  # SpecError is a ValueError
                bad += 1
                continue
            rows.append((when, request.repo_key, request.data_site))
    rows.sort(key=lambda row: row[0])
    start = rows[0][0] if rows else 0.0
    launches = tuple(TraceLaunch(when - start, key, site, _session(rng, params)) for when, key, site in rows)
    return Trace(launches, source=str(path), bad_lines=bad)
