"""The provider registry: the router, image naming and the dev member read a spec alike."""

from __future__ import annotations

import pytest

from federation.spec import parse_launch
from hub import images, providers
from hub.devhub import describe_spec
from tests.federation.test_spec import VALID


@pytest.mark.parametrize("path", [path for path, _ in VALID if not path.startswith("/repo/")])
def test_every_spec_the_router_accepts_a_member_can_build(path: str) -> None:
    """What the router forwards, BinderHub's reading of the same provider takes too: the
    dev member builds it, and its image is named from the registry's build slug."""
    request = parse_launch(path)
    provider = providers.get(request.provider)
    assert provider is not None and provider.tokenize(request.spec).ref == request.ref
    repo = describe_spec(request.provider, request.spec)
    slug = images.build_slug(request.provider, request.spec)
    assert slug is None if provider.data else repo.build_slug == slug


@pytest.mark.parametrize(("name", "prefix"), [("GitHub", "gh"), ("gh", "gh"), ("Gist", "gist"), ("GitLab", "gl"),
                                              ("Git", "git"), ("Zenodo", "zenodo"), ("Hydroshare", "hydroshare"),
                                              ("CKAN", "ckan"), ("dataverse", "dataverse")])
def test_binderhub_launch_event_names_find_their_provider(name: str, prefix: str) -> None:
    found = providers.by_name(name)
    assert found is not None and found.prefix == prefix


def test_unknown_providers_are_refused_by_every_reader() -> None:
    assert providers.get("svn") is None and providers.by_name("Subversion") is None
    with pytest.raises(ValueError, match="unknown provider"):
        images.build_slug("svn", "a/b/c")
    with pytest.raises(ValueError, match="No provider found for prefix svn"):
        describe_spec("svn", "a/b/c")
