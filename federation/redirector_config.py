"""Convert the mybinder.org federation-redirect's JSON config into ours (`binderfed import-config`).

The redirector (jupyterhub/mybinder.org-deploy, `images/federation-redirect/app.py`)
reads `/etc/federation-redirect/config.json`, which its Helm chart renders as
`toJson` of the `federationRedirect` values: the redirector's own keys

    {"check": {period, jitter, retries, timeout, failed_period},
     "load_balancer": "rendezvous" | "random", "pod_headroom": n,
     "host_cookie_age_hours": h,
     "hosts": {name: {url, weight, prime, health, versions} | null}}

plus the chart's deployment keys (`enabled`, `host`, `image`, `resources`,
`nodeSelector`). Every key is either carried over with the redirector's meaning or
named in a warning; nothing is dropped silently. What the redirector does with a key
it is not given (its built-in `CONFIG`) is carried over too, so the router behaves as
the redirector did, not as the router's own defaults would.

Facts of the redirector this relies on (app.py):

- `get_config` replaces top-level keys and fills missing `check` keys from `CONFIG`;
- hosts that are null, or whose weight is missing or 0, are removed;
- a host is checked `retries` times in all (ours: `retries` more after the first),
  failed hosts again after `failed_period` seconds;
- every host's `/versions` must equal the prime's (`health.versions_policy: prime`);
- a member is out of rotation when `total_pods + pod_headroom >= quota` (ours too);
- an unknown `load_balancer` means `random`;
- every path that is not `/build/`, a badge, `/active_hosts` or `/metrics` is
  proxied to the prime host (`router.landing: proxy`);
- it has no rate limits or repository caps (so `limits.enabled: false`).
"""

from __future__ import annotations

import re
from typing import Any, Mapping

from .config import ConfigError

# The redirector's built-in CONFIG (app.py at jupyterhub/mybinder.org-deploy 95860dbc),
# used for every key its config file does not set. tests/fixtures/redirector/ holds it as data.
REDIRECTOR_DEFAULTS: dict[str, Any] = {
    "check": {"period": 10, "jitter": 0.1, "retries": 5, "timeout": 2, "failed_period": 300},
    "load_balancer": "rendezvous",
    "pod_headroom": 10,
    "host_cookie_age_hours": 4,
}

CHECK_KEYS = ("period", "jitter", "retries", "timeout", "failed_period")
HOST_KEYS = ("url", "weight", "prime", "health", "versions")
STRATEGIES = ("rendezvous", "random")

# Keys the mybinder.org chart puts in the same JSON document (toJson of its values):
# they configure the redirector's Deployment, not routing.
CHART_KEYS = {
    "enabled": "set by whether you install the router's chart",
    "host": "the router chart's ingress.host",
    "image": "the router chart's image",
    "resources": "the router chart's resources",
    "nodeSelector": "the router chart's nodeSelector",
}


