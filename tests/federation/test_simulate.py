"""The placement simulator: it runs the real policy and store over a trace and reports sane figures."""

from __future__ import annotations

import importlib.util
import json

import pytest

from federation import simulate
from router.cli import main as binderfed
from federation.config import PolicySettings
from federation.simulate import (
    DEFAULT_MEMBERS,
    DEFAULT_STRATEGIES,
    TraceParams,
    parse_members,
    read_trace,
    synthetic_trace,
)

SMALL = TraceParams(launches=5000, repos=800, data_repos=100, rate=0.45, seed=3)


@pytest.fixture(scope="module")
def small_results():
    trace = synthetic_trace(SMALL)
    members = parse_members(DEFAULT_MEMBERS)
    return {s: simulate.simulate(trace, members, s, PolicySettings(), seed=SMALL.seed) for s in DEFAULT_STRATEGIES}


def test_small_scenario_figures_are_sane(small_results):
    for strategy, r in small_results.items():
        assert r.launches == SMALL.launches
        assert 0 <= r.hits <= r.launches
        assert r.builds >= 1 and r.hits + r.pulls + r.builds + r.refused <= r.launches
        assert r.refused >= 0 and r.unplaced >= 0
        assert set(r.peak) == {"m1", "m2", "m3", "m4", "m5"}
        assert all(0.0 <= p <= 1.0 for p in r.peak.values())
        assert 0.0 < r.mean_utilization <= r.peak_utilization
        assert r.data_launches > 0 and 0.0 <= r.data_local_rate <= 1.0
        assert sum(r.reasons.values()) == r.launches
        assert r.duration > 0 and r.samples
    ba = small_results["bounded-affinity"]
    assert ba.data_local_rate >= small_results["random"].data_local_rate
    assert ba.data_local_rate >= small_results["rendezvous"].data_local_rate
    # Affinity strategies find images where random does not.
    assert small_results["rendezvous"].hit_rate > small_results["random"].hit_rate
    assert ba.hit_rate > small_results["random"].hit_rate
    assert set(small_results["random"].reasons) == {"random"}
    assert set(ba.reasons) <= {"data", "cache", "affinity", "spill", "panic", "prime", "none"}


def test_same_seed_same_figures(small_results):
    trace = synthetic_trace(SMALL)
    assert trace == synthetic_trace(SMALL)
    again = simulate.simulate(trace, parse_members(DEFAULT_MEMBERS), "bounded-affinity", PolicySettings(), seed=SMALL.seed)
    assert again.to_json() == small_results["bounded-affinity"].to_json()
    assert synthetic_trace(TraceParams(launches=200, seed=4)) != synthetic_trace(TraceParams(launches=200, seed=5))


def test_synthetic_trace_has_its_burst_and_data():
    params = TraceParams(launches=10_000, viral_share=0.4, burst_start=0.4, burst_length=0.2, data_share=0.1, seed=2)
    launches = synthetic_trace(params).launches
    burst = launches[4000:6000]
    outside = launches[:4000] + launches[6000:]
    viral_in_burst = sum(launch.repo_key == simulate.VIRAL_REPO for launch in burst) / len(burst)
    assert viral_in_burst == pytest.approx(0.4, abs=0.04)
    assert not any(launch.repo_key == simulate.VIRAL_REPO for launch in outside)
    data = [launch for launch in outside if launch.data_site]
    assert len(data) / len(outside) == pytest.approx(0.1, abs=0.02)
    assert {launch.data_site for launch in data} == {"zenodo.org", "dataverse.harvard.edu"}
    assert all(a.time <= b.time for a, b in zip(launches, launches[1:]))
    # The burst arrives faster: the viral launches come on top of the usual traffic.
    span = lambda ls: ls[-1].time - ls[0].time  # noqa: E731
    assert span(burst) < 0.8 * span(launches[:2000])


