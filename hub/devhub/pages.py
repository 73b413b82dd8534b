"""The pages of a dev member: its "Jupyter servers", the launch page and BinderHub's other pages.

- `GET /user/<name>/...`: a "Jupyter server" page guarded by the launch token;
- `GET /v2/<provider>/<spec>`: a minimal launch page that follows the build stream
  and redirects to the server, as BinderHub's UI does, with a build token embedded
  as BinderHub embeds it (`hub.build_tokens`); without `Accept: text/html` the launch
  runs server-side and ends in a redirect (for `curl -L` and scripts);
- `/`, `/about`, `/static/devhub.css` (gzip-compressed when the client accepts it);
- `GET /_devhub/request`: the request as it arrived (what a proxy in front passed on).

`Pages` is mixed into `hub.devhub.member.DevHub`, whose state it reads.
"""

from __future__ import annotations

import hmac
import html
import json
import time

from aiohttp import web

from .. import build_tokens
from ..models import launch_urlpath
from .stream import ClientGone, CollectedStream


class Pages:
    async def _user_redirect(self, request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound(request.rel_url.with_path(request.rel_url.path + "/"))

    async def _user(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        server = self._servers.get(name)
        if server is None:
            return web.Response(status=404, text=f"404: no running server {name!r} on {self.settings.name}\n")
        query_token = request.query.get("token", "")
        token = query_token or request.cookies.get(f"devhub-{name}", "")
        auth = request.headers.get("Authorization", "")
        scheme, _, value = auth.partition(" ")
        if not token and scheme.lower() in ("token", "bearer"):
            token = value.strip()
        if not token or not hmac.compare_digest(token.encode(), server.token.encode()):
            return web.Response(status=403, text=f"403: a valid token is required for server {name!r}\n")
        server.last_activity = time.monotonic()
        title = f"Jupyter server {name} on {self.settings.name}"
        esc = html.escape
        body = (
            "<!doctype html>\n<html><head><meta charset='utf-8'>"
            f"<title>{esc(title)}</title></head><body>\n"
            f"<h1>{esc(title)}</h1>\n"
            f"<p>Development member (no real Jupyter server runs here).</p>\n"
            f"<p>Image: <code>{esc(server.image)}</code></p>\n"
            f"<p>Repository: <code>{esc(server.repo_url)}</code></p>\n"
            f"<p>Path: <code>{esc(request.rel_url.raw_path)}</code></p>\n"
            f"<p>Query: <code id='query'>{esc(request.rel_url.raw_query_string)}</code></p>\n"
            "</body></html>\n"
        )
        response = web.Response(text=body, content_type="text/html")
        if query_token:
            response.set_cookie(f"devhub-{name}", query_token, path=f"/user/{name}/", httponly=True)
        return response

    # -- pages ---------------------------------------------------------------------

    async def _index(self, request: web.Request) -> web.StreamResponse:
        name = html.escape(self.settings.name)
        body = (
            "<!doctype html>\n<html><head><meta charset='utf-8'>"
            f"<title>devhub {name}</title><link rel='stylesheet' href='/static/devhub.css'></head><body>\n"
            f"<h1>devhub {name}</h1>\n"
            "<p>A development member for binder-federation; it speaks the member BinderHub API "
            "but is not a BinderHub and runs nothing.</p>\n"
            "<ul><li><a href='/health'>/health</a></li><li><a href='/versions'>/versions</a></li>"
            "<li><a href='/about'>/about</a></li>"
            "<li><a href='/_devhub/state'>/_devhub/state</a></li></ul>\n</body></html>\n"
        )
        return web.Response(text=body, content_type="text/html")

    async def _about(self, request: web.Request) -> web.StreamResponse:
        name = html.escape(self.settings.name)
        body = (f"<!doctype html>\n<html><head><meta charset='utf-8'><title>About devhub {name}</title></head>"
                f"<body><h1>About devhub {name}</h1><p>BinderHub {html.escape(self.settings.version)} "
                "(development member)</p></body></html>\n")
        return web.Response(text=body, content_type="text/html")

    async def _stylesheet(self, request: web.Request) -> web.StreamResponse:
        # Large enough to be worth compressing, as BinderHub's bundled assets are.
        rules = "".join(f".devhub-{i} {{ margin: {i}px; }}\n" for i in range(400))
        response = web.Response(text="body { font-family: sans-serif; }\n" + rules, content_type="text/css",
                                headers={"Cache-Control": "max-age=3600", "ETag": '"devhub-css-1"'})
        response.enable_compression()  # gzip or deflate when the client's Accept-Encoding allows it
        return response

    async def _echo_request(self, request: web.Request) -> web.StreamResponse:
        target = request.query.get("redirect")
        if target:
            raise web.HTTPFound(target)
        response = web.json_response({
            "method": request.method,
            "path": request.rel_url.raw_path,
            "query": request.rel_url.raw_query_string,
            "headers": [[name, value] for name, value in request.headers.items()],
            "peer": request.remote,
        })
        response.set_cookie("devhub-seen", "1")
        return response

    async def _v2(self, request: web.Request) -> web.StreamResponse:
        provider_spec = request.rel_url.raw_path[len("/v2/") :]
        if "text/html" not in request.headers.get("Accept", ""):
            return await self._v2_without_javascript(request, provider_spec)
        build_url = "/build/" + provider_spec
        page_config = json.dumps({"baseUrl": "/"} if not self.settings.issue_build_tokens else {
            "baseUrl": "/", "buildToken": self.tokens.issue(provider_spec, build_tokens.token_origin(request.headers))
        }).replace("<", "\\u003c")

        def js(value: str) -> str:
            return json.dumps(value).replace("<", "\\u003c")

        title = html.escape(f"devhub {self.settings.name}: launching {provider_spec}")
        body = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title></head><body>
<h1>{title}</h1>
<p>Development member (not a real BinderHub).</p>
<pre id="log"></pre>
<script>
window.pageConfig = {page_config};
</script>
<script>
const params = new URLSearchParams(window.location.search);
const log = document.getElementById("log");
const buildUrl = new URL({js(build_url)}, window.location.href);
if (window.pageConfig.buildToken) buildUrl.searchParams.append("build_token", window.pageConfig.buildToken);
const source = new EventSource(buildUrl);
source.onmessage = (msg) => {{
  const ev = JSON.parse(msg.data);
  if (ev.message) log.textContent += ev.message;
  if (ev.phase === "ready") {{
    source.close();
    let target = ev.url;
    const urlpath = params.get("labpath") ? "doc/tree/" + encodeURI(params.get("labpath").replace(/\\/$/, ""))
      : (params.get("filepath") ? "tree/" + encodeURI(params.get("filepath").replace(/\\/$/, "")) : (params.get("urlpath") || ""));
    if (urlpath) target += urlpath.replace(/^\\//, "");
    window.location.href = target + (target.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(ev.token);
  }} else if (ev.phase === "failed") {{
    source.close();
  }}
}};
</script>
</body></html>
"""
        return web.Response(text=body, content_type="text/html")

    async def _v2_without_javascript(self, request: web.Request, provider_spec: str) -> web.StreamResponse:
        """Dev convenience for `curl -L` and scripts: launch server-side, then redirect
        to the server as the launch page's JavaScript would. A real BinderHub always
        serves its page; the dev member does this so the demo works without a browser."""
        provider, _, spec = provider_spec.partition("/")
        stream = CollectedStream(request)
        with self._tracked():
            try:
                await self._run_launch(request, stream, provider, spec)
            except ClientGone:
                return web.Response(status=499)
        final = stream.events[-1] if stream.events else {"phase": "failed", "message": "no events"}
        if final.get("phase") != "ready":
            return web.Response(status=503, text=f"launch failed: {final.get('message', '')}")
        target = str(final["url"])
        urlpath = launch_urlpath(request.rel_url.raw_query_string)
        target += urlpath.lstrip("/")
        sep = "&" if "?" in target else "?"
        raise web.HTTPFound(f"{target}{sep}token={final['token']}")
