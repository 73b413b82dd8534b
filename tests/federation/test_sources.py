"""Membership sources on their own: the YAML file and Consul's catalog (through the double)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import textwrap

import consul.aio
import pytest

from federation.config import ConsulSettings
from federation.member_cli import Registration, deregister_member, register_member
from federation.membership import Membership
from federation.sources.consul import ConsulSource, consul_client
from federation.sources.file import FileSource
from tests.support.cli import run_binderfed
from tests.support.consul_double import ConsulDouble
from tests.support.waiting import eventually


# The members registered here have made-up URLs: the double leaves checks in the state
# the test sets instead of running them.
pytestmark = pytest.mark.consul_double(run_checks=False)


def names(membership: Membership) -> list[str]:
    return [m.name for m in membership.members()]


def write_members(path, *members: tuple[str, str], extra: str = "") -> None:
    body = "members:\n" + "".join(f"  - name: {n}\n    url: {u}\n" for n, u in members)
    path.write_text(body + textwrap.dedent(extra))


@pytest.fixture
async def run_source():
    """Start a source; stopped at teardown."""
    started = []

    async def start(source):
        await source.start()
        started.append(source)
        return source

    yield start
    for source in reversed(started):
        await source.stop()


# -- the YAML file -------------------------------------------------------------------------


async def test_good_edit_replaces_the_config_members(tmp_path, run_source):
    path = tmp_path / "federation.yaml"
    write_members(path, ("alpha", "https://alpha.example.org"))
    membership, configs, results = Membership(), [], []
    await run_source(FileSource(path, membership, on_config=configs.append, on_result=results.append, poll_interval=0.05))
    assert names(membership) == ["alpha"]

    write_members(path, ("alpha", "https://alpha.example.org"), ("beta", "https://beta.example.org/binder/"),
                  extra="policy:\n  strategy: rendezvous\n")
    await eventually(lambda: names(membership) == ["alpha", "beta"], timeout=3, what="beta from the edited file")
    assert membership.get("beta").url == "https://beta.example.org/binder"
    assert membership.get("beta").source == "config"
    assert configs[-1].policy.strategy == "rendezvous"
    assert results == ["ok", "ok"]

    write_members(path, ("beta", "https://beta.example.org/binder/"))
    await eventually(lambda: names(membership) == ["beta"], timeout=3, what="alpha removed from the file")


async def test_an_edit_is_one_snapshot_of_members_and_settings_and_a_held_one_never_changes(tmp_path, run_source):
    path = tmp_path / "federation.yaml"
    write_members(path, ("alpha", "https://alpha.example.org"))
    membership = Membership()
    await run_source(FileSource(path, membership, poll_interval=0.05))
    held = membership.snapshot
    write_members(path, ("beta", "https://beta.example.org"), extra="policy:\n  strategy: rendezvous\n")
    await eventually(lambda: membership.snapshot.version > held.version, timeout=3, what="the edit in force")
    new = membership.snapshot
    assert ([m.name for m in new.members], new.config.policy.strategy) == (["beta"], "rendezvous")
    # What a request read before the edit stays whole: its members with its own settings.
    assert ([m.name for m in held.members], held.config.policy.strategy) == (["alpha"], "bounded-affinity")
    assert held.get("beta") is None and new.get("beta") is not None


async def test_consul_members_join_the_files_in_one_snapshot_with_the_files_settings(tmp_path, run_source):
    path = tmp_path / "federation.yaml"
    write_members(path, ("alpha", "https://alpha.example.org"), extra="policy:\n  strategy: rendezvous\n")
    membership = Membership()
    await run_source(FileSource(path, membership, poll_interval=30))
    from federation.members import Member

    membership.publish("consul", [Member(name="gamma", url="https://gamma.example.org"),
                                  Member(name="alpha", url="https://other.example.org")])
    snapshot = membership.snapshot
    assert [m.name for m in snapshot.members] == ["alpha", "gamma"]
    assert snapshot.get("alpha").url == "https://alpha.example.org"  # the file's declaration wins
    assert snapshot.config.policy.strategy == "rendezvous"  # a source without settings keeps the file's


async def test_bad_edit_keeps_the_last_good_config_and_names_file_and_key(tmp_path, run_source, caplog):
    caplog.set_level(logging.INFO, logger="binderfed.sources.file")
    path = tmp_path / "federation.yaml"
    write_members(path, ("alpha", "https://alpha.example.org"))
    membership, results = Membership(), []
    source = await run_source(FileSource(path, membership, on_result=results.append, poll_interval=0.05))

    write_members(path, ("alpha", "https://alpha.example.org"), ("beta", "beta.example.org"))
    await eventually(lambda: results[-1:] == ["error"], timeout=3, what="the bad edit to be rejected")
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert str(path) in errors[0].getMessage() and "members[1].url" in errors[0].getMessage()
    assert "keeping the last good config" in errors[0].getMessage()
    assert names(membership) == ["alpha"]
    # The same broken file is reported once, not on every poll.
    await asyncio.sleep(0.3)
    assert len([r for r in caplog.records if r.levelno == logging.ERROR]) == 1

    path.write_text("members:\n  - name: alpha\n    url: [unclosed\n")
    await eventually(lambda: len([r for r in caplog.records if r.levelno == logging.ERROR]) == 2, timeout=3,
                     what="the YAML syntax error to be logged")
    assert "not valid YAML" in caplog.records[-1].getMessage() and "line " in caplog.records[-1].getMessage()
    assert names(membership) == ["alpha"] and source.config.members[0].name == "alpha"

    write_members(path, ("alpha", "https://alpha.example.org"), ("gamma", "https://gamma.example.org"))
    await eventually(lambda: names(membership) == ["alpha", "gamma"], timeout=3, what="the fixed file to apply")
    assert results == ["ok", "error", "error", "ok"] and source.last_error == ""


async def test_unreadable_file_keeps_members_until_it_is_back(tmp_path, run_source, caplog):
    path = tmp_path / "federation.yaml"
    write_members(path, ("alpha", "https://alpha.example.org"))
    membership = Membership()
    await run_source(FileSource(path, membership, poll_interval=0.05))
    path.unlink()
    await eventually(lambda: any("cannot read file" in r.getMessage() for r in caplog.records), timeout=3,
                     what="the missing file to be reported")
    assert names(membership) == ["alpha"]
    write_members(path, ("beta", "https://beta.example.org"))
    await eventually(lambda: names(membership) == ["beta"], timeout=3, what="the restored file to apply")


async def test_sighup_reloads_at_once(tmp_path, run_source):
    path = tmp_path / "federation.yaml"
    write_members(path, ("alpha", "https://alpha.example.org"))
    membership, results = Membership(), []
    # A poll interval far longer than the test: only the signal can make it reload.
    await run_source(FileSource(path, membership, on_result=results.append, poll_interval=3600, sighup=True))
    write_members(path, ("beta", "https://beta.example.org"))
    await asyncio.sleep(0.1)
    assert names(membership) == ["alpha"]
    os.kill(os.getpid(), signal.SIGHUP)
    await eventually(lambda: names(membership) == ["beta"], timeout=3, what="the SIGHUP reload")
    # SIGHUP re-applies even an unchanged file (so a rotated admin token file is re-read).
    os.kill(os.getpid(), signal.SIGHUP)
    await eventually(lambda: results == ["ok", "ok", "ok"], timeout=3, what="a forced re-apply")


async def test_stop_ends_the_file_source_when_a_reload_arrives_with_it(tmp_path):
    """SIGHUP and shutdown together: the poll used to wait in Python 3.11's asyncio.wait_for,
    which returns the wake-up instead of raising when the cancel comes with it (CPython
    gh-86296), so the source went on polling and stop() never returned."""
    path = tmp_path / "federation.yaml"
    write_members(path, ("alpha", "https://alpha.example.org"))
    source = FileSource(path, Membership(), poll_interval=30)
    await source.start()
    await asyncio.sleep(0.05)           # the loop waits for its next poll
    source.reload_now()
    stopping = asyncio.ensure_future(source.stop())
    done, _ = await asyncio.wait({stopping}, timeout=5)
    assert done, "stop() did not return: the source is still polling"


# -- Consul --------------------------------------------------------------------------------


def consul_settings(double: ConsulDouble, **changes) -> ConsulSettings:
    # The made-up members below live under example.org, gesis.org and in 10.0.0.0/8.
    changes.setdefault("allowed_hosts", ("*.example.org", "*.gesis.org", "10.0.0.0/8"))
    return ConsulSettings(enabled=True, url=double.url, wait=changes.pop("wait", 5), **changes)


async def test_registered_member_maps_metadata_and_deregistered_leaves(consul_double, run_source):
    membership = Membership()
    source = await run_source(ConsulSource(consul_settings(consul_double), membership))
    await asyncio.wait_for(source.synced.wait(), 5)
    reg = Registration(name="gesis", url="https://notebooks.gesis.org/binder/", weight=2.5, region="eu-central",
                       data_sites=("zenodo.org", "s3:eu-central-1"), check=False)
    await register_member(consul_double.url, reg)
    member = await eventually(lambda: membership.get("gesis"), timeout=5, what="gesis from Consul")
    assert member.url == "https://notebooks.gesis.org/binder"
    assert (member.weight, member.region, member.prime, member.source) == (2.5, "eu-central", False, "consul")
    assert member.data_sites == ("zenodo.org", "s3:eu-central-1")
    # The source waits on Consul blocking queries, carrying the index it last saw.
    blocking = [q for method, p, q in consul_double.requests if p == "/v1/health/service/binder-federation" and "index" in q]
    assert blocking and blocking[-1]["wait"] == "5s"

    assert await deregister_member(consul_double.url, "gesis")
    await eventually(lambda: membership.get("gesis") is None, timeout=5, what="gesis to leave")
    assert not await deregister_member(consul_double.url, "gesis")


async def test_address_and_port_make_the_url_without_meta(consul_double, run_source):
    membership = Membership()
    await run_source(ConsulSource(consul_settings(consul_double), membership))
    consul_double.register({"Name": "binder-federation", "ID": "plain", "Address": "10.0.0.5", "Port": 8000})
    consul_double.register({"Name": "binder-federation", "ID": "secure", "Address": "hub.example.org", "Port": 443,
                            "Tags": ["https"], "Meta": {"prime": "false"}})
    await eventually(lambda: names(membership) == ["plain", "secure"], timeout=5, what="both services")
    assert membership.get("plain").url == "http://10.0.0.5:8000"
    assert membership.get("secure").url == "https://hub.example.org"


async def test_critical_consul_check_leaves_member_out(consul_double, run_source, caplog):
    caplog.set_level(logging.INFO, logger="binderfed.sources.consul")
    membership = Membership()
    await run_source(ConsulSource(consul_settings(consul_double), membership))
    await register_member(consul_double.url, Registration(name="gesis", url="https://gesis.example.org",
                                                          check_interval="1h"))
    # A new check starts critical, as in Consul: the member waits for it to pass.
    await eventually(lambda: any("no result yet" in r.getMessage() for r in caplog.records), timeout=5,
                     what="the pending check to be logged")
    assert membership.get("gesis") is None
    consul_double.set_check_status("service:gesis", "passing")
    await eventually(lambda: membership.get("gesis"), timeout=5, what="gesis once its check passes")
    consul_double.set_check_status("service:gesis", "warning")
    await asyncio.sleep(0.2)
    assert membership.get("gesis") is not None  # warning still counts as up
    consul_double.set_check_status("service:gesis", "critical", "HTTP GET https://gesis.example.org/health: 503")
    await eventually(lambda: membership.get("gesis") is None, timeout=5, what="gesis to leave on a critical check")
    assert any("503" in r.getMessage() and "gesis" in r.getMessage() for r in caplog.records)

    consul_double.set_check_status("service:gesis", "passing")
    await eventually(lambda: membership.get("gesis"), timeout=5, what="gesis back")
    # Consul maintenance mode (`consul maint`) is a critical check too: a member can drain itself.
    client = consul_client(consul_double.url)
    try:
        await client.agent.service.maintenance("gesis", "true", reason="upgrading the cluster")
        await eventually(lambda: membership.get("gesis") is None, timeout=5, what="gesis in maintenance to leave")
        await client.agent.service.maintenance("gesis", "false")
        await eventually(lambda: membership.get("gesis"), timeout=5, what="gesis out of maintenance")
    finally:
        await client.close()


async def test_critical_members_kept_when_configured(consul_double, run_source):
    membership = Membership()
    await run_source(ConsulSource(consul_settings(consul_double, exclude_critical=False), membership))
    await register_member(consul_double.url, Registration(name="gesis", url="https://gesis.example.org", check_interval="1h"))
    await eventually(lambda: membership.get("gesis"), timeout=5, what="gesis despite its critical check")


async def test_bad_metadata_is_left_out_with_a_log_line(consul_double, run_source, caplog):
    membership = Membership()
    await run_source(ConsulSource(consul_settings(consul_double), membership))
    consul_double.register({"Name": "binder-federation", "ID": "heavy", "Meta": {"url": "https://heavy.example.org",
                                                                                 "weight": "lots"}})
    consul_double.register({"Name": "binder-federation", "ID": "Bad_Name", "Meta": {"url": "https://x.example.org"}})
    consul_double.register({"Name": "binder-federation", "ID": "noscheme", "Meta": {"url": "ftp://x.example.org"}})
    consul_double.register({"Name": "binder-federation", "ID": "fine", "Meta": {"url": "https://fine.example.org"}})
    await eventually(lambda: names(membership) == ["fine"], timeout=5, what="only the valid service")
    await eventually(lambda: len([r for r in caplog.records if "left out" in r.getMessage()]) == 3, timeout=5,
                     what="three left-out entries logged")
    messages = " | ".join(r.getMessage() for r in caplog.records if "left out" in r.getMessage())
    assert "'heavy'" in messages and "Meta.weight: 'lots' is not a number" in messages
    assert "'Bad_Name'" in messages and "ServiceID" in messages
    assert "'noscheme'" in messages and "Meta.url" in messages


async def test_registrations_pass_the_admission_gate(consul_double, run_source, caplog):
    membership = Membership()
    settings = consul_settings(consul_double, allowed_hosts=("*.example.org", "10.0.0.0/8", "127.0.0.1"))
    await run_source(ConsulSource(settings, membership))
    register = consul_double.register
    for sid, meta in [
        ("fine", {"url": "https://fine.example.org"}),
        ("lan", {"url": "http://10.1.2.3:8000"}),                                  # listed network
        ("loop", {"url": "http://127.0.0.1:8000"}),                                # listed address
        ("chief", {"url": "https://chief.example.org", "prime": "true"}),          # admitted, not as prime
        ("offlist", {"url": "https://elsewhere.example.com"}),
        ("bare", {"url": "https://example.org"}),                                  # *.example.org is not example.org
        ("redis", {"url": "http://127.0.0.1:6379"}),                               # a port is part of no rule...
        ("metadata", {"url": "http://169.254.169.254/latest"}),
        ("v6loop", {"url": "http://[::1]:8000"}),
        ("creds", {"url": "https://user:secret@fine2.example.org"}),
        ("nan", {"url": "https://nan.example.org", "weight": "NaN"}),
        ("inf", {"url": "https://inf.example.org", "weight": "Infinity"}),
        ("huge", {"url": "https://huge.example.org", "weight": "1e9"}),
        ("hubout", {"url": "https://hubout.example.org", "hub_url": "http://192.168.1.1"}),
    ]:
        register({"Name": "binder-federation", "ID": sid, "Meta": meta})
    register({"Name": "binder-federation", "ID": "tagged", "Address": "tagged.example.org", "Port": 443,
              "Tags": ["https", "prime"]})
    await eventually(lambda: names(membership) == ["chief", "fine", "lan", "loop", "redis", "tagged"], timeout=5,
                     what="the admitted registrations")
    # (the loopback address 127.0.0.1 is listed exactly, so every port of it is admitted)
    assert not any(m.prime for m in membership.members())
    await eventually(lambda: len([r for r in caplog.records if "left out" in r.getMessage()]) == 9, timeout=5,
                     what="nine left-out entries logged")
    why = {r.getMessage().split("'")[1]: r.getMessage() for r in caplog.records if "Consul service" in r.getMessage()}
    assert "host elsewhere.example.com is not in consul.allowed_hosts" in why["offlist"]
    assert "host example.org is not in consul.allowed_hosts" in why["bare"]
    assert "169.254.169.254 is a private, loopback or link-local address" in why["metadata"]
    assert "::1 is a private, loopback or link-local address" in why["v6loop"]
    assert "must not carry credentials" in why["creds"]
    assert "finite" in why["nan"] and "finite" in why["inf"] and "from 0 to 1000" in why["huge"]
    assert "Meta.hub_url: 192.168.1.1 is a private" in why["hubout"]
    assert "Meta.prime ignored" in why["chief"] and "Meta.prime ignored" in why["tagged"]
    assert "secret" not in " ".join(why.values())


async def test_an_empty_allowlist_admits_no_registration(consul_double, run_source, caplog):
    membership = Membership()
    source = await run_source(ConsulSource(consul_settings(consul_double, allowed_hosts=()), membership))
    consul_double.register({"Name": "binder-federation", "ID": "fine", "Meta": {"url": "https://fine.example.org"}})
    await eventually(lambda: any("'fine'" in r.getMessage() and "not in consul.allowed_hosts" in r.getMessage()
                                 for r in caplog.records), timeout=5, what="fine to be left out")
    assert membership.members() == () and source.members == ()
    assert any("consul.allowed_hosts is empty" in r.getMessage() for r in caplog.records)


async def test_unreachable_consul_keeps_members_and_retries_with_backoff(consul_double, run_source, caplog):
    membership = Membership()
    source = await run_source(ConsulSource(consul_settings(consul_double), membership, retry_initial=0.2))
    await register_member(consul_double.url, Registration(name="gesis", url="https://gesis.example.org", check=False))
    await eventually(lambda: membership.get("gesis"), timeout=5, what="gesis")

    await consul_double.stop()
    await eventually(lambda: source.failures >= 3, timeout=10, what="three failed attempts")
    assert names(membership) == ["gesis"]
    retries = [r.retry_in for r in caplog.records if hasattr(r, "retry_in")]
    assert len(retries) >= 3 and retries[0] < retries[1] < retries[2], retries
    assert "keeping 1 last known members" in caplog.records[-1].getMessage()

    await consul_double.start()
    await register_member(consul_double.url, Registration(name="ifisc", url="https://ifisc.example.org", check=False))
    await eventually(lambda: names(membership) == ["gesis", "ifisc"], timeout=10, what="resync after Consul is back")
    assert source.failures == 0 and source.reachable


async def test_acl_token_is_sent(run_source, caplog):
    double = ConsulDouble(acl_token="s3cret", run_checks=False)
    await double.start()
    try:
        reg = Registration(name="gesis", url="https://gesis.example.org", check=False)
        with pytest.raises(consul.ACLPermissionDenied):
            await register_member(double.url, reg)
        await register_member(double.url, reg, token="s3cret")
        wrong = Membership()
        source = await run_source(ConsulSource(consul_settings(double), wrong, token="nope", retry_initial=0.2))
        await eventually(lambda: source.failures >= 1, timeout=5, what="a refused query")
        assert "permission denied" in caplog.records[-1].getMessage()
        right = Membership()
        await run_source(ConsulSource(consul_settings(double), right, token="s3cret"))
        await eventually(lambda: right.get("gesis"), timeout=5, what="gesis read with the token")
        assert wrong.get("gesis") is None
    finally:
        await double.stop()


async def test_blocking_query_is_held_until_the_index_changes(consul_double):
    """The double answers py-consul's blocking queries as Consul does."""
    client = consul_client(consul_double.url)
    try:
        index, entries = await client.health.service("binder-federation")
        assert entries == []
        waiter = asyncio.create_task(client.health.service("binder-federation", index=index, wait="10s"))
        await asyncio.sleep(0.2)
        assert not waiter.done()
        consul_double.register({"Name": "binder-federation", "ID": "gesis", "Meta": {"url": "https://g.example.org"}})
        new_index, entries = await asyncio.wait_for(waiter, 5)
        assert int(new_index) > int(index) and [e["Service"]["ID"] for e in entries] == ["gesis"]
        # Nothing changes: the query returns when `wait` runs out, with the same index.
        same, _ = await asyncio.wait_for(client.health.service("binder-federation", index=new_index, wait="200ms"), 5)
        assert same == new_index
        # KV, for agents that report through Consul.
        assert await client.kv.put("binderfed/reports/gesis", '{"pods": 3}')
        _, entry = await client.kv.get("binderfed/reports/gesis")
        assert entry["Value"] == b'{"pods": 3}'
    finally:
        await client.close()


