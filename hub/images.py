"""BinderHub's image naming scheme, so an image on a node can be traced to a repository.

A member names the image of a launch `<image_prefix><safe_slug>:<resolved_ref>`, with
the whole name then `_`→`-` replaced and lower-cased (BinderHub `builder.py`):

- the *build slug* comes from the repo provider (`get_build_slug()`, `hub.providers`), see `build_slug`;
- `safe_slug` = escapism.escape(slug, safe=ASCII letters+digits, escape_char="-"),
  truncated to `limit - 7` characters, then `-` and the first 6 hex digits of
  sha256(unescaped slug), all lower-cased (`_safe_build_slug`);
- BinderHub calls it with `limit = 255 - len(image_prefix)`, so `prefix + safe_slug`
  stays within 255 characters.

escapism writes each escaped UTF-8 byte as `-` plus its hex value *without* zero
padding (`\\n` → `-A`); that only matters for bytes below 0x10, i.e. control
characters, and we reproduce it by calling escapism itself.
"""

from __future__ import annotations

import hashlib
import re
import string

import escapism

from . import providers

MAX_IMAGE_NAME = 255
HASH_LENGTH = 6

# escapism converts anything that is not a `set` on every call; build it once.
_SAFE_CHARS = set(string.ascii_letters + string.digits)
_SAFE_SLUG = re.compile(r"[a-z0-9-]*-[0-9a-f]{6}")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
# Docker Hub's spellings, all equivalent to giving no registry host at all.
_DOCKER_HUB_HOSTS = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})


def _escape(text: str) -> str:
    return escapism.escape(text, safe=_SAFE_CHARS, escape_char="-")


def _slug_hash(build_slug: str) -> str:
    return hashlib.sha256(build_slug.encode("utf-8")).hexdigest()[:HASH_LENGTH]


def safe_build_slug(build_slug: str, limit: int = MAX_IMAGE_NAME) -> str:
    """BinderHub's `_safe_build_slug`: escaped, truncated slug plus a hash of the original.

    `limit` is the maximum length of the result; it must leave room for the
    `-<hash>` suffix (BinderHub's own slicing misbehaves below that).
    """
    if limit < HASH_LENGTH + 1:
        raise ValueError(f"limit must be at least {HASH_LENGTH + 1}, got {limit}")
    name = _escape(build_slug)[: limit - HASH_LENGTH - 1]
    return f"{name}-{_slug_hash(build_slug)}".lower()


def build_slug(provider: str, spec: str) -> str | None:
    """The build slug a member's repo provider reports for a launch spec (`hub.providers`).

    `spec` is the provider spec exactly as in the launch path (`LaunchRequest.spec`,
    still URL-escaped, original case). It must not be the case-folded repository key:
    the hash is taken over the slug as typed, so `Org/Repo` and `org/repo` give
    different images. Returns None when the slug needs the provider's API (DOI
    providers, HydroShare, CKAN); see `data_build_slug`. Raises ValueError for an
    unknown provider or a spec without the parts the slug is made of.
    """
    return providers.provider(provider).build_slug(spec)


def data_build_slug(provider: str, resolved: str) -> str:
    """The build slug of a data provider, given what its API resolved (`hub.providers.data`).

    `resolved` is, per provider: zenodo — the record id (`3242074`); figshare — the
    article id and version (`9782777.v1`); hydroshare — `<resource id>.v<epoch>`;
    dataverse — the dataset identifier (`DVN/TJCLKP`). For zenodo, figshare and
    hydroshare this is also the resolved ref, i.e. the image tag.
    """
    return providers.provider(provider).data_build_slug(resolved)


def image_name(prefix: str, build_slug: str, resolved_ref: str) -> str:
    """`<prefix><safe_slug>:<resolved_ref>`, exactly as a member BinderHub names it."""
    safe = safe_build_slug(build_slug, limit=MAX_IMAGE_NAME - len(prefix))
    # BinderHub normalizes the whole name, prefix and tag included
    return f"{prefix}{safe}:{resolved_ref}".replace("_", "-").lower()


def parse_image_name(prefix: str, image: str) -> tuple[str, str] | None:
    """(safe_slug, tag) if `image` is a member image under `prefix`, else None.

    Registry hosts are compared only when both sides name one, and Docker Hub's host
    names count as no host, because nodes and registries report the same image
    with and without them. Digest-only references (`name@sha256:…`) have no tag
    and give None.
    """
    name, tag = _split_tag(image)
    if not tag or not _TAG.fullmatch(tag):
        return None
    image_host, image_path = _split_registry(name.lower())
    prefix_host, prefix_path = _split_registry(prefix.replace("_", "-").lower())
    if image_host and prefix_host and image_host != prefix_host:
        return None
    if not image_path.startswith(prefix_path):
        return None
    safe_slug = image_path[len(prefix_path):]
    if not _SAFE_SLUG.fullmatch(safe_slug):
        return None
    return safe_slug, tag


def slug_matches(safe_slug: str, build_slug: str) -> bool:
    """Whether `safe_slug` was made from `build_slug`, whatever length limit was used.

    The hash suffix must be the slug's hash and the rest a prefix of its escaped
    form (truncation only ever cuts the end).
    """
    name, sep, digest = safe_slug.rpartition("-")
    if not sep or digest != _slug_hash(build_slug):
        return False
    return _escape(build_slug).lower().startswith(name)


def _split_tag(image: str) -> tuple[str, str]:
    """Split off the tag; a ':' before the last '/' is a registry port, not a tag."""
    image = image.split("@", 1)[0]  # drop a digest; the tag (if any) is before it
    name, sep, tag = image.rpartition(":")
    if not sep or "/" in tag:
        return image, ""
    return name, tag


def _split_registry(name: str) -> tuple[str | None, str]:
    """(registry host or None, repository path), the way Docker tells them apart."""
    first, sep, rest = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return (None if first in _DOCKER_HUB_HOSTS else first), rest
    return None, name
