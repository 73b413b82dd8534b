"""Processes of the load benchmarks: servers pinned to cores, a load generator, CPU time.

A server (`benchmarks.target`) and the load generator each run as their own
process, pinned to cores of their own with `os.sched_setaffinity` where the machine
has enough of them, so that the figures measure the server and not a fight for one
core. CPU time comes from /proc/<pid>/stat for the servers and from the load
generator's own resource usage (`os.wait4`).

The load generator is wrk (`scripts/ensure-bench-tools`, run by `make bench`,
installs it) with benchmarks/paths.lua; only where wrk is missing does the Python
load generator (benchmarks/loadgen.py) stand in, and every figure says which one
measured it.
"""

from __future__ import annotations

import http.client
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

LUA = Path(__file__).with_name("paths.lua")
ROOT = Path(__file__).resolve().parent.parent
TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def usable_cores() -> list[int]:
    """The cores this process may run on (all of them unless it was pinned itself)."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def pin(pid: int, cores: Iterable[int] | None) -> None:
    """Pin a process (and the threads it starts afterwards) to `cores`; None leaves it free."""
    if cores is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(pid, set(cores))


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a running process, all its threads, or None where
    /proc is not there to tell."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


def load_generator() -> str:
    return "wrk" if shutil.which("wrk") else "python"


class Server:
    """One `python -m benchmarks.target ...` process, pinned, stopped on exit."""

    def __init__(self, args: list[str], cores: Iterable[int] | None):
        self.args = args
        self.cores = None if cores is None else set(cores)
        self.proc: subprocess.Popen[str] | None = None
        self.log = tempfile.TemporaryFile(mode="w+")  # its JSON log lines, as a container runtime would keep them
        self.ports: list[int] = []

    def __enter__(self) -> "Server":
        cores = self.cores
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.target", *self.args], cwd=ROOT, text=True,
            stdout=subprocess.PIPE, stderr=self.log,
            preexec_fn=(lambda: pin(0, cores)) if cores is not None else None,
        )
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], 120)
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            self.__exit__()
            raise RuntimeError(f"benchmark server {' '.join(self.args[:1])} did not start: {self.log_tail()}")
        self.ports = json.loads(line)["ports"]
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def port(self) -> int:
        return self.ports[0]

    def cpu(self) -> float | None:
        return cpu_seconds(self.pid)

    def log_tail(self, lines: int = 5) -> str:
        self.log.seek(0)
        return " | ".join(self.log.read().splitlines()[-lines:])

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None
        self.log.close()


def get(port: int, path: str) -> tuple[int, dict[str, str], bytes]:
    """One GET to a server on 127.0.0.1 (no redirect followed)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


@dataclass
class Load:
    """What one load run saw."""

    tool: str
    requests: int
    seconds: float
    p50: float
    p99: float
    errors: dict[str, int] = field(default_factory=dict)
    cpu: float | None = None  # the load generator's own CPU seconds

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())


def run_load(port: int, seconds: float, connections: int, repos: int, cores: Iterable[int] | None) -> Load:
    """Load `http://127.0.0.1:<port>` with launch paths for `seconds`, pinned to `cores`."""
    tool = load_generator()
    url = f"http://127.0.0.1:{port}"
    if tool == "wrk":
        # wrk takes whole seconds
        command = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "5s",
                   "-s", str(LUA), url, "--", str(repos)]
    else:
        command = [sys.executable, "-m", "benchmarks.loadgen", "--url", url, "--duration", str(seconds),
                   "--concurrency", str(connections), "--repos", str(repos)]
    chosen = None if cores is None else set(cores)
    with tempfile.TemporaryFile(mode="w+") as stderr:
        proc = subprocess.Popen(command, cwd=ROOT, text=True, stdout=subprocess.PIPE, stderr=stderr,
                                preexec_fn=(lambda: pin(0, chosen)) if chosen is not None else None)
        assert proc.stdout is not None
        out = proc.stdout.read()
        proc.stdout.close()
        # wait4, not wait: its resource usage is the load generator's own CPU time.
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        stderr.seek(0)
        err = stderr.read()
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{tool} failed ({proc.returncode}): {(err or out).strip()[-300:]}")
    figures = json.loads(lines[-1])
    return Load(tool=tool, requests=figures["requests"], seconds=figures["duration_us"] / 1e6,
                p50=figures["p50_us"] / 1e6, p99=figures["p99_us"] / 1e6,
                errors={k: v for k, v in figures["errors"].items() if v},
                cpu=usage.ru_utime + usage.ru_stime)


def wait_for(check, timeout: float, what: str, interval: float = 0.5):  # noqa: ANN001
    """Poll `check()` until it returns something truthy, at most `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)
