"""Convert the existing mybinder.org redirector's JSON config into ours.

The redirector's format: `{"check": {period, jitter, retries, timeout},
"load_balancer": "rendezvous"|"random", "pod_headroom": n, "host_cookie_age_hours": h,
"hosts": {name: {url, weight, prime, health, versions} | null}}`.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

from .config import ConfigError


def convert(data: Any, source: str = "<redirector config>") -> tuple[dict[str, Any], list[str]]:
    """Return (our config as a plain dict, warnings for what could not be carried over)."""
    if not isinstance(data, Mapping):
        raise ConfigError(source, "(top level)", "expected a JSON object")
    hosts = data.get("hosts")
    if not isinstance(hosts, Mapping) or not hosts:
        raise ConfigError(source, "hosts", "expected an object of member hosts")
    warnings: list[str] = []
    members = []
    for name, host in hosts.items():
        if host is None:  # helm cannot delete keys, so the redirector skips null hosts; so do we
            continue
        if not isinstance(host, Mapping) or not isinstance(host.get("url"), str):
            raise ConfigError(source, f"hosts.{name}.url", "expected the member's base URL")
        url = host["url"].rstrip("/")
        safe = re.sub(r"[^a-z0-9-]+", "-", str(name).lower()).strip("-") or "member"
        if safe != name:
            warnings.append(f"host {name!r} renamed to {safe!r} (member names are lower-case letters, digits and '-')")
        for key, suffix in (("health", "/health"), ("versions", "/versions")):
            if host.get(key) and host[key].rstrip("/") != url + suffix:
                warnings.append(
                    f"hosts.{name}.{key} is {host[key]!r}; the router always probes {url + suffix!r}"
                )
        member: dict[str, Any] = {"name": safe, "url": url, "weight": host.get("weight", 1)}
        if host.get("prime"):
            member["prime"] = True
        members.append(member)
    out: dict[str, Any] = {"members": members}
    check = data.get("check") or {}
    health: dict[str, Any] = {}
    for key in ("period", "jitter", "timeout"):
        if key in check:
            health[key] = check[key]
    if "retries" in check:
        # The redirector counts attempts; we count extra attempts after the first.
        health["retries"] = max(0, int(check["retries"]) - 1)
    if "period" in check:
        health["failed_period"] = 30 * check["period"]  # the redirector re-checks failed hosts 30x slower
    health["versions_policy"] = "prime"  # the redirector compares every host's /versions to the prime's
    out["health"] = health
    policy: dict[str, Any] = {}
    if "load_balancer" in data:
        policy["strategy"] = data["load_balancer"]
    if "pod_headroom" in data:
        policy["pod_headroom"] = data["pod_headroom"]
    out["policy"] = policy
    if "host_cookie_age_hours" in data:
        out["router"] = {"cookie_max_age_hours": data["host_cookie_age_hours"]}
    known = {"hosts", "check", "load_balancer", "pod_headroom", "host_cookie_age_hours"}
    for key in sorted(set(data) - known):
        warnings.append(f"key {key!r} has no equivalent and was dropped")
    return out, warnings