def test_json_output_parses(capsys):
    code = binderfed(["simulate", "--launches", "1500", "--repos", "200", "--json"])
    assert code == 0
    body = json.loads(capsys.readouterr().out)
    assert list(body) == list(DEFAULT_STRATEGIES)
    for figures in body.values():
        assert figures["launches"] == 1500
        assert 0 <= figures["cache_hit_rate"] <= 1
        assert set(figures["peak_utilization_per_member"]) == {"m1", "m2", "m3", "m4", "m5"}
        assert figures["trace"]["bad_lines"] == 0


def test_table_output(capsys):
    assert binderfed(["simulate", "--launches", "800", "--strategies", "rendezvous,bounded-affinity",
                      "--members", "a=20,b=40:sites=zenodo.org:weight=1"]) == 0
    out = capsys.readouterr().out
    assert "rendezvous" in out and "bounded-affinity" in out and "random " not in out
    assert "peak per member (a, b)" in out


def test_jsonl_trace_with_bad_lines_is_accepted_and_counted(tmp_path, capsys):
    lines = [
        {"timestamp": 1700000000.0, "provider": "gh", "spec": "binder-examples/requirements/HEAD"},
        {"timestamp": "2023-11-14T22:13:25+00:00", "provider": "GitHub", "spec": "binder-examples/requirements/main"},
        {"timestamp": 1700000030, "provider": "zenodo", "spec": "10.5281/zenodo.3242074"},
        {"timestamp": 1700000040, "provider": "Dataverse", "spec": "10.7910/DVN/TJCLKP"},
    ]
    text = "\n".join(json.dumps(line) for line in lines)
    text += "\nthis is not json\n"
    text += json.dumps({"timestamp": 1700000050, "provider": "gh"}) + "\n"  # no spec
    text += json.dumps({"timestamp": 1700000060, "provider": "nope", "spec": "a/b/c"}) + "\n"  # unknown provider
    text += json.dumps(["not", "an", "object"]) + "\n"
    text += json.dumps({"timestamp": "yesterday", "provider": "gh", "spec": "a/b/HEAD"}) + "\n"
    text += "\n"  # blank lines are not events
    path = tmp_path / "launches.jsonl"
    path.write_text(text)

    trace = read_trace(path)
    assert trace.bad_lines == 5
    assert len(trace.launches) == 4
    assert [launch.time for launch in trace.launches] == [0.0, 5.0, 30.0, 40.0]
    assert trace.launches[0].repo_key == trace.launches[1].repo_key  # the same repository at two refs
    assert [launch.data_site for launch in trace.launches] == [None, None, "zenodo.org", "dataverse.harvard.edu"]

    result = simulate.simulate(trace, parse_members(DEFAULT_MEMBERS), "bounded-affinity")
    assert result.launches == 4 and result.trace["bad_lines"] == 5
    assert result.data_local_rate == 1.0

    assert binderfed(["simulate", "--trace", str(path)]) == 0
    assert "5 bad lines skipped" in capsys.readouterr().out


def test_empty_or_missing_trace_is_an_error(tmp_path, capsys):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("garbage\n")
    assert binderfed(["simulate", "--trace", str(empty)]) == 1
    assert binderfed(["simulate", "--trace", str(tmp_path / "missing.jsonl")]) == 2
    assert "missing.jsonl" in capsys.readouterr().err


def test_members_spec():
    members = parse_members(DEFAULT_MEMBERS)
    assert [(m.name, m.quota, m.weight, m.cache) for m in members] == [
        ("m1", 50, 50.0, 50), ("m2", 100, 100.0, 100), ("m3", 150, 150.0, 150),
        ("m4", 250, 250.0, 250), ("m5", 400, 400.0, 400),
    ]
    assert members[1].data_sites == ("zenodo.org",)
    custom = parse_members("10, big=200:weight=3:cache=7:sites=a.org+b.org", cache=5)
    assert [(m.name, m.quota, m.weight, m.cache, m.data_sites) for m in custom] == [
        ("m1", 10, 10.0, 5, ()), ("big", 200, 3.0, 7, ("a.org", "b.org")),
    ]
    for bad in ("", "x=abc", "a=0", "a=1:colour=red", "a=1,a=2"):
        with pytest.raises(ValueError):
            parse_members(bad)


