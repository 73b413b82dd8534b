"""Parse Binder launch paths into `LaunchRequest`s.

Path forms (BinderHub's): `/v2/<provider>/<spec>`, `/build/<provider>/<spec>` and the
legacy `/repo/<org>/<repo>[/...]` (GitHub at `HEAD`). One trailing slash is tolerated.

The parser is pure and strict: anything a member BinderHub would not accept, or that
could steer a forwarded URL somewhere else (dot segments, `//`, schemes, control
characters, bad percent-encoding), is a `SpecError` whose message can be shown to the
visitor. The caller passes the *raw* path and query (aiohttp: `request.raw_path` without
its query, and `request.raw_query_string`), never their decoded forms.

Decisions worth knowing:

- `ref` is the unescaped ref; `spec` stays exactly as in the path (minus a trailing `/`).
- gist: BinderHub accepts `<user>/<id>` without a ref and resolves it to the latest
  revision, so a missing gist ref is accepted and reported as `HEAD`.
- git and gl: as in BinderHub, the *first* spec segment is the url-escaped repository
  URL / namespace and everything after it is the ref (so refs may contain `/`).
- Refs may not contain whitespace, `:`, `?`, `#`, `*`, `[` or `\\` (none is valid in a
  git ref name, and `:` is how a scheme would be smuggled in).
- dataverse: the data site comes from `DATAVERSE_DOI_HOSTS` (DOI prefix -> host) or,
  for a URL spec, from the URL's host; otherwise it is unknown (None).

One repository, one key: `repo_key` is the same for every way of naming a repository,
so per-repository budgets, the repository cap, affinity and the image-cache map see
one repository, not several. GitHub names are case-insensitive and a `.git` suffix
changes nothing; a `git` launch of a GitHub, gist or GitLab URL is keyed as the `gh`,
`gist` or `gl` launch of the same repository (`git/https://github.com/Org/Repo.git`
-> `gh/org/repo`); a gist is keyed by its id alone (ids are unique on GitHub, and
`gist.github.com/<id>` clones the same gist as `gist.github.com/<user>/<id>`);
GitLab paths are case-insensitive. `canonical_spec` is the launch written the
canonical provider's way (`gh/org/repo/<ref>`, `gist/<user>/<id>/<ref>`, ...): bans
are matched against it too (`router.limits.ban_for`), so a ban written for the
provider's own form applies to every alias.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable
from urllib.parse import SplitResult, unquote, unquote_to_bytes, urlsplit

MAX_PATH_LENGTH = 2048

PROVIDERS = ("gh", "gist", "gl", "git", "zenodo", "figshare", "hydroshare", "dataverse", "ckan")
FAMILIES = ("v2", "build", "repo")

# Data sites of the providers whose data lives in one place.
FIXED_DATA_SITES = {
    "zenodo": "zenodo.org",
    "figshare": "figshare.com",
    "hydroshare": "hydroshare.org",
}

# Well-known Dataverse installations by DOI prefix. A DOI not listed here has an
# unknown data site (resolving it needs doi.org, and the parser does no I/O).
DATAVERSE_DOI_HOSTS = {
    "10.7910": "dataverse.harvard.edu",        # Harvard Dataverse
    "10.5683": "borealisdata.ca",              # Borealis (Canada)
    "10.18710": "dataverse.no",                # DataverseNO
    "10.34894": "dataverse.nl",                # DataverseNL
    "10.11588": "heidata.uni-heidelberg.de",   # heiDATA
}

# Raw characters allowed in a path (RFC 3986 pchar plus "/" and "%"); everything else
# must arrive percent-encoded. This also rules out non-ASCII, controls and "\".
_RAW_PATH_OK = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=:@/%]*")
_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
# C0 controls, DEL, C1 controls and backslash: never valid in any decoded part.
_BAD_DECODED = re.compile(r"[\x00-\x1f\x7f-\x9f\\]")
_QUERY_BAD = re.compile(r"[^\x21-\x7e]|#")
_GITHUB_NAME = re.compile(r"[A-Za-z0-9._-]+")
_GIST_ID = re.compile(r"[A-Za-z0-9]+")
_GITLAB_PART = re.compile(r"[A-Za-z0-9._-]+")
_REF_BAD = re.compile(r"[\s:?#*\[\\]")
_DOI = re.compile(r"(10\.\d{4,9})/\S+")
_HYDROSHARE_ID = re.compile(r"[0-9a-f]{32}")
_HOST = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\]")
_DEFAULT_PORTS = {"http": 80, "https": 443}


class SpecError(ValueError):
    """Malformed launch path; .message is safe to show to a visitor.

    The message may quote a short, validated fragment of the path: escape it when
    rendering HTML, like any other text.
    """

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


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
            f"unknown launch path {_quote(family)}; expected /v2/, /build/ or /repo/"
        )
    if family == "repo":
        return _parse_legacy(segments[1:], path, query)
    if len(segments) < 2:
        raise SpecError(f"missing provider after /{family}/; expected one of {', '.join(PROVIDERS)}")
    provider = segments[1]
    parser = _PARSERS.get(provider)
    if parser is None:
        raise SpecError(
            f"unknown provider {_quote(provider)}; expected one of {', '.join(PROVIDERS)}"
        )
    parts = segments[2:]
    if not parts:
        raise SpecError(f"missing {_NAMES[provider]} spec after /{family}/{provider}/")
    repo_key, ref, data_site, canonical = parser(parts)
    return LaunchRequest(
        family=family,
        provider=provider,
        spec="/".join(parts),
        repo_key=repo_key,
        ref=ref,
        data_site=data_site,
        path=path,
        query=query,
        canonical_spec=canonical,
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
    decoded = _unescape(segment)
    if decoded in (".", ".."):
        raise SpecError("launch path must not contain '.' or '..' segments")
    if decoded.startswith("/"):
        raise SpecError("launch path segment must not decode to something starting with '/'")
    if "%" in decoded:
        # Defence in depth against servers that decode twice (%252e%252e -> ..).
        twice = unquote(decoded, errors="replace")
        if _BAD_DECODED.search(twice) or _has_dot_part(twice):
            raise SpecError("launch path must not hide '.', '..' or control characters behind double percent-encoding")
    if _has_dot_part(decoded):
        raise SpecError("launch path must not contain '.' or '..' segments")


def _has_dot_part(decoded: str) -> bool:
    return "." in decoded and any(p in (".", "..") for p in decoded.split("/"))


def _unescape(raw: str) -> str:
    """Strict percent-decoding: valid escapes, valid UTF-8, no control characters."""
    if "%" not in raw:
        return raw  # raw characters were already checked by _RAW_PATH_OK
    if _BAD_PERCENT.search(raw):
        raise SpecError("launch path has invalid percent-encoding")
    try:
        decoded = unquote_to_bytes(raw).decode("utf-8")  # strict: rejects overlong forms
    except UnicodeDecodeError:
        raise SpecError("launch path percent-decodes to invalid UTF-8") from None
    if _BAD_DECODED.search(decoded):
        if "\\" in decoded:
            raise SpecError("launch path must not contain a backslash, even percent-encoded")
        raise SpecError("launch path must not contain control characters, even percent-encoded")
    return decoded


def _check_query(query: str) -> None:
    # The query is forwarded verbatim; only refuse what could split a header or URL.
    if not isinstance(query, str):
        raise SpecError("query string must be text")
    if _QUERY_BAD.search(query):
        raise SpecError(
            "query string contains spaces, control or non-ASCII characters or '#'; percent-encode them"
        )


def _quote(fragment: str, limit: int = 40) -> str:
    """A short quoted fragment of the (already validated, ASCII) path for messages."""
    if len(fragment) > limit:
        fragment = fragment[:limit] + "..."
    return f"'{fragment}'"


def _check_ref(ref: str, what: str) -> str:
    if not ref:
        raise SpecError(f"{what} is missing its ref (for example '/HEAD')")
    if _REF_BAD.search(ref):
        raise SpecError(f"{what} ref must not contain whitespace, ':', '?', '#', '*', '[' or '\\'")
    return ref


def _decoded_ref(parts: list[str], what: str) -> str:
    return _check_ref("/".join(_unescape(p) for p in parts), what)


def _http_url(decoded: str, what: str, allow_query: bool = False) -> SplitResult:
    """Check that `decoded` is an http(s) URL with a plain host; return it split."""
    try:
        url = urlsplit(decoded)
    except ValueError:  # e.g. an unbalanced "[" in an IPv6 host
        raise SpecError(f"{what} is not a valid URL") from None
    if url.scheme.lower() not in ("http", "https") or not decoded.lower().startswith(url.scheme.lower() + "://"):
        raise SpecError(f"{what} must be an http:// or https:// URL")
    if "@" in url.netloc:
        raise SpecError(f"{what} must not contain credentials")
    host = url.netloc.rsplit(":", 1)[0] if not url.netloc.endswith("]") else url.netloc
    if not host or not _HOST.fullmatch(host):
        raise SpecError(f"{what} must have a valid host")
    try:
        url.port
    except ValueError:
        raise SpecError(f"{what} has an invalid port") from None
    if "#" in decoded or (not allow_query and "?" in decoded):
        raise SpecError(f"{what} must not contain a query or fragment")
    if "//" in url.path:
        raise SpecError(f"{what} has an empty path segment")
    return url


def _normalized_url(url: SplitResult, strip_git: bool) -> str:
    """scheme://host[:port]/path, scheme and host lower-cased, default port dropped."""
    scheme = url.scheme.lower()
    netloc = (url.hostname or "").lower()
    if ":" in netloc:
        netloc = f"[{netloc}]"  # IPv6 literal
    if url.port is not None and url.port != _DEFAULT_PORTS[scheme]:
        netloc += f":{url.port}"
    path = url.path.rstrip("/")
    if strip_git and path.endswith(".git"):
        path = path[: -len(".git")].rstrip("/")
    query = f"?{url.query}" if url.query else ""
    return f"{scheme}://{netloc}{path}{query}"


