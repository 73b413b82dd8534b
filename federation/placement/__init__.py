"""Placement: which member takes a launch, and why (docs/architecture.md, "The map").

The data flow, one module each:

- `view.py`, `member_view.py`, `table.py`: the federation at one instant
  (`FederationView`, built per launch by a `ViewBuilder`), one `MemberView` per
  member, and the same facts as arrays (`MemberTable`) with the rendezvous hash.
- `place.py`: `place()`, pure: admissibility, then the strategy, the steps after it,
  the sticky cookie; `panic.py` when nobody is admissible.
- `strategies/`: one pure ranker per module, `rank(ctx, rng) -> Ranking`
  (`ranking.py`), and the registry, one line per strategy.
- `bounded_load.py`: the step after a strategy that passes overloaded members over.
- `decision.py`: the answer, `Decision` and `Candidate`, explained lazily.
- `settings.py`: the configuration's `policy` section.

Callers import from the module that holds a name (`from federation.placement.place
import place`), so that importing one room does not load them all.
"""

