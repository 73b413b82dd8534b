"""`make bench`: every benchmark, printed as Markdown tables."""

from __future__ import annotations

import argparse
import os
import platform
import sys

from tests.support.redis_proc import RedisProcess

from . import membership, placement, redirect, relay

SECTIONS = ("placement", "redirect", "membership", "relay")


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("sections", nargs="*", default=list(SECTIONS), help=f"any of {', '.join(SECTIONS)}")
    args = parser.parse_args()
    print(f"binder-federation benchmarks — Python {platform.python_version()}, {os.cpu_count()} CPUs, {platform.machine()}")
    redis_proc = RedisProcess()
    redis_proc.start()
    try:
        for section in args.sections:
            if section == "placement":
                print(placement.run(), flush=True)
            elif section == "redirect":
                print(redirect.run(redis_proc), flush=True)
            elif section == "membership":
                print(membership.run(redis_proc.url), flush=True)
            elif section == "relay":
                print(relay.run(), flush=True)
            else:
                print(f"unknown section {section!r}", file=sys.stderr)
                return 2
    finally:
        redis_proc.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
