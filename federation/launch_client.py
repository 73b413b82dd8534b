"""`binderfed launch`: launch a repository on a Binder federation from a terminal.

    binderfed launch https://mybinder.org/v2/gh/binder-examples/requirements/HEAD?urlpath=lab
    binderfed launch gh/binder-examples/requirements/HEAD --federation http://127.0.0.1:8080

It opens the federation's `/build/<provider>/<spec>` event stream, follows the router's
307 to a member (only to http/https, keeping `Accept: text/event-stream`), shows the
build's progress and prints the server URL with its token (and the launch's `urlpath`,
`labpath` or `filepath`) when the `ready` event arrives. On a terminal the progress is
a live line (phase, elapsed time, a spinner, the last log line) drawn with `rich`;
otherwise every event is one plain line, so CI logs stay readable. On success the
last line of standard output is the URL alone (`| tail -n 1` gets it).

Exit codes (argparse's own usage errors are 2 as well):

    0  ready: the URL was printed
    1  the build or launch failed; the build's message is printed
    2  bad input: not a launch URL or provider/spec, or the federation refused it as such
    3  federation unavailable: cannot connect, HTTP 5xx/429, no member free
       (a `failed` event with status 503/429 or "too many users"), stream cut, timeout
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import webbrowser
from dataclasses import dataclass
from typing import Any, Mapping, Protocol, TextIO
from urllib.parse import quote, urljoin, urlsplit

import aiohttp
from yarl import URL

from hub.events import Comment, EventStreamError, SSEDecoder
from hub.models import launch_urlpath

from .spec import FAMILIES, SpecError, parse_launch

READY, BUILD_FAILED, BAD_INPUT, UNAVAILABLE = 0, 1, 2, 3

FEDERATION_ENV = "BINDERFED_URL"  # the same variable as `binderfed admin` reads
MAX_REDIRECTS = 5
CONNECT_TIMEOUT = 30.0
# A member sends a keepalive every 25 s; this much silence means the stream is dead.
STALL_TIMEOUT = 120.0
DEFAULT_TIMEOUT = 1800.0
USER_AGENT = "binderfed-launch/0.1"
REDIRECTS = (301, 302, 303, 307, 308)
# Set by the router on its 307 (router.launch): which member, and why.
MEMBER_HEADER = "X-Binder-Federation-Member"
REASON_HEADER = "X-Binder-Federation-Reason"


class LaunchError(Exception):
    """The launch ended without a server; `code` is the exit code."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class LaunchTarget:
    federation: str     # base URL, no trailing slash (may carry a path prefix)
    provider_spec: str  # "<provider>/<spec>", still URL-escaped as given
    urlpath: str        # what to open on the server ("" for its default page)

    @property
    def build_url(self) -> str:
        return f"{self.federation}/build/{self.provider_spec}"


def parse_target(text: str, federation: str | None = None) -> LaunchTarget:
    """A launch URL or a `provider/spec`, checked with federation.spec; LaunchError(2) if not."""
    text = text.strip()
    if text.startswith(("http://", "https://")):
        parts = urlsplit(text)
        segments = parts.path.split("/")
        family_at = next((i for i, s in enumerate(segments) if s in FAMILIES and i > 0), None)
        if family_at is None:
            raise LaunchError(BAD_INPUT, f"{text!r} is not a Binder launch URL: expected /v2/, /build/ or /repo/ in its path")
        base = f"{parts.scheme}://{parts.netloc}" + "/".join(segments[:family_at])
        path, query = "/".join(segments[family_at:]), parts.query
        federation = federation or base
    else:
        path, _, query = text.partition("?")
        path = path.lstrip("/")
        if path.split("/", 1)[0] not in FAMILIES:
            path = "v2/" + path
    federation = federation or os.environ.get(FEDERATION_ENV, "")
    if not federation:
        raise LaunchError(BAD_INPUT, f"which federation? Give a full launch URL, --federation URL or set {FEDERATION_ENV}")
    federation = _check_federation(federation)
    try:
        launch = parse_launch("/" + path, query)
    except SpecError as exc:
        raise LaunchError(BAD_INPUT, f"not a Binder launch: {exc.message}") from None
    return LaunchTarget(federation=federation, provider_spec=launch.provider_spec, urlpath=launch_urlpath(query))


