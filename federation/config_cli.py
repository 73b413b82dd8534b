"""`binderfed check-config` and `binderfed import-config`."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import yaml

from . import config
from .redirector_config import convert


def write_output(text: str, output: str | None) -> None:
    """Write a command's document to `output`, or to standard output when none is given."""
    if output:
        Path(output).write_text(text)
        print(f"wrote {output}", file=sys.stderr)
    else:
        sys.stdout.write(text)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="YAML config file to check")
    parser.add_argument("--store-url", help="the store URL `binderfed serve --store-url` will get (overrides store.url)")


def run(args: argparse.Namespace) -> int:
    try:
        cfg = config.load(args.file)
        if args.store_url:
            cfg = replace(cfg, store_url=args.store_url)
        config.check_runnable(cfg)
    except config.ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    primes = [m.name for m in cfg.members if m.prime]
    print(f"{args.file}: ok ({len(cfg.members)} members, prime: {', '.join(primes) or 'none'}, "
          f"strategy {cfg.policy.strategy}, store {_without_password(cfg.store_url)})")
    return 0


def _without_password(url: str) -> str:
    """A store URL fit to print: a password given with --store-url stays off the terminal."""
    scheme, sep, rest = url.partition("://")
    userinfo, at, hosts = rest.rpartition("@")
    if not sep or not at:
        return url
    user, colon, _ = userinfo.partition(":")
    # redis://user:password@ or redis://:password@; redis+sentinel://password@ (federation.stores.redis_url)
    masked = f"{user}:***" if colon else ("***" if scheme == "redis+sentinel" else user)
    return f"{scheme}://{masked}@{hosts}"


def _import_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="the redirector's JSON config (hosts, check, load_balancer, ...)")
    parser.add_argument("-o", "--output", help="write the YAML here instead of standard output")


def _import_run(args: argparse.Namespace) -> int:
    try:
        data = json.loads(Path(args.file).read_text())
    except (OSError, ValueError) as exc:
        print(f"error: {args.file}: cannot read JSON: {exc}", file=sys.stderr)
        return 1
    try:
        converted, warnings = convert(data, args.file)
        config.parse(converted, f"{args.file} (converted)")
    except config.ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    text = ("# Converted from the mybinder.org redirector config " + Path(args.file).name + "\n"
            "# with the redirector's behaviour: its defaults for keys the file does not set, the prime's\n"
            "# pages proxied (router.landing: proxy) and no launch limits (limits.enabled: false).\n")
    text += yaml.safe_dump(converted, sort_keys=False)
    write_output(text, args.output)
    return 0


import_command = SimpleNamespace(add_arguments=_import_arguments, run=_import_run)
