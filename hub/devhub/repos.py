"""What a repo provider would resolve a `/build/` spec to, faked without any network.

What a spec means (its provider, its parts and ref, its build slug, what it fetches)
comes from the provider registry (`hub.providers`), so the image names in
`built`/`ready` events are exactly those the router and the member agent derive for
the same launch. What only a provider's API could answer (the commit a ref points
to, a record's id or version) is made up deterministically from the spec.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from urllib.parse import unquote

from .. import images, providers

_SHA_RE = re.compile(r"[0-9a-f]{40}")

# How each git provider links a resolved ref (BinderHub's get_resolved_ref_url).
_REF_URLS = {"gh": "{url}/tree/{sha}", "gist": "{url}/{sha}", "gl": "{url}/-/tree/{sha}", "git": "{url}"}


class UnknownProvider(ValueError):
    pass


@dataclass(frozen=True)
class RepoSpec:
    """What a BinderHub repo provider would resolve a `/build/` spec to."""

    provider: str
    spec: str  # as requested (URL-escaped parts kept escaped)
    build_slug: str
    resolved_ref: str
    repo_url: str
    ref_url: str
    resolved_spec: str


def _fake_sha(*parts: str) -> str:
    return hashlib.sha1("\x00".join(parts).encode("utf-8")).hexdigest()


def _tag(text: str) -> str:
    tag = re.sub(r"[^A-Za-z0-9_.-]", "-", text)[:128].strip(".-")
    return tag or _fake_sha(text)


def describe_spec(provider: str, spec: str) -> RepoSpec:
    """Resolve `spec` the way the provider would (refs become deterministic fake SHAs).

    Raises `UnknownProvider` for an unknown provider prefix and ValueError for a spec
    of the wrong shape; both messages are BinderHub's wording.
    """
    found = providers.get(provider)
    if found is None:
        raise UnknownProvider(f"No provider found for prefix {provider}")
    spec = spec.rstrip("/")
    tokens = found.tokenize(spec)
    url = found.repo_url(spec)
    if not found.data:
        repo = "/".join(tokens.repo)  # still URL-escaped, as requested
        ref = tokens.ref
        sha = ref if _SHA_RE.fullmatch(ref) else _fake_sha(provider, unquote(repo), ref)
        slug = found.build_slug(spec)
        assert slug is not None
        return RepoSpec(provider, spec, slug, sha, url, _REF_URLS[provider].format(url=url, sha=sha), f"{repo}/{sha}")
    # data providers: the whole spec names one record; what their APIs would resolve
    # it to is faked from the spec
    record = unquote(spec)
    if provider in ("zenodo", "figshare"):
        marker = f"{provider}."
        resolved = record.rsplit(marker, 1)[1] if marker in record else record.rsplit("/", 1)[-1]
        resolved = _tag(resolved)
        slug, tag = found.data_build_slug(resolved), resolved
    elif provider == "hydroshare":
        resource = record.rstrip("/").rsplit("/", 1)[-1]
        resolved = f"{_tag(resource)}.v{int(_fake_sha(resource)[:7], 16)}"
        slug, tag = found.data_build_slug(resolved), resolved
    elif provider == "dataverse":
        identifier = record.split("/", 1)[1] if record.startswith("10.") and "/" in record else record
        slug, tag = found.data_build_slug(identifier), str(int(_fake_sha(record)[:7], 16))
    else:  # ckan: the dataset URL
        slug, tag = f"ckan-{record.rstrip('/').rsplit('/', 1)[-1]}", _fake_sha(record)
    return RepoSpec(provider, spec, slug, tag, url, url, spec)


def image_name(prefix: str, build_slug: str, ref: str) -> str:
    """`<prefix><safe_slug>:<ref>`, BinderHub's image name (see `hub.images`)."""
    return images.image_name(prefix, build_slug, ref)
