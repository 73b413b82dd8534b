"""BinderHub's build tokens: how its launch page gets past the per-visitor rate limit.

What BinderHub does (binderhub/main.py, base.py, builder.py; the page's script in
binderhub-client): its `/v2/<provider>/<spec>` page embeds a JWT in its page config
(`window.pageConfig = {..., "buildToken": "<jwt>"}`), signed HS256 with the hub's
`build_token_secret`, with claims

    {"exp": now + build_token_expires_seconds (300), "aud": "<provider>/<spec>",
     "origin": <the request's Origin header without scheme, or else its Host header>}

The page's script opens `/build/<provider>/<spec>?build_token=<jwt>`. `/build/`
checks the token (signature, expiry, audience = the spec in the path) and that its
origin equals the origin of the `/build/` request, computed the same way; a valid
token skips the per-IP rate limit, a token that is present but invalid is refused
with an in-band `failed` event, status 403, "Invalid build token". So a token is tied
to the hub that issued it (its secret) and the host it was issued to.

The dev member issues and checks tokens exactly so; the router's stream relay fetches
one from the chosen member's page (`token_from_page`) and passes it on, and signs its
own for its own launch page the same way. PyJWT does the JWT work, as in BinderHub.
"""

from __future__ import annotations

import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Mapping
from urllib.parse import urlsplit

import jwt

ALGORITHM = "HS256"
DEFAULT_EXPIRES = 300  # BinderHub's build_token_expires_seconds
INVALID = "Invalid build token"

# The token in a BinderHub page: `"buildToken": "<jwt>"` in the page config (Jinja's
# tojson, so the value is a plain JSON string); a JWT is base64url text and dots.
_PAGE_TOKEN = re.compile(r'"buildToken"\s*:\s*"([A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+)"')


def token_origin(headers: Mapping[str, str]) -> str:
    """The origin a token is tied to: the Origin header's host[:port], or else the Host header."""
    origin = headers.get("Origin")
    if origin is not None:
        return urlsplit(origin).netloc
    return headers.get("Host", "")


def token_from_page(page: str) -> str | None:
    """The build token a BinderHub `/v2/` page embeds, if it embeds one."""
    match = _PAGE_TOKEN.search(page)
    return match.group(1) if match else None


@dataclass(frozen=True)
class BuildTokens:
    """Issues and checks build tokens with one secret, as one BinderHub does."""

    secret: bytes = field(default_factory=lambda: secrets.token_bytes(32), repr=False)
    expires: float = DEFAULT_EXPIRES
    check_origin: bool = True

    def issue(self, provider_spec: str, origin: str, now: float | None = None) -> str:
        now = time.time() if now is None else now
        claims = {"exp": int(now + self.expires), "aud": provider_spec, "origin": origin}
        return jwt.encode(claims, self.secret, algorithm=ALGORITHM)

    def check(self, token: str, provider_spec: str, origin: str) -> str | None:
        """None if `token` is valid for this spec and origin, else why not (for a log line)."""
        try:
            claims = jwt.decode(token, self.secret, algorithms=[ALGORITHM], audience=provider_spec,
                                options={"require": ["exp", "aud"]})
        except jwt.PyJWTError as exc:
            return f"{type(exc).__name__}: {exc}"
        if self.check_origin and claims.get("origin") != origin:
            return f"issued to origin {claims.get('origin')!r}, used from {origin!r}"
        return None
