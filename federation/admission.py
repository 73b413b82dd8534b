"""The one gate every member passes before it is routed to, whatever declared it.

A member's URL is where the router sends probes and relayed requests, and where it
redirects visitors; its weight steers a share of every launch. So each source's
members go through `admit` (the config file when it is loaded, Consul for each catalog
entry) and the admin API's weights through `check_weight`:

- **URL** (and `hub_url`): `http` or `https`, a host, no credentials (`user:pw@`, which
  would go out with every probe), no query or fragment.
- **Weight**: a finite number from 0 to `MAX_WEIGHT` (not NaN, not Infinity, not 1e9).
- **Where** (discovery only): the operator's config file is trusted for the addresses
  it names, loopback and private ones included (a member next to the router, the demo's
  dev members). A member from discovery (Consul) is admitted only on a host the
  operator listed in `consul.allowed_hosts`:

  | entry | admits |
  |---|---|
  | `hub.example.org` | that host name |
  | `*.example.org` | names under example.org (not example.org itself) |
  | `*` | any public host name or public address |
  | `203.0.113.7`, `10.0.0.0/8` | that address or network, private ones included |

  A private, loopback, link-local or otherwise non-public address (`127.0.0.1`,
  `10.x`, `169.254.169.254`, `::1`, ...) is admitted only when an address or network
  entry covers it, never by a name pattern; a single-label name (`redis`,
  `localhost`) only when listed exactly. A name that *resolves* to such an address is
  refused when the router connects (`hub.resolver.GuardedResolver`, fed by
  `may_resolve_private`), unless the operator named that host itself.
- **Prime**: only the config file names the prime member (the fallback of last
  resort); a registration asking for it is admitted without it.

The module is pure: it never resolves names (that happens at connect time).
"""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass, replace
from typing import Any, Iterable
from urllib.parse import SplitResult, urlsplit

from .members import Member

MAX_WEIGHT = 1000  # a share relative to the others: 1000 is already a thousand times a weight-1 member

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class AdmissionError(ValueError):
    """A member (or a weight) the federation does not take; `field` names what, the message why."""

    def __init__(self, field: str, why: str):
        super().__init__(why)
        self.field = field
        self.why = why


def check_weight(value: Any, field: str = "weight") -> float:
    """`value` as a weight (a finite number from 0 to MAX_WEIGHT); AdmissionError otherwise.

    Integers are compared as integers: `10**400` is refused, not turned into an overflow.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise AdmissionError(field, f"weight must be a number from 0 to {MAX_WEIGHT}, not {_short(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise AdmissionError(field, f"weight must be a finite number from 0 to {MAX_WEIGHT}, not {value!r}")
    if not 0 <= value <= MAX_WEIGHT:
        raise AdmissionError(field, f"weight must be a number from 0 to {MAX_WEIGHT}, not {_short(value)}")
    return float(value)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def non_public(address: Address) -> bool:
    """Whether an address is anything but a public internet address (private, loopback,
    link-local, shared, reserved, multicast, documentation, unspecified)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return not address.is_global or address.is_multicast


