"""The real Helm (installed into the virtualenv by `make tools`: scripts/ensure-tools)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

HELM_VERSION = "v3.17.1"  # scripts/ensure-tools pins it


def helm_binary() -> str:
    """The helm next to this Python (the venv's bin), else one on PATH; fails if there is none."""
    found = shutil.which("helm", path=str(Path(sys.executable).parent)) or shutil.which("helm")
    if found is None:
        raise AssertionError("helm is not installed: run `make tools` (scripts/ensure-tools installs it into the venv)")
    return found


@dataclass(frozen=True)
class HelmResult:
    returncode: int
    stdout: str
    stderr: str

    @property
    def documents(self) -> list[dict[str, Any]]:
        """The rendered manifests (empty documents dropped)."""
        return [doc for doc in yaml.safe_load_all(self.stdout) if doc]

    def one(self, kind: str, name_suffix: str = "") -> dict[str, Any]:
        found = [d for d in self.documents if d["kind"] == kind and d["metadata"]["name"].endswith(name_suffix)]
        assert len(found) == 1, f"expected one {kind} *{name_suffix}, got {[d['metadata']['name'] for d in found]}"
        return found[0]


def helm(*args: str, values: dict[str, Any] | None = None, timeout: float = 60.0) -> HelmResult:
    """Run `helm ARGS...` (with `values` as a values file), offline, with a private home."""
    with tempfile.TemporaryDirectory(prefix="helm-") as home:
        command = [helm_binary(), *args]
        if values is not None:
            path = Path(home) / "values.yaml"
            path.write_text(yaml.safe_dump(values))
            command += ["--values", str(path)]
        env = {"HELM_CACHE_HOME": f"{home}/cache", "HELM_CONFIG_HOME": f"{home}/config",
               "HELM_DATA_HOME": f"{home}/data", "PATH": "/usr/bin:/bin", "HOME": home}
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    return HelmResult(done.returncode, done.stdout, done.stderr)


def template(chart: Path, values: dict[str, Any] | None = None, *, release: str = "federation",
             namespace: str = "federation", kube_version: str | None = None) -> HelmResult:
    args = ["template", release, str(chart), "--namespace", namespace]
    if kube_version:
        args += ["--kube-version", kube_version]
    return helm(*args, values=values)


def rendered(chart: Path, values: dict[str, Any] | None = None, **kwargs: Any) -> HelmResult:
    """`template`, which must succeed."""
    result = template(chart, values, **kwargs)
    assert result.returncode == 0, result.stderr
    return result


def lint(chart: Path, values: dict[str, Any] | None = None) -> HelmResult:
    return helm("lint", "--strict", str(chart), values=values)