# --- providers --------------------------------------------------------------------------
# Each parser takes the raw spec segments and returns (repo_key, ref, data_site, canonical spec).

_NAMES = {
    "gh": "GitHub",
    "gist": "gist",
    "gl": "GitLab",
    "git": "git",
    "zenodo": "Zenodo",
    "figshare": "Figshare",
    "hydroshare": "HydroShare",
    "dataverse": "Dataverse",
    "ckan": "CKAN",
}

ParseResult = tuple[str, str, str | None, str]


def _keyed(repo_key: str, ref: str, data_site: str | None = None) -> ParseResult:
    """A parse result whose canonical spec is its key and ref."""
    return repo_key, ref, data_site, f"{repo_key}/{ref}" if ref else repo_key


def _gh(org: str, repo: str, ref: str) -> ParseResult:
    return _keyed(f"gh/{org.lower()}/{repo.lower()}", ref)


def _gist(user: str | None, gist_id: str, ref: str) -> ParseResult:
    key = f"gist/{gist_id.lower()}"
    return key, ref, None, (f"gist/{user.lower()}/{gist_id.lower()}/{ref}" if user else f"{key}/{ref}")


def _gl(namespace: str, ref: str) -> ParseResult:
    return _keyed(f"gl/{namespace.lower()}", ref)


