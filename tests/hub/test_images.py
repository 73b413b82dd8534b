"""BinderHub image names: slugs, escaping, truncation, parsing image references."""

from __future__ import annotations

import hashlib

import pytest

from hub.images import (
    build_slug,
    data_build_slug,
    image_name,
    parse_image_name,
    safe_build_slug,
    slug_matches,
)

OCTAVE_REF = "1479e02a3b9a6c50d8b0fcc61bde7c3c3b57d5b2"


def sha6(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:6]


def test_design_example() -> None:
    slug = build_slug("gh", "binder-examples/octave/HEAD")
    assert slug == "binder-examples-octave"
    assert safe_build_slug(slug) == "binder-2dexamples-2doctave-03025a"
    assert image_name("", slug, OCTAVE_REF) == f"binder-2dexamples-2doctave-03025a:{OCTAVE_REF}"


@pytest.mark.parametrize(
    ("slug", "escaped"),
    [
        # "_" and "." are escaped like any other non-alphanumeric byte; letters lower-cased
        ("Org_1-My.Repo", "org-5f1-2dmy-2erepo"),
        # non-ASCII: each UTF-8 byte becomes "-" + hex
        ("caf\u00e9-\u00dcber", "caf-c3-a9-2d-c3-9cber"),
        ("https://gitlab.example.org/a/b", "https-3a-2f-2fgitlab-2eexample-2eorg-2fa-2fb"),
    ],
)
def test_escaping(slug: str, escaped: str) -> None:
    assert safe_build_slug(slug) == f"{escaped}-{sha6(slug)}"
    assert slug_matches(safe_build_slug(slug), slug)


def test_hash_is_over_the_slug_as_typed() -> None:
    # The escaped part lower-cases to the same text, the hash does not.
    upper, lower = safe_build_slug("Binder-Examples-Octave"), safe_build_slug("binder-examples-octave")
    assert upper.rsplit("-", 1)[0] == lower.rsplit("-", 1)[0]
    assert upper != lower


def test_long_slug_is_truncated_to_the_limit() -> None:
    slug = "a" * 300
    safe = safe_build_slug(slug)
    assert safe == "a" * 248 + "-" + sha6(slug)
    assert len(safe) == 255
    assert slug_matches(safe, slug)


def test_truncation_may_cut_an_escape_and_still_matches() -> None:
    slug = "-" * 100  # escapes to "-2d" * 100 = 300 characters
    safe = safe_build_slug(slug, limit=50)
    assert len(safe) == 50
    assert safe == ("-2d" * 100)[:43] + "-" + sha6(slug)
    assert slug_matches(safe, slug)


def test_image_name_keeps_the_whole_name_within_255() -> None:
    prefix = "gcr.io/binderhub-288415/r2d-staging-g5b5b759-"
    slug = "user-" + "r" * 400
    name = image_name(prefix, slug, OCTAVE_REF)
    repository, tag = name.rsplit(":", 1)
    assert len(repository) == 255
    assert tag == OCTAVE_REF
    assert repository.startswith(prefix)


def test_image_name_normalizes_prefix_and_tag_like_binderhub() -> None:
    name = image_name("Registry.example/My_Org/R2D-", "binder-examples-octave", "Main_Branch")
    assert name == "registry.example/my-org/r2d-binder-2dexamples-2doctave-03025a:main-branch"


def test_safe_build_slug_needs_room_for_the_hash() -> None:
    assert safe_build_slug("abc", limit=7) == "-" + sha6("abc")
    with pytest.raises(ValueError):
        safe_build_slug("abc", limit=6)


@pytest.mark.parametrize(
    ("provider", "spec", "slug"),
    [
        ("gh", "binder-examples/octave/HEAD", "binder-examples-octave"),
        ("gh", "Binder-Examples/Octave.git/feature/x", "Binder-Examples-Octave"),
        ("gist", "minrk/8e4d7a9c6b0f/0123abcd", "8e4d7a9c6b0f"),
        ("gist", "minrk/8e4d7a9c6b0f", "8e4d7a9c6b0f"),
        ("gl", "group%2Fsub-project%2Frepo/main", "group-sub_-project-repo"),
        ("git", "https%3A%2F%2Fgit.example.org%2Frepo.git/v1.0", "https://git.example.org/repo.git"),
        ("zenodo", "10.5281/zenodo.3242074", None),
        ("figshare", "10.6084/m9.figshare.9782777.v1", None),
        ("hydroshare", "8b826c43f55043f583c85ae312a8894f", None),
        ("dataverse", "10.7910/DVN/TJCLKP", None),
        ("ckan", "https%3A%2F%2Fdemo.ckan.org%2Fdataset%2Fx", None),
    ],
)
def test_build_slug_per_provider(provider: str, spec: str, slug: str | None) -> None:
    assert build_slug(provider, spec) == slug


