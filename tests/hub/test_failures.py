"""Which failures are the member's infrastructure (retried elsewhere) and which are not."""

from __future__ import annotations

import pytest

from hub.client import MemberHTTPError, MemberStalled, MemberStreamEnded, MemberUnreachable
from hub.devhub import TOO_MANY_USERS
from hub.failures import FailureCause, classify_failure
from hub.models import BuildEvent, MemberResponseError


@pytest.mark.parametrize("error, cause, detail", [
    (MemberUnreachable("x: connection refused", cause="refused"), FailureCause.UNREACHABLE, "connection refused"),
    (MemberUnreachable("x: reset", cause="reset"), FailureCause.UNREACHABLE, "connection reset"),
    (MemberUnreachable("x: timed out", cause="timeout"), FailureCause.UNREACHABLE, "no answer in time"),
    (MemberUnreachable("x: dns", cause="dns"), FailureCause.UNREACHABLE, "host name does not resolve"),
    (MemberUnreachable("x: ?"), FailureCause.UNREACHABLE, "unreachable"),
    (MemberHTTPError(500), FailureCause.HTTP_5XX, "HTTP 500"),
    (MemberHTTPError(503), FailureCause.HTTP_5XX, "HTTP 503"),
    (MemberHTTPError(404), FailureCause.HTTP_STATUS, "HTTP 404"),
    (MemberHTTPError(302), FailureCause.HTTP_STATUS, "HTTP 302"),
    (MemberResponseError("not an event stream"), FailureCause.BAD_STREAM, "the member's answer is not a build stream"),
    (MemberStalled("silent"), FailureCause.STALLED, "no news from the member in time"),
    (MemberStreamEnded("cut"), FailureCause.STREAM_ENDED, "the member cut the stream"),
])
def test_member_errors_are_infrastructure(error, cause, detail):
    failure = classify_failure(error)
    assert failure is not None and failure.cause is cause and failure.detail == detail


@pytest.mark.parametrize("fields, cause", [
    ({"phase": "failed", "message": TOO_MANY_USERS + "\n"}, FailureCause.MEMBER_FULL),
    ({"phase": "failed", "message": "Too many users on this BinderHub! Try again soon.\n", "status_code": 429},
     FailureCause.MEMBER_FULL),
    ({"phase": "failed", "message": "Too many users running https://github.com/org/repo! Try again soon.\n"},
     FailureCause.REPO_QUOTA),
    ({"phase": "Failed", "message": "Too many users on this BinderHub! Try again soon.\n"}, FailureCause.MEMBER_FULL),
    ({"phase": "failed", "message": "Internal Server Error\n", "status_code": 500}, FailureCause.LAUNCH_FAILED),
    ({"phase": "failed", "message": "Server x stopped while launching\n", "status_code": 503},
     FailureCause.LAUNCH_FAILED),
])
def test_member_side_failed_events_are_infrastructure(fields, cause):
    failure = classify_failure(BuildEvent.make(**fields))
    assert failure is not None and failure.cause is cause


@pytest.mark.parametrize("message", [
    # BinderHub's wording (builder.py) around errors its repository providers raise
    "Error resolving ref for gh:org/repo/HEAD: HTTP 599: Connection refused",
    "Error resolving ref for gh:org/repo/HEAD: [Errno 111] Connection refused",
    "Error resolving ref for gh:org/repo/HEAD: [Errno -3] Temporary failure in name resolution",
    "Error resolving ref for gh:org/repo/HEAD: HTTP 599: Timeout during request",
    "Error resolving ref for gh:org/repo/HEAD: HTTP 502: Bad Gateway",
    "Error resolving ref for gh:org/repo/HEAD: GitHub rate limit exceeded. Try again in 5 minutes.",
    "Error resolving ref for gh:org/repo/HEAD: HTTP 403: Forbidden",
    "Error resolving ref for git:https%3A%2F%2Fexample.org%2Fr.git/main: Unable to run git ls-remote to get the "
    "`resolved_ref`: fatal: unable to access 'https://example.org/r.git/': Could not resolve host: example.org",
])
def test_the_members_provider_api_failing_is_infrastructure(message):
    failure = classify_failure(BuildEvent.make(phase="failed", message=message + "\n"))
    assert failure is not None and failure.cause is FailureCause.PROVIDER_API
    assert "repository provider" in failure.detail


@pytest.mark.parametrize("fields", [
    # the repository itself: it would fail on every member
    {"phase": "failed", "message": "Error during build: The command '/bin/sh -c pip install' returned a non-zero code: 1\n"},
    {"phase": "failure", "message": "Error during build\n"},
    {"phase": "failed", "message": "Could not resolve ref for gh:org/repo/nope. Double check your URL.\n"},
    {"phase": "failed", "message": "Error resolving ref for zenodo:10.5281/zenodo.1: HTTP 404: Not Found\n"},
    {"phase": "failed", "message": "Error resolving ref for git:x/main: Unable to run git ls-remote to get the "
                                   "`resolved_ref`: fatal: repository 'https://example.org/x/' not found\n"},
    {"phase": "failed", "message": "Sorry, org/repo/HEAD has been temporarily disabled from launching.\n"},
    # the request or the visitor, on this member
    {"phase": "failed", "message": "Bad Request\n", "status_code": 400},
    {"phase": "failed", "message": "Rate limit exceeded. Try again in 60 seconds.\n", "status_code": 429},
    {"phase": "failed", "message": "Invalid build token\n", "status_code": 403},
    {"phase": "failed", "status_code": "500"},  # not a number: not BinderHub's shape
    # not failures at all
    {"phase": "building", "message": "Too many users on this BinderHub!\n"},
    {"phase": "ready", "url": "http://x/user/a/", "token": "t"},
    {"message": "Picked Git content provider.\n"},
    {"phase": "unknown", "message": "warnings.warn(\n"},
])
def test_everything_else_is_not_retried(fields):
    assert classify_failure(BuildEvent.make(**fields)) is None


def test_other_exceptions_are_not_classified():
    assert classify_failure(ValueError("a bug of ours")) is None