def _github_repo(org: str, repo: str, what: str) -> tuple[str, str]:
    for name, kind in ((org, "organization or user"), (repo, "repository")):
        if not _GITHUB_NAME.fullmatch(name):
            raise SpecError(
                f"{what} {kind} name {_quote(name)} may only contain letters, digits, '-', '_' and '.'"
            )
    if repo.endswith(".git"):
        repo = repo[: -len(".git")]  # BinderHub strips it too
        if not repo:
            raise SpecError(f"{what} repository name is empty")
    return org, repo


def _parse_gh(parts: list[str]) -> ParseResult:
    if len(parts) < 3:
        raise SpecError(
            "GitHub spec must be <org>/<repo>/<ref>; the ref is missing (for example '/HEAD')"
            if len(parts) == 2
            else "GitHub spec must be <org>/<repo>/<ref>"
        )
    org, repo = _github_repo(parts[0], parts[1], "GitHub")
    ref = _decoded_ref(parts[2:], "GitHub spec")
    return _gh(org, repo, ref)


def _parse_legacy(parts: list[str], path: str, query: str) -> LaunchRequest:
    if len(parts) < 2:
        raise SpecError("legacy launch path must be /repo/<org>/<repo>")
    org, repo = _github_repo(parts[0], parts[1], "GitHub")
    return LaunchRequest(
        family="repo",
        provider="gh",
        spec=f"{parts[0]}/{parts[1]}/HEAD",  # the gh spec this legacy path stands for
        repo_key=f"gh/{org.lower()}/{repo.lower()}",
        ref="HEAD",
        data_site=None,
        path=path,
        query=query,
        canonical_spec=f"gh/{org.lower()}/{repo.lower()}/HEAD",
    )


def _parse_gist(parts: list[str]) -> ParseResult:
    if len(parts) < 2 or len(parts) > 3:
        raise SpecError("gist spec must be <user>/<gist id>[/<ref>]")
    user, gist_id = parts[0], parts[1]
    if not _GITHUB_NAME.fullmatch(user):
        raise SpecError(f"gist user name {_quote(user)} may only contain letters, digits, '-', '_' and '.'")
    if not _GIST_ID.fullmatch(gist_id):
        raise SpecError(f"gist id {_quote(gist_id)} may only contain letters and digits")
    ref = _decoded_ref(parts[2:], "gist spec") if len(parts) == 3 else "HEAD"
    return _gist(user, gist_id, ref)