def test_bad_arguments_are_reported(capsys):
    assert binderfed(["simulate", "--strategies", "nearest"]) == 2
    assert binderfed(["simulate", "--members", "a=x"]) == 2
    err = capsys.readouterr().err
    assert "unknown strategy nearest" in err and "--members" in err


def test_plot(tmp_path, capsys):
    target = tmp_path / "utilization.png"
    code = binderfed(["simulate", "--launches", "500", "--repos", "100", "--plot", str(target)])
    if importlib.util.find_spec("matplotlib") is None:
        assert code == 2
        assert "needs matplotlib" in capsys.readouterr().err
        assert not target.exists()
    else:
        assert code == 0 and target.stat().st_size > 0


def test_small_scenario_reports_time_to_ready(small_results):
    model = simulate.Model()
    for r in small_results.values():
        assert len(r.ready_times) == r.launches - r.refused - r.unplaced
        # Nothing is faster than the redirect plus a start from the node's cache, which
        # is what the median launch (a cache hit) takes.
        fastest = model.redirect_delay + model.start_time
        assert min(r.ready_times) == pytest.approx(fastest)
        assert r.ready_median == pytest.approx(fastest) and r.ready_median <= r.ready_p95
        figures = r.to_json()
        assert figures["time_to_ready_median"] == round(r.ready_median, 3)
        assert figures["time_to_ready_p95"] == round(r.ready_p95, 3)
    # Random pulls and builds far more often: its slowest launches are slower.
    assert small_results["random"].ready_p95 > small_results["bounded-affinity"].ready_p95


def test_time_to_ready_is_a_build_then_a_start_from_cache():
    key = "gh/org/repo"
    trace = simulate.Trace((simulate.TraceLaunch(0.0, key, None, 60.0), simulate.TraceLaunch(1000.0, key, None, 60.0)),
                           source="two launches")
    result = simulate.simulate(trace, parse_members("a=10"), "rendezvous", seed=1)
    model = simulate.Model()
    build = simulate.build_time(key, 1, model)
    assert sorted(result.ready_times) == [pytest.approx(model.redirect_delay + model.start_time),
                                          pytest.approx(model.redirect_delay + build + model.start_time)]
    assert result.ready_median == pytest.approx(model.redirect_delay + model.start_time)
    assert result.ready_p95 == pytest.approx(model.redirect_delay + build + model.start_time)
    assert simulate.percentile([], 50) is None


def test_low_load_scenario_keeps_every_launch_on_its_affinity_member(capsys):
    """At low load bounded-affinity places as rendezvous does: nothing is spilled, no cache hit lost."""
    assert binderfed(["simulate", "--scenario", "low-load", "--strategies", "rendezvous,bounded-affinity", "--json"]) == 0
    body = json.loads(capsys.readouterr().out)
    rendezvous, bounded = body["rendezvous"], body["bounded-affinity"]
    assert bounded["launches"] == rendezvous["launches"] == simulate.SCENARIOS["low-load"].launches
    assert bounded["peak_utilization"] < 0.5  # members far from full
    assert "spill" not in bounded["reasons"]
    assert bounded["cache_hit_rate"] >= rendezvous["cache_hit_rate"]
    assert bounded["refused"] == 0


def test_scenario_values_yield_to_flags(capsys):
    assert binderfed(["simulate", "--scenario", "low-load", "--launches", "300", "--strategies", "random"]) == 0
    out = capsys.readouterr().out
    assert "low-load scenario" in out and "300 launches" in out
    assert "ready p50" in out and "ready p95" in out
    with pytest.raises(SystemExit) as exit_:
        binderfed(["simulate", "--scenario", "busy"])
    assert exit_.value.code == 2 and "invalid choice: 'busy'" in capsys.readouterr().err
