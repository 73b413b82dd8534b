"""Launch path parsing: every provider, the legacy form, and hostile input."""

from __future__ import annotations

import dataclasses
import timeit

import pytest

from federation.spec import PROVIDERS, LaunchRequest, SpecError, parse_launch

HYDRO_ID = "8b826c43f55043f583c85ae312a8894f"
QUERY = "urlpath=lab/tree/a%20b.ipynb&labpath=x"

# path -> (family, provider, spec, repo_key, ref, data_site)
VALID = [
    (
        "/v2/gh/binder-examples/octave/HEAD",
        ("v2", "gh", "binder-examples/octave/HEAD", "gh/binder-examples/octave", "HEAD", None),
    ),
    (
        "/build/gh/Binder-Examples/Octave/1479e02a3b",
        ("build", "gh", "Binder-Examples/Octave/1479e02a3b", "gh/binder-examples/octave", "1479e02a3b", None),
    ),
    (
        "/v2/gh/org/repo.git/feature/x/",
        ("v2", "gh", "org/repo.git/feature/x", "gh/org/repo", "feature/x", None),
    ),
    (
        "/v2/gh/org/repo/feature%2Fx",
        ("v2", "gh", "org/repo/feature%2Fx", "gh/org/repo", "feature/x", None),
    ),
    (
        "/v2/gh/my_org/my.repo/v1.0-rc.1",
        ("v2", "gh", "my_org/my.repo/v1.0-rc.1", "gh/my_org/my.repo", "v1.0-rc.1", None),
    ),
    (
        "/v2/gist/MinRK/8E4d7a9c6b0f",
        ("v2", "gist", "MinRK/8E4d7a9c6b0f", "gist/8e4d7a9c6b0f", "HEAD", None),
    ),
    (
        "/v2/gist/minrk/8e4d7a9c6b0f/0123abcd",
        ("v2", "gist", "minrk/8e4d7a9c6b0f/0123abcd", "gist/8e4d7a9c6b0f", "0123abcd", None),
    ),
    (
        "/v2/gl/group%2Fsub%2FRepo/main",
        ("v2", "gl", "group%2Fsub%2FRepo/main", "gl/group/sub/repo", "main", None),
    ),
    (
        "/build/gl/group%2Frepo.git%2F/release/2024",
        ("build", "gl", "group%2Frepo.git%2F/release/2024", "gl/group/repo", "release/2024", None),
    ),
    (
        "/v2/git/https%3A%2F%2FGit.Example.ORG%2Fteam%2Frepo.git/v1.0",
        (
            "v2", "git", "https%3A%2F%2FGit.Example.ORG%2Fteam%2Frepo.git/v1.0",
            "git/https://git.example.org/team/repo", "v1.0", None,
        ),
    ),
    (
        "/v2/git/http%3A%2F%2Fgit.example.org%3A8080%2Frepo%2F/feature%2Fx",
        (
            "v2", "git", "http%3A%2F%2Fgit.example.org%3A8080%2Frepo%2F/feature%2Fx",
            "git/http://git.example.org:8080/repo", "feature/x", None,
        ),
    ),
    (
        "/v2/git/https%3A%2F%2Fgit.example.org%3A443%2FRepo/HEAD",
        ("v2", "git", "https%3A%2F%2Fgit.example.org%3A443%2FRepo/HEAD", "git/https://git.example.org/Repo", "HEAD", None),
    ),
    (
        "/v2/zenodo/10.5281/zenodo.3242074",
        ("v2", "zenodo", "10.5281/zenodo.3242074", "zenodo/10.5281/zenodo.3242074", "", "zenodo.org"),
    ),
    (
        "/v2/zenodo/10.5281%2FZenodo.3242074/",
        ("v2", "zenodo", "10.5281%2FZenodo.3242074", "zenodo/10.5281/zenodo.3242074", "", "zenodo.org"),
    ),
    (
        "/v2/figshare/10.6084/m9.figshare.9782777.v1",
        ("v2", "figshare", "10.6084/m9.figshare.9782777.v1", "figshare/10.6084/m9.figshare.9782777.v1", "", "figshare.com"),
    ),
    (
        f"/v2/hydroshare/{HYDRO_ID}",
        ("v2", "hydroshare", HYDRO_ID, f"hydroshare/{HYDRO_ID}", "", "hydroshare.org"),
    ),
    (
        "/v2/dataverse/10.7910/DVN/TJCLKP",
        ("v2", "dataverse", "10.7910/DVN/TJCLKP", "dataverse/10.7910/dvn/tjclkp", "", "dataverse.harvard.edu"),
    ),
    (
        "/v2/dataverse/10.18710/ABC123",
        ("v2", "dataverse", "10.18710/ABC123", "dataverse/10.18710/abc123", "", "dataverse.no"),
    ),
    (
        "/v2/dataverse/10.99999/XYZ",
        ("v2", "dataverse", "10.99999/XYZ", "dataverse/10.99999/xyz", "", None),
    ),
    (
        "/v2/dataverse/https%3A%2F%2FData.Example.EDU%2Fdataset.xhtml%3FpersistentId%3Ddoi%3A10.1%2FX",
        (
            "v2", "dataverse",
            "https%3A%2F%2FData.Example.EDU%2Fdataset.xhtml%3FpersistentId%3Ddoi%3A10.1%2FX",
            "dataverse/https://data.example.edu/dataset.xhtml?persistentid=doi:10.1/x", "", "data.example.edu",
        ),
    ),
    (
        "/v2/ckan/https%3A%2F%2FDemo.CKAN.org%2Fdataset%2Fsample-dataset-1%2F",
        (
            "v2", "ckan", "https%3A%2F%2FDemo.CKAN.org%2Fdataset%2Fsample-dataset-1%2F",
            "ckan/https://demo.ckan.org/dataset/sample-dataset-1", "", "demo.ckan.org",
        ),
    ),
    (
        "/repo/binder-examples/octave",
        ("repo", "gh", "binder-examples/octave/HEAD", "gh/binder-examples/octave", "HEAD", None),
    ),
    (
        "/repo/Binder-Examples/Octave/notebooks/index.ipynb",
        ("repo", "gh", "Binder-Examples/Octave/HEAD", "gh/binder-examples/octave", "HEAD", None),
    ),
]


