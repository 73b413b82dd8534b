"""A development member: a small server speaking the member BinderHub API.

`DevHub` stands in for a real BinderHub (which needs Kubernetes) in `binderfed demo`,
the tests and the benchmarks. It is a development tool and says so on its pages; it
builds and runs nothing. What it does reproduce is the wire behaviour the router
relies on (DESIGN.md, "Member BinderHub API"):

- `GET /health` in BinderHub's shape, with the soft `Pod quota` check (omitted when
  `report_quota` is False, like a BinderHub not on Kubernetes), 503 on a hard failure;
- `GET /versions`;
- `GET /build/<provider>/<spec>`: a `text/event-stream` of `waiting`, `fetching`,
  `building`..., `pushing`, `built`, `launching`..., `ready` events (an image cache
  makes the second launch of a repo@ref skip the build), `:keepalive` comments, and
  BinderHub's in-band failures (`failed` with `status_code` 400 without the Accept
  header, "Too many users on this BinderHub! Try again soon." when full, "Error during
  build: ..." for repositories matching a failing pattern);
- `GET /user/<name>/...`: a "Jupyter server" page guarded by the launch token; idle
  servers are culled after `idle_cull_seconds`;
- `GET /v2/<provider>/<spec>`: a minimal launch page that follows the build stream
  and redirects to the server, as BinderHub's UI does, with a build token embedded
  as BinderHub embeds it (`hub.build_tokens`) and passed to `/build/`;
- BinderHub's per-visitor rate limit on `/build/` (`rate_limit` launches per
  `rate_limit_period`, off by default): the visitor is `X-Real-Ip`, else the last
  `X-Forwarded-For` address, else the peer (tornado's `xheaders`, as BinderHub runs);
  a valid `build_token` skips it, an invalid one is refused with BinderHub's in-band
  403 "Invalid build token", and a visitor over the limit gets its in-band 429
  "Rate limit exceeded. Try again in <period> seconds.";
- BinderHub's other pages, for a router that serves the prime's pages
  (`router.landing: proxy`): `/` linking a stylesheet `/static/devhub.css` (gzip-
  compressed when the client accepts it), `/about`.

Pods are counted like BinderHub's health check does: one build pod while a build
runs, one user pod from the start of `launching` until the server is culled.

Failure injection (`DevHubFaults`) can be changed at runtime with
`POST /_devhub/faults` (JSON object of fields to change), read with
`GET /_devhub/faults`, set in code with `DevHub.faults = ...` / `set_faults(...)`.
`POST /_devhub/reset` restores the faults the hub was created with and forgets all
servers and cached images. `GET /_devhub/state` shows pods, servers, images and the
last `/build/` requests (with the client addresses they carried). `GET
/_devhub/request` answers the request it got (method, path, query, headers) as JSON
with a `Set-Cookie`, or with `?redirect=<url>` a 302 there: what a proxy in front
passed on. These endpoints are unauthenticated: bind a dev member to loopback only.

The rooms: `settings.py` (`DevHubSettings`), `faults.py` (`DevHubFaults`), `repos.py`
(what a provider would resolve a spec to, on the provider registry), `stream.py`
(writing one event stream), `api.py` (`/health`, `/versions`, `/build/`), `pages.py`
(servers, launch page, other pages), `member.py` (`DevHub`: state, lifecycle, routes,
the `/_devhub/` endpoints), `cli.py` (`binderfed devhub`).
"""

from __future__ import annotations

from .api import TOO_MANY_USERS
from .cli import add_arguments, main, run, settings_from_args
from .faults import STALL_PHASES, DevHubFaults
from .member import DevHub
from .repos import RepoSpec, UnknownProvider, describe_spec, image_name
from .settings import DevHubSettings

__all__ = [
    "STALL_PHASES",
    "TOO_MANY_USERS",
    "DevHub",
    "DevHubFaults",
    "DevHubSettings",
    "RepoSpec",
    "UnknownProvider",
    "add_arguments",
    "describe_spec",
    "image_name",
    "main",
    "run",
    "settings_from_args",
]
