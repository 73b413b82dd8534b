"""Config files: validation errors name the file, the key and what was expected."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from federation import config
from federation.placement.strategies import STRATEGIES
from router.cli import main as cli_main
from federation.redirector_config import convert

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", ["demo.yaml", "mybinder.example.yaml"])
def test_shipped_configs_are_valid(name):
    cfg = config.load(REPO / "config" / name)
    assert cfg.members and any(m.prime for m in cfg.members)


def test_mybinder_example_lists_the_public_members():
    cfg = config.load(REPO / "config" / "mybinder.example.yaml")
    assert {m.url for m in cfg.members} == {
        "https://2i2c.mybinder.org", "https://gesis.mybinder.org", "https://bids.mybinder.org"}


def test_defaults_fill_missing_sections():
    cfg = config.parse({"members": [{"name": "a", "url": "https://a.example/"}]}, "x.yaml")
    assert cfg.members[0].url == "https://a.example"          # trailing slash dropped
    assert cfg.policy.strategy == "bounded-affinity"
    assert cfg.router.forward == "redirect"
    assert cfg.store_url == "memory://"


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_every_registered_strategy_is_a_valid_policy_strategy(name):
    assert config.parse({"policy": {"strategy": name}}, "x.yaml").policy.strategy == name


def test_prober_lease_defaults_to_twice_the_period_but_at_least_5_s():
    assert config.parse({}).health.prober_lease_ttl == 20           # period 10
    assert config.parse({"health": {"period": 1}}).health.prober_lease_ttl == 5
    assert config.parse({"health": {"period": 1, "lease_ttl": 2.5}}).health.prober_lease_ttl == 2.5
    with pytest.raises(config.ConfigError, match=r"health\.lease_ttl"):
        config.parse({"health": {"lease_ttl": 0}}, "x.yaml")


@pytest.mark.parametrize("data, key, words", [
    ({"members": [{"name": "a", "url": "ftp://a"}]}, "members[0].url", "ftp://a"),
    ({"members": [{"name": "a"}]}, "members[0]", "url"),
    ({"members": [{"name": "A b", "url": "https://a"}]}, "members[0].name", "A b"),
    ({"policy": {"strategy": "round-robin"}}, "policy.strategy", "bounded-affinity"),
    ({"health": {"period": "soon"}}, "health.period", "number"),
    ({"router": {"prot": 80}}, "router", "prot"),
    ({"store": {"url": "mysql://x"}}, "store.url", "mysql://x"),
    ({"members": [{"name": "a", "url": "https://a"}, {"name": "a", "url": "https://b"}]}, "members[1].name", "duplicate"),
    ([1, 2], "(top level)", "object"),
])
def test_errors_name_the_key_and_the_expectation(data, key, words):
    with pytest.raises(config.ConfigError) as info:
        config.parse(data, "broken.yaml")
    message = str(info.value)
    assert message.startswith(f"broken.yaml: {key}:"), message
    assert words in message


def test_unreadable_and_invalid_yaml_files(tmp_path):
    with pytest.raises(config.ConfigError, match="cannot read file"):
        config.load(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("members:\n  - name: a\n   url: x\n")
    with pytest.raises(config.ConfigError, match=r"bad.yaml: line \d+, column \d+: not valid YAML"):
        config.load(bad)


def test_check_config_command_exit_codes(tmp_path, capsys):
    assert cli_main(["check-config", str(REPO / "config" / "demo.yaml")]) == 0
    assert "ok (3 members" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"members": [{"name": "a", "url": "https://a", "weight": -1}]}))
    assert cli_main(["check-config", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "members[0].weight" in err and str(bad) in err


def test_console_script_reports_config_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("policy: {strategy: nope}\n")
    proc = subprocess.run([sys.executable, "-m", "router.cli", "check-config", str(bad)],
                          capture_output=True, text=True, cwd=REPO, timeout=60)
    assert proc.returncode == 1
    assert "policy.strategy" in proc.stderr


def test_redirector_config_converts_to_a_valid_config():
    data = json.loads((REPO / "config" / "examples" / "redirector.json").read_text())
    converted, warnings = convert(data)
    cfg = config.parse(converted, "converted")
    assert [m.name for m in cfg.members] == ["2i2c", "gesis", "bids"]    # the null host is skipped
    assert cfg.members[0].prime and cfg.members[0].url == "https://2i2c.mybinder.org"
    assert cfg.policy.strategy == "rendezvous"
    assert cfg.policy.pod_headroom == 10
    assert cfg.router.cookie_max_age_hours == 4
    assert cfg.health.retries == 4 and cfg.health.failed_period == 300
    assert cfg.health.versions_policy == "prime"
    assert warnings == ["hosts.ovh2 is null: skipped, as the redirector removes null hosts"]


def test_redirector_config_warnings_and_errors():
    converted, warnings = convert({"hosts": {"GKE_1": {"url": "https://gke.example", "weight": 1,
                                                        "health": "https://other.example/health"}},
                                   "extra": 1})
    assert converted["members"][0]["name"] == "gke-1"
    assert any("renamed" in w for w in warnings)
    assert any("always probes 'https://gke.example/health'" in w for w in warnings)
    assert any("'extra'" in w for w in warnings)
    with pytest.raises(config.ConfigError, match="hosts"):
        convert({"hosts": {}})


def test_import_config_command_writes_yaml(tmp_path, capsys):
    out = tmp_path / "federation.yaml"
    assert cli_main(["import-config", str(REPO / "config" / "examples" / "redirector.json"), "-o", str(out)]) == 0
    cfg = config.load(out)
    assert len(cfg.members) == 3
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    assert cli_main(["import-config", str(broken)]) == 1
    assert "cannot read JSON" in capsys.readouterr().err