@pytest.mark.parametrize(("path", "expected"), VALID, ids=[p for p, _ in VALID])
def test_valid_paths(path: str, expected: tuple) -> None:
    req = parse_launch(path, QUERY)
    assert (req.family, req.provider, req.spec, req.repo_key, req.ref, req.data_site) == expected
    assert req.path == path
    assert req.query == QUERY
    assert req.target == f"{path}?{QUERY}"


def test_every_provider_is_covered() -> None:
    covered = {expected[1] for _, expected in VALID}
    assert covered == set(PROVIDERS)


@pytest.mark.parametrize(
    "query",
    ["", "urlpath=lab/tree/a%20b.ipynb&labpath=x", "filepath=index.ipynb", "urlpath=%2Fvoila%2Frender%2Fx.ipynb&a=1&a=2"],
)
def test_query_survives_verbatim(query: str) -> None:
    path = "/v2/gh/binder-examples/octave/HEAD"
    req = parse_launch(path, query)
    assert req.query == query
    assert req.target == (f"{path}?{query}" if query else path)


def test_provider_spec_and_frozen() -> None:
    req = parse_launch("/v2/gh/org/repo/feature/x")
    assert req.provider_spec == "gh/org/repo/feature/x"
    assert isinstance(req, LaunchRequest)
    with pytest.raises(dataclasses.FrozenInstanceError):
        req.ref = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("/v2/gh/Binder-Examples/Octave/HEAD", "/build/gh/binder-examples/octave.git/main"),
        ("/v2/gist/MinRK/ABC123/x", "/v2/gist/minrk/abc123"),
        ("/v2/git/https%3A%2F%2FHOST%2Fr.git/a", "/v2/git/https%3A%2F%2Fhost%2Fr%2F/b"),
        ("/repo/Org/Repo", "/v2/gh/org/repo/v2"),
    ],
)
def test_repo_key_ignores_ref_and_case_where_case_does_not_matter(a: str, b: str) -> None:
    assert parse_launch(a).repo_key == parse_launch(b).repo_key


# Every way of naming one repository: one key (and one canonical spec for bans).
ALIASES = {
    "gh/jupyterhub/binderhub": [
        "/v2/gh/jupyterhub/binderhub/HEAD",
        "/v2/gh/JupyterHub/BinderHub.git/main",
        "/repo/jupyterhub/binderhub",
        "/v2/git/https%3A%2F%2Fgithub.com%2Fjupyterhub%2Fbinderhub/HEAD",
        "/v2/git/https%3A%2F%2Fgithub.com%2FJupyterHub%2FBinderHub.git/HEAD",
        "/v2/git/http%3A%2F%2Fwww.github.com%2Fjupyterhub%2Fbinderhub%2F/main",
        "/build/git/https%3A%2F%2FGitHub.com%3A443%2Fjupyterhub%2Fbinderhub.git%2F/v1",
    ],
    "gist/8e4d7a9c6b0f": [
        "/v2/gist/minrk/8e4d7a9c6b0f",
        "/v2/gist/MinRK/8E4D7A9C6B0F/0123abcd",
        "/v2/git/https%3A%2F%2Fgist.github.com%2Fminrk%2F8e4d7a9c6b0f/HEAD",
        "/v2/git/https%3A%2F%2Fgist.github.com%2F8e4d7a9c6b0f.git/HEAD",
    ],
    "gl/group/sub/project": [
        "/v2/gl/group%2Fsub%2Fproject/main",
        "/v2/gl/Group%2FSub%2FProject.git/main",
        "/v2/git/https%3A%2F%2Fgitlab.com%2Fgroup%2Fsub%2Fproject.git/main",
        "/v2/git/https%3A%2F%2Fwww.gitlab.com%2FGroup%2Fsub%2Fproject/v2",
    ],
}


