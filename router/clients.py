"""Who the visitor is: the client address behind `router.trusted_proxies`.

One place decides it for everything that needs a visitor's address: the abuse limits
(`router.limits`), the headers the stream relay passes to a member, and the admin
API's audit log. `X-Forwarded-For` is believed only when the connecting peer is a
trusted proxy (an address or CIDR network in `router.trusted_proxies`); then the
visitor is the last address in the chain that is not itself a trusted proxy. Anyone
else can write any `X-Forwarded-For` they like, so for them it is ignored and the
peer is the visitor.

The chain is every `X-Forwarded-For` header line of the request, in order (a proxy
may append its own line rather than extend the last one, RFC 7230 section 3.2.2),
each comma-separated entry an address; `ip:port` and `[ipv6]:port` entries (some
proxies add the client's port) are the address alone, so one client cannot take one
budget per source port.

The trusted networks are parsed once per configuration (`RouterSettings.trusted_networks`),
never cached per request value.
"""

from __future__ import annotations

import ipaddress
import logging
from typing import Iterable, Sequence

from aiohttp import web

log = logging.getLogger("binderfed.router")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

UNKNOWN = "unknown"  # a request without a peer address (e.g. a UNIX socket)
MAX_HOPS = 64        # entries of a forwarded chain looked at (a proxy forwarding garbage)


def network(entry: str) -> Network:
    """One `router.trusted_proxies` entry (an address or a CIDR network); ValueError if it is neither."""
    return ipaddress.ip_network(entry.strip(), strict=False)


def trusted_networks(entries: Iterable[str]) -> tuple[Network, ...]:
    """The networks of `router.trusted_proxies`; entries that are neither address nor CIDR are skipped."""
    networks = []
    for entry in entries:
        try:
            networks.append(network(entry))
        except ValueError:
            log.warning("ignoring router.trusted_proxies entry %r: not an address or network", entry)
    return tuple(networks)


def _address(text: str) -> Address | None:
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    # An IPv4 client seen through an IPv6 socket (::ffff:a.b.c.d) is that IPv4 client.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def hop_address(entry: str) -> str:
    """One chain entry as an address: `203.0.113.9:5123` -> `203.0.113.9`, `[2001:db8::1]:443` ->
    `2001:db8::1`; anything that is not an address is returned stripped (and never trusted)."""
    text = entry.strip().strip('"')
    if text.startswith("["):
        inside, _, _ = text[1:].partition("]")
        return str(_address(inside) or text)
    if text.count(":") == 1:  # a.b.c.d:port (an IPv6 address has more colons)
        host, _, port = text.partition(":")
        if port.isdigit() and _address(host) is not None:
            return str(_address(host))
    address = _address(text)
    return str(address) if address is not None else text


def _trusted(address: str, networks: Sequence[Network]) -> bool:
    ip = _address(address)
    return ip is not None and any(ip.version == n.version and ip in n for n in networks)


def is_trusted_proxy(peer: str | None, networks: Sequence[Network]) -> bool:
    """Whether the connecting peer is one of `router.trusted_proxies`, whose forwarded headers are believed."""
    return bool(peer) and bool(networks) and _trusted(hop_address(peer), networks)  # type: ignore[arg-type]


def _lines(x_forwarded_for: str | Sequence[str] | None) -> list[str]:
    if not x_forwarded_for:
        return []
    lines = [x_forwarded_for] if isinstance(x_forwarded_for, str) else list(x_forwarded_for)
    hops = [hop_address(hop) for line in lines for hop in line.split(",") if hop.strip()]
    return hops[-MAX_HOPS:]


def forwarded_chain(peer: str | None, x_forwarded_for: str | Sequence[str] | None,
                    networks: Sequence[Network]) -> tuple[list[str], str]:
    """(the address chain to pass on, the visitor's address) for a request from `peer`.

    `x_forwarded_for`: the request's `X-Forwarded-For` header lines, in order (or one line).
    The chain the request arrived with is believed only when `peer` is a trusted proxy:
    then `peer` is appended to it. Otherwise the chain is just `peer`.
    """
    if not peer:
        return [], UNKNOWN
    peer = hop_address(peer)
    hops = _lines(x_forwarded_for)
    if hops and networks and _trusted(peer, networks):
        chain = hops + [peer]
        client = next((hop for hop in reversed(chain) if not _trusted(hop, networks)), chain[0])
        return chain, client
    return [peer], peer


def forwarded_headers(peer: str | None, x_forwarded_for: str | Sequence[str] | None,
                      networks: Sequence[Network]) -> dict[str, str]:
    """`X-Forwarded-For` and `X-Real-Ip` for a request relayed on a visitor's behalf."""
    chain, client = forwarded_chain(peer, x_forwarded_for, networks)
    if not chain:
        return {}
    return {"X-Forwarded-For": ", ".join(chain), "X-Real-Ip": client}


def forwarded_for(request: web.Request) -> list[str]:
    """Every `X-Forwarded-For` line of a request, in order."""
    return request.headers.getall("X-Forwarded-For", [])


def client_address(request: web.Request, networks: Sequence[Network]) -> str:
    """The visitor's address: the peer, or the client a trusted proxy forwarded ("unknown" without a peer)."""
    return forwarded_chain(request.remote, forwarded_for(request), networks)[1]


def is_https(request: web.Request, networks: Sequence[Network]) -> bool:
    """Whether the visitor reached the federation over https: the router's own scheme, or
    `X-Forwarded-Proto: https` from a trusted proxy (any line saying https: when in doubt,
    a cookie is marked Secure, which can only keep it off plain http)."""
    if request.secure:
        return True
    if not is_trusted_proxy(request.remote, networks):
        return False
    values = [v.strip().lower() for line in request.headers.getall("X-Forwarded-Proto", []) for v in line.split(",")]
    return "https" in values


def client_key(address: str) -> str:
    """The rate-limit key of a client address, in a canonical form.

    IPv6 clients are keyed by their /64 network: one host usually holds a whole /64,
    so per-address keys would let it take 2^64 budgets. Anything that is not an
    address (a proxy forwarding garbage) is keyed as it is, bounded in length.
    """
    ip = _address(hop_address(address))
    if ip is None:
        return address.strip()[:64] or UNKNOWN
    if ip.version == 6:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)
