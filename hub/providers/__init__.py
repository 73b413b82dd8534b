"""BinderHub's repo providers, one registry: what a launch spec means, for everyone who reads one.

For each provider prefix of a launch path (`gh`, `zenodo`, ...) one `Provider` knows:
how the router reads a spec (`parse`: the canonical repository key, the ref, the data
site), how BinderHub reads it (`tokenize`), the build slug BinderHub puts in image
names (`build_slug`, `data_build_slug`) and what a launch of it fetches (`repo_url`).
`federation.spec` (launch paths), `hub.images` (image names), the member agent
(which repository an image on a node belongs to) and the dev member (what it builds)
all ask this registry, so they cannot disagree about a spec.

A new provider is one class (in `git.py` or `data.py`) and one line in `REGISTRY`.
"""

from __future__ import annotations

from .base import Provider, ProviderSpec, SpecError, Tokens
from .data import CKAN, DATAVERSE_DOI_HOSTS, FIXED_DATA_SITES, Dataverse, Figshare, HydroShare, Zenodo
from .git import Gist, Git, GitHub, GitLab

REGISTRY: dict[str, Provider] = {
    provider.prefix: provider
    for provider in (GitHub(), Gist(), GitLab(), Git(), Zenodo(), Figshare(), HydroShare(), Dataverse(), CKAN())
}

PROVIDERS: tuple[str, ...] = tuple(REGISTRY)

# BinderHub's launch events name the provider (`GitHub`, `Zenodo`); launch paths use the prefix.
_BY_NAME = {**{p.name.lower(): p for p in REGISTRY.values()}, **REGISTRY}


def get(prefix: str) -> Provider | None:
    """The provider of a launch path's prefix (`gh`), or None."""
    return REGISTRY.get(prefix)


def by_name(name: str) -> Provider | None:
    """The provider named by a prefix (`gh`) or, case-insensitively, by BinderHub's name (`GitHub`)."""
    return _BY_NAME.get(name) or _BY_NAME.get(name.lower())


def provider(prefix: str) -> Provider:
    """The provider of `prefix`; ValueError for an unknown one."""
    found = REGISTRY.get(prefix)
    if found is None:
        raise ValueError(f"unknown provider {prefix!r}")
    return found


__all__ = [
    "DATAVERSE_DOI_HOSTS", "FIXED_DATA_SITES", "PROVIDERS", "REGISTRY",
    "Provider", "ProviderSpec", "SpecError", "Tokens", "by_name", "get", "provider",
]