def ip_literal(host: str) -> Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def check_url(url: str, field: str = "url") -> SplitResult:
    """The parts of a member URL, if it is one the router may use; AdmissionError otherwise."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is no number or out of range
    except ValueError:
        raise AdmissionError(field, f"{_short(url)} is not a valid URL") from None
    if parts.scheme.lower() not in ("http", "https") or not url.lower().startswith(parts.scheme.lower() + "://"):
        raise AdmissionError(field, f"{_short(url)} is not an http:// or https:// URL")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise AdmissionError(field, "a member URL must not carry credentials (user:password@)")
    if not parts.hostname:
        raise AdmissionError(field, f"{_short(url)} has no host")
    if parts.query or parts.fragment or "?" in url or "#" in url:
        raise AdmissionError(field, "a member URL must not have a query or fragment")
    return parts


@dataclass(frozen=True)
class HostRule:
    """One `consul.allowed_hosts` entry."""

    entry: str
    name: str = ""                 # an exact host name (lower case)
    suffix: str = ""               # "*.example.org" -> ".example.org"
    any_public: bool = False       # "*"
    network: Network | None = None

    def admits(self, host: str, address: Address | None) -> bool:
        if address is not None:
            if self.network is not None:
                return address.version == self.network.version and address in self.network
            return self.any_public and not non_public(address)
        if self.name:
            return host == self.name
        if "." not in host:
            return False           # single-label names are internal: only an exact entry admits them
        if self.suffix:
            return host.endswith(self.suffix)
        return self.any_public

    @property
    def exact_name(self) -> bool:
        return bool(self.name)


def host_rules(entries: Iterable[str]) -> tuple[HostRule, ...]:
    """Parse `consul.allowed_hosts`; ValueError naming an entry that is none of the forms."""
    rules = []
    for entry in entries:
        text = entry.strip().lower()
        if text == "*":
            rules.append(HostRule(entry, any_public=True))
        elif text.startswith("*."):
            if not _hostname(text[2:]):
                raise ValueError(f"{entry!r} is not a host name pattern such as *.example.org")
            rules.append(HostRule(entry, suffix=text[1:]))
        elif ip_literal(text) is not None or "/" in text:
            try:
                rules.append(HostRule(entry, network=ipaddress.ip_network(text.strip("[]"), strict=False)))
            except ValueError:
                raise ValueError(f"{entry!r} is not an IP address or CIDR network") from None
        elif _hostname(text):
            rules.append(HostRule(entry, name=text.rstrip(".")))
        else:
            raise ValueError(f"{entry!r} is not a host name, *.domain, *, an IP address or a CIDR network")
    return tuple(rules)


def _hostname(text: str) -> bool:
    labels = text.rstrip(".").split(".")
    return bool(text) and all(
        0 < len(label) <= 63 and label.replace("-", "").isalnum() and label.isascii()
        and not label.startswith("-") and not label.endswith("-") for label in labels)


def check_host(parts: SplitResult, rules: Iterable[HostRule], field: str = "url") -> None:
    """AdmissionError unless a rule admits the URL's host (discovery's members)."""
    host = (parts.hostname or "").rstrip(".")
    address = ip_literal(host)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if any(rule.admits(host, address) for rule in rules):
        return
    if address is not None and non_public(address):
        raise AdmissionError(field, f"{host} is a private, loopback or link-local address: only an address or "
                                    "network entry of consul.allowed_hosts admits it")
    raise AdmissionError(field, f"host {host} is not in consul.allowed_hosts")


def admit(member: Member, rules: Iterable[HostRule] | None = None) -> Member:
    """`member` as the federation takes it, or AdmissionError naming the field and why.

    `rules` None: the member comes from the operator's config file (trusted for the
    addresses it names, may be prime). Otherwise it comes from discovery and must be on
    a host `rules` admit, and `prime` is dropped (a caller tells `member.prime` from the result's).
    """
    rules = tuple(rules) if rules is not None else None
    check_weight(member.weight)
    for field, url in (("url", member.url), ("hub_url", member.hub_url)):
        if field == "hub_url" and not url:
            continue
        parts = check_url(url, field)
        if rules is not None:
            check_host(parts, rules, field)
    if rules is not None and member.prime:
        return replace(member, prime=False)
    return member


def may_resolve_private(host: str, file_members: Iterable[Member], rules: Iterable[HostRule]) -> bool:
    """Whether the router may connect to `host` at a non-public address: the operator's
    file names it as a member (or hub) host, or an exact `consul.allowed_hosts` entry does."""
    host = host.lower().rstrip(".")
    for member in file_members:
        for url in (member.url, member.hub_url):
            if url and (urlsplit(url).hostname or "").rstrip(".") == host:
                return True
    return any(rule.exact_name and rule.name == host for rule in rules)
