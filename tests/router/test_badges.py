"""Launch badges are served by the router itself, cacheable for a long time."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest

from tests.conftest import fast_config

SVG = "{http://www.w3.org/2000/svg}"


@pytest.mark.parametrize("path", ["/badge.svg", "/badge_logo.svg", "/assets/images/badge.svg"])
async def test_badge_is_a_long_cached_svg_with_an_etag(start_router, http, path):
    router = await start_router(fast_config([]), probe=False)
    async with http.get(router.url + path) as response:
        assert response.status == 200
        assert response.content_type == "image/svg+xml"
        cache = response.headers["Cache-Control"]
        assert "public" in cache
        assert int(re.search(r"max-age=(\d+)", cache).group(1)) >= 86400
        etag = response.headers["ETag"]
        body = await response.read()
    root = ET.fromstring(body)
    assert root.tag == SVG + "svg"
    assert "binder" in root.find(SVG + "title").text
    async with http.get(router.url + path, headers={"If-None-Match": etag}) as response:
        assert response.status == 304
        assert response.headers["ETag"] == etag and await response.read() == b""
    async with http.get(router.url + path, headers={"If-None-Match": '"something-else"'}) as response:
        assert response.status == 200


async def test_old_redirector_badge_path_serves_the_plain_badge(start_router, http):
    router = await start_router(fast_config([]), probe=False)
    async with http.get(router.url + "/badge.svg") as plain, http.get(router.url + "/assets/images/badge.svg") as old:
        assert await plain.read() == await old.read()
        assert plain.headers["ETag"] == old.headers["ETag"]
    async with http.get(router.url + "/badge_logo.svg") as logo:
        assert logo.headers["ETag"] != plain.headers["ETag"]
