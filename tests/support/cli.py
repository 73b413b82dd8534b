"""Run `binderfed` as a real subprocess without blocking the test's event loop.

In-process servers (a router, the Consul double) keep serving while the command
runs, because the subprocess is awaited with asyncio.
"""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Completed:
    returncode: int
    stdout: str
    stderr: str


async def run_binderfed(*args: str, env: dict[str, str] | None = None, timeout: float = 60.0) -> Completed:
    """`binderfed ARGS...` (as `python -m router.cli`); `env` is added to a copy of os.environ."""
    full_env = {**os.environ, **(env or {})}
    full_env["PYTHONPATH"] = str(REPO) + os.pathsep + full_env.get("PYTHONPATH", "")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "router.cli", *args, cwd=REPO, env=full_env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(f"binderfed {' '.join(args)} did not finish within {timeout} s") from None
    return Completed(proc.returncode or 0, out.decode(), err.decode())
