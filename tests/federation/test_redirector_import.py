"""`binderfed import-config`: the mybinder.org redirector's config, value by value.

The fixtures are the redirector's real data (tests/fixtures/redirector/README.md): its
built-in defaults and the config.json mybinder.org's chart renders for production.
Every value in them must arrive in the router's config with the redirector's meaning,
or be named in a warning.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import pytest

from federation import config
from router.cli import main as cli_main
from federation.redirector_config import convert

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "redirector"
PRIME = {"url": "https://prime.example.org/", "weight": 10, "prime": True,
         "health": "https://prime.example.org/health", "versions": "https://prime.example.org/versions"}


def fixture(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text())


def leaves(data: dict[str, Any], prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    for key, value in data.items():
        if isinstance(value, dict) and value:
            yield from leaves(value, prefix + (key,))
        else:
            yield prefix + (key,), value


def carried(cfg: config.FederationConfig, path: tuple[str, ...], value: Any) -> bool:
    """Whether the redirector's `path` = `value` means the same in the router's `cfg`."""
    health, policy, router = cfg.health, cfg.policy, cfg.router
    simple = {
        ("check", "period"): health.period,
        ("check", "jitter"): health.jitter,
        ("check", "timeout"): health.timeout,
        ("check", "failed_period"): health.failed_period,
        # the redirector makes `retries` attempts in all; the router `retries` more after the first
        ("check", "retries"): health.retries + 1,
        ("load_balancer",): policy.strategy,
        ("pod_headroom",): policy.pod_headroom,
        ("host_cookie_age_hours",): router.cookie_max_age_hours,
    }
    if path in simple:
        return simple[path] == value
    if path[0] == "hosts" and len(path) == 3:
        member = next((m for m in cfg.members if m.name == path[1]), None)
        if member is None:
            return False
        field = path[2]
        if field == "url":
            return member.url == value.rstrip("/")
        if field == "weight":
            return member.weight == value
        if field == "prime":
            return member.prime == bool(value)
        if field == "health":
            return value.rstrip("/") == member.url + "/health"
        if field == "versions":  # probed, and compared with the prime's as the redirector does
            return value.rstrip("/") == member.url + "/versions" and health.versions_policy == "prime"
    return False


def warned(warnings: list[str], path: tuple[str, ...]) -> bool:
    return any(repr(path[0]) in w or w.startswith(".".join(path[:2])) for w in warnings)


def imported(data: dict[str, Any]) -> tuple[config.FederationConfig, list[str]]:
    converted, warnings = convert(data, "fixture")
    return config.parse(converted, "fixture (converted)"), warnings


def test_mybinder_production_config_every_value_carried_or_warned():
    data = fixture("mybinder-prod.json")
    cfg, warnings = imported(data)
    lost = [path for path, value in leaves(data) if not carried(cfg, path, value) and not warned(warnings, path)]
    assert lost == []
    # What is warned about is exactly the chart's deployment keys: routing keys all carry over.
    assert {path[0] for path, value in leaves(data) if not carried(cfg, path, value)} == {
        "enabled", "host", "image", "resources", "nodeSelector"}
    assert len(warnings) == 5 and all("deployment setting" in w for w in warnings)
    assert [m.name for m in cfg.members] == ["bids-ovh", "hetzner-2i2c", "hetzner-gesis"]
    assert cfg.health.failed_period == 90 and cfg.health.period == 15   # not the router's own defaults
    assert cfg.policy.strategy == "random"


def test_keys_the_file_does_not_set_take_the_redirectors_defaults():
    defaults = fixture("app-defaults.json")
    with pytest.raises(config.ConfigError, match="hosts"):
        convert(defaults)   # the redirector itself will not start without a (prime) host
    cfg, warnings = imported({**defaults, "hosts": {"prime": PRIME}})
    assert warnings == []
    assert [path for path, value in leaves(defaults) if path != ("hosts",) and not carried(cfg, path, value)] == []
    # A file with hosts alone behaves as the redirector does with it: its defaults, not ours.
    bare, _ = imported({"hosts": {"prime": PRIME}})
    assert bare == cfg
    assert bare.health.failed_period == 300 and bare.health.timeout == 2 and bare.health.retries == 4
    assert bare.policy.strategy == "rendezvous" and bare.policy.pod_headroom == 10


def test_missing_check_keys_are_filled_one_by_one_as_get_config_does():
    cfg, warnings = imported({"check": {"period": 30, "failed_period": 120, "interval": 5, "retries": 0},
                              "hosts": {"prime": PRIME}})
    assert cfg.health.period == 30 and cfg.health.failed_period == 120
    assert cfg.health.jitter == 0.1 and cfg.health.timeout == 2     # from the redirector's defaults
    assert any(w.startswith("check.interval is not one of the redirector's check keys") for w in warnings)
    assert any("check.retries is 0" in w for w in warnings) and cfg.health.retries == 0


def test_an_imported_config_serves_the_prime_and_sets_no_limits():
    cfg, _ = imported(fixture("mybinder-prod.json"))
    assert cfg.router.landing == "proxy"
    assert cfg.limits.enabled is False
    cfg, warnings = imported({"hosts": {"a": {**PRIME, "prime": False}}})
    assert cfg.router.landing == "page" and any("no host is prime" in w for w in warnings)


def test_hosts_the_redirector_removes_are_not_imported_and_say_so():
    cfg, warnings = imported({"hosts": {
        "prime": PRIME,
        "zero": {"url": "https://zero.example", "weight": 0},
        "unweighted": {"url": "https://unweighted.example"},
        "gone": None,
        "extra": {"url": "https://extra.example", "weight": 1, "region": "eu"},
    }})
    assert [m.name for m in cfg.members] == ["prime", "extra"]
    assert any(w.startswith("hosts.zero has weight 0: skipped") for w in warnings)
    assert any(w.startswith("hosts.unweighted has no weight: skipped") for w in warnings)
    assert any(w.startswith("hosts.gone is null: skipped") for w in warnings)
    assert any(w.startswith("hosts.extra.region is not one of the redirector's host keys") for w in warnings)
    with pytest.raises(config.ConfigError, match="no host is left"):
        convert({"hosts": {"zero": {"url": "https://zero.example", "weight": 0}}})


def test_unknown_load_balancer_falls_back_to_random_and_other_keys_are_named():
    cfg, warnings = imported({"load_balancer": "least-busy", "versions": {"binderhub": "1"}, "extra": 1,
                              "hosts": {"prime": PRIME}})
    assert cfg.policy.strategy == "random"
    assert any("'least-busy'" in w and "'random'" in w for w in warnings)
    assert any(w.startswith("'versions' is the redirector's runtime state") for w in warnings)
    assert any("key 'extra'" in w for w in warnings)
    with pytest.raises(config.ConfigError, match="check.period"):
        convert({"check": {"period": "ten"}, "hosts": {"prime": PRIME}})


def test_import_config_command_round_trips_through_yaml(tmp_path, capsys):
    out = tmp_path / "federation.yaml"
    assert cli_main(["import-config", str(FIXTURES / "mybinder-prod.json"), "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert err.count("warning: ") == 5 and "'nodeSelector' is a deployment setting" in err
    loaded = config.load(out)
    direct, _ = imported(fixture("mybinder-prod.json"))
    assert loaded.members == direct.members and loaded.health == direct.health
    assert loaded.policy == direct.policy and loaded.router == direct.router and loaded.limits == direct.limits
