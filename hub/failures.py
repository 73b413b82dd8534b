"""Whose fault is a failed launch: the member's infrastructure, or the launch itself?

The stream relay retries a launch on another member only when the member failed
for reasons another member would not share (DESIGN.md, "Forwarding"), and passive
health ejects members only for those. This module is the one place that decides.

Infrastructure failures (`classify_failure` returns an `InfraFailure`):

- no usable HTTP answer: refused, reset, timeout, DNS (`MemberUnreachable`);
- an HTTP status other than 200 on `/build/` (`MemberHTTPError`). BinderHub reports
  its own errors in-band with status 200, so any other status comes from a broken
  member or something in front of it;
- an answer that is not a valid event stream (`MemberResponseError`);
- a stream silent for longer than the stall timeout (`MemberStalled`) or cut
  before `ready`/`failed` (`MemberStreamEnded`);
- a `failed` event saying the member is full ("Too many users on this BinderHub!")
  or the repository's quota on that member is used up ("Too many users running
  <repo>! Try again soon."): another member has its own pods and quotas;
- a `failed` event with a 5xx `status_code`: BinderHub's in-band report of a
  launch that failed after its own retries (the member's JupyterHub or cluster);
- a `failed` event "Error resolving ref for <provider>:<spec>: <error>" (BinderHub's
  wording when its repository provider's API call raised) whose error is the
  member's way to the provider failing: no connection, a timeout, a name that does
  not resolve, an HTTP 5xx, or the member's own API budget or credentials refused
  (GitHub's "rate limit exceeded", HTTP 401/403). Another member has its own
  network and its own API token. An error naming the repository (HTTP 404, 422, a
  ref that does not exist: "Could not resolve ref ...") is the launch's own.

Everything else is not retried (`None`): a build error in the repository (it
would fail everywhere), a ref or record the provider does not know, an unknown or
malformed spec, a banned repository, a rate
limit or a refused build token (about this visitor on this member), and every
event that is not a failure.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from .member_errors import MemberHTTPError, MemberStalled, MemberStreamEnded, MemberUnreachable
from .models import BuildEvent, MemberError

__all__ = ["FailureCause", "InfraFailure", "classify_failure"]


class FailureCause(str, enum.Enum):
    """Why a member failed a launch; the values are metric labels."""

    UNREACHABLE = "unreachable"      # no HTTP answer
    HTTP_5XX = "http_5xx"            # HTTP 5xx on /build/
    HTTP_STATUS = "http_status"      # another unexpected HTTP status (3xx, 4xx)
    BAD_STREAM = "bad_stream"        # not a valid event stream
    STALLED = "stalled"              # silent for longer than the stall timeout
    STREAM_ENDED = "stream_ended"    # cut before ready/failed
    MEMBER_FULL = "member_full"      # "Too many users on this BinderHub"
    REPO_QUOTA = "repo_quota"        # "Too many users running <repo>"
    LAUNCH_FAILED = "launch_failed"  # failed event with a 5xx status_code
    PROVIDER_API = "provider_api"    # "Error resolving ref ...": the member could not ask the provider

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class InfraFailure:
    """An infrastructure failure: `detail` is a few words a visitor can read."""

    cause: FailureCause
    detail: str


_UNREACHABLE_DETAIL = {
    "refused": "connection refused",
    "reset": "connection reset",
    "timeout": "no answer in time",
    "dns": "host name does not resolve",
}


def classify_failure(item: BuildEvent | BaseException) -> InfraFailure | None:
    """An `InfraFailure` if `item` (a build event or an error raised by a
    `hub.build_stream.BuildStream`) is the member's infrastructure failing; else None."""
    if isinstance(item, BuildEvent):
        return _classify_event(item)
    if isinstance(item, MemberUnreachable):
        return InfraFailure(FailureCause.UNREACHABLE, _UNREACHABLE_DETAIL.get(item.cause, "unreachable"))
    if isinstance(item, MemberHTTPError):
        cause = FailureCause.HTTP_5XX if 500 <= item.status <= 599 else FailureCause.HTTP_STATUS
        return InfraFailure(cause, f"HTTP {item.status}")
    if isinstance(item, MemberStalled):
        return InfraFailure(FailureCause.STALLED, "no news from the member in time")
    if isinstance(item, MemberStreamEnded):
        return InfraFailure(FailureCause.STREAM_ENDED, "the member cut the stream")
    if isinstance(item, MemberError):  # MemberResponseError and anything else the client reports
        return InfraFailure(FailureCause.BAD_STREAM, "the member's answer is not a build stream")
    return None


# BinderHub's message when `provider.get_resolved_ref()` raised (binderhub/builder.py).
RESOLVE_ERROR_PREFIX = "error resolving ref for "

# In the error after it: what says the member's way to the provider API failed. The
# errors come from tornado's HTTP client ("HTTP 599: Connection refused", "HTTP 503:
# Service Unavailable", "Timeout during request"), from the OS ("[Errno 111] Connection
# refused", "[Errno -3] Temporary failure in name resolution"), from GitHub's provider
# ("GitHub rate limit exceeded. Try again in 5 minutes.") or from `git ls-remote`
# ("Could not resolve host", "Failed to connect").
_PROVIDER_API_DOWN = re.compile(
    r"connection (?:refused|reset|aborted|closed)|timed? ?out|timeout|name resolution|name or service not known"
    r"|could not resolve host|failed to connect|network is unreachable|no route to host|stream closed"
    r"|ssl|certificate|rate limit|\bHTTP (?:5\d\d|401|403)\b",
    re.IGNORECASE,
)


def _provider_api_failure(message: str) -> InfraFailure | None:
    """An `InfraFailure` for BinderHub's "Error resolving ref for <key>: <error>" when
    the error is the member's provider API call failing, not the repository."""
    if not message.lower().startswith(RESOLVE_ERROR_PREFIX):
        return None
    _, _, error = message.partition(": ")
    if not _PROVIDER_API_DOWN.search(error):
        return None
    return InfraFailure(FailureCause.PROVIDER_API, "it could not reach the repository provider: " + error[:120])


def _classify_event(event: BuildEvent) -> InfraFailure | None:
    if event.phase.lower() != "failed":
        return None
    message = event.message.strip()
    lowered = message.lower()
    if lowered.startswith("too many users running"):
        return InfraFailure(FailureCause.REPO_QUOTA, "this repository's quota there is used up")
    if lowered.startswith("too many users"):
        return InfraFailure(FailureCause.MEMBER_FULL, "member full")
    provider = _provider_api_failure(message)
    if provider is not None:
        return provider
    status = event.data.get("status_code")
    if isinstance(status, int) and not isinstance(status, bool) and 500 <= status <= 599:
        return InfraFailure(FailureCause.LAUNCH_FAILED, f"launch failed there (status {status})")
    return None
