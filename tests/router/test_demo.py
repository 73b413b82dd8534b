"""`binderfed demo`: the printed launch URL reaches a dev member's server page."""

from __future__ import annotations

import argparse
import asyncio
import re

from federation import config as config_mod
from router.demo import add_arguments, run_demo


async def test_demo_launch_url_followed_like_curl_reaches_a_server_page(http, capsys, store_url):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--port", "0", "--build-seconds", "0.05", "--config", str(config_mod.DEMO_CONFIG),
                              "--store-url", store_url])
    ready, stop = asyncio.Event(), asyncio.Event()
    demo = asyncio.create_task(run_demo(args, ready=ready, stop=stop))
    try:
        await asyncio.wait_for(ready.wait(), 20)
        out = capsys.readouterr().out
        url = re.search(r"Launch URL: (\S+)", out).group(1)
        assert "dev member" in out
        # Like `curl -L`: no JavaScript, follow every redirect.
        async with http.get(url, headers={"Accept": "*/*"}) as page:
            text = await page.text()
            assert page.status == 200, text
        assert "Jupyter server" in text
        assert re.search(r"/user/[^/]+/lab", str(page.url))
        assert "token=" in str(page.url)
    finally:
        stop.set()
        await asyncio.wait_for(demo, 20)
