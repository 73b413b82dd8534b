"""The git repo providers: GitHub (`gh`), gists (`gist`), GitLab.com (`gl`) and any git URL (`git`).

One repository, one key: GitHub names are case-insensitive and a `.git` suffix changes
nothing; a `git` launch of a GitHub, gist or GitLab.com URL is keyed as the `gh`,
`gist` or `gl` launch of the same repository (`git/https://github.com/Org/Repo.git`
-> `gh/org/repo`); a gist is keyed by its id alone (ids are unique on GitHub, and
`gist.github.com/<id>` clones the same gist as `gist.github.com/<user>/<id>`); GitLab
paths are case-insensitive.

The router's reading of each spec (`parse`):

- gist: BinderHub accepts `<user>/<id>` without a ref and resolves it to the latest
  revision, so a missing gist ref is accepted and reported as `HEAD`.
- git and gl: as in BinderHub, the *first* spec segment is the url-escaped repository
  URL / namespace and everything after it is the ref (so refs may contain `/`).
- Refs may not contain whitespace, `:`, `?`, `#`, `*`, `[` or `\\` (none is valid in a
  git ref name, and `:` is how a scheme would be smuggled in).

Build slugs are BinderHub's `get_build_slug()` of each provider.
"""

from __future__ import annotations

import re
from urllib.parse import SplitResult, unquote, urlsplit

from .base import (
    Provider,
    ProviderSpec,
    SpecError,
    Tokens,
    decoded_ref,
    http_url,
    keyed,
    normalized_url,
    quote,
    split_spec,
    unescape,
)

_GITHUB_NAME = re.compile(r"[A-Za-z0-9._-]+")
_GIST_ID = re.compile(r"[A-Za-z0-9]+")
_GITLAB_PART = re.compile(r"[A-Za-z0-9._-]+")

_GITHUB_HOSTS = ("github.com", "www.github.com")
_GIST_HOSTS = ("gist.github.com",)
_GITLAB_HOSTS = ("gitlab.com", "www.gitlab.com")


def github_repo(org: str, repo: str, what: str) -> tuple[str, str]:
    """A checked GitHub (organization, repository), `.git` stripped from the repository."""
    for name, kind in ((org, "organization or user"), (repo, "repository")):
        if not _GITHUB_NAME.fullmatch(name):
            raise SpecError(
                f"{what} {kind} name {quote(name)} may only contain letters, digits, '-', '_' and '.'"
            )
    if repo.endswith(".git"):
        repo = repo[: -len(".git")]  # BinderHub strips it too
        if not repo:
            raise SpecError(f"{what} repository name is empty")
    return org, repo


def github_key(org: str, repo: str) -> str:
    return f"gh/{org.lower()}/{repo.lower()}"


def _gh(org: str, repo: str, ref: str) -> ProviderSpec:
    return keyed(github_key(org, repo), ref)


def _gist(user: str | None, gist_id: str, ref: str) -> ProviderSpec:
    key = f"gist/{gist_id.lower()}"
    return ProviderSpec(key, ref, None, f"gist/{user.lower()}/{gist_id.lower()}/{ref}" if user else f"{key}/{ref}")


def _gl(namespace: str, ref: str) -> ProviderSpec:
    return keyed(f"gl/{namespace.lower()}", ref)


class GitHub(Provider):
    prefix, name = "gh", "GitHub"

    def parse(self, parts: list[str]) -> ProviderSpec:
        if len(parts) < 3:
            raise SpecError(
                "GitHub spec must be <org>/<repo>/<ref>; the ref is missing (for example '/HEAD')"
                if len(parts) == 2
                else "GitHub spec must be <org>/<repo>/<ref>"
            )
        org, repo = github_repo(parts[0], parts[1], "GitHub")
        return _gh(org, repo, decoded_ref(parts[2:], "GitHub spec"))

    def tokenize(self, spec: str) -> Tokens:
        parts = split_spec(spec, 3, "user/repo/ref")
        return Tokens(tuple(parts[:2]), unquote("/".join(parts[2:])))

    def build_slug(self, spec: str) -> str:
        # GitHubRepoProvider: f"{user}-{repo}", ".git" stripped from repo
        user, repo = self.tokenize(spec).repo
        return f"{user}-{repo.removesuffix('.git')}"

    def repo_url(self, spec: str) -> str:
        user, repo = self.tokenize(spec).repo
        return f"https://github.com/{unquote(user)}/{unquote(repo)}"


