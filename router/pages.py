"""Small HTML pages and in-band SSE answers the router gives itself.

Launch-page and status-page templates live with their handlers; these are the
answers to requests that cannot be routed.
"""

from __future__ import annotations

import html
import json
from typing import Any

from aiohttp import web

CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Headers": "cache-control",
}

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:40rem;margin:3rem auto;padding:0 1rem;line-height:1.5}}
code{{background:#f3f3f3;padding:0 .2em}}</style></head>
<body><h1>{title}</h1>{body}</body></html>
"""


def html_page(title: str, body_html: str, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        text=_PAGE.format(title=html.escape(title), body=body_html),
        status=status,
        content_type="text/html",
        headers={**CORS_HEADERS, **(headers or {})},
    )


def sse_event(data: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(data).encode() + b"\n\n"


def sse_failed(message: str, status_code: int, headers: dict[str, str] | None = None) -> web.Response:
    """A `failed` build event, as BinderHub reports errors to EventSource clients (HTTP 200)."""
    return web.Response(
        body=sse_event({"phase": "failed", "message": message, "status_code": status_code}),
        status=200,
        content_type="text/event-stream",
        headers={**CORS_HEADERS, "Cache-Control": "no-cache", **(headers or {})},
    )


def refuse(family: str, status: int, title: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    """Answer a launch the router cannot route: an HTML page, or an in-band event on /build/."""
    if family == "build":
        return sse_failed(message, status, headers)
    return html_page(title, f"<p>{html.escape(message)}</p>", status=status, headers=headers)