def _check_federation(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise LaunchError(BAD_INPUT, f"federation {url!r} must be an http:// or https:// URL without query")
    return url.rstrip("/")


def server_url(event: Mapping[str, Any], urlpath: str = "") -> str:
    """The URL a person opens: the server's `url` + urlpath, with `?token=`."""
    url = str(event.get("url") or "")
    if not url.startswith(("http://", "https://")):
        raise LaunchError(UNAVAILABLE, f"the ready event carries no usable server URL: {url!r}")
    path, _, extra_query = urlpath.partition("?")
    if path:
        url = url.rstrip("/") + "/" + path.lstrip("/")
    params = [extra_query] if extra_query else []
    token = event.get("token")
    if token:
        params.append("token=" + quote(str(token), safe=""))
    return url + ("?" + "&".join(params) if params else "")


# -- displays -----------------------------------------------------------------------------


class Display(Protocol):
    def start(self, target: LaunchTarget) -> None: ...
    def redirected(self, url: str, member: str | None, reason: str | None) -> None: ...
    def event(self, phase: str, message: str) -> None: ...
    def stop(self) -> None: ...
    def ready(self, url: str) -> None: ...
    def failed(self, message: str) -> None: ...


def _elapsed(since: float) -> str:
    seconds = int(time.monotonic() - since)
    return f"{seconds // 60}:{seconds % 60:02d}"


class PlainDisplay:
    """One line per event: for logs, pipes and dumb terminals."""

    def __init__(self, out: TextIO = sys.stdout, err: TextIO = sys.stderr):
        self.out, self.err = out, err
        self.started = time.monotonic()
        self.phase = ""

    def _line(self, text: str) -> None:
        self.out.write(f"[{_elapsed(self.started)}] {text}\n")
        self.out.flush()

    def start(self, target: LaunchTarget) -> None:
        self.started = time.monotonic()
        self._line(f"launching {target.provider_spec} on {target.federation}")

    def redirected(self, url: str, member: str | None, reason: str | None) -> None:
        self._line(_placement(url, member, reason))

    def event(self, phase: str, message: str) -> None:
        if message:
            self._line(f"{phase or self.phase or 'progress'}: {message}")
        elif phase != self.phase:
            self._line(phase)
        self.phase = phase or self.phase

    def stop(self) -> None:
        pass

    def ready(self, url: str) -> None:
        self._line(f"ready after {_elapsed(self.started)}; your server:")
        self.out.write(url + "\n")
        self.out.flush()

    def failed(self, message: str) -> None:
        self.err.write(f"error: {message}\n")
        self.err.flush()


class RichDisplay:
    """A live status line on a terminal: spinner, phase, elapsed time and the last log line."""

    def __init__(self, console: Any):
        from rich.live import Live
        from rich.spinner import Spinner

        self.console = console
        self.started = time.monotonic()
        self.phase = "connecting"
        self.last_line = ""
        self.spinner = Spinner("dots", style="cyan")
        self.live = Live(self, console=console, refresh_per_second=8, transient=True)

    def __rich__(self) -> Any:
        from rich.console import Group
        from rich.text import Text

        self.spinner.update(text=Text.assemble((self.phase, "bold"), "  ", (_elapsed(self.started), "dim")))
        return Group(self.spinner, Text(self.last_line, style="dim", no_wrap=True, overflow="ellipsis"))

    def start(self, target: LaunchTarget) -> None:
        self.started = time.monotonic()
        self.console.print(f"Launching [bold]{target.provider_spec}[/] on {target.federation}", highlight=False)
        self.live.start()

    def redirected(self, url: str, member: str | None, reason: str | None) -> None:
        self.live.console.print(_placement(url, member, reason), highlight=False, markup=False)

    def event(self, phase: str, message: str) -> None:
        if phase and phase != self.phase:
            if self.phase != "connecting":
                self.live.console.print(f"[green]✓[/] {self.phase} [dim]{_elapsed(self.started)}[/]", highlight=False)
            self.phase = phase
        if message:
            self.last_line = message
        self.live.refresh()

    def stop(self) -> None:
        self.live.stop()

    def ready(self, url: str) -> None:
        self.console.print(f"[bold green]✓ ready[/] after {_elapsed(self.started)}; your server:", highlight=False)
        self.console.print(url, soft_wrap=True, markup=False, highlight=False)

    def failed(self, message: str) -> None:
        self.console.print(f"[bold red]✗ {self.phase}[/] after {_elapsed(self.started)}", highlight=False)
        from rich.console import Console

        Console(stderr=True).print(f"[red]error:[/] {message}", markup=True, highlight=False, soft_wrap=True)


def _placement(url: str, member: str | None, reason: str | None) -> str:
    if member:
        return f"placed on member {member}" + (f" ({reason})" if reason else "") + f": {_origin(url)}"
    return f"redirected to {_origin(url)}"


def make_display(out: TextIO = sys.stdout) -> Display:
    from rich.console import Console

    console = Console(file=out)
    if console.is_terminal and not console.is_dumb_terminal:
        return RichDisplay(console)
    return PlainDisplay(out)


# -- the stream -----------------------------------------------------------------------------


async def _open(session: aiohttp.ClientSession, url: str, display: Display) -> aiohttp.ClientResponse:
    """GET the build stream, following redirects ourselves: only to http(s), Accept kept."""
    headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache", "User-Agent": USER_AGENT}
    for _ in range(MAX_REDIRECTS + 1):
        try:
            response = await session.get(URL(url, encoded=True), headers=headers, allow_redirects=False)
        except aiohttp.ClientConnectorError as exc:
            raise LaunchError(UNAVAILABLE, f"cannot connect to {_origin(url)}: {exc.os_error.strerror or exc}") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise LaunchError(UNAVAILABLE, f"no answer from {_origin(url)}: {exc or type(exc).__name__}") from None
        if response.status in REDIRECTS:
            location = response.headers.get("Location", "")
            response.release()
            target = urljoin(url, location)
            if not location or urlsplit(target).scheme not in ("http", "https"):
                raise LaunchError(UNAVAILABLE, f"{_origin(url)} redirected to {location!r}, which is not an http(s) URL")
            display.redirected(target, response.headers.get(MEMBER_HEADER), response.headers.get(REASON_HEADER))
            url = target
            continue
        if response.status != 200:
            status, reason = response.status, response.reason or ""
            retry = response.headers.get("Retry-After")
            response.release()
            message = f"{_origin(url)} answered HTTP {status} {reason}".rstrip()
            if retry:
                message += f" (retry after {retry} s)"
            code = UNAVAILABLE if status >= 500 or status == 429 else BAD_INPUT
            raise LaunchError(code, message)
        content_type = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if content_type != "text/event-stream":
            response.release()
            raise LaunchError(UNAVAILABLE, f"{url} is not a Binder build stream (content type {content_type or 'none'!r})")
        return response
    raise LaunchError(UNAVAILABLE, f"more than {MAX_REDIRECTS} redirects from {_origin(url)}")


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _failure(event: Mapping[str, Any]) -> LaunchError:
    message = str(event.get("message") or "the launch failed without a message").strip()
    status = event.get("status_code")
    if status in (429, 503) or "too many users" in message.lower():
        return LaunchError(UNAVAILABLE, message)
    if status in (400, 404):
        return LaunchError(BAD_INPUT, message)
    return LaunchError(BUILD_FAILED, message)


async def follow(session: aiohttp.ClientSession, target: LaunchTarget, display: Display,
                 stall_timeout: float = STALL_TIMEOUT) -> str:
    """Follow the build stream to `ready`: return the server URL, or raise LaunchError."""
    response = await _open(session, target.build_url, display)
    decoder = SSEDecoder()
    try:
        while True:
            try:
                async with asyncio.timeout(stall_timeout):
                    chunk = await response.content.readany()
            except TimeoutError:
                raise LaunchError(UNAVAILABLE, f"the build stream sent nothing for {stall_timeout:g} s") from None
            except (aiohttp.ClientError, OSError) as exc:
                raise LaunchError(UNAVAILABLE, f"the build stream was cut: {exc or type(exc).__name__}") from None
            if not chunk:
                raise LaunchError(UNAVAILABLE, "the build stream ended before the server was ready")
            try:
                items = decoder.feed(chunk)
            except EventStreamError as exc:
                raise LaunchError(UNAVAILABLE, f"malformed build stream: {exc}") from None
            for item in items:
                if isinstance(item, Comment):
                    continue
                try:
                    event = json.loads(item.data)
                except ValueError:
                    raise LaunchError(UNAVAILABLE, f"build event is not JSON: {item.data[:80]!r}") from None
                if not isinstance(event, dict):
                    continue
                phase = event.get("phase") if isinstance(event.get("phase"), str) else ""
                message = event.get("message") if isinstance(event.get("message"), str) else ""
                display.event(phase, message.strip())
                if phase == "ready":
                    return server_url(event, target.urlpath)
                if phase == "failed":
                    raise _failure(event)
    finally:
        response.close()


async def launch(target: LaunchTarget, display: Display, timeout: float | None) -> str:
    session_timeout = aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT)
    async with aiohttp.ClientSession(timeout=session_timeout) as session:
        display.start(target)
        try:
            async with asyncio.timeout(timeout):
                return await follow(session, target, display)
        except TimeoutError:
            raise LaunchError(UNAVAILABLE, f"no server within {timeout:g} s (--timeout)") from None
        finally:
            display.stop()


