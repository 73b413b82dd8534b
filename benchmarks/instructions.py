"""Instructions per redirect, counted by valgrind's callgrind: little moved by a busy machine.

    python -m benchmarks.instructions [--members 3] [--store memory://] [--requests 1000] [--keep DIR]

Not part of `make bench` (valgrind runs the server some 50x slower). Wall-clock and
CPU-time figures move with whatever else the machine runs; an instruction count much
less (about 1% at 3 members on MemoryStore; 5-8% at 1,000 members, where hash seeds and
expiries paced by the clock enter), so this is the figure to compare before and after
a change to the redirect path.
Each server (`benchmarks.target`: the router, and the bare-aiohttp ceiling served the
same way) runs under callgrind; after a warm-up the counters are zeroed
(`callgrind_control -z`), exactly `--requests` launches are sent over a few keep-alive
connections, and the counters are dumped (`callgrind_control -d`): what the server
executed for those requests, event loop and socket I/O included, divided by their
number.

With `--store redis://...`, give it an empty database (`redis-cli -n N flushdb`): what an
earlier run left there (a thousand members' statuses) is read by every refresh. The
Redis figures also move by about 5% between runs, since the store's refresh is paced by
the clock, and valgrind's pace by what else the machine runs.
"""

from __future__ import annotations

import argparse
import http.client
import json
import select
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from .common import table
from .load import ROOT

CONNECTIONS = 4
WARMUP = 300


def _send(port: int, start: int, count: int, repos: int) -> int:
    """`count` launches over one keep-alive connection; how many were answered with a 307."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    ok = 0
    try:
        for i in range(start, start + count):
            connection.request("GET", f"/build/gh/org/repo{i % repos}/HEAD")
            response = connection.getresponse()
            response.read()
            ok += response.status == 307
    finally:
        connection.close()
    return ok


def _load(port: int, requests: int, repos: int) -> int:
    results = [0] * CONNECTIONS
    share = requests // CONNECTIONS

    def one(k: int) -> None:
        results[k] = _send(port, k * share, share, repos)

    threads = [threading.Thread(target=one, args=(k,)) for k in range(CONNECTIONS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(results)


def _total(out: Path) -> int:
    """The instruction total of the last callgrind dump written next to `out`."""
    dumps = sorted(out.parent.glob(out.name + "*"), key=lambda p: p.stat().st_mtime)
    for line in dumps[-1].read_text().splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise RuntimeError(f"no totals in {dumps[-1]}")


def count(args: list[str], requests: int, repos: int = 1000, keep: Path | None = None) -> float:
    """Instructions per launch of one `benchmarks.target` server under callgrind; with
    `keep`, its dumps are copied there (for `callgrind_annotate`: where they went)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        proc = subprocess.Popen(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "--dump-line=no",
             sys.executable, "-m", "benchmarks.target", *args],
            cwd=ROOT, text=True, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        try:
            assert proc.stdout is not None
            ready, _, _ = select.select([proc.stdout], [], [], 600)
            line = proc.stdout.readline() if ready else ""
            if not line:
                raise RuntimeError(f"{args[0]} did not start under valgrind")
            port = json.loads(line)["ports"][0]
            _load(port, WARMUP, repos)
            subprocess.run(["callgrind_control", "-z", str(proc.pid)], check=True, capture_output=True)
            answered = _load(port, requests, repos)
            if answered != requests // CONNECTIONS * CONNECTIONS:
                raise RuntimeError(f"{args[0]}: only {answered} of {requests} launches answered with a 307")
            subprocess.run(["callgrind_control", "-d", str(proc.pid)], check=True, capture_output=True)
            time.sleep(0.5)
            total = _total(out)
            if keep is not None:
                keep.mkdir(parents=True, exist_ok=True)
                name = "-".join(a.strip("-").replace("/", "_").replace(":", "") for a in args)
                for dump in out.parent.glob(out.name + "*"):
                    shutil.copy(dump, keep / f"{name}.{dump.name}")
            return total / answered
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.instructions", description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, action="append", help="router sizes (default: 3 and 1000)")
    parser.add_argument("--store", default="memory://")
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--no-ceiling", action="store_true", help="count the router only")
    parser.add_argument("--keep", type=Path, metavar="DIR",
                        help="copy the callgrind dumps to DIR, to read with callgrind_annotate")
    args = parser.parse_args()
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        print("valgrind (with callgrind_control) is not installed", file=sys.stderr)
        return 2
    rows = []
    if not args.no_ceiling:
        rows.append(["bare-aiohttp ceiling", "-", f"{count(['ceiling'], args.requests, keep=args.keep):,.0f}"])
    for members in args.members or [3, 1000]:
        per = count(["router", "--members", str(members), "--store", args.store], args.requests, keep=args.keep)
        rows.append([f"router ({args.store})", members, f"{per:,.0f}"])
    print(table(f"Instructions per redirect (callgrind, {args.requests:,} launches after {WARMUP} of warm-up)",
                ["server", "members", "instructions/redirect"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