@pytest.mark.parametrize("key", list(ALIASES))
def test_every_alias_of_a_repository_has_its_key(key: str) -> None:
    assert {parse_launch(path).repo_key for path in ALIASES[key]} == {key}


def test_urls_that_only_look_like_a_hosted_repository_keep_their_own_key() -> None:
    for path, key in [
        ("/v2/git/https%3A%2F%2Fgithub.com%2Forg%2Frepo%2Ftree%2Fmain/HEAD", "git/https://github.com/org/repo/tree/main"),
        ("/v2/git/https%3A%2F%2Fgithub.com%3A8443%2Forg%2Frepo/HEAD", "git/https://github.com:8443/org/repo"),
        ("/v2/git/https%3A%2F%2Fgithub.com.evil.example%2Forg%2Frepo/HEAD", "git/https://github.com.evil.example/org/repo"),
        ("/v2/git/https%3A%2F%2Fgitlab.com%2Fgroup%2Fproject%2F-%2Ftree%2Fx/HEAD", "git/https://gitlab.com/group/project/-/tree/x"),
        ("/v2/git/https%3A%2F%2Fgitlab.example.org%2Fgroup%2Fproject/HEAD", "git/https://gitlab.example.org/group/project"),
    ]:
        assert parse_launch(path).repo_key == key, path


def test_the_canonical_spec_is_the_launch_as_its_provider_writes_it() -> None:
    assert parse_launch("/v2/git/https%3A%2F%2Fgithub.com%2FOrg%2FX.git/feature%2Fy").canonical_spec == "gh/org/x/feature/y"
    assert parse_launch("/v2/git/https%3A%2F%2Fgist.github.com%2FEvil%2Fabc123/HEAD").canonical_spec == "gist/evil/abc123/HEAD"
    assert parse_launch("/v2/gist/evil/abc123").canonical_spec == "gist/evil/abc123/HEAD"
    assert parse_launch("/v2/git/https%3A%2F%2Fgitlab.com%2Fg%2Fp/main").canonical_spec == "gl/g/p/main"
    assert parse_launch("/repo/Org/Repo").canonical_spec == "gh/org/repo/HEAD"
    assert parse_launch("/v2/zenodo/10.5281/zenodo.3242074").canonical_spec == "zenodo/10.5281/zenodo.3242074"


