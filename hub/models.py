"""Data types for what one member BinderHub says about itself.

These mirror the member API facts in DESIGN.md: the `/health` document, the
`/versions` document and the events of the `/build/` stream. They carry no
behaviour beyond parsing, so every other package can import them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Mapping
from urllib.parse import parse_qs, quote

# Phases a BinderHub build stream goes through, in order. Anything else is progress.
PHASES = ("waiting", "fetching", "building", "pushing", "built", "launching", "ready", "failed")
TERMINAL_PHASES = frozenset({"ready", "failed"})


# The characters JavaScript's encodeURI() leaves as they are (besides letters, digits and "-_.~").
_ENCODE_URI_SAFE = ";,/?:@&=+$!*'()#"


def launch_urlpath(query: str) -> str:
    """What a launch opens on its server, from the launch's query string, as BinderHub's page
    decides it (binderhub-client's `LaunchSpec.fromSearchParams`): `urlpath`; a legacy
    `labpath` wins over it as `doc/tree/<path>`, else a `filepath` as `tree/<path>` (one
    trailing `/` dropped, escaped as encodeURI does)."""
    params = parse_qs(query, keep_blank_values=True)
    urlpath = params["urlpath"][0].strip() if params.get("urlpath") else ""
    for name, prefix in (("labpath", "doc/tree/"), ("filepath", "tree/")):
        if name in params:
            path = params[name][0]
            path = path[:-1] if path.endswith("/") else path
            urlpath = prefix + quote(path, safe=_ENCODE_URI_SAFE)
            break
    return urlpath


class MemberError(Exception):
    """Base of every failure to get a usable answer from one member.

    `url` (when known) is the member URL the failure is about, for logs and metrics.
    `hub.client` adds the transport-level subclasses (unreachable, HTTP error, stalled).
    """

    def __init__(self, message: str = "", *, url: str | None = None) -> None:
        super().__init__(message)
        self.url = url


class MemberResponseError(MemberError):
    """A member answered something that does not follow the member API."""


@dataclass(frozen=True)
class HealthReport:
    """A member's `/health` document, reduced to what placement needs.

    `quota is None and has_quota_check` means "unlimited"; `has_quota_check` False
    means the member is not on Kubernetes and its capacity is unknown (not zero).
    `checks` is every check as (service, ok), in the member's order (the redirector's
    `federation_health_check` metric exports them).
    """

    ok: bool
    http_status: int
    failed_checks: tuple[str, ...] = ()
    has_quota_check: bool = False
    quota: int | None = None
    total_pods: int = 0
    build_pods: int = 0
    user_pods: int = 0
    checks: tuple[tuple[str, bool], ...] = ()

    @classmethod
    def from_json(cls, body: Any, http_status: int = 200) -> "HealthReport":
        if not isinstance(body, Mapping) or not isinstance(body.get("ok"), bool):
            raise MemberResponseError("health document is not a JSON object with a boolean 'ok'")
        checks = body.get("checks", [])
        if not isinstance(checks, list):
            raise MemberResponseError("health document 'checks' is not a list")
        failed: list[str] = []
        seen: list[tuple[str, bool]] = []
        quota_check: Mapping[str, Any] | None = None
        for check in checks:
            if not isinstance(check, Mapping):
                raise MemberResponseError("health check entry is not a JSON object")
            service = str(check.get("service", "unnamed check"))
            seen.append((service, check.get("ok") is True))
            if service == "Pod quota":
                quota_check = check
                continue
            if check.get("ok") is not True and not check.get("_ignore_failure"):
                failed.append(service)
        quota = total = builds = users = 0
        if quota_check is not None:
            quota = _optional_count(quota_check.get("quota"), "quota")
            total = _optional_count(quota_check.get("total_pods"), "total_pods") or 0
            builds = _optional_count(quota_check.get("build_pods"), "build_pods") or 0
            users = _optional_count(quota_check.get("user_pods"), "user_pods") or 0
        return cls(
            # A 503 with "ok": true would contradict itself; trust the status code.
            ok=body["ok"] and http_status < 400,
            http_status=http_status,
            failed_checks=tuple(failed),
            has_quota_check=quota_check is not None,
            quota=quota if quota_check is not None else None,
            total_pods=total,
            build_pods=builds,
            user_pods=users,
            checks=tuple(seen),
        )


def _optional_count(value: Any, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise MemberResponseError(f"health 'Pod quota' field {name!r} is not a non-negative integer")
    return value


@dataclass(frozen=True)
class BuildEvent:
    """One event of a member's `/build/` stream.

    `raw` is the exact `data:` payload the member sent, so a relay can pass it on
    untouched; `data` is its parsed JSON object.
    """

    raw: str
    data: Mapping[str, Any] = field(default_factory=dict)

    @property
    def phase(self) -> str:
        phase = self.data.get("phase")
        return phase if isinstance(phase, str) else ""

    @property
    def message(self) -> str:
        message = self.data.get("message")
        return message if isinstance(message, str) else ""

    @property
    def terminal(self) -> bool:
        return self.phase in TERMINAL_PHASES

    @classmethod
    def from_data(cls, raw: str) -> "BuildEvent":
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise MemberResponseError(f"build event is not JSON: {raw[:80]!r}") from exc
        if not isinstance(data, dict):
            raise MemberResponseError(f"build event is not a JSON object: {raw[:80]!r}")
        return cls(raw=raw, data=data)

    @classmethod
    def make(cls, **fields: Any) -> "BuildEvent":
        return cls(raw=json.dumps(fields), data=fields)
