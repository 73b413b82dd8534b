"""`binderfed launch` against a dev-member federation on loopback, run as a real subprocess."""

from __future__ import annotations

import io
import re
import socket
import sys

import pytest
from aiohttp import web

from federation.launch_client import (
    BAD_INPUT, BUILD_FAILED, UNAVAILABLE, LaunchError, RichDisplay, launch, parse_target, server_url,
)
from federation.stores.memory import MemoryStore
from tests.conftest import fast_config, member_of, member_states
from tests.support.cli import run_binderfed
from tests.support.waiting import eventually

REPO = "gh/binder-examples/requirements/HEAD"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


# -- input ---------------------------------------------------------------------------------


def test_a_full_launch_url_names_the_federation_and_what_to_open():
    target = parse_target("https://binder.example.org/v2/gh/org/repo/HEAD?urlpath=lab/tree/a.ipynb")
    assert target.federation == "https://binder.example.org"
    assert target.build_url == "https://binder.example.org/build/gh/org/repo/HEAD"
    assert target.urlpath == "lab/tree/a.ipynb"
    # a federation under a path prefix, and --federation winning over the URL's host
    assert parse_target("https://example.org/binder/v2/gh/org/repo/main").federation == "https://example.org/binder"
    assert parse_target("https://a.org/v2/gh/o/r/HEAD", "http://127.0.0.1:9/").federation == "http://127.0.0.1:9"


def test_provider_spec_needs_a_federation(monkeypatch):
    monkeypatch.delenv("BINDERFED_URL", raising=False)
    target = parse_target("gh/org/repo/HEAD?labpath=my%20notebook.ipynb", "http://127.0.0.1:8080")
    assert target.provider_spec == "gh/org/repo/HEAD"
    assert target.urlpath == "doc/tree/my%20notebook.ipynb"
    assert parse_target("/repo/org/repo", "http://h").provider_spec == "gh/org/repo/HEAD"
    with pytest.raises(LaunchError) as info:
        parse_target("gh/org/repo/HEAD")
    assert info.value.code == BAD_INPUT and "--federation" in info.value.message
    monkeypatch.setenv("BINDERFED_URL", "http://env.example")
    assert parse_target("gh/org/repo/HEAD").federation == "http://env.example"


@pytest.mark.parametrize("text, federation", [
    ("gh/org-only", "http://h"),
    ("nope/org/repo/HEAD", "http://h"),
    ("https://example.org/about", None),
    ("gh/org/repo/HEAD", "ftp://h"),
    ("gh/org/../HEAD", "http://h"),
])
def test_bad_input_is_exit_code_2(text, federation):
    with pytest.raises(LaunchError) as info:
        parse_target(text, federation)
    assert info.value.code == BAD_INPUT


@pytest.mark.parametrize("query, urlpath", [
    ("urlpath=lab/tree/a.ipynb", "lab/tree/a.ipynb"),
    ("labpath=notebooks/", "doc/tree/notebooks"),            # one trailing slash dropped
    ("labpath=a%20b.ipynb&urlpath=lab", "doc/tree/a%20b.ipynb"),  # labpath wins, as on BinderHub's page
    ("filepath=src/x.py", "tree/src/x.py"),
    ("labpath=l.ipynb&filepath=f.py", "doc/tree/l.ipynb"),
    ("labpath=%C3%A9t%C3%A9.ipynb", "doc/tree/%C3%A9t%C3%A9.ipynb"),  # escaped as encodeURI does
    ("", ""),
])
def test_what_to_open_follows_binderhubs_launch_page(query, urlpath):
    assert parse_target(f"https://b.example/v2/gh/o/r/HEAD?{query}").urlpath == urlpath


def test_server_url_carries_token_and_urlpath():
    event = {"phase": "ready", "url": "https://hub.example/user/x-1/", "token": "a b"}
    assert server_url(event) == "https://hub.example/user/x-1/?token=a%20b"
    assert server_url(event, "/lab/tree/n.ipynb") == "https://hub.example/user/x-1/lab/tree/n.ipynb?token=a%20b"
    assert server_url(event, "lab?reset") == "https://hub.example/user/x-1/lab?reset&token=a%20b"


# -- against a federation --------------------------------------------------------------------


@pytest.fixture
async def federation(start_devhub, start_router, http):
    hub = await start_devhub("alpha", quota=20)
    router = await start_router(fast_config([member_of(hub)]), store=MemoryStore())

    async def healthy():
        return (await member_states(http, router)).get("alpha") == "healthy"
    await eventually(healthy, timeout=10, what="alpha healthy")
    return hub, router