HOSTILE = [
    "//evil.example/",
    "//evil.example/v2/gh/org/repo/HEAD",
    "/%2F%2Fevil.example",
    "/v2/gh/..%2f..",
    "/v2/gh/org/..%2f../HEAD",
    "/v2/gh/org/repo/%2e%2e",
    "/v2/gh/org/repo/%2E",
    "/v2/gh/org/repo/HEAD/..",
    "/v2/gh/org/repo/HEAD/./x",
    "/v2/gh/org/repo/%252e%252e",
    "/v2/gh/http://evil.example/x/HEAD",
    "/v2/gh/http:/evil.example/HEAD",
    "/v2/gh/http%3A/evil.example/HEAD",
    "/v2/gh/%2F%2Fevil.example/repo/HEAD",
    "/v2/gh/org/repo/%00",
    "/v2/gh/org/repo/a\x00b",
    "/v2/gh/org/repo/%0d%0aSet-Cookie:%20x",
    "/v2/gh/org/repo/%c2%85",
    "/v2/gh/org/repo/%c0%ae%c0%ae",
    "/v2/gh/org/repo/%c0%af",
    "/v2/gh/org/repo/%E2%82",
    "/v2/gh/org/repo/%zz",
    "/v2/gh/org/repo/100%",
    "/v2/gh/org/repo/a\\b",
    "/v2/gh/org/repo/a%5cb",
    "/v2/gh/org/repo/caf\u00e9",
    "/v2/gh/org/re po/HEAD",
    "/v2/gh/org/repo/HEAD:evil",
    "/v2/gh/org/repo/HEAD?x=1",
    "/v2/gh/org/repo",
    "/v2/gh/org",
    "/v2/gh/",
    "/v2/gh/org/.git/HEAD",
    "/v2/gh/org/repo/HEAD//",
    "/v2/gh//repo/HEAD",
    "/v2/unknown/x",
    "/v2",
    "/",
    "",
    "v2/gh/org/repo/HEAD",
    "/api/v2/gh/org/repo/HEAD",
    "/repo/org",
    "/v2/gh/org/repo/" + "a" * 3000,
    "/v2/gist/user",
    "/v2/gist/user/id/ref/extra",
    "/v2/gist/us:er/id",
    "/v2/gl/repo/HEAD",
    "/v2/gl/group%2Frepo",
    "/v2/gl/group%2F..%2Frepo/HEAD",
    "/v2/gl/group%2F%2Frepo/HEAD",
    "/v2/gl/https%3A%2F%2Fevil.example%2Fx/HEAD",
    "/v2/git/https%3A%2F%2Fgit.example.org%2Frepo",
    "/v2/git/ftp%3A%2F%2Fgit.example.org%2Frepo/HEAD",
    "/v2/git/file%3A%2F%2F%2Fetc%2Fpasswd/HEAD",
    "/v2/git/javascript%3Aalert(1)/HEAD",
    "/v2/git/https%3Aevil.example/HEAD",
    "/v2/git/https%3A%2F%2F/HEAD",
    "/v2/git/https%3A%2F%2Fuser%3Apw%40git.example.org%2Frepo/HEAD",
    "/v2/git/https%3A%2F%2Fgit.example.org%3A99999%2Frepo/HEAD",
    "/v2/git/https%3A%2F%2Fgit.example.org%2Fa%2F..%2Fb/HEAD",
    "/v2/git/https%3A%2F%2Fgit.example.org%2Frepo%3Fx%3D1/HEAD",
    "/v2/git/http%3A%2F%2F%5B%3A%3A1%2Fx/HEAD",
    "/v2/git/https%3A%2F%2Fgit.example.org%2Frepo%23frag/HEAD",
    "/v2/zenodo/zenodo.3242074",
    "/v2/zenodo/10.5281/a%2F%2Fb",
    "/v2/figshare/not-a-doi",
    "/v2/hydroshare/not-hex",
    "/v2/hydroshare/" + HYDRO_ID.upper(),
    "/v2/hydroshare/" + HYDRO_ID + "/extra",
    "/v2/dataverse/doi",
    "/v2/dataverse/https%3A%2F%2F",
    "/v2/ckan/not-a-url",
    "/v2/ckan/https%3A%2F%2Fdemo.ckan.org",
    "/v2/ckan/ftp%3A%2F%2Fdemo.ckan.org%2Fdataset%2Fx",
]


@pytest.mark.parametrize("path", HOSTILE, ids=[repr(p[:60]) for p in HOSTILE])
def test_hostile_paths_are_rejected(path: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_launch(path)
    message = info.value.message
    assert message and message == str(info.value)
    assert len(message) < 200  # never echoes the whole (possibly huge) input
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("path", "needle"),
    [
        ("/v2/foo/x/y", "unknown provider 'foo'; expected one of gh, gist, gl, git"),
        ("/v2/gh/org/repo", "ref is missing"),
        ("/v2/gh/org/repo/" + "a" * 3000, "too long"),
        ("/v2/gh/org/repo/%c0%af", "UTF-8"),
        ("/v2/gh/org/repo/%00", "control characters"),
        ("/v2/gh/org/repo/a\\b", "backslash"),
        ("/v2/gh/..%2f..", "'..'"),
        ("/v2/gh/http:/x/HEAD", "may only contain letters, digits"),
        ("/v2/git/ftp%3A%2F%2Fh%2Fr/HEAD", "http:// or https://"),
    ],
)
def test_messages_name_the_problem(path: str, needle: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_launch(path)
    assert needle in info.value.message


@pytest.mark.parametrize("query", ["a=1\r\nSet-Cookie: x", "a=\x00", "a=b c", "a=\u00e9", "a=1#frag"])
def test_hostile_queries_are_rejected(query: str) -> None:
    with pytest.raises(SpecError):
        parse_launch("/v2/gh/org/repo/HEAD", query)


def test_parser_is_fast() -> None:
    # Generous bound so a loaded CI machine does not flake; typical is a few µs.
    runs = 2000
    seconds = timeit.timeit(lambda: parse_launch("/v2/gh/binder-examples/octave/HEAD", QUERY), number=runs)
    assert seconds / runs < 100e-6
