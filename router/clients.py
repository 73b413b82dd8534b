"""Who the visitor is: the client address behind `router.trusted_proxies`.

One place decides it for everything that needs a visitor's address: the abuse limits
(`router.limits`), the headers the stream relay passes to a member, and the admin
API's audit log. `X-Forwarded-For` is believed only when the connecting peer is a
trusted proxy (an address or CIDR network in `router.trusted_proxies`); then the
visitor is the last address in the chain that is not itself a trusted proxy. Anyone
else can write any `X-Forwarded-For` they like, so for them it is ignored and the
peer is the visitor.
"""

from __future__ import annotations

import ipaddress
import logging
from functools import lru_cache

from aiohttp import web

log = logging.getLogger("binderfed.router")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

UNKNOWN = "unknown"  # a request without a peer address (e.g. a UNIX socket)


@lru_cache(maxsize=16)
def trusted_networks(trusted: tuple[str, ...]) -> tuple[Network, ...]:
    """The networks of `router.trusted_proxies`; entries that are neither address nor CIDR are skipped."""
    networks = []
    for entry in trusted:
        try:
            networks.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError:
            log.warning("ignoring router.trusted_proxies entry %r: not an address or network", entry)
    return tuple(networks)


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    # An IPv4 client seen through an IPv6 socket (::ffff:a.b.c.d) is that IPv4 client.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _trusted(address: str, networks: tuple[Network, ...]) -> bool:
    ip = _address(address)
    return ip is not None and any(ip.version == n.version and ip in n for n in networks)


def is_trusted_proxy(peer: str | None, trusted: tuple[str, ...]) -> bool:
    """Whether the connecting peer is one of `router.trusted_proxies`, whose forwarded headers are believed."""
    return bool(peer) and _trusted(peer, trusted_networks(trusted))  # type: ignore[arg-type]


def forwarded_chain(peer: str | None, x_forwarded_for: str | None, trusted: tuple[str, ...]) -> tuple[list[str], str]:
    """(the address chain to pass on, the visitor's address) for a request from `peer`.

    The chain the request arrived with is believed only when `peer` is a trusted proxy:
    then `peer` is appended to it. Otherwise the chain is just `peer`.
    """
    if not peer:
        return [], UNKNOWN
    networks = trusted_networks(trusted)
    if x_forwarded_for and networks and _trusted(peer, networks):
        chain = [hop.strip() for hop in x_forwarded_for.split(",") if hop.strip()] + [peer]
        client = next((hop for hop in reversed(chain) if not _trusted(hop, networks)), chain[0])
        return chain, client
    return [peer], peer


def forwarded_headers(peer: str | None, x_forwarded_for: str | None, trusted: tuple[str, ...]) -> dict[str, str]:
    """`X-Forwarded-For` and `X-Real-Ip` for a request relayed on a visitor's behalf."""
    chain, client = forwarded_chain(peer, x_forwarded_for, trusted)
    if not chain:
        return {}
    return {"X-Forwarded-For": ", ".join(chain), "X-Real-Ip": client}


def client_address(request: web.Request, trusted: tuple[str, ...]) -> str:
    """The visitor's address: the peer, or the client a trusted proxy forwarded ("unknown" without a peer)."""
    return forwarded_chain(request.remote, request.headers.get("X-Forwarded-For"), trusted)[1]


def client_key(address: str) -> str:
    """The rate-limit key of a client address, in a canonical form.

    IPv6 clients are keyed by their /64 network: one host usually holds a whole /64,
    so per-address keys would let it take 2^64 budgets. Anything that is not an
    address (a proxy forwarding garbage) is keyed as it is, bounded in length.
    """
    ip = _address(address)
    if ip is None:
        return address.strip()[:64] or UNKNOWN
    if ip.version == 6:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)