class Gist(Provider):
    prefix, name = "gist", "gist"

    def parse(self, parts: list[str]) -> ProviderSpec:
        if len(parts) < 2 or len(parts) > 3:
            raise SpecError("gist spec must be <user>/<gist id>[/<ref>]")
        user, gist_id = parts[0], parts[1]
        if not _GITHUB_NAME.fullmatch(user):
            raise SpecError(f"gist user name {quote(user)} may only contain letters, digits, '-', '_' and '.'")
        if not _GIST_ID.fullmatch(gist_id):
            raise SpecError(f"gist id {quote(gist_id)} may only contain letters and digits")
        ref = decoded_ref(parts[2:], "gist spec") if len(parts) == 3 else "HEAD"
        return _gist(user, gist_id, ref)

    def tokenize(self, spec: str) -> Tokens:
        parts = split_spec(spec, 2, "username/gistid/ref")
        return Tokens(tuple(parts[:2]), unquote("/".join(parts[2:])) or "HEAD")

    def build_slug(self, spec: str) -> str:
        # GistRepoProvider: just the gist id (the user is not part of it)
        return self.tokenize(spec).repo[1]

    def repo_url(self, spec: str) -> str:
        user, gist = self.tokenize(spec).repo
        return f"https://gist.github.com/{unquote(user)}/{unquote(gist)}"


class _EscapedRepoProvider(Provider):
    """A provider whose spec is one url-escaped repository part, then the ref (gl, git)."""

    def tokenize(self, spec: str) -> Tokens:
        parts = split_spec(spec, 2, "url-escaped-repo/ref")
        return Tokens((parts[0],), unquote("/".join(parts[1:])))


class GitLab(_EscapedRepoProvider):
    prefix, name = "gl", "GitLab"

    def parse(self, parts: list[str]) -> ProviderSpec:
        if len(parts) < 2:
            raise SpecError("GitLab spec must be <url-escaped namespace>/<ref>; the ref is missing")
        namespace = unescape(parts[0]).rstrip("/")
        if namespace.endswith(".git"):
            namespace = namespace[: -len(".git")].rstrip("/")
        pieces = namespace.split("/")
        if len(pieces) < 2 or not all(_GITLAB_PART.fullmatch(p) for p in pieces):
            raise SpecError(
                "GitLab namespace must be url-escaped <group>%2F<project> made of letters, "
                "digits, '-', '_' and '.'"
            )
        return _gl(namespace, decoded_ref(parts[1:], "GitLab spec"))

    def build_slug(self, spec: str) -> str:
        # GitLabRepoProvider: namespace parts joined by "-", with "-" inside a part
        # written "_-" so that "a-b/c" and "a/b-c" stay distinct
        namespace = unquote(self.tokenize(spec).repo[0])
        return "-".join(p.replace("-", "_-") for p in namespace.split("/"))

    def repo_url(self, spec: str) -> str:
        return f"https://gitlab.com/{unquote(self.tokenize(spec).repo[0])}"


class Git(_EscapedRepoProvider):
    prefix, name = "git", "git"

    def parse(self, parts: list[str]) -> ProviderSpec:
        if len(parts) < 2:
            raise SpecError("git spec must be <url-escaped repository URL>/<ref>; the ref is missing")
        url = http_url(unescape(parts[0]), "git repository URL")
        ref = decoded_ref(parts[1:], "git spec")
        return _hosted_alias(url, ref) or keyed(f"git/{normalized_url(url, strip_git=True)}", ref)

    def build_slug(self, spec: str) -> str:
        # GitRepoProvider: the unescaped repository URL itself
        return self.repo_url(spec)

    def repo_url(self, spec: str) -> str:
        return unquote(self.tokenize(spec).repo[0])


def _hosted_alias(url: SplitResult, ref: str) -> ProviderSpec | None:
    """The gh, gist or gl key of a git URL that is a GitHub, gist or GitLab.com repository."""
    normalized = urlsplit(normalized_url(url, strip_git=True))
    host = normalized.netloc      # lower-cased, without a default port (another port: not the service)
    names = normalized.path.strip("/").split("/") if normalized.path.strip("/") else []
    if host in _GITHUB_HOSTS and len(names) == 2 and all(_GITHUB_NAME.fullmatch(n) for n in names):
        org, repo = github_repo(names[0], names[1], "GitHub")
        return _gh(org, repo, ref)
    if host in _GIST_HOSTS and len(names) in (1, 2) and _GIST_ID.fullmatch(names[-1]):
        user = names[0] if len(names) == 2 and _GITHUB_NAME.fullmatch(names[0]) else None
        if len(names) == 1 or user is not None:
            return _gist(user, names[-1], ref)
    if host in _GITLAB_HOSTS and len(names) >= 2 and all(_GITLAB_PART.fullmatch(n) and n != "-" for n in names):
        return _gl("/".join(names), ref)
    return None
