"""Name resolution for calls to members: names may not lead to private addresses unless allowed.

A member's URL can name a host whose DNS answer is a private, loopback or link-local
address (`internal.example.org -> 10.0.0.7`, a rebinding name that answers
`169.254.169.254`): the router would then probe or relay into its own network. The
check belongs where the address is known, when the connection is made, so the
router's session resolves through `GuardedResolver`: addresses that are not public
are dropped from an answer unless `may_resolve_private(host)` says the operator named
that host (`federation.admission.may_resolve_private`). A name left with no address
fails like a name that does not resolve. IP literals never reach a resolver; those
are checked when a member is admitted.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Callable

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver


def public_address(text: str) -> bool:
    """Whether `text` is a public internet address (not private, loopback, link-local, shared, reserved...)."""
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


class GuardedResolver(AbstractResolver):
    """Resolve names, keeping only public addresses for hosts not allowed to be private."""

    def __init__(self, may_resolve_private: Callable[[str], bool], inner: AbstractResolver | None = None) -> None:
        self.may_resolve_private = may_resolve_private
        self.inner = inner or DefaultResolver()

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        answers = await self.inner.resolve(host, port, family)
        if self.may_resolve_private(host):
            return answers
        public = [answer for answer in answers if public_address(answer["host"])]
        if not public:
            raise OSError(f"{host} resolves only to private, loopback or link-local addresses, which the federation "
                          "reaches only for hosts its operators named")
        return public

    async def close(self) -> None:
        await self.inner.close()
