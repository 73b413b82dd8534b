"""The sticky cookie on a launch's request and response (the value itself: router.sticky).

Read and written by both ways a launch is answered, the redirect (router.launch) and
the relayed stream (router.relay).
"""

from __future__ import annotations

import functools

from aiohttp import hdrs, web

from federation.config import FederationConfig
from federation.spec import LaunchRequest

from .clients import is_https
from .context import RouterContext


def sticky_member(ctx: RouterContext, config: FederationConfig, request: web.Request,
                  launch: LaunchRequest) -> str | None:
    """The member the visitor's sticky cookie names for this repository, if the router signed it."""
    if hdrs.COOKIE not in request.headers:  # most launches: no cookie to parse
        return None
    return ctx.sticky.member(request.cookies.get(config.router.sticky_cookie), launch.repo_key)


@functools.lru_cache(maxsize=8)
def _attributes(name: str, max_age: int, secure: bool) -> str:
    """What follows the value in a sticky cookie's Set-Cookie, exactly as aiohttp's
    `set_cookie` writes it; made once per setting instead of a Morsel per launch."""
    response = web.StreamResponse()
    response.set_cookie(name, "v", max_age=max_age, path="/", httponly=True, samesite="Lax", secure=secure)
    return response.cookies[name].OutputString().partition(";")[2]


def set_sticky_cookie(ctx: RouterContext, config: FederationConfig, request: web.Request,
                      response: web.StreamResponse, member: str, launch: LaunchRequest) -> None:
    """Remember where this launch went, for the visitor's next launch of the repository (router.sticky).

    The path is fixed (`/`): a launch path is the visitor's text, and `;` in it would add
    cookie attributes of their choosing. `Secure` whenever the visitor came over https.
    """
    router = config.router
    max_age = int(router.cookie_max_age_hours * 3600)
    if max_age > 0:
        # The signed value is [a-z0-9-] . base64url: nothing in it needs quoting.
        attributes = _attributes(router.sticky_cookie, max_age, is_https(request, router.trusted_networks))
        response.headers.add(hdrs.SET_COOKIE,
                             f"{router.sticky_cookie}={ctx.sticky.sign(member, launch.repo_key)};{attributes}")
