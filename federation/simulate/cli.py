"""`binderfed simulate`: compare placement strategies side by side on a launch trace."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Iterable

from ..config import PolicySettings
from ..placement.strategies import STRATEGIES
from .engine import simulate
from .model import DEFAULT_MEMBERS, Model, parse_members
from .report import format_table, plot
from .trace import SCENARIOS, TraceParams, read_trace, synthetic_trace

DEFAULT_STRATEGIES = tuple(STRATEGIES)  # every registered strategy


# (flag, TraceParams field, type, help) of the synthetic trace's command-line flags.
TRACE_FLAGS: tuple[tuple[str, str, type, str], ...] = (
    ("--launches", "launches", int, "synthetic launches"),
    ("--seed", "seed", int, "seed of the trace and the router"),
    ("--repos", "repos", int, "synthetic repositories"),
    ("--zipf", "zipf", float, "Zipf exponent of popularity"),
    ("--rate", "rate", float, "launches per second"),
    ("--viral-share", "viral_share", float, "share of launches the viral repository takes during the burst"),
    ("--burst-start", "burst_start", float, "start of the burst, as a fraction of the trace"),
    ("--burst-length", "burst_length", float, "length of the burst, as a fraction of the trace"),
    ("--data-share", "data_share", float, "share of launches naming data"),
    ("--session-median", "session_median", float, "median session length in seconds"),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults, model, policy = TraceParams(), Model(), PolicySettings()
    parser.add_argument("--strategies", default=",".join(DEFAULT_STRATEGIES),
                        help="comma-separated strategies to compare (default: %(default)s)")
    parser.add_argument("--members", default=DEFAULT_MEMBERS,
                        help="members: [name=]quota[:weight=W][:cache=N][:sites=a+b],... (default: %(default)s)")
    parser.add_argument("--trace", metavar="FILE.jsonl", help="replay a JSONL launch-event trace instead of a synthetic one")
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), default="default",
                        help="synthetic trace preset: default (busy, with a viral burst) or low-load (quiet); "
                             "the flags below override its values (default: %(default)s)")
    # Trace flags default to the scenario's values, shown here for the default scenario.
    for flag, name, kind, text in TRACE_FLAGS:
        parser.add_argument(flag, dest=name, type=kind, default=None,
                            help=f"{text} (default: the scenario's; {getattr(defaults, name)} in default)")
    parser.add_argument("--cache-images", type=int, help="images each member's nodes keep (default: its quota)")
    parser.add_argument("--epsilon", type=float, default=policy.epsilon, help="bounded-load epsilon (default: %(default)s)")
    parser.add_argument("--headroom", type=int, default=policy.pod_headroom, help="policy pod_headroom (default: %(default)s)")
    parser.add_argument("--in-flight-ttl", type=float, default=policy.in_flight_ttl,
                        help="seconds a launch counts in flight (default: %(default)s)")
    parser.add_argument("--probe-period", type=float, default=model.probe_period,
                        help="seconds between probes of a member (default: %(default)s)")
    parser.add_argument("--health-cache", type=float, default=model.health_cache,
                        help="seconds a member caches its /health answer (default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="print one JSON object keyed by strategy")
    parser.add_argument("--plot", metavar="FILE.png", help="write utilization over time per member (needs matplotlib)")


def run(args: argparse.Namespace) -> int:
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown or not strategies:
        print(f"binderfed simulate: unknown strategy {', '.join(unknown) or '(none given)'}; "
              f"known: {', '.join(STRATEGIES)}", file=sys.stderr)
        return 2
    try:
        members = parse_members(args.members, args.cache_images)
    except ValueError as exc:
        print(f"binderfed simulate: --members: {exc}", file=sys.stderr)
        return 2
    given = {name: getattr(args, name) for _, name, _, _ in TRACE_FLAGS if getattr(args, name) is not None}
    params = dataclasses.replace(SCENARIOS[args.scenario], **given)
    try:
        if args.trace:
            trace = read_trace(args.trace, params)
        else:
            trace = synthetic_trace(params)
            trace = dataclasses.replace(trace, source=f"synthetic, {args.scenario} scenario (seed {params.seed})")
    except (OSError, ValueError) as exc:
        print(f"binderfed simulate: {exc}", file=sys.stderr)
        return 2
    if not trace.launches:
        print(f"binderfed simulate: {trace.source}: no launches ({trace.bad_lines} bad lines)", file=sys.stderr)
        return 1
    settings = dataclasses.replace(
        PolicySettings(), epsilon=args.epsilon, pod_headroom=args.headroom, in_flight_ttl=args.in_flight_ttl
    )
    model = dataclasses.replace(Model(), probe_period=args.probe_period, health_cache=args.health_cache)
    results = [simulate(trace, members, strategy, settings, model, params.seed) for strategy in strategies]
    if args.json:
        print(json.dumps({r.strategy: r.to_json() for r in results}, indent=2))
    else:
        print(f"trace: {trace.source}, {len(trace.launches)} launches"
              + (f", {trace.bad_lines} bad lines skipped" if trace.bad_lines else "")
              + f", {results[0].duration / 3600:.1f} simulated hours")
        print(format_table(results))
    if args.plot:
        try:
            plot(results, args.plot)
        except RuntimeError as exc:
            print(f"binderfed simulate: {exc}", file=sys.stderr)
            return 2
        if not args.json:
            print(f"plot written to {args.plot}")
    return 0


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="binderfed simulate", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(None if argv is None else list(argv)))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