def _parse_gl(parts: list[str]) -> ParseResult:
    if len(parts) < 2:
        raise SpecError("GitLab spec must be <url-escaped namespace>/<ref>; the ref is missing")
    namespace = _unescape(parts[0]).rstrip("/")
    if namespace.endswith(".git"):
        namespace = namespace[: -len(".git")].rstrip("/")
    pieces = namespace.split("/")
    if len(pieces) < 2 or not all(_GITLAB_PART.fullmatch(p) for p in pieces):
        raise SpecError(
            "GitLab namespace must be url-escaped <group>%2F<project> made of letters, "
            "digits, '-', '_' and '.'"
        )
    ref = _decoded_ref(parts[1:], "GitLab spec")
    return _gl(namespace, ref)


def _parse_git(parts: list[str]) -> ParseResult:
    if len(parts) < 2:
        raise SpecError("git spec must be <url-escaped repository URL>/<ref>; the ref is missing")
    url = _http_url(_unescape(parts[0]), "git repository URL")
    ref = _decoded_ref(parts[1:], "git spec")
    return _hosted_alias(url, ref) or _keyed(f"git/{_normalized_url(url, strip_git=True)}", ref)


_GITHUB_HOSTS = ("github.com", "www.github.com")
_GIST_HOSTS = ("gist.github.com",)
_GITLAB_HOSTS = ("gitlab.com", "www.gitlab.com")


def _hosted_alias(url: SplitResult, ref: str) -> ParseResult | None:
    """The gh, gist or gl key of a git URL that is a GitHub, gist or GitLab.com repository."""
    normalized = urlsplit(_normalized_url(url, strip_git=True))
    host = normalized.netloc      # lower-cased, without a default port (another port: not the service)
    names = normalized.path.strip("/").split("/") if normalized.path.strip("/") else []
    if host in _GITHUB_HOSTS and len(names) == 2 and all(_GITHUB_NAME.fullmatch(n) for n in names):
        org, repo = _github_repo(names[0], names[1], "GitHub")
        return _gh(org, repo, ref)
    if host in _GIST_HOSTS and len(names) in (1, 2) and _GIST_ID.fullmatch(names[-1]):
        user = names[0] if len(names) == 2 and _GITHUB_NAME.fullmatch(names[0]) else None
        if len(names) == 1 or user is not None:
            return _gist(user, names[-1], ref)
    if host in _GITLAB_HOSTS and len(names) >= 2 and all(_GITLAB_PART.fullmatch(n) and n != "-" for n in names):
        return _gl("/".join(names), ref)
    return None


def _doi(parts: list[str], provider: str) -> str:
    doi = "/".join(_unescape(p) for p in parts)
    if not _DOI.fullmatch(doi) or "" in doi.split("/") or _REF_BAD.search(doi.replace(":", "")):
        raise SpecError(f"{_NAMES[provider]} spec must be a DOI such as 10.5281/zenodo.3242074")
    return doi


def _parse_fixed_site_doi(provider: str) -> Callable[[list[str]], ParseResult]:
    def parse(parts: list[str]) -> ParseResult:
        doi = _doi(parts, provider)
        return _keyed(f"{provider}/{doi.lower()}", "", FIXED_DATA_SITES[provider])

    return parse


def _parse_hydroshare(parts: list[str]) -> ParseResult:
    resource = _unescape(parts[0]) if len(parts) == 1 else ""
    if not _HYDROSHARE_ID.fullmatch(resource):
        raise SpecError("HydroShare spec must be a resource id of 32 lower-case hex characters")
    return _keyed(f"hydroshare/{resource}", "", FIXED_DATA_SITES["hydroshare"])


def _parse_dataverse(parts: list[str]) -> ParseResult:
    decoded = "/".join(_unescape(p) for p in parts)
    if decoded.lower().startswith(("http:", "https:")):
        url = _http_url(decoded, "Dataverse URL", allow_query=True)
        return _keyed(f"dataverse/{_normalized_url(url, strip_git=False).lower()}", "", url.hostname)
    doi = _doi(parts, "dataverse")
    prefix = doi.split("/", 1)[0]
    return _keyed(f"dataverse/{doi.lower()}", "", DATAVERSE_DOI_HOSTS.get(prefix))


def _parse_ckan(parts: list[str]) -> ParseResult:
    decoded = "/".join(_unescape(p) for p in parts)
    url = _http_url(decoded, "CKAN dataset URL", allow_query=True)
    if not url.path.strip("/"):
        raise SpecError("CKAN dataset URL must name a dataset")
    return _keyed(f"ckan/{_normalized_url(url, strip_git=False)}", "", url.hostname)


_PARSERS = {
    "gh": _parse_gh,
    "gist": _parse_gist,
    "gl": _parse_gl,
    "git": _parse_git,
    "zenodo": _parse_fixed_site_doi("zenodo"),
    "figshare": _parse_fixed_site_doi("figshare"),
    "hydroshare": _parse_hydroshare,
    "dataverse": _parse_dataverse,
    "ckan": _parse_ckan,
}
