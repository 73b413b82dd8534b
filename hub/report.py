"""What a member agent reports about its cluster, and how the report travels signed.

A `MemberReport` is produced by `hub.agent` beside one member BinderHub and read by
the router (`federation.reports`). Its JSON shape is produced and parsed only here.

On the wire (a Redis string under `report_key(member)`) a report is a *sealed
envelope*::

    {"member": "<name>", "report": "<the report's JSON, as a string>",
     "signature": "hmac-sha256:<hex HMAC-SHA256 of the report string, keyed by the member's token>"}

The report is carried as a string so the signature covers exact bytes, with no
JSON canonicalisation to agree on. The report repeats the member name and carries
its own timestamp, so a sealed report cannot be replayed for another member, and a
replayed old one is rejected by the router's age limit.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
from dataclasses import dataclass
from typing import Any, Mapping

from .models import MAX_COUNT

# Where agents put their sealed reports in Redis: one key per member, so a Redis ACL
# can confine each agent to its own key (see docs/agent.md).
REPORT_KEY_PREFIX = "binderfed:agent-report:"
SIGNATURE_SCHEME = "hmac-sha256:"
# Reports bigger than this are refused unread (a member with 50k cached images fits).
MAX_REPORT_BYTES = 8 * 1024 * 1024


def report_key(member: str) -> str:
    return REPORT_KEY_PREFIX + member


class ReportError(ValueError):
    """A sealed report that cannot be used. `kind` is `malformed` or `bad_signature`."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class Capacity:
    """What the member's schedulable, ready nodes can hold (sum of node allocatable)."""

    nodes: int = 0
    pods: int = 0
    cpu: float = 0.0   # cores
    memory: int = 0    # bytes


@dataclass(frozen=True)
class Usage:
    """BinderHub pods counted in the member's namespace(s), not finished yet."""

    user_pods: int = 0
    build_pods: int = 0

    @property
    def total_pods(self) -> int:
        return self.user_pods + self.build_pods


@dataclass(frozen=True)
class CachedImage:
    """One repository's image present on the member's nodes.

    `spec` is a launch spec `<provider>/<spec as in the launch path>` (for example
    `gh/binder-examples/requirements/HEAD`) known to build this image; the router
    turns it into its repository key. `slug` is the image's safe build slug.
    """

    spec: str
    slug: str
    nodes: int


@dataclass(frozen=True)
class RunningRepo:
    """User servers running (not finished) for one launch spec `<provider>/<spec>`.

    The router sums them per repository for its federation-wide cap on one
    repository's launches (`limits.repo_concurrency`).
    """

    spec: str
    pods: int


@dataclass(frozen=True)
class MemberReport:
    member: str
    timestamp: float                       # unix time the report was made
    agent_version: str
    capacity: Capacity
    usage: Usage
    cached_images: tuple[CachedImage, ...] = ()
    unmapped_images: int = 0               # member images on nodes whose repository the agent does not know
    running: tuple[RunningRepo, ...] = ()  # user servers per launch spec (absent in older agents' reports)

    def to_json(self) -> dict[str, Any]:
        return {
            "member": self.member,
            "timestamp": self.timestamp,
            "agent_version": self.agent_version,
            "capacity": {"nodes": self.capacity.nodes, "pods": self.capacity.pods,
                         "cpu": self.capacity.cpu, "memory": self.capacity.memory},
            "usage": {"user_pods": self.usage.user_pods, "build_pods": self.usage.build_pods},
            "cached_images": [{"spec": c.spec, "slug": c.slug, "nodes": c.nodes} for c in self.cached_images],
            "unmapped_images": self.unmapped_images,
            "running": [{"spec": r.spec, "pods": r.pods} for r in self.running],
        }

    @classmethod
    def from_json(cls, data: Any) -> "MemberReport":
        """Parse and check a report document; ReportError("malformed", ...) says what is wrong."""
        try:
            if not isinstance(data, Mapping):
                raise TypeError("report is not a JSON object")
            capacity = _mapping(data, "capacity")
            usage = _mapping(data, "usage")
            images = data.get("cached_images", [])
            if not isinstance(images, list):
                raise TypeError("'cached_images' is not a list")
            running = data.get("running", [])
            if not isinstance(running, list):
                raise TypeError("'running' is not a list")
            return cls(
                member=_text(data, "member"),
                timestamp=_number(data, "timestamp"),
                agent_version=str(data.get("agent_version", "")),
                capacity=Capacity(
                    nodes=_count(capacity, "nodes", "capacity."), pods=_count(capacity, "pods", "capacity."),
                    cpu=_number(capacity, "cpu", "capacity."),
                    memory=_count(capacity, "memory", "capacity.", maximum=2**53),
                ),
                usage=Usage(user_pods=_count(usage, "user_pods", "usage."),
                            build_pods=_count(usage, "build_pods", "usage.")),
                cached_images=tuple(
                    CachedImage(spec=_text(i, "spec", "cached_images[]."), slug=_text(i, "slug", "cached_images[]."),
                                nodes=_count(i, "nodes", "cached_images[]."))
                    for i in (_as_mapping(item, "cached_images entry") for item in images)
                ),
                unmapped_images=_count(data, "unmapped_images") if "unmapped_images" in data else 0,
                running=tuple(
                    RunningRepo(spec=_text(r, "spec", "running[]."), pods=_count(r, "pods", "running[]."))
                    for r in (_as_mapping(item, "running entry") for item in running)
                ),
            )
        except (TypeError, ValueError, OverflowError) as exc:
            raise ReportError("malformed", f"report document: {exc}") from None


