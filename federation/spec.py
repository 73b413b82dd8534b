"""Parse Binder launch paths into `LaunchRequest`s.

Path forms (BinderHub's): `/v2/<provider>/<spec>`, `/build/<provider>/<spec>` and the
legacy `/repo/<org>/<repo>[/...]` (GitHub at `HEAD`). One trailing slash is tolerated.

The parser is pure and strict: anything a member BinderHub would not accept, or that
could steer a forwarded URL somewhere else (dot segments, `//`, schemes, control
characters, bad percent-encoding), is a `SpecError` whose message can be shown to the
visitor. The caller passes the *raw* path and query (aiohttp: `request.raw_path` without
its query, and `request.raw_query_string`), never their decoded forms.

This module checks the path as a whole (length, characters, segments, the query);
the provider's spec is then read by the provider registry (`hub.providers`), which
knows each provider's shapes, its repository key, ref and data site.

- `ref` is the unescaped ref; `spec` stays exactly as in the path (minus a trailing `/`).
- One repository, one key: `repo_key` is the same for every way of naming a
  repository (`hub.providers.git`), so per-repository budgets, the repository cap,
  affinity and the image-cache map see one repository, not several.
  `canonical_spec` is the launch written the canonical provider's way
  (`gh/org/repo/<ref>`, `gist/<user>/<id>/<ref>`, ...): bans are matched against it
  too (`router.limits.ban_for`), so a ban written for the provider's own form applies
  to every alias.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote

from hub import providers
from hub.providers import DATAVERSE_DOI_HOSTS, FIXED_DATA_SITES, PROVIDERS, SpecError
from hub.providers.base import BAD_DECODED, quote, unescape
from hub.providers.git import github_key, github_repo

__all__ = [
    "DATAVERSE_DOI_HOSTS", "FAMILIES", "FIXED_DATA_SITES", "MAX_PATH_LENGTH", "PROVIDERS",
    "LaunchRequest", "SpecError", "parse_launch",
]

MAX_PATH_LENGTH = 2048

FAMILIES = ("v2", "build", "repo")

# Raw characters allowed in a path (RFC 3986 pchar plus "/" and "%"); everything else
# must arrive percent-encoded. This also rules out non-ASCII, controls and "\".
_RAW_PATH_OK = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=:@/%]*")
_QUERY_BAD = re.compile(r"[^\x21-\x7e]|#")


@dataclass(frozen=True)
class LaunchRequest:
    """One launch, as the router understands it."""

    family: str            # "v2" | "build" | "repo"
    provider: str          # one of PROVIDERS
    spec: str              # provider spec as in the path (still URL-escaped)
    repo_key: str          # "<provider>/<normalized repository>", stable across refs
    ref: str               # unescaped ref; "" for providers without one
    data_site: str | None  # host of the data the launch needs, if known
    path: str              # the original raw path
    query: str             # the original raw query string, without "?"
    canonical_spec: str = ""  # "<provider>/<spec>" as the canonical provider writes it (module docstring)

    @property
    def target(self) -> str:
        """What gets appended to a member URL."""
        return self.path + ("?" + self.query if self.query else "")

    @property
    def provider_spec(self) -> str:
        return f"{self.provider}/{self.spec}"


def parse_launch(path: str, query: str = "") -> LaunchRequest:
    """Parse a raw launch path (and raw query) or raise SpecError."""
    segments = _split_path(path)
    _check_query(query)
    family = segments[0]
    if family not in FAMILIES:
        raise SpecError(
            f"unknown launch path {quote(family)}; expected /v2/, /build/ or /repo/"
        )
    if family == "repo":
        return _parse_legacy(segments[1:], path, query)
    if len(segments) < 2:
        raise SpecError(f"missing provider after /{family}/; expected one of {', '.join(PROVIDERS)}")
    provider = segments[1]
    reader = providers.get(provider)
    if reader is None:
        raise SpecError(
            f"unknown provider {quote(provider)}; expected one of {', '.join(PROVIDERS)}"
        )
    parts = segments[2:]
    if not parts:
        raise SpecError(f"missing {reader.name} spec after /{family}/{provider}/")
    read = reader.parse(parts)
    return LaunchRequest(
        family=family,
        provider=provider,
        spec="/".join(parts),
        repo_key=read.repo_key,
        ref=read.ref,
        data_site=read.data_site,
        path=path,
        query=query,
        canonical_spec=read.canonical_spec,
    )


# --- generic checks -------------------------------------------------------------------


def _split_path(path: str) -> list[str]:
    """Check the raw path as a whole and split it into validated raw segments."""
    if not isinstance(path, str):
        raise SpecError("launch path must be text")
    if len(path) > MAX_PATH_LENGTH:
        raise SpecError(f"launch path is too long ({len(path)} characters, at most {MAX_PATH_LENGTH})")
    if not path.startswith("/"):
        raise SpecError("launch path must start with '/'")
    if not _RAW_PATH_OK.fullmatch(path):
        raise SpecError(_raw_char_problem(path))
    body = path[1:]
    if not body:
        raise SpecError("launch path is empty; expected /v2/<provider>/<spec>")
    if body.endswith("/"):
        body = body[:-1]  # one trailing slash is tolerated, as BinderHub does
    segments = body.split("/")
    for segment in segments:
        _check_segment(segment)
    return segments


def _raw_char_problem(path: str) -> str:
    for char in path:
        if not _RAW_PATH_OK.fullmatch(char):
            if char == "\\":
                return "launch path must not contain a backslash"
            if ord(char) < 0x20 or ord(char) == 0x7F:
                return "launch path must not contain control characters"
            if ord(char) > 0x7F:
                return "launch path must not contain raw non-ASCII characters; percent-encode them"
            return f"launch path contains {char!r}, which must be percent-encoded"
    return "launch path contains an invalid character"  # pragma: no cover


def _check_segment(segment: str) -> None:
    """Reject segments that could change meaning once a server decodes them."""
    if not segment:
        raise SpecError("launch path has an empty segment ('//')")
    decoded = unescape(segment)
    if decoded in (".", ".."):
        raise SpecError("launch path must not contain '.' or '..' segments")
    if decoded.startswith("/"):
        raise SpecError("launch path segment must not decode to something starting with '/'")
    if "%" in decoded:
        # Defence in depth against servers that decode twice (%252e%252e -> ..).
        twice = unquote(decoded, errors="replace")
        if BAD_DECODED.search(twice) or _has_dot_part(twice):
            raise SpecError("launch path must not hide '.', '..' or control characters behind double percent-encoding")
    if _has_dot_part(decoded):
        raise SpecError("launch path must not contain '.' or '..' segments")


def _has_dot_part(decoded: str) -> bool:
    return "." in decoded and any(p in (".", "..") for p in decoded.split("/"))


def _check_query(query: str) -> None:
    # The query is forwarded verbatim; only refuse what could split a header or URL.
    if not isinstance(query, str):
        raise SpecError("query string must be text")
    if _QUERY_BAD.search(query):
        raise SpecError(
            "query string contains spaces, control or non-ASCII characters or '#'; percent-encode them"
        )


# --- the legacy path -------------------------------------------------------------------


def _parse_legacy(parts: list[str], path: str, query: str) -> LaunchRequest:
    if len(parts) < 2:
        raise SpecError("legacy launch path must be /repo/<org>/<repo>")
    org, repo = github_repo(parts[0], parts[1], "GitHub")
    return LaunchRequest(
        family="repo",
        provider="gh",
        spec=f"{parts[0]}/{parts[1]}/HEAD",  # the gh spec this legacy path stands for
        repo_key=github_key(org, repo),
        ref="HEAD",
        data_site=None,
        path=path,
        query=query,
        canonical_spec=f"{github_key(org, repo)}/HEAD",
    )