async def test_success_prints_the_server_url_and_exits_0(federation, http):
    hub, router = federation
    done = await run_binderfed("launch", f"{router.url}/v2/{REPO}?urlpath=lab")
    assert done.returncode == 0, done.stderr
    url = done.stdout.strip().splitlines()[-1]
    assert re.fullmatch(re.escape(hub.url) + r"/user/[a-z0-9-]+/lab\?token=[A-Za-z0-9_-]+", url), done.stdout
    # plain lines when stdout is not a terminal: no escape codes, one line per event with its phase
    assert not ANSI.search(done.stdout)
    assert re.search(r"^\[0:\d\d\] building: Step 1/", done.stdout, re.M), done.stdout
    assert re.search(r"^\[0:\d\d\] launching: ", done.stdout, re.M)
    assert f"placed on member alpha (affinity): {hub.url}" in done.stdout
    # the router's 307 was followed to the member with the event-stream Accept header kept
    assert hub.build_requests[-1]["accept"] == "text/event-stream"
    async with http.get(url) as response:  # the printed URL opens the server
        assert response.status == 200


async def test_provider_spec_with_federation_flag_and_open(federation, tmp_path):
    hub, router = federation
    opened = tmp_path / "opened"
    browser = f"{sys.executable} -c \"import sys,pathlib; pathlib.Path(sys.argv[1]).write_text(sys.argv[2])\" {opened} %s"
    done = await run_binderfed("launch", REPO, "--federation", router.url, "--open", env={"BROWSER": browser})
    assert done.returncode == 0, done.stderr
    url = done.stdout.strip().splitlines()[-1]
    assert opened.read_text() == url


async def test_failed_build_exits_1_with_the_builds_message(federation):
    hub, router = federation
    hub.set_faults(fail_repos=["binder-examples/broken"])
    done = await run_binderfed("launch", "gh/binder-examples/broken/HEAD", "--federation", router.url)
    assert done.returncode == BUILD_FAILED, done.stdout + done.stderr
    assert "Error during build: The command" in done.stderr
    assert "returned a non-zero code: 1" in done.stderr


async def test_dead_federation_exits_3():
    with socket.socket() as sock:  # a port nobody listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    done = await run_binderfed("launch", REPO, "--federation", f"http://127.0.0.1:{port}")
    assert done.returncode == UNAVAILABLE, done.stdout + done.stderr
    assert f"cannot connect to http://127.0.0.1:{port}" in done.stderr


async def test_no_free_member_exits_3(start_devhub, start_router, http):
    hub = await start_devhub("full", quota=0)
    router = await start_router(fast_config([member_of(hub)], panic=False), store=MemoryStore())

    async def full():
        return (await member_states(http, router)).get("full") == "full"
    await eventually(full, timeout=10, what="member full")
    done = await run_binderfed("launch", f"{router.url}/v2/{REPO}")
    assert done.returncode == UNAVAILABLE, done.stdout + done.stderr
    assert "No member of this Binder federation can start a server right now" in done.stderr


async def test_stalled_stream_times_out_with_exit_3(federation):
    hub, router = federation
    hub.set_faults(stall_after="building")
    done = await run_binderfed("launch", REPO, "--federation", router.url, "--timeout", "1")
    assert done.returncode == UNAVAILABLE
    assert "no server within 1 s" in done.stderr


async def test_bad_input_exits_2_without_contacting_anyone():
    done = await run_binderfed("launch", "gh/only-an-org", "--federation", "http://127.0.0.1:9")
    assert done.returncode == BAD_INPUT
    assert "not a Binder launch" in done.stderr


async def test_redirect_to_a_non_http_url_is_not_followed():
    async def handler(request):
        raise web.HTTPTemporaryRedirect("file:///etc/passwd")

    app = web.Application()
    app.router.add_get("/build/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        done = await run_binderfed("launch", REPO, "--federation", f"http://127.0.0.1:{runner.addresses[0][1]}")
    finally:
        await runner.cleanup()
    assert done.returncode == UNAVAILABLE
    assert "redirected to 'file:///etc/passwd', which is not an http(s) URL" in done.stderr


async def test_terminal_display_shows_phases_and_the_url(federation):
    from rich.console import Console

    hub, router = federation
    out = io.StringIO()
    display = RichDisplay(Console(file=out, force_terminal=True, width=100))
    url = await launch(parse_target(REPO, router.url), display, timeout=30)
    display.ready(url)
    text = ANSI.sub("", out.getvalue())
    assert "Launching gh/binder-examples/requirements/HEAD" in text
    assert "✓ building" in text and "✓ ready" in text
    assert url in text and url.startswith(hub.url)


async def test_stream_mode_federation_relays_the_build_itself(start_devhub, start_router, http):
    from dataclasses import replace

    hub = await start_devhub("alpha", quota=20)
    config = fast_config([member_of(hub)])
    router = await start_router(replace(config, router=replace(config.router, forward="stream")), store=MemoryStore())

    async def healthy():
        return (await member_states(http, router)).get("alpha") == "healthy"
    await eventually(healthy, timeout=10, what="alpha healthy")
    done = await run_binderfed("launch", f"{router.url}/v2/{REPO}?labpath=index.ipynb")
    assert done.returncode == 0, done.stdout + done.stderr
    url = done.stdout.strip().splitlines()[-1]
    assert url.startswith(hub.url + "/user/") and "/doc/tree/index.ipynb?token=" in url