def _as_mapping(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise TypeError(f"{what} is not a JSON object")
    return value


def _mapping(data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    return _as_mapping(data.get(key), repr(key))


def _text(data: Mapping[str, Any], key: str, where: str = "") -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise TypeError(f"'{where}{key}' is not a non-empty string")
    return value


def _number(data: Mapping[str, Any], key: str, where: str = "") -> float:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise TypeError(f"'{where}{key}' is not a non-negative number")
    return float(value)


def _count(data: Mapping[str, Any], key: str, where: str = "", maximum: int = MAX_COUNT) -> int:
    """A count an agent reports, bounded like the counts of a member's /health (hub.models.MAX_COUNT)."""
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= maximum:
        raise TypeError(f"'{where}{key}' is not an integer from 0 to {maximum}")
    return value


def _signature(token: str, body: str) -> str:
    digest = hmac.new(token.encode("utf-8"), body.encode("utf-8"), hashlib.sha256).hexdigest()
    return SIGNATURE_SCHEME + digest


def seal(report: MemberReport, token: str) -> str:
    """The envelope an agent publishes: the report's JSON and its signature with `token`."""
    body = json.dumps(report.to_json(), separators=(",", ":"), sort_keys=True)
    return json.dumps({"member": report.member, "report": body, "signature": _signature(token, body)})


def envelope_member(raw: str | bytes) -> tuple[str, str, str]:
    """(member, report string, signature) of an envelope, unverified. ReportError("malformed") if it is none."""
    if len(raw) > MAX_REPORT_BYTES:
        raise ReportError("malformed", f"envelope is larger than {MAX_REPORT_BYTES} bytes")
    try:
        envelope = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise ReportError("malformed", "envelope is not JSON") from None
    if not isinstance(envelope, dict):
        raise ReportError("malformed", "envelope is not a JSON object")
    member, body, signature = envelope.get("member"), envelope.get("report"), envelope.get("signature")
    if not all(isinstance(v, str) and v for v in (member, body, signature)):
        raise ReportError("malformed", "envelope needs non-empty string fields 'member', 'report' and 'signature'")
    return member, body, signature


def unseal(raw: str | bytes, token: str) -> MemberReport:
    """Verify an envelope with the member's `token` and parse its report.

    Raises ReportError: `bad_signature` when the signature does not match (wrong
    token or altered report), `malformed` for anything that is not a report.
    """
    member, body, signature = envelope_member(raw)
    if not hmac.compare_digest(signature.encode("utf-8"), _signature(token, body).encode("utf-8")):
        raise ReportError("bad_signature", f"signature of the report of {member!r} does not match its token")
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        raise ReportError("malformed", "signed report is not JSON") from None
    report = MemberReport.from_json(data)
    if report.member != member:
        raise ReportError("malformed", f"report is about {report.member!r} but its envelope says {member!r}")
    return report
