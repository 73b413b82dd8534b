"""The federation's own launch page (`router.forward` stream for `/v2/`).

In stream mode the visitor stays on the federation's domain until the server is
ready: `/v2/<provider>/<spec>?<query>` answers `static/launch.html`, whose script
(`static/launch.js`, served at `/static/launch.js`) follows the router's
`/build/<provider>/<spec>?<query>` stream and then sends the browser to the member's
server. Legacy `/repo/<org>/<repo>` links in stream mode get the same page, for the
`/v2/gh/<org>/<repo>/HEAD` launch they stand for (served in place rather than
redirected: the router redirects only to members).

Build tokens, as BinderHub's own `/v2/` page has them (`hub.build_tokens`): when
`/build/` is relayed too, the page's `/build/` URL carries a build token of the
router's own (`build_token=`, signed with `router.stream.build_token`'s secret, for
this spec and the origin the page was asked from). A relayed `/build/` with a valid
one is a visitor's launch from the page, so the relay fetches the chosen member's own
token from that member's `/v2/` page and passes it on (`page_launch`): the member's
per-visitor rate limit then does not apply, exactly as on the member's own page. An
API client calling `/build/` itself has no token and stays under the member's rate
limit, as it would calling the member.

The launch (already validated by `federation.spec.parse_launch`) is embedded as JSON
in a non-executable `<script type="application/json">` block with `<`, `>`, `&` and
the JavaScript line separators escaped, and as HTML-escaped text; a
Content-Security-Policy allows scripts from the router only.
"""

from __future__ import annotations

import hashlib
import html
import json
import logging
import secrets
from dataclasses import dataclass
from importlib import resources
from string import Template
from urllib.parse import quote, unquote

from aiohttp import web

from federation.config import BuildTokenSettings, FederationConfig
from federation.secrets import SecretError, read_secret
from federation.spec import LaunchRequest
from hub.build_tokens import BuildTokens, token_origin

log = logging.getLogger("binderfed.router")
TOKEN_PARAM = "build_token"


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

    def render(self, launch: LaunchRequest, token: str | None = None) -> str:
        query = launch.query
        if token:
            query += ("&" if query else "") + f"{TOKEN_PARAM}={quote(token, safe='')}"
        config = {
            "provider_spec": launch.provider_spec,
            "build_url": f"/build/{launch.provider_spec}" + ("?" + query if query else ""),
        }
        return self.template.substitute(spec=html.escape(launch.provider_spec), config=script_json(config))


PAGE = web.AppKey("binderfed_launch_page", LaunchPage)
TOKENS = web.AppKey("binderfed_build_tokens", BuildTokens)


def build_tokens(settings: BuildTokenSettings, config: FederationConfig) -> BuildTokens:
    """The router's build tokens, with the configured secret, or a random one per process."""
    try:
        secret = read_secret(settings.secret_env, settings.secret_file)
    except SecretError as exc:
        log.error("build token secret %s; using a random one for this process", exc)
        secret = None
    if secret:
        return BuildTokens(secret=secret.value.encode(), expires=settings.expires)
    if config.store_url.startswith(("redis://", "rediss://", "redis+sentinel://")):
        # Replicas share a store: a token one signs, the next must accept.
        log.warning("no build token secret (router.stream.build_token: $%s or secret_file): each replica signs "
                    "with its own random one, so a launch page and its /build/ stream served by two replicas "
                    "lose the members' rate-limit exemption", settings.secret_env)
    return BuildTokens(secret=secrets.token_bytes(32), expires=settings.expires)


def page_launch(request: web.Request, launch: LaunchRequest) -> tuple[bool, str]:
    """(whether this `/build/` comes from the router's own launch page, its query without the
    router's token). A token that is not valid (expired, another spec or origin, another
    secret) counts as none: the launch goes on, under the member's rate limit."""
    parts = launch.query.split("&") if launch.query else []
    ours = [p for p in parts if p.partition("=")[0] == TOKEN_PARAM]
    if not ours:
        return False, launch.query
    query = "&".join(p for p in parts if p.partition("=")[0] != TOKEN_PARAM)
    tokens = request.app[TOKENS]
    origin = token_origin(request.headers)
    problems = [tokens.check(unquote(p.partition("=")[2]), launch.provider_spec, origin) for p in ours]
    if None in problems:
        return True, query
    log.info("launch %s: build token of the launch page not accepted (%s); relayed without one",
             launch.provider_spec, problems[0], extra={"repo_key": launch.repo_key})
    return False, query


def serve(request: web.Request, launch: LaunchRequest, config: FederationConfig) -> web.Response:
    """The answer to a `/v2/` or `/repo/` launch in stream mode."""
    page = request.app[PAGE]
    token = None
    if config.router.forward_for("build") == "stream":  # a redirected /build/ would carry it to a member
        token = request.app[TOKENS].issue(launch.provider_spec, token_origin(request.headers))
    return web.Response(
        text=page.render(launch, token),
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


def setup(app: web.Application, config: FederationConfig) -> None:
    app[PAGE] = LaunchPage.load()
    app[TOKENS] = build_tokens(config.router.stream.build_token, config)
    app.router.add_get(SCRIPT_ROUTE, _script)
