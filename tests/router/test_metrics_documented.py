"""Metrics are a user interface: every one the router exports is documented."""

from __future__ import annotations

from pathlib import Path

from router.metrics import Metrics

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "operator-guide.md"


def test_every_metric_is_in_the_operator_guide():
    guide = GUIDE.read_text()
    names = {metric.name for metric in Metrics().registry.collect()}
    assert len(names) > 20
    missing = sorted(name for name in names if f"`{name}" not in guide)
    assert not missing, f"metrics missing from docs/operator-guide.md: {missing}"
