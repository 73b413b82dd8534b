#!/usr/bin/env python3
"""Copy the router config schema into the router chart's values.schema.json.

The chart's `config` value is the router's YAML config (config/schema.json, as
`federation.config.schema()` loads it: with the placement strategies' names filled in
from their registry) minus the keys the chart sets itself (router.host, router.port,
store). Helm validates
values with a draft-07 validator and a single file, so the member definition moves
from `$defs` to the file's `definitions`. tests/charts/test_charts.py fails when the
two drift apart; run this script to bring the chart up to date:

    python scripts/sync_chart_schema.py
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
ROUTER_SCHEMA = ROOT / "config" / "schema.json"
VALUES_SCHEMA = ROOT / "charts" / "binder-federation" / "values.schema.json"

# Keys of the router config that the chart computes (templates/configmap.yaml).
CHART_OWNED_ROUTER_KEYS = ("host", "port")
CHART_OWNED_SECTIONS = ("store",)


def _rewrite_refs(node: Any) -> Any:
    if isinstance(node, dict):
        return {
            key: (value.replace("#/$defs/", "#/definitions/") if key == "$ref" and isinstance(value, str) else _rewrite_refs(value))
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_rewrite_refs(item) for item in node]
    return node


def derive(router_schema: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(schema of .Values.config, definitions it refers to) from config/schema.json."""
    schema = copy.deepcopy(router_schema)
    definitions = _rewrite_refs(schema.pop("$defs", {}))
    for key in ("$schema", "$id", "title"):
        schema.pop(key, None)
    schema["description"] = (
        "The router's configuration (config/schema.json), rendered into the router ConfigMap. "
        "router.host, router.port and store are set by the chart."
    )
    for section in CHART_OWNED_SECTIONS:
        schema["properties"].pop(section)
    router_props = schema["properties"]["router"]["properties"]
    for key in CHART_OWNED_ROUTER_KEYS:
        router_props.pop(key)
    return _rewrite_refs(schema), definitions


def sync(values_schema: dict[str, Any], router_schema: dict[str, Any]) -> dict[str, Any]:
    config, definitions = derive(router_schema)
    out = copy.deepcopy(values_schema)
    out["properties"]["config"] = config
    out.setdefault("definitions", {}).update(definitions)
    return out


def router_schema() -> dict[str, Any]:
    """The router config schema as the router validates with it (strategy names included)."""
    sys.path.insert(0, str(ROOT))
    from federation.config import schema

    return schema()


def main() -> int:
    router = router_schema()
    values_schema = json.loads(VALUES_SCHEMA.read_text())
    updated = sync(values_schema, router)
    if updated == values_schema:
        print(f"{VALUES_SCHEMA.relative_to(ROOT)}: up to date")
        return 0
    VALUES_SCHEMA.write_text(json.dumps(updated, indent=2) + "\n")
    print(f"{VALUES_SCHEMA.relative_to(ROOT)}: updated from {ROUTER_SCHEMA.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
