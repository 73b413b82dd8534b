"""A real Prometheus (Debian's `prometheus`, installed by `make tools`) for one test:
a free port on 127.0.0.1, a generated config scraping the given targets every
`scrape_interval`, its data directory in the test's tmp_path, stopped at the end."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from tests.support.redis_proc import free_port


def binary(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise AssertionError(f"{name} is not installed: run `make tools` (scripts/ensure-tools installs Debian's prometheus)")
    return found


class PrometheusProcess:
    def __init__(self, workdir: Path, targets: list[str], rule_files: tuple[Path, ...] = (),
                 scrape_interval: str = "1s") -> None:
        self.workdir = workdir
        self.targets = targets
        self.rule_files = rule_files
        self.scrape_interval = scrape_interval
        self.port = 0
        self.proc: subprocess.Popen | None = None
        self.log = workdir / "prometheus.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, timeout: float = 30.0) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = {
            "global": {"scrape_interval": self.scrape_interval, "scrape_timeout": self.scrape_interval,
                       "evaluation_interval": self.scrape_interval},
            "rule_files": [str(p) for p in self.rule_files],
            "scrape_configs": [{"job_name": "binder-federation", "metrics_path": "/metrics",
                                "static_configs": [{"targets": self.targets}]}],
        }
        config_path = self.workdir / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(config))
        self.port = free_port()
        with self.log.open("w") as log:
            self.proc = subprocess.Popen(
                [binary("prometheus"), f"--config.file={config_path}", f"--storage.tsdb.path={self.workdir / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
                stdout=log, stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
            while True:
                if self.proc.poll() is not None:
                    raise AssertionError(f"prometheus exited with {self.proc.returncode}:\n{self.log.read_text()}")
                try:
                    async with http.get(self.url + "/-/ready") as response:
                        if response.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                if time.monotonic() > deadline:
                    self.stop()
                    raise AssertionError(f"prometheus not ready within {timeout} s:\n{self.log.read_text()}")
                await asyncio.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    async def api(self, http: aiohttp.ClientSession, path: str, **params: str) -> Any:
        """GET /api/v1/<path>; returns `data`, failing on an error answer (a bad query included)."""
        async with http.get(f"{self.url}/api/v1/{path}", params=params) as response:
            body = await response.json()
        assert body.get("status") == "success", f"{path} {params}: {body}"
        return body["data"]

    async def query(self, http: aiohttp.ClientSession, expr: str) -> list[dict[str, Any]]:
        """An instant query now: [{"metric": {...}, "value": [t, "v"]}, ...] (a scalar as one item)."""
        data = await self.api(http, "query", query=expr)
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        return data["result"]
