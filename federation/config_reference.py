"""`binderfed config-reference`: the configuration reference, generated from the JSON Schema.

`config/schema.json` is what every config file is validated against, so a reference
written from it cannot drift from what the router accepts. `render()` walks the schema
recursively and gives one table row per key path (`policy.data_rules[].pattern`,
`reports.members.<name>.token_file`): type, default, allowed values, description.
`docs/config-reference.md` is this command's output; a test regenerates it in memory
and fails when the committed file is stale.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Iterator, Mapping

from .config import SCHEMA_PATH, schema as load_schema
from .config_cli import write_output

DOC_PATH = Path(__file__).resolve().parent.parent / "docs" / "config-reference.md"
COMMAND = "binderfed config-reference -o docs/config-reference.md"


# -- walking the schema --------------------------------------------------------------------


def _resolve(node: Mapping[str, Any], root: Mapping[str, Any]) -> Mapping[str, Any]:
    """Follow local `$ref`s (`#/$defs/member`); keys next to a `$ref` win over the target's."""
    seen = set()
    while "$ref" in node:
        ref = node["$ref"]
        if not ref.startswith("#/") or ref in seen:
            raise ValueError(f"cannot follow $ref {ref!r} in the config schema")
        seen.add(ref)
        target: Any = root
        for part in ref[2:].split("/"):
            target = target[part.replace("~1", "/").replace("~0", "~")]
        node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    return node


def rows(schema: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any], bool]]:
    """(key path, resolved node, required) for every key below the root, depth first, in schema order."""
    yield from _walk(schema, schema, "")


def _walk(node: Mapping[str, Any], root: Mapping[str, Any], path: str) -> Iterator[tuple[str, Mapping[str, Any], bool]]:
    node = _resolve(node, root)
    required = set(node.get("required", ()))
    for name, child in node.get("properties", {}).items():
        child_path = f"{path}.{name}" if path else name
        resolved = _resolve(child, root)
        yield child_path, resolved, name in required
        yield from _children(resolved, root, child_path)
    extra = node.get("additionalProperties")
    if isinstance(extra, Mapping) and path:
        child_path = f"{path}.<name>"
        resolved = _resolve(extra, root)
        yield child_path, resolved, False
        yield from _children(resolved, root, child_path)


