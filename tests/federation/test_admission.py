"""The admission gate every member passes (federation.admission), and the config file's use of it."""

from __future__ import annotations

import math
import textwrap

import pytest

from federation import config as config_mod
from federation.admission import MAX_WEIGHT, AdmissionError, admit, check_weight, host_rules, may_resolve_private
from federation.members import Member


@pytest.mark.parametrize("value", [0, 1, 2.5, MAX_WEIGHT, float(MAX_WEIGHT)])
def test_weights_from_zero_to_the_maximum_are_taken(value):
    assert check_weight(value) == float(value)


@pytest.mark.parametrize("value", [-1, -0.5, MAX_WEIGHT + 1, 1e9, 10**400, -(10**400), math.nan, math.inf, -math.inf,
                                   True, "2", None, [1]])
def test_other_weights_are_refused_without_an_overflow(value):
    with pytest.raises(AdmissionError) as info:
        check_weight(value)
    assert info.value.field == "weight" and "weight must be a" in info.value.why and len(info.value.why) < 120


def m(url: str, **fields) -> Member:
    return Member(name="m", url=url, **fields)


def test_urls_without_credentials_query_or_other_schemes():
    for url, problem in [("https://user:pw@hub.example.org", "credentials"), ("https://user@hub.example.org", "credentials"),
                         ("ftp://hub.example.org", "http:// or https://"), ("javascript:alert(1)", "http:// or https://"),
                         ("https://hub.example.org/?x=1", "query or fragment"), ("https://hub.example.org/#x", "query"),
                         ("https://", "no host"), ("https://hub.example.org:99999", "not a valid URL")]:
        with pytest.raises(AdmissionError, match=problem):
            admit(m(url))
    with pytest.raises(AdmissionError) as info:
        admit(m("https://hub.example.org", hub_url="https://a:b@hub2.example.org"))
    assert info.value.field == "hub_url"


def test_the_config_file_is_trusted_for_the_addresses_it_names():
    for url in ("http://127.0.0.1:8080", "http://10.0.0.5", "http://[::1]:80", "http://binderhub.binder.svc.cluster.local",
                "http://localhost:8000"):
        assert admit(m(url)) == m(url)
    assert admit(m("https://hub.example.org", prime=True)).prime          # the file may name the prime member


def test_discovery_is_admitted_only_on_allowed_hosts():
    rules = host_rules(["hub.example.org", "*.mybinder.org", "10.0.0.0/8", "192.0.2.7", "localhost"])
    admitted = ["https://hub.example.org", "https://gke.mybinder.org/", "https://hub.gke.mybinder.org",
                "http://10.3.2.1:8000", "http://192.0.2.7", "http://localhost:8000", "https://HUB.example.org."]
    for url in admitted:
        assert admit(m(url), rules).url == url, url
    refused = {
        "https://mybinder.org": "not in consul.allowed_hosts",            # *.mybinder.org is names under it
        "https://evil.example.org": "not in consul.allowed_hosts",
        "http://11.0.0.1": "not in consul.allowed_hosts",                 # a public address, not listed
        "http://127.0.0.1": "private, loopback or link-local",
        "http://169.254.169.254": "private, loopback or link-local",
        "http://[::ffff:10.0.0.1]": None,                                 # the IPv4 client behind a mapped address
        "http://[fe80::1]": "private, loopback or link-local",
        "http://192.0.2.8": "private, loopback or link-local",            # documentation range: not public
        "http://100.64.0.1": "private, loopback or link-local",           # shared address space
        "http://redis:6379": "not in consul.allowed_hosts",               # single-label: only listed exactly
    }
    for url, problem in refused.items():
        if problem is None:
            assert admit(m(url), rules).url == url                        # ::ffff:10.0.0.1 is 10.0.0.1, listed
            continue
        with pytest.raises(AdmissionError, match=problem):
            admit(m(url), rules)
    assert admit(m("https://hub.example.org", prime=True), rules).prime is False


def test_a_wildcard_admits_public_hosts_only():
    rules = host_rules(["*"])
    for url in ("https://anything.example.net", "http://8.8.8.8", "http://[2001:4860::8888]"):
        assert admit(m(url), rules)
    for url in ("http://127.0.0.1", "http://10.0.0.1", "http://[::1]", "http://metadata", "http://0.0.0.0"):
        with pytest.raises(AdmissionError):
            admit(m(url), rules)


