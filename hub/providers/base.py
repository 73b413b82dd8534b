"""What every repo provider is made of, and the strict reading of a spec's parts.

A provider reads a launch spec twice, for two readers:

- `parse(parts)` is the router's reading (`federation.spec`): strict, because the
  spec arrives from anyone and becomes part of a URL sent to a member. It gives the
  repository's canonical key (the same for every way of naming one repository), the
  unescaped ref, the data site the launch needs and the spec written the canonical
  provider's way. Anything a member would refuse, or that could steer a URL
  elsewhere, is a `SpecError` whose message can be shown to the visitor.
- `tokenize(spec)` is BinderHub's own reading (its `tokenize_spec` and provider
  constructors): lenient, with BinderHub's wording. The build slug (`build_slug`) and
  what a member reports (`repo_url`) come from it, because a member names images for
  every launch it accepted, not only for those the router would have sent.

`parts` are the raw (still percent-encoded) segments of the spec, already split on
`/` and checked one by one by the caller; `spec` is the raw spec as one string.
"""

from __future__ import annotations

import re
from typing import NamedTuple
from urllib.parse import SplitResult, unquote_to_bytes, urlsplit

_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
# C0 controls, DEL, C1 controls and backslash: never valid in any decoded part.
BAD_DECODED = re.compile(r"[\x00-\x1f\x7f-\x9f\\]")
REF_BAD = re.compile(r"[\s:?#*\[\\]")
_HOST = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\]")
_DEFAULT_PORTS = {"http": 80, "https": 443}


class SpecError(ValueError):
    """Malformed launch path or spec; .message is safe to show to a visitor.

    The message may quote a short, validated fragment of the path: escape it when
    rendering HTML, like any other text.
    """

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class ProviderSpec(NamedTuple):
    """A spec as the router reads it (`Provider.parse`). A tuple: made on every launch, cheaply."""

    repo_key: str          # "<provider>/<normalized repository>", stable across refs and aliases
    ref: str               # unescaped ref; "" for providers without one
    data_site: str | None  # host of the data the launch needs, if known
    canonical_spec: str    # "<provider>/<spec>" as the canonical provider writes it


class Tokens(NamedTuple):
    """A spec as BinderHub reads it (`Provider.tokenize`)."""

    repo: tuple[str, ...]  # the raw spec parts that name the repository (or the record)
    ref: str               # unescaped ref; "" for data providers


class Provider:
    """One BinderHub repo provider. Subclasses set `prefix` and `name` and read specs."""

    prefix: str = ""      # the launch path's provider segment: gh, zenodo, ...
    name: str = ""        # how people (and BinderHub's launch events) name it: GitHub, Zenodo, ...
    data: bool = False    # a data provider: its build slug needs the provider's API

    def parse(self, parts: list[str]) -> ProviderSpec:
        raise NotImplementedError

    def tokenize(self, spec: str) -> Tokens:
        raise NotImplementedError

    def build_slug(self, spec: str) -> str | None:
        """The build slug a member reports for `spec` (as in the launch path: still
        URL-escaped, original case); None when it needs the provider's API."""
        return None

    def data_build_slug(self, resolved: str) -> str:
        """The build slug of a data provider, given what its API resolved."""
        raise ValueError(f"provider {self.prefix!r} has no resolved build slug")

    def repo_url(self, spec: str) -> str:
        """The URL of what a launch of `spec` fetches, as a member reports it."""
        raise NotImplementedError


def keyed(repo_key: str, ref: str, data_site: str | None = None) -> ProviderSpec:
    """A parse result whose canonical spec is its key and ref."""
    return ProviderSpec(repo_key, ref, data_site, f"{repo_key}/{ref}" if ref else repo_key)


# --- strict reading -----------------------------------------------------------------


def unescape(raw: str) -> str:
    """Strict percent-decoding: valid escapes, valid UTF-8, no control characters."""
    if "%" not in raw:
        return raw  # raw characters were already checked by the caller
    if _BAD_PERCENT.search(raw):
        raise SpecError("launch path has invalid percent-encoding")
    try:
        decoded = unquote_to_bytes(raw).decode("utf-8")  # strict: rejects overlong forms
    except UnicodeDecodeError:
        raise SpecError("launch path percent-decodes to invalid UTF-8") from None
    if BAD_DECODED.search(decoded):
        if "\\" in decoded:
            raise SpecError("launch path must not contain a backslash, even percent-encoded")
        raise SpecError("launch path must not contain control characters, even percent-encoded")
    return decoded


def quote(fragment: str, limit: int = 40) -> str:
    """A short quoted fragment of the (already validated, ASCII) path for messages."""
    if len(fragment) > limit:
        fragment = fragment[:limit] + "..."
    return f"'{fragment}'"


def check_ref(ref: str, what: str) -> str:
    if not ref:
        raise SpecError(f"{what} is missing its ref (for example '/HEAD')")
    if REF_BAD.search(ref):
        raise SpecError(f"{what} ref must not contain whitespace, ':', '?', '#', '*', '[' or '\\'")
    return ref


def decoded_ref(parts: list[str], what: str) -> str:
    return check_ref("/".join(unescape(p) for p in parts), what)


def http_url(decoded: str, what: str, allow_query: bool = False) -> SplitResult:
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


def normalized_url(url: SplitResult, strip_git: bool) -> str:
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


# --- BinderHub's reading ---------------------------------------------------------------


def split_spec(spec: str, least: int, form: str) -> list[str]:
    """BinderHub's tokenize_spec: at least `least` non-empty parts, else its own message."""
    parts = spec.rstrip("/").split("/")
    if len(parts) < least or not all(parts):
        raise ValueError(f"Spec is not of the form '{form}', provided: {spec.rstrip('/')!r}")
    return parts
