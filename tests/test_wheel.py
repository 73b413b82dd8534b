"""The package as a user installs it: a wheel built from the tree, installed (not editable)
into a fresh virtualenv, runs `binderfed check-config`, `serve` and `demo`.

SLOW (about 30-60 s on a busy machine): builds the wheel with the test venv's own
setuptools (`--no-build-isolation`, nothing downloaded), creates a venv in a temporary
folder and installs only the wheel there (`--no-deps --no-index`). The wheel's
dependencies (aiohttp, redis, ...) are borrowed from the test venv through a `.pth` path
line, so the test needs no network; the test venv's editable install is not seen (a path
line does not run that folder's own `.pth` hooks), and every command runs from a folder
outside the checkout with no PYTHONPATH, so nothing is read from the repository.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import site
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.redis_proc import free_port

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
# What a checkout holds that is not source: never copied into the build folder.
NOT_SOURCE = (".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", ".hypothesis",
              "test-artifacts")
PACKAGE_DATA = ("federation/config_files/schema.json", "federation/config_files/demo.yaml",
                "federation/config_files/mybinder.example.yaml", "federation/config_files/examples/redirector.json",
                "router/static/launch.js", "router/static/launch.html", "router/static/badge.svg",
                "router/templates/status.html", "federation/stores/lua/record_launch.lua")


@dataclass(frozen=True)
class Installed:
    venv: Path
    workdir: Path      # an empty folder outside the checkout, where the commands run
    wheel: Path
    build_log: str

    @property
    def binderfed(self) -> str:
        return str(self.venv / "bin" / "binderfed")

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "BINDERFED_CONFIG")}
        return {**env, "PYTHONDONTWRITEBYTECODE": "1"}

    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run([self.binderfed, *args], cwd=self.workdir, env=self.env(), capture_output=True,
                              text=True, timeout=timeout)


def _run(*cmd: str | Path, cwd: Path, timeout: float = 180) -> str:
    done = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, timeout=timeout)
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{output}"
    return output


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Installed:
    base = tmp_path_factory.mktemp("wheel")
    source = base / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(*NOT_SOURCE), symlinks=True)
    dist = base / "dist"
    build_log = _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                     "--verbose", "--wheel-dir", dist, source, cwd=base)
    [wheel] = dist.glob("binder_federation-*.whl")

    venv = base / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=base)
    _run(sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "install", "--no-deps", "--no-index",
         "--quiet", wheel, cwd=base)
    [venv_site] = (venv / "lib").glob("python*/site-packages")
    borrowed = [p for p in site.getsitepackages() if Path(p).is_dir()]
    (venv_site / "zz_test_dependencies.pth").write_text("\n".join(borrowed) + "\n")

    workdir = base / "work"
    (workdir / "config").mkdir(parents=True)
    shutil.copy(ROOT / "config" / "demo.yaml", workdir / "config" / "demo.yaml")
    return Installed(venv, workdir, wheel, build_log)


def test_the_wheel_carries_the_config_files_and_router_pages(installed):
    names = set(zipfile.ZipFile(installed.wheel).namelist())
    assert set(PACKAGE_DATA) <= names, sorted(set(PACKAGE_DATA) - names)
    assert not any(n.startswith(("tests/", "config/", "benchmarks/")) for n in names), sorted(names)


def test_the_wheel_carries_every_module_of_the_four_layers(installed):
    # pyproject.toml lists the packages by name: a new package (a folder split into
    # modules) that is not listed would import in the checkout and fail once installed.
    names = set(zipfile.ZipFile(installed.wheel).namelist())
    modules = {p.relative_to(ROOT).as_posix() for layer in ("federation", "hub", "health", "router")
               for p in (ROOT / layer).rglob("*.py") if "__pycache__" not in p.parts}
    assert modules - names == set(), "add these packages to pyproject.toml [tool.setuptools] packages"


def test_building_the_wheel_gives_no_setuptools_warning(installed):
    # setuptools reports deprecated or incomplete packaging config as `...Warning:` lines;
    # byte-compiling notices ("warning: build_py: byte-compiling is disabled") are the
    # environment's PYTHONDONTWRITEBYTECODE, not the project's.
    warnings = [line for line in installed.build_log.splitlines() if re.search(r"\w+Warning\b", line)]
    assert warnings == [], "\n".join(warnings)


def test_check_config_runs_from_the_installed_package(installed):
    where = subprocess.run(
        [str(installed.venv / "bin" / "python"), "-c",
         "import federation, federation.config as c; print(federation.__file__); print(c.SCHEMA_PATH)"],
        cwd=installed.workdir, env=installed.env(), capture_output=True, text=True, timeout=60)
    assert where.returncode == 0, where.stderr
    module, schema = where.stdout.split()
    assert Path(module).is_relative_to(installed.venv), module    # not the checkout
    assert Path(schema).is_relative_to(installed.venv) and Path(schema).is_file(), schema

    done = installed.run("check-config", "config/demo.yaml")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("config/demo.yaml: ok (3 members"), done.stdout

    (installed.workdir / "broken.yaml").write_text("members:\n  - name: Bad Name\n    url: https://x.org\n")
    broken = installed.run("check-config", "broken.yaml")
    assert broken.returncode == 1 and "broken.yaml" in broken.stderr and "members[0].name" in broken.stderr, \
        broken.stderr


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _wait_until_serving(proc: subprocess.Popen[str], url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"exited with {proc.returncode} before serving:\n{proc.communicate()[1]}")
        try:
            if _get(url)[0] == 200:
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"nothing answered {url} within {timeout} s")
        time.sleep(0.1)


def _stop(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        raise AssertionError(f"did not stop within 20 s of SIGTERM:\n{err}")
    assert proc.returncode == 0, err
    return err


def test_serve_answers_health_status_and_badges(installed):
    port, member_port = free_port(), free_port()   # nothing listens on the member's port
    (installed.workdir / "router.yaml").write_text(
        f"members:\n  - name: alpha\n    url: http://127.0.0.1:{member_port}\n"
        f"router:\n  host: 127.0.0.1\n  port: {port}\nlimits:\n  enabled: false\n")
    proc = subprocess.Popen([installed.binderfed, "serve", "--config", "router.yaml", "--log-format", "text"],
                            cwd=installed.workdir, env=installed.env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_until_serving(proc, base + "/health")
        status, page = _get(base + "/status")          # rendered from router/templates
        assert status == 200 and b"alpha" in page
        status, badge = _get(base + "/badge.svg")      # read from router/static
        assert status == 200 and badge.startswith(b"<svg")
        status, body = _get(base + "/api/v1/members")
        assert status == 200 and [m["name"] for m in json.loads(body)["members"]] == ["alpha"]
    finally:
        if proc.poll() is None:
            _stop(proc)


def test_demo_runs_with_its_packaged_config(installed):
    port = free_port()
    proc = subprocess.Popen([installed.binderfed, "demo", "--port", str(port), "--build-seconds", "0.05"],
                            cwd=installed.workdir, env=installed.env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_until_serving(proc, base + "/health")
        status, body = _get(base + "/api/v1/members")
        assert status == 200 and sorted(m["name"] for m in json.loads(body)["members"]) == ["alpha", "beta", "gamma"]
    finally:
        if proc.poll() is None:
            _stop(proc)
