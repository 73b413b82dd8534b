"""Launch badges served by the router itself, so README badges never depend on one member.

`/badge.svg` and `/badge_logo.svg` are the badge URLs Binder READMEs use;
`/assets/images/badge.svg` is where the mybinder.org redirector served the plain one.
The files are read once at start-up; each answer carries a strong ETag (a hash of
the file) and a day-long public cache lifetime, and `If-None-Match` gets a 304.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable

from aiohttp import web

# Package data (pyproject.toml), read through importlib.resources so an installed wheel serves them.
STATIC = resources.files("router") / "static"

# Badges change only with a release; a day keeps CDNs and GitHub's image proxy warm
# while still letting a new drawing reach everyone within a day.
CACHE_CONTROL = "public, max-age=86400"

# route -> file under static/
BADGES = {
    "/badge.svg": "badge.svg",
    "/badge_logo.svg": "badge_logo.svg",
    "/assets/images/badge.svg": "badge.svg",
}


@dataclass(frozen=True)
class StaticFile:
    body: bytes
    etag: str               # quoted, as sent in the ETag header
    content_type: str

    @classmethod
    def load(cls, path: Traversable, content_type: str) -> "StaticFile":
        body = path.read_bytes()
        return cls(body=body, etag='"' + hashlib.sha256(body).hexdigest()[:32] + '"', content_type=content_type)


def _matches(if_none_match: str, etag: str) -> bool:
    """RFC 9110 weak comparison of an If-None-Match list against our ETag."""
    if if_none_match.strip() == "*":
        return True
    return any(tag.strip().removeprefix("W/") == etag for tag in if_none_match.split(","))


def handler(file: StaticFile):
    async def serve(request: web.Request) -> web.Response:
        headers = {"ETag": file.etag, "Cache-Control": CACHE_CONTROL, "X-Content-Type-Options": "nosniff"}
        if _matches(request.headers.get("If-None-Match", ""), file.etag):
            return web.Response(status=304, headers=headers)
        return web.Response(body=file.body, content_type=file.content_type, headers=headers)

    return serve


def setup(app: web.Application) -> None:
    files: dict[str, StaticFile] = {}
    for route, name in BADGES.items():
        if name not in files:
            files[name] = StaticFile.load(STATIC / name, "image/svg+xml")
        app.router.add_get(route, handler(files[name]))
