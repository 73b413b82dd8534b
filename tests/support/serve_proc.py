"""`binderfed serve` as a real subprocess, for what only a process shows: signals, exit
codes, what it prints when it cannot start."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
import time
from pathlib import Path

from tests.support.cli import REPO

LISTENING = re.compile(r"router listening on (http://\S+)")


class ServeProcess:
    """One `binderfed serve --config FILE ...`; its stderr is collected line by line."""

    def __init__(self, config: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.args = ("serve", "--config", str(config), "--log-format", "text", *args)
        self.env = env or {}
        self.proc: asyncio.subprocess.Process | None = None
        self.lines: list[str] = []
        self.url = ""
        self._reader: asyncio.Task[None] | None = None
        self._listening = asyncio.Event()

    async def start(self, timeout: float = 30.0) -> str:
        """Start it and wait until it listens; returns its base URL."""
        env = {**os.environ, **self.env}
        env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "router.cli", *self.args, cwd=REPO, env=env,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )
        self._reader = asyncio.create_task(self._read())
        waiting = asyncio.ensure_future(self._listening.wait())
        exited = asyncio.ensure_future(self.proc.wait())
        done, _ = await asyncio.wait([waiting, exited], timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        waiting.cancel()
        exited.cancel()
        if not self._listening.is_set():
            await self.stop()
            raise AssertionError(f"binderfed serve did not start listening:\n{self.output()}")
        return self.url

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        async for raw in self.proc.stderr:
            line = raw.decode(errors="replace").rstrip("\n")
            self.lines.append(line)
            match = LISTENING.search(line)
            if match and not self.url:
                self.url = match.group(1).replace("://0.0.0.0:", "://127.0.0.1:")
                self._listening.set()

    def signal(self, sig: int = signal.SIGTERM) -> float:
        """Send `sig`; returns the monotonic time it was sent."""
        assert self.proc is not None
        self.proc.send_signal(sig)
        return time.monotonic()

    async def wait(self, timeout: float) -> int:
        assert self.proc is not None
        code = await asyncio.wait_for(self.proc.wait(), timeout)
        if self._reader is not None:
            await asyncio.wait_for(self._reader, 5)
        return code

    def output(self) -> str:
        return "\n".join(self.lines)

    async def stop(self) -> None:
        """Kill it if it still runs (test teardown)."""
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