# -- binderfed member (the real command line) ---------------------------------------------


async def test_member_cli_register_list_deregister(consul_double):
    done = await run_binderfed(
        "member", "register", "--consul", consul_double.url, "--name", "gesis",
        "--url", "https://notebooks.gesis.org/binder", "--weight", "2", "--region", "eu",
        "--data-site", "zenodo.org", "--data-site", "s3:eu-central-1", "--check-interval", "30s",
        "--hub-url", "https://jupyter.gesis.org/",
    )
    assert done.returncode == 0, done.stderr
    assert "registered gesis" in done.stdout
    service = consul_double.service("gesis")
    assert service["Service"] == "binder-federation"
    assert service["Meta"] == {"url": "https://notebooks.gesis.org/binder", "weight": "2", "region": "eu",
                               "data_sites": "zenodo.org,s3:eu-central-1", "hub_url": "https://jupyter.gesis.org"}
    assert (service["Address"], service["Port"]) == ("notebooks.gesis.org", 443)
    [check] = consul_double.checks("gesis")
    assert check["Type"] == "http" and check["Interval"] == "30s"

    consul_double.set_check_status("service:gesis", "passing")
    listed = await run_binderfed("member", "list", "--consul", consul_double.url)
    assert listed.returncode == 0 and listed.stdout.startswith("gesis\thttps://notebooks.gesis.org/binder\t")

    gone = await run_binderfed("member", "deregister", "--consul", consul_double.url, "--name", "gesis")
    assert gone.returncode == 0 and consul_double.service("gesis") is None
    again = await run_binderfed("member", "deregister", "--consul", consul_double.url, "--name", "gesis")
    assert again.returncode == 1 and "no service with ID 'gesis'" in again.stderr


async def test_member_cli_refuses_bad_input_and_unreachable_consul(consul_double):
    bad = await run_binderfed("member", "register", "--consul", consul_double.url, "--name", "GESIS!",
                              "--url", "https://gesis.example.org")
    assert bad.returncode == 2 and "--name: 'GESIS!' is not valid" in bad.stderr
    bad_url = await run_binderfed("member", "register", "--consul", consul_double.url, "--name", "gesis",
                                  "--url", "gesis.example.org")
    assert bad_url.returncode == 2 and "--url" in bad_url.stderr
    assert consul_double.service_ids() == []
    await consul_double.stop()
    down = await run_binderfed("member", "register", "--consul", consul_double.url, "--name", "gesis",
                               "--url", "https://gesis.example.org")
    assert down.returncode == 1 and f"cannot reach Consul at {consul_double.url}" in down.stderr
