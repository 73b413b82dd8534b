"""`binderfed simulate`: compare placement strategies side by side on a launch trace.

The simulator drives the real `federation.placement.place.place()` and the real in-memory
store (`federation.stores.memory.MemoryStore`, with a simulated clock) through a
discrete-event model of the members, so every number it prints comes from the code
that routes production launches. Only the members are modelled.

The router, as in production (`router.context.view_for` and `router.pipeline`):

- each launch reads `store.launch_state(repo_key)`, builds a `FederationView` with
  a `ViewBuilder` (the cache map holds only that repository's entry) and calls
  `place()`; a placed launch is counted in flight with `store.record_launch()`
  for `policy.in_flight_ttl` seconds;
- every member is probed every `--probe-period` seconds (phases spread evenly).
  A probe stores the member's status (full when `quota - pods <= pod_headroom`, as
  `federation.member_health.assess` decides for a probed member) and settles as many in-flight launches as the pod
  count grew since the previous probe (`store.settle_in_flight`), so between probes
  placement sees exactly the stale counts plus in-flight accounting it sees live;
- the image-cache map learns `(repository, member)` when a launch on that member
  becomes ready (`store.learn_image`, `policy.cache_ttl`).
- the image-cache map learns `(repository, member)` when a launch on that member
  becomes ready (`store.learn_image`, `policy.cache_ttl`).

The rooms: `trace.py` (the synthetic trace and JSONL traces), `model.py` (the
modelled members and their timings), `engine.py` (the discrete-event loop around the
real router code), `results.py` (the figures of one run), `report.py` (table and
plot), `cli.py` (`binderfed simulate`).
"""

from __future__ import annotations

from .cli import DEFAULT_STRATEGIES, TRACE_FLAGS, add_arguments, main, run
from .engine import simulate
from .model import DEFAULT_MEMBERS, Model, SimMember, build_time, parse_members
from .report import format_table, plot
from .results import Result, percentile
from .trace import SCENARIOS, VIRAL_REPO, Trace, TraceLaunch, TraceParams, read_trace, synthetic_trace

__all__ = [
    "DEFAULT_MEMBERS", "DEFAULT_STRATEGIES", "SCENARIOS", "TRACE_FLAGS", "VIRAL_REPO",
    "Model", "Result", "SimMember", "Trace", "TraceLaunch", "TraceParams",
    "add_arguments", "build_time", "format_table", "main", "parse_members", "percentile", "plot", "read_trace",
    "run", "simulate", "synthetic_trace",
]
