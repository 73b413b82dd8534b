"""The member API's transport errors: what a call to a member can fail with below the API.

`hub.models` holds `MemberError` and `MemberResponseError` (an answer that does not
follow the member API); these are the failures of the transport itself. Messages are
the client's own words (they become a member's public `reason`); what the member sent
is in `detail`, for logs only.
"""

from __future__ import annotations

import errno
import os
import socket

import aiohttp

from .models import MemberError


class MemberUnreachable(MemberError):
    """No HTTP answer from the member: `cause` says why in one word."""

    def __init__(self, message: str, *, url: str | None = None, cause: str = "error") -> None:
        super().__init__(message, url=url)
        self.cause = cause


class MemberHTTPError(MemberError):
    """The member answered with an HTTP status the call does not accept."""

    def __init__(self, status: int, message: str = "", *, url: str | None = None, detail: str = "") -> None:
        super().__init__(message or f"member answered HTTP {status}", url=url, detail=detail)
        self.status = status


class MemberStalled(MemberError):
    """The member's event stream sent nothing (no event, no keepalive) for too long."""


class MemberStreamEnded(MemberError):
    """The member's event stream ended before a terminal (`ready`/`failed`) event."""



def unreachable(exc: BaseException, url: str, timeout: float | None = None) -> MemberUnreachable:
    """Turn a transport exception into a MemberUnreachable naming the cause."""
    if isinstance(exc, TimeoutError):
        after = f" after {timeout:g}s" if timeout is not None else ""
        return MemberUnreachable(f"{url}: timed out{after}", url=url, cause="timeout")
    os_error: BaseException | None = exc
    if isinstance(exc, aiohttp.ClientConnectorError):
        os_error = exc.os_error
    while os_error is not None and not isinstance(os_error, OSError):
        os_error = os_error.__cause__
    cause, detail = "error", str(exc) or type(exc).__name__
    if isinstance(os_error, socket.gaierror) or isinstance(exc, aiohttp.ClientConnectorDNSError):
        cause, detail = "dns", f"cannot resolve host ({os_error or exc})"
    elif isinstance(os_error, ConnectionRefusedError) or getattr(os_error, "errno", None) == errno.ECONNREFUSED:
        cause, detail = "refused", "connection refused"
    elif isinstance(exc, aiohttp.ServerDisconnectedError) or isinstance(os_error, ConnectionResetError):
        cause, detail = "reset", f"connection closed by member ({exc})"
    elif isinstance(os_error, OSError) and os_error.errno:
        detail = f"{os.strerror(os_error.errno)} ({exc})"
    return MemberUnreachable(f"{url}: {detail}", url=url, cause=cause)


def http_error(response: aiohttp.ClientResponse, url: str) -> MemberHTTPError:
    status = response.status
    message = f"{url}: member answered HTTP {status}"
    detail = f"reason phrase {response.reason!r}" if response.reason else ""
    location = response.headers.get("Location")
    if 300 <= status < 400:
        message += " (redirect not followed)"
        if location:
            detail += f"{', ' if detail else ''}Location {location[:200]!r}"
    return MemberHTTPError(status, message, url=url, detail=detail)