def test_allowlist_entries_are_checked():
    for entry in ("*.", "exa mple.org", "10.0.0.0/33", "*.-x.org", "http://x.org"):
        with pytest.raises(ValueError):
            host_rules([entry])


def test_names_that_may_resolve_to_private_addresses():
    file_members = [Member(name="a", url="http://binderhub.internal:8080", hub_url="https://hub.corp.example"),
                    Member(name="b", url="http://10.0.0.5")]
    rules = host_rules(["*.example.org", "exact.example.net"])
    assert may_resolve_private("binderhub.internal", file_members, rules)
    assert may_resolve_private("HUB.corp.example.", file_members, rules)
    assert may_resolve_private("exact.example.net", file_members, rules)      # listed exactly
    assert not may_resolve_private("any.example.org", file_members, rules)    # a pattern never lets a name go private
    assert not may_resolve_private("localhost", file_members, rules)


def load(tmp_path, text: str):
    path = tmp_path / "federation.yaml"
    path.write_text(textwrap.dedent(text))
    return config_mod.load(path)


@pytest.mark.parametrize("fields, key, problem", [
    (["url: https://user:pw@hub.example.org"], "members[0].url", "credentials"),
    (["url: https://hub.example.org", "weight: .nan"], "members[0].weight", "finite"),
    (["url: https://hub.example.org", "weight: .inf"], "members[0].weight", "1000"),
    (["url: https://hub.example.org", "weight: 1000000000"], "members[0].weight", "1000"),
    (["url: https://hub.example.org", "hub_url: https://a@b.example.org"], "members[0].hub_url", "credentials"),
])
def test_the_config_file_refuses_what_the_gate_refuses(tmp_path, fields, key, problem):
    with pytest.raises(config_mod.ConfigError) as info:
        load(tmp_path, "members:\n  - name: m\n" + "".join(f"    {field}\n" for field in fields))
    assert info.value.key == key and problem in info.value.problem


def test_allowlist_and_trusted_proxies_entries_are_validated_at_load(tmp_path):
    config = load(tmp_path, """
        consul:
          allowed_hosts: ["*.mybinder.org", "10.0.0.0/8"]
        members:
          - name: local
            url: http://127.0.0.1:8080
            hub_url: http://127.0.0.1:8081
        """)
    assert config.consul.allowed_hosts == ("*.mybinder.org", "10.0.0.0/8")
    assert config.members[0].hub_url == "http://127.0.0.1:8081"
    with pytest.raises(config_mod.ConfigError) as info:
        load(tmp_path, "consul:\n  allowed_hosts: ['ok.example.org', 'not a host']\n")
    assert info.value.key == "consul.allowed_hosts[1]"
    with pytest.raises(config_mod.ConfigError) as info:
        load(tmp_path, "router:\n  trusted_proxies: ['10.0.0.0/8', 'proxy.example.org']\n")
    assert info.value.key == "router.trusted_proxies[1]" and "CIDR" in info.value.problem


def test_members_serve_only_their_own_origins():
    member = Member(name="m", url="https://2i2c.mybinder.org", hub_url="")
    assert member.serves("https://2i2c.mybinder.org/user/x/")
    assert member.serves("https://hub.2i2c.mybinder.org/user/x/")          # BinderHub's hub.<host> convention
    for url in ("https://evil.example/user/x/", "http://2i2c.mybinder.org/user/x/", "https://2i2c.mybinder.org:444/",
                "javascript:alert(1)", "https://x@2i2c.mybinder.org/", "https://mybinder.org/", "//2i2c.mybinder.org/",
                "https://evil2i2c.mybinder.org/", "data:text/html,hi", "", "https://[::1/"):
        assert not member.serves(url), url
    elsewhere = Member(name="e", url="https://binder.uni.example", hub_url="https://jupyter.uni.example")
    assert elsewhere.serves("https://jupyter.uni.example/user/x/")
    local = Member(name="l", url="http://127.0.0.1:8080")
    assert local.serves("http://127.0.0.1:8080/user/x/") and not local.serves("http://x.127.0.0.1:8080/user/x/")
