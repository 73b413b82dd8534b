"""`binderfed`: the command line.

Each subcommand lives in the module that owns its concern and exposes
`add_arguments(parser)` and `run(args) -> int`. The CLI is the composition root, so
it names modules from every layer: it sits in `router/`, the top layer, which may
import them all. It loads a command's module by name and only when that command
runs, which keeps start-up fast (`tests/test_layers.py` reads these names as imports).
"""

from __future__ import annotations

import argparse
import importlib
import sys

# command -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("router.serve", "run the launch router"),
    "demo": ("router.demo", "run a local federation: router + dev members on loopback"),
    "devhub": ("hub.devhub.cli", "run a development member BinderHub (for demos and tests)"),
    "agent": ("hub.agent.cli", "run the member agent: report a member's capacity and image cache from Kubernetes"),
    "check-config": ("federation.config_cli", "validate a router config file"),
    "import-config": ("federation.config_cli:import_command", "convert the mybinder.org redirector's JSON config"),
    "simulate": ("federation.simulate.cli", "compare placement strategies on a launch trace"),
    "launch": ("federation.launch_client", "launch a repository on a federation and print its server URL"),
    "config-reference": ("federation.config_reference", "write the config reference (Markdown) from config/schema.json"),
    "member": ("federation.member_cli", "join or leave the federation: register your BinderHub in Consul"),
    "admin": ("router.admin_cli", "drain, undrain or reweight members of a running router (admin API)"),
}


def _load(target: str):
    module_name, _, attr = target.partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, attr) if attr else module


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="binderfed", description="binder-federation: one Binder domain, many BinderHubs.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (target, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == command:
            _load(target).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(command if command in COMMANDS else None)
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    try:
        return int(_load(COMMANDS[args.command][0]).run(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