# -- the command ------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = (
        "exit codes: 0 ready (URL printed), 1 build failed, 2 bad input (also argparse usage errors),\n"
        "            3 federation unavailable (unreachable, 5xx/429, no free member, stream cut, timeout)"
    )
    parser.add_argument("target", help="a launch URL (https://mybinder.org/v2/gh/org/repo/HEAD?urlpath=lab) "
                                       "or provider/spec (gh/org/repo/HEAD)")
    parser.add_argument("--federation", metavar="URL",
                        help=f"the federation to launch on (default: the launch URL's, else ${FEDERATION_ENV})")
    parser.add_argument("--open", action="store_true", help="open the server in a web browser when it is ready")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, metavar="S",
                        help=f"give up after S seconds (default {DEFAULT_TIMEOUT:g}; 0: never)")


def run(args: argparse.Namespace) -> int:
    display: Display | None = None
    try:
        target = parse_target(args.target, args.federation)
        if args.timeout < 0:
            raise LaunchError(BAD_INPUT, "--timeout must not be negative")
        display = make_display()
        url = asyncio.run(launch(target, display, args.timeout or None))
    except LaunchError as exc:
        (display or PlainDisplay()).failed(exc.message)
        return exc.code
    display.ready(url)
    if args.open:
        webbrowser.open(url)
    return READY