def _branches(node: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """Sub-schemas that apply to the same value (if/then/else, oneOf, anyOf, allOf)."""
    out = [node[k] for k in ("then", "else") if isinstance(node.get(k), Mapping)]
    for key in ("oneOf", "anyOf", "allOf"):
        out += [n for n in node.get(key, ()) if isinstance(n, Mapping)]
    return out


def _children(node: Mapping[str, Any], root: Mapping[str, Any], path: str) -> Iterator[tuple[str, Mapping[str, Any], bool]]:
    if "properties" in node or isinstance(node.get("additionalProperties"), Mapping):
        yield from _walk(node, root, path)
    for branch in _branches(node):
        yield from _children(_resolve(branch, root), root, path)
    items = node.get("items")
    if isinstance(items, Mapping):
        items = _resolve(items, root)
        if "properties" in items or isinstance(items.get("additionalProperties"), Mapping):
            yield from _walk(items, root, path + "[]")


# -- describing one node ---------------------------------------------------------------------------


def _code(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return "`" + text + "`"


def type_of(node: Mapping[str, Any], root: Mapping[str, Any]) -> str:
    node = _resolve(node, root)
    for key in ("oneOf", "anyOf"):
        if key in node:
            return " or ".join(type_of(n, root) for n in node[key])
    kind = node.get("type")
    if kind is None:
        if "enum" in node:
            kinds = sorted({type(v).__name__ for v in node["enum"]})
            kind = "string" if kinds == ["str"] else "/".join(kinds)
        elif "const" in node:
            kind = type(node["const"]).__name__
        else:
            kind = "any"
    if isinstance(kind, list):
        kind = " or ".join(kind)
    if kind == "array" and isinstance(node.get("items"), Mapping):
        return f"array of {type_of(node['items'], root)}"
    if kind == "object" and "properties" not in node and isinstance(node.get("additionalProperties"), Mapping):
        return f"map of name to {type_of(node['additionalProperties'], root)}"
    if node.get("format") == "regex":
        return f"{kind} (regular expression)"
    return kind


def allowed(node: Mapping[str, Any], root: Mapping[str, Any]) -> str:
    node = _resolve(node, root)
    parts = []
    if "enum" in node:
        parts.append("one of " + ", ".join(_code(v) for v in node["enum"]))
    if "const" in node:
        parts.append("exactly " + _code(node["const"]))
    bounds = (("minimum", "≥"), ("exclusiveMinimum", ">"), ("maximum", "≤"), ("exclusiveMaximum", "<"))
    parts += [f"{sign} {node[key]:g}" for key, sign in bounds if key in node]
    if "minLength" in node:
        parts.append("not empty" if node["minLength"] == 1 else f"at least {node['minLength']} characters")
    if "maxLength" in node:
        parts.append(f"at most {node['maxLength']} characters")
    if "pattern" in node:
        parts.append("matches " + _code(node["pattern"]))
    if "minItems" in node:
        parts.append(f"at least {node['minItems']} items")
    if "maxItems" in node:
        parts.append(f"at most {node['maxItems']} items")
    if node.get("uniqueItems"):
        parts.append("no duplicates")
    if "minProperties" in node:
        parts.append(f"at least {node['minProperties']} key{'s' if node['minProperties'] != 1 else ''}")
    names = node.get("propertyNames")
    if isinstance(names, Mapping) and "pattern" in names:
        parts.append("names match " + _code(names["pattern"]))
    items = node.get("items")
    if isinstance(items, Mapping):
        inner = allowed(items, root)
        if inner:
            parts.append("each item: " + inner)
    condition = node.get("if")
    if isinstance(condition, Mapping) and ("then" in node or "else" in node):
        # e.g. `"type": ["string", "object"], "if": {"type": "string"}, "then": {"enum": [...]}`
        when = f"as {condition['type']}" if isinstance(condition.get("type"), str) else "when it matches"
        for key, prefix in (("then", when), ("else", "otherwise")):
            inner = allowed(node[key], root) if isinstance(node.get(key), Mapping) else ""
            if inner:
                parts.append(f"{prefix}: {inner}")
            elif isinstance(node.get(key), Mapping) and node[key].get("properties"):
                keys = ", ".join(_code(k) for k in node[key]["properties"])
                parts.append(f"{prefix}: an object with keys {keys}")
    return "; ".join(parts)


def default_of(node: Mapping[str, Any], required: bool) -> str:
    if "default" in node:
        return _code(node["default"]) if node["default"] != "" else '`""` (empty)'
    return "required" if required else "—"


def _cell(text: str) -> str:
    """Make text safe inside a Markdown table cell."""
    return " ".join(text.replace("|", "\\|").split())


# -- the document --------------------------------------------------------------------------------


def render(schema: Mapping[str, Any]) -> str:
    out = [
        "# Configuration reference",
        "",
        f"<!-- Generated from config/schema.json by `{COMMAND}`. Do not edit: change the schema and run it again. -->",
        "",
        "This page is generated from `config/schema.json`, the JSON Schema every router config",
        "file is validated against (`binderfed check-config FILE`), so it lists exactly what the",
        f"router accepts. Regenerate it with `{COMMAND}`; a test fails when it is stale.",
        "",
    ]
    if schema.get("description"):
        out += [schema["description"], ""]
    out += ["Key paths use `.` for nested keys, `[]` for the items of a list and `<name>` for a key you choose.", ""]
    header = ["| Key | Type | Default | Allowed values | Description |", "|---|---|---|---|---|"]
    for name, section in schema.get("properties", {}).items():
        section = _resolve(section, schema)
        out += [f"## `{name}`", ""]
        if section.get("description"):
            out += [section["description"], ""]
        table = [(name, section, name in schema.get("required", ()))]
        table += [(path, node, req) for path, node, req in rows(schema) if path.startswith((name + ".", name + "["))]
        out += header
        for path, node, required in table:
            out.append("| " + " | ".join([
                _cell(_code(path)), _cell(type_of(node, schema)), _cell(default_of(node, required)),
                _cell(allowed(node, schema)), _cell(node.get("description", "")),
            ]) + " |")
        out.append("")
    return "\n".join(out)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", metavar="FILE", help="write here instead of standard output")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 if FILE (default docs/config-reference.md) is not up to date")


def run(args: argparse.Namespace) -> int:
    text = render(load_schema())
    if args.check:
        path = Path(args.output) if args.output else DOC_PATH
        current = path.read_text() if path.exists() else ""
        if current != text:
            print(f"{path} is stale: run `{COMMAND}`", file=sys.stderr)
            return 1
        print(f"{path}: up to date with {SCHEMA_PATH.name}")
        return 0
    write_output(text, args.output)
    return 0