@pytest.mark.parametrize(("provider", "spec"), [("gh", "org/repo"), ("gist", "user"), ("nope", "x/y/z")])
def test_build_slug_rejects_bad_input(provider: str, spec: str) -> None:
    with pytest.raises(ValueError):
        build_slug(provider, spec)


@pytest.mark.parametrize(
    ("provider", "resolved", "slug"),
    [
        ("zenodo", "3242074", "zenodo-3242074"),
        ("figshare", "9782777.v1", "figshare-9782777.v1"),
        ("hydroshare", "8b826c43f55043f583c85ae312a8894f.v1600000000", "hydroshare-8b826c43f55043f583c85ae312a8894f.v1600000000"),
        ("dataverse", "DVN/TJCLKP", "dataverse-dvn-2ftjclkp"),
    ],
)
def test_data_build_slug(provider: str, resolved: str, slug: str) -> None:
    assert data_build_slug(provider, resolved) == slug


def test_data_build_slug_rejects_git_providers() -> None:
    with pytest.raises(ValueError):
        data_build_slug("gh", "x")


SAFE = "binder-2dexamples-2doctave-03025a"


@pytest.mark.parametrize(
    ("prefix", "image", "expected"),
    [
        ("r2d-", f"r2d-{SAFE}:{OCTAVE_REF}", (SAFE, OCTAVE_REF)),
        ("gcr.io/binder/r2d-", f"gcr.io/binder/r2d-{SAFE}:abc", (SAFE, "abc")),
        # host on one side only: compared by repository path
        ("binder/r2d-", f"gcr.io/binder/r2d-{SAFE}:abc", (SAFE, "abc")),
        ("gcr.io/binder/r2d-", f"binder/r2d-{SAFE}:abc", (SAFE, "abc")),
        # registry with a port: its ":" is not a tag separator
        ("localhost:5000/r2d-", f"localhost:5000/r2d-{SAFE}:abc", (SAFE, "abc")),
        ("docker.io/binder/r2d-", f"binder/r2d-{SAFE}:abc", (SAFE, "abc")),
        # tag plus digest, as some runtimes report it
        ("r2d-", f"r2d-{SAFE}:abc@sha256:{'0' * 64}", (SAFE, "abc")),
        # prefix given in config spelling; BinderHub lower-cases and replaces "_"
        ("GCR.io/My_Org/r2d-", f"gcr.io/my-org/r2d-{SAFE}:abc", (SAFE, "abc")),
        ("", f"{SAFE}:abc", (SAFE, "abc")),
        # not ours
        ("gcr.io/binder/r2d-", f"quay.io/binder/r2d-{SAFE}:abc", None),
        ("r2d-", f"other-{SAFE}:abc", None),
        ("r2d-", f"r2d-{SAFE}", None),
        ("r2d-", f"r2d-{SAFE}@sha256:{'0' * 64}", None),
        ("localhost:5000/r2d-", f"localhost:5000/r2d-{SAFE}", None),
        ("r2d-", "r2d-no-hash-suffix:abc", None),
        ("r2d-", f"r2d-sub/{SAFE}:abc", None),
        ("", "jupyter/base-notebook:latest", None),
    ],
)
def test_parse_image_name(prefix: str, image: str, expected: tuple[str, str] | None) -> None:
    assert parse_image_name(prefix, image) == expected


def test_image_name_round_trip() -> None:
    prefix = "registry.example:5000/binder/r2d-"
    slug = build_slug("gl", "group%2Fsub-project%2Frepo/main")
    name = image_name(prefix, slug, "deadbeef")
    parsed = parse_image_name(prefix, name)
    assert parsed is not None
    safe, tag = parsed
    assert tag == "deadbeef"
    assert slug_matches(safe, slug)
    assert not slug_matches(safe, "group-sub_-project-other")


@pytest.mark.parametrize(
    ("safe", "slug", "matches"),
    [
        (SAFE, "binder-examples-octave", True),
        (SAFE, "Binder-Examples-Octave", False),  # same escaped text, different hash
        (SAFE, "binder-examples-octave2", False),
        ("binder-2dexamples-2dother-03025a", "binder-examples-octave", False),  # hash ok, name not
        ("03025a", "binder-examples-octave", False),
        ("-03025a", "binder-examples-octave", True),  # fully truncated name
    ],
)
def test_slug_matches(safe: str, slug: str, matches: bool) -> None:
    assert slug_matches(safe, slug) is matches
