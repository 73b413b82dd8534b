"""docs/config-reference.md is generated from config/schema.json and must not go stale."""

from __future__ import annotations

import argparse

from federation.config import schema
from federation.config_reference import COMMAND, DOC_PATH, render, rows, run


def test_committed_config_reference_is_up_to_date():
    expected = render(schema())
    current = DOC_PATH.read_text() if DOC_PATH.exists() else ""
    assert current == expected, (
        f"{DOC_PATH.relative_to(DOC_PATH.parent.parent)} is stale (config/schema.json changed): "
        f"run `{COMMAND}` and commit the result"
    )


def test_every_key_of_the_schema_has_a_row():
    text = render(schema())
    paths = [path for path, _, _ in rows(schema())]
    assert "members[].url" in paths and "policy.data_rules[].pattern" in paths
    for path in paths:
        assert f"| `{path}` |" in text, path


def test_walks_refs_maps_conditionals_and_escapes_table_cells():
    document = {
        "description": "Test schema.",
        "properties": {
            "things": {"type": "array", "items": {"$ref": "#/$defs/thing"}, "default": []},
            "mode": {"type": ["string", "object"], "if": {"type": "string"}, "then": {"enum": ["a", "b"]},
                     "else": {"properties": {"x": {"enum": ["a"], "description": "X."}}}},
            "tokens": {"type": "object", "additionalProperties": {"type": "object", "properties": {
                "file": {"type": "string", "minLength": 1, "description": "A file."}}}},
        },
        "$defs": {"thing": {"type": "object", "required": ["name"], "properties": {
            "name": {"type": "string", "pattern": "^(a|b)$", "description": "Name."},
            "size": {"type": "integer", "minimum": 0, "maximum": 9, "default": 3}}}},
    }
    text = render(document)
    assert "| `things[].name` | string | required | matches `^(a\\|b)$` | Name. |" in text
    assert "| `things[].size` | integer | `3` | ≥ 0; ≤ 9 |  |" in text
    assert "| `mode` | string or object | — | as string: one of `a`, `b`; otherwise: an object with keys `x` |  |" in text
    assert "| `mode.x` | string | — | one of `a` | X. |" in text
    assert "| `tokens.<name>.file` | string | — | not empty | A file. |" in text


def test_check_mode_reports_a_stale_file(tmp_path, capsys):
    stale = tmp_path / "reference.md"
    stale.write_text("old\n")
    assert run(argparse.Namespace(check=True, output=str(stale))) == 1
    assert COMMAND in capsys.readouterr().err
    assert run(argparse.Namespace(check=False, output=str(stale))) == 0
    assert run(argparse.Namespace(check=True, output=str(stale))) == 0
