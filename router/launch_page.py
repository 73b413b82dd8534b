"""The federation's own launch page (`router.forward` stream for `/v2/`).

In stream mode the visitor stays on the federation's domain until the server is
ready: `/v2/<provider>/<spec>?<query>` answers `static/launch.html`, whose script
(`static/launch.js`, served at `/static/launch.js`) follows the router's
`/build/<provider>/<spec>?<query>` stream and then sends the browser to the member's
server. Legacy `/repo/<org>/<repo>` links in stream mode get the same page, for the
`/v2/gh/<org>/<repo>/HEAD` launch they stand for (served in place rather than
redirected: the router redirects only to members).

The launch (already validated by `federation.spec.parse_launch`) is embedded as JSON
in a non-executable `<script type="application/json">` block with `<`, `>`, `&` and
the JavaScript line separators escaped, and as HTML-escaped text; a
Content-Security-Policy allows scripts from the router only.
"""

from __future__ import annotations

import hashlib
import html
import json
from dataclasses import dataclass
from importlib import resources
from string import Template

from aiohttp import web

from federation.spec import LaunchRequest


STATIC = resources.files("router") / "static"  # package data (pyproject.toml)
SCRIPT_ROUTE = "/static/launch.js"

# The page runs only our own script; it talks only to the router (its /build/ stream).
CSP = ("default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'unsafe-inline'; "
       "img-src 'self' data:; base-uri 'none'; form-action 'none'")

_JSON_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def script_json(value: object) -> str:
    """JSON that is safe inside an HTML `<script>` element."""
    text = json.dumps(value)
    for char, escaped in _JSON_ESCAPES.items():
        text = text.replace(char, escaped)
    return text


@dataclass(frozen=True)
class LaunchPage:
    """The page template and its script, read once when the app is built."""

    template: Template
    script: bytes
    script_etag: str

    @classmethod
    def load(cls) -> "LaunchPage":
        script = (STATIC / "launch.js").read_bytes()
        return cls(
            template=Template((STATIC / "launch.html").read_text(encoding="utf-8")),
            script=script,
            script_etag='"' + hashlib.sha256(script).hexdigest()[:32] + '"',
        )

    def render(self, launch: LaunchRequest) -> str:
        query = "?" + launch.query if launch.query else ""
        config = {
            "provider_spec": launch.provider_spec,
            "build_url": f"/build/{launch.provider_spec}{query}",
        }
        return self.template.substitute(spec=html.escape(launch.provider_spec), config=script_json(config))


PAGE = web.AppKey("binderfed_launch_page", LaunchPage)


def serve(request: web.Request, launch: LaunchRequest) -> web.Response:
    """The answer to a `/v2/` or `/repo/` launch in stream mode."""
    page = request.app[PAGE]
    return web.Response(
        text=page.render(launch),
        content_type="text/html",
        headers={"Content-Security-Policy": CSP, "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff",
                 "Referrer-Policy": "same-origin"},
    )


async def _script(request: web.Request) -> web.Response:
    page = request.app[PAGE]
    # Revalidated on every use (ETag): a new router version's script is used at once.
    headers = {"ETag": page.script_etag, "Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
    if page.script_etag in request.headers.get("If-None-Match", ""):
        return web.Response(status=304, headers=headers)
    return web.Response(body=page.script, content_type="text/javascript", charset="utf-8", headers=headers)


def setup(app: web.Application) -> None:
    app[PAGE] = LaunchPage.load()
    app.router.add_get(SCRIPT_ROUTE, _script)