def _number(value: Any, key: str, source: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(source, key, f"expected a number, got {value!r}")
    return value


def convert(data: Any, source: str = "<redirector config>") -> tuple[dict[str, Any], list[str]]:
    """Return (our config as a plain dict, warnings for what is not carried over as it was)."""
    if not isinstance(data, Mapping):
        raise ConfigError(source, "(top level)", "expected a JSON object")
    warnings: list[str] = []
    members, prime = _members(data.get("hosts"), source, warnings)
    out: dict[str, Any] = {"members": members}
    out["health"] = _health(data.get("check", REDIRECTOR_DEFAULTS["check"]), source, warnings)

    strategy = data.get("load_balancer", REDIRECTOR_DEFAULTS["load_balancer"])
    if strategy not in STRATEGIES:
        warnings.append(f"load_balancer {strategy!r} is not one the redirector knows; it falls back to "
                        "'random', and so does this config")
        strategy = "random"
    headroom = data.get("pod_headroom", REDIRECTOR_DEFAULTS["pod_headroom"])
    if isinstance(headroom, bool) or not isinstance(headroom, int) or headroom < 0:
        raise ConfigError(source, "pod_headroom", f"expected a whole number of pods, got {headroom!r}")
    out["policy"] = {"strategy": strategy, "pod_headroom": headroom}

    hours = _number(data.get("host_cookie_age_hours", REDIRECTOR_DEFAULTS["host_cookie_age_hours"]),
                    "host_cookie_age_hours", source)
    router: dict[str, Any] = {"cookie_max_age_hours": hours}
    if prime:
        router["landing"] = "proxy"  # the redirector serves the prime's pages for every non-launch path
    else:
        warnings.append("no host is prime: the redirector refuses to start without one; the router serves "
                        "its own landing page instead of proxying the prime's")
    out["router"] = router
    # The redirector never refused a launch: no rate limits, no repository cap.
    out["limits"] = {"enabled": False}

    for key in sorted(set(data) - {"hosts", "check", "load_balancer", "pod_headroom", "host_cookie_age_hours"}):
        if key in CHART_KEYS:
            warnings.append(f"{key!r} is a deployment setting of the mybinder.org chart, not of routing: "
                            f"{CHART_KEYS[key]}")
        elif key == "versions":
            warnings.append("'versions' is the redirector's runtime state (the prime's /versions); "
                            "the router reads it from the prime itself")
        else:
            warnings.append(f"key {key!r} is not one of the redirector's and was not imported")
    return out, warnings


def _members(hosts: Any, source: str, warnings: list[str]) -> tuple[list[dict[str, Any]], bool]:
    if not isinstance(hosts, Mapping) or not hosts:
        raise ConfigError(source, "hosts", "expected an object of member hosts")
    members: list[dict[str, Any]] = []
    names: dict[str, str] = {}
    prime = False
    for name, host in hosts.items():
        if host is None:  # helm cannot delete a key, so a host is removed by setting it to null
            warnings.append(f"hosts.{name} is null: skipped, as the redirector removes null hosts")
            continue
        if not isinstance(host, Mapping) or not isinstance(host.get("url"), str):
            raise ConfigError(source, f"hosts.{name}.url", "expected the member's base URL")
        weight = host.get("weight", 0)
        _number(weight, f"hosts.{name}.weight", source)
        if weight == 0:
            # app.py removes hosts whose weight is missing or 0 ("Removing host ... with 0 weight").
            warnings.append(f"hosts.{name} has {'no weight' if 'weight' not in host else 'weight 0'}: "
                            "skipped, as the redirector removes it (give it a weight to import it)")
            continue
        url = host["url"].rstrip("/")
        safe = re.sub(r"[^a-z0-9-]+", "-", str(name).lower()).strip("-") or "member"
        if safe != name:
            warnings.append(f"host {name!r} renamed to {safe!r} (member names are lower-case letters, digits and '-'; "
                            "the metrics' member label changes with it)")
        if safe in names:
            raise ConfigError(source, f"hosts.{name}", f"becomes member {safe!r}, as hosts.{names[safe]} does")
        names[safe] = str(name)
        for key, suffix in (("health", "/health"), ("versions", "/versions")):
            given = host.get(key)
            if given is not None and (not isinstance(given, str) or given.rstrip("/") != url + suffix):
                warnings.append(f"hosts.{name}.{key} is {given!r}; the router always probes {url + suffix!r}")
        for key in sorted(set(host) - set(HOST_KEYS)):
            warnings.append(f"hosts.{name}.{key} is not one of the redirector's host keys and was not imported")
        member: dict[str, Any] = {"name": safe, "url": url, "weight": weight}
        if host.get("prime"):
            member["prime"] = True
            prime = True
        members.append(member)
    if not members:
        raise ConfigError(source, "hosts", "no host is left to import (every host is null or has weight 0)")
    return members, prime


def _health(check: Any, source: str, warnings: list[str]) -> dict[str, Any]:
    if not isinstance(check, Mapping):
        raise ConfigError(source, "check", "expected an object (period, jitter, retries, timeout, failed_period)")
    # As get_config does: the keys given, the redirector's defaults for the others.
    values = {**REDIRECTOR_DEFAULTS["check"], **{k: v for k, v in check.items() if k in CHECK_KEYS}}
    for key in CHECK_KEYS:
        _number(values[key], f"check.{key}", source)
    for key in sorted(set(check) - set(CHECK_KEYS)):
        warnings.append(f"check.{key} is not one of the redirector's check keys "
                        f"({', '.join(CHECK_KEYS)}) and was not imported")
    retries = values["retries"]
    if retries < 1:
        warnings.append(f"check.retries is {retries}: the redirector then never checks a host and keeps it in "
                        "rotation; the router checks once")
    return {
        "period": values["period"],
        "jitter": values["jitter"],
        "timeout": values["timeout"],
        # The redirector counts attempts; we count extra attempts after the first.
        "retries": max(0, int(retries) - 1),
        "failed_period": values["failed_period"],
        "versions_policy": "prime",  # every host's /versions must equal the prime's
    }
