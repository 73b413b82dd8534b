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

# The largest pod count or quota a member may report. Real members run hundreds to a few
# thousand pods; anything beyond this is a broken or hostile member, and refusing it here
# keeps every sum placement computes (federation.placement.table, int64) far from overflowing.
MAX_COUNT = 1_000_000
# The checks BinderHub's /health reports (binderhub/health.py); other names are a
# member's own text and are not repeated in public reasons.
KNOWN_CHECKS = ("JupyterHub API", "Docker registry", "Pod quota")
MAX_CHECKS = 32            # health checks read from one document
MAX_NAME = 60              # characters of a check name kept (for logs)

OTHER_CHECK = "another check"   # how a check BinderHub does not have is named in public


def public_check_name(name: str) -> str:
    """A member's check name as public reasons, the API and metric labels may show it."""
    return name if name in KNOWN_CHECKS else OTHER_CHECK


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

    The message (`str(exc)`) says what went wrong in words of our own and may be
    shown publicly (a member's `reason`); it never quotes what the member sent.
    `detail` carries that (an excerpt of a body, a reason phrase, a Location), for
    logs only. `url` (when known) is the member URL the failure is about.
    `hub.client` adds the transport-level subclasses (unreachable, HTTP error, stalled).
    """

    def __init__(self, message: str = "", *, url: str | None = None, detail: str = "") -> None:
        super().__init__(message)
        self.url = url
        self.detail = detail


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
    failed_checks: tuple[str, ...] = ()   # as the member named them (printable, bounded): for logs
    has_quota_check: bool = False
    quota: int | None = None
    total_pods: int = 0
    build_pods: int = 0
    user_pods: int = 0
    checks: tuple[tuple[str, bool], ...] = ()

    def __post_init__(self) -> None:
        # Whoever builds a report (the parser below, an agent's capacity), its numbers are
        # bounded: a sum over every member of a federation stays far inside int64.
        for name in ("total_pods", "build_pods", "user_pods"):
            check_count(getattr(self, name), name)
        if self.quota is not None:
            check_count(self.quota, "quota")

    @property
    def public_failed_checks(self) -> tuple[str, ...]:
        """The failed checks as a public reason may name them (BinderHub's own names only)."""
        return tuple(dict.fromkeys(public_check_name(c) for c in self.failed_checks))

    @property
    def public_checks(self) -> tuple[tuple[str, bool], ...]:
        """`checks` as the API and metrics may show them: BinderHub's own names, and every
        other check of the member folded into one "another check" (ok only if all are)."""
        merged: dict[str, bool] = {}
        for name, ok in self.checks:
            public = public_check_name(name)
            merged[public] = merged.get(public, True) and ok
        return tuple(merged.items())

    @classmethod
    def from_json(cls, body: Any, http_status: int = 200) -> "HealthReport":
        if not isinstance(body, Mapping) or not isinstance(body.get("ok"), bool):
            raise MemberResponseError("health document is not a JSON object with a boolean 'ok'")
        checks = body.get("checks", [])
        if not isinstance(checks, list):
            raise MemberResponseError("health document 'checks' is not a list")
        if len(checks) > MAX_CHECKS:
            raise MemberResponseError(f"health document has more than {MAX_CHECKS} checks")
        failed: list[str] = []
        seen: list[tuple[str, bool]] = []
        quota_check: Mapping[str, Any] | None = None
        for check in checks:
            if not isinstance(check, Mapping):
                raise MemberResponseError("health check entry is not a JSON object")
            service = check.get("service", "unnamed check")
            service = "".join(ch for ch in service if ch.isprintable())[:MAX_NAME] if isinstance(service, str) else "?"
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
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_COUNT:
        raise MemberResponseError(
            f"health 'Pod quota' field {name!r} is not an integer from 0 to {MAX_COUNT}")
    return value


def check_count(value: Any, name: str) -> int:
    """`value` if it is an int from 0 to MAX_COUNT; else ValueError naming `name`."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_COUNT:
        raise ValueError(f"{name} must be an integer from 0 to {MAX_COUNT}, not {value!r}"[:200])
    return value


def parse_json(body: bytes | str, what: str) -> Any:
    """A member's JSON document; MemberResponseError (quoting nothing of it) if it is none.

    A document nested deeper than Python's recursion limit raises RecursionError in
    `json.loads`, which is not a ValueError: it is refused here like any other
    unreadable answer, so it can never escape as a surprise.
    """
    try:
        return json.loads(body)
    except RecursionError:
        raise MemberResponseError(f"{what} is nested too deeply") from None
    except (ValueError, UnicodeDecodeError):
        excerpt = body[:80] if isinstance(body, str) else body[:80].decode("utf-8", "replace")
        raise MemberResponseError(f"{what} is not JSON", detail=repr(excerpt)) from None


def public_versions(document: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a member's /versions that is kept and shown: BinderHub's version and
    the builder's scalar fields, as bounded strings (a member's document could be
    megabytes of anything)."""
    versions: dict[str, Any] = {}
    binderhub = document.get("binderhub")
    if isinstance(binderhub, (str, int, float)) and not isinstance(binderhub, bool):
        versions["binderhub"] = str(binderhub)[:100]
    builder = document.get("builder_info")
    if isinstance(builder, Mapping):
        info = {str(k)[:60]: str(v)[:200] for k, v in list(builder.items())[:10]
                if isinstance(v, (str, int, float)) and not isinstance(v, bool)}
        versions["builder_info"] = info
    return versions


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
        data = parse_json(raw, "build event")
        if not isinstance(data, dict):
            raise MemberResponseError("build event is not a JSON object", detail=repr(raw[:80]))
        return cls(raw=raw, data=data)

    @classmethod
    def make(cls, **fields: Any) -> "BuildEvent":
        return cls(raw=json.dumps(fields), data=fields)
