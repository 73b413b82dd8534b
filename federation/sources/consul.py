"""Consul's catalog as a membership source.

Organizations register a service (default name `binder-federation`, see
`binderfed member register`) whose metadata describes their BinderHub. This source
watches that service with Consul blocking queries on `/v1/health/service/<name>`
(`index` + `wait`: the request is held until the service's entries change) through
py-consul's asyncio client, so nothing blocks the event loop and a change reaches
the router as soon as Consul knows it.

One catalog entry becomes one member (source "consul"):

| member field | taken from |
|---|---|
| name | the service ID (`ServiceID`, which `binderfed member register` sets to the member name) |
| url | `Meta.url`; without it `http(s)://<ServiceAddress or node Address>:<ServicePort>` (https when tagged `https` or on port 443) |
| weight | `Meta.weight` (a number from 0 to 1000, default 1) |
| region | `Meta.region` |
| data_sites | `Meta.data_sites`, comma-separated |
| hub_url | `Meta.hub_url` (its JupyterHub's URL, when on another host) |

An entry whose metadata is invalid (checked against the same JSON Schema as members
in the config file) is left out with a log line naming the service and the field.
Every entry then passes the federation's admission gate (`federation.admission`):
its URLs must be on a host of `consul.allowed_hosts` (private, loopback and
link-local addresses only by an explicit address or network entry), carry no
credentials, and its weight must be finite and at most 1000. A registration cannot
make itself the prime member (`Meta.prime` or the tag `prime`): that is the
operators' choice, made in the config file; such an entry is admitted without it,
with a log line.
Consul's own health is an extra signal: with `exclude_critical` (the default) an
entry with any check in state `critical` is left out, which includes Consul's
maintenance mode (`consul maint -enable -service=<id>`), so an organization can take
itself out of rotation. `passing` and `warning` count as up; the router's own probes
still decide whether an included member is healthy, full or unhealthy.

If Consul cannot be reached, or answers with an error, the last known members stay
in rotation and the query is retried with exponential backoff (0.5 s doubling up to
`retry_max`, each pause up to 20 % shorter at random).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping
from urllib.parse import urlsplit

import consul
import consul.aio
import jsonschema

from hub.tasks import Backoff, BackgroundService

from ..admission import AdmissionError, HostRule, admit, check_weight, host_rules
from ..config import ConsulSettings, schema
from ..members import Member
from ..membership import Membership

log = logging.getLogger("binderfed.sources.consul")

SyncListener = Callable[[str, bool, int], None]  # (source name, reachable, members)

# Where each member field comes from in a catalog entry, for error messages.
_FIELD_ORIGIN = {
    "name": "ServiceID",
    "url": "Meta.url",
    "weight": "Meta.weight",
    "prime": "Meta.prime",
    "region": "Meta.region",
    "data_sites": "Meta.data_sites",
    "hub_url": "Meta.hub_url",
}
_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no", ""}


def consul_client(url: str, token: str = "", datacenter: str = "", timeout: float = 30.0) -> consul.aio.Consul:
    """An asyncio py-consul client for a Consul HTTP API base URL. Call inside the event loop."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not a Consul HTTP API URL: {url!r} (expected http://host:port or https://host:port)")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    with warnings.catch_warnings():
        # py-consul 1.8 builds its aiohttp connector with arguments aiohttp deprecates.
        warnings.simplefilter("ignore", DeprecationWarning)
        client = consul.aio.Consul(
            host=parts.hostname, port=port, scheme=parts.scheme, dc=datacenter or None,
            connections_timeout=timeout,
        )
    # py-consul lets $CONSUL_HTTP_TOKEN override the token it is given; the token the
    # operator configured for this router (file or named variable) must win.
    client.token = token or None
    return client


def _member_validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator({"$ref": "#/$defs/member", "$defs": schema()["$defs"]})


@dataclass(frozen=True)
class EntryProblem:
    """Why one catalog entry is not a member; logged when it first appears."""

    service_id: str
    node: str
    why: str
    pending: bool = False  # only waiting for a new check's first result: not worth a warning


@dataclass(frozen=True)
class CatalogView:
    members: tuple[Member, ...]
    left_out: tuple[EntryProblem, ...] = field(default_factory=tuple)
    notes: tuple[EntryProblem, ...] = field(default_factory=tuple)  # admitted, with something ignored


def members_from_health(entries: list[Mapping[str, Any]] | None, exclude_critical: bool = True,
                        allowed_hosts: tuple[HostRule, ...] = ()) -> CatalogView:
    """Map `/v1/health/service/<name>` entries to members (pure), through the admission gate."""
    validator = _member_validator()
    members: dict[str, Member] = {}
    left_out: list[EntryProblem] = []
    notes: list[EntryProblem] = []
    ordered = sorted(entries or [], key=lambda e: ((e.get("Node") or {}).get("Node", ""), (e.get("Service") or {}).get("ID", "")))
    for entry in ordered:
        node = entry.get("Node") or {}
        service = entry.get("Service") or {}
        sid = str(service.get("ID") or "")
        node_name = str(node.get("Node") or "")
        member, why = _member_from_entry(node, service, validator)
        if member is None:
            left_out.append(EntryProblem(sid, node_name, why))
            continue
        try:
            admitted = admit(member, allowed_hosts)
        except AdmissionError as exc:
            origin = _FIELD_ORIGIN.get(exc.field, exc.field)
            if exc.field == "url" and not (service.get("Meta") or {}).get("url"):
                origin = "address/port"
            left_out.append(EntryProblem(sid, node_name, f"{origin}: {exc.why}"))
            continue
        if member.prime and not admitted.prime:
            notes.append(EntryProblem(sid, node_name, "Meta.prime ignored: only the operators' config file "
                                                      "names the prime member"))
        member = admitted
        if exclude_critical:
            critical = [c for c in entry.get("Checks") or [] if c.get("Status") == "critical"]
            if critical:
                check = critical[0]
                output = " ".join(str(check.get("Output") or check.get("Notes") or "").split())[:200]
                left_out.append(EntryProblem(
                    sid, node_name,
                    f"Consul check {check.get('Name') or check.get('CheckID')!r} is critical"
                    + (f": {output}" if output else " (no result yet: a new check starts critical)"),
                    pending=not output,
                ))
                continue
        if member.name in members:
            left_out.append(EntryProblem(sid, node_name, f"duplicate member name {member.name!r} (already registered on another node)"))
            continue
        members[member.name] = member
    return CatalogView(tuple(sorted(members.values(), key=lambda m: m.name)), tuple(left_out), tuple(notes))


def _member_from_entry(node: Mapping[str, Any], service: Mapping[str, Any], validator) -> tuple[Member | None, str]:
    meta = service.get("Meta") or {}
    tags = [str(t) for t in service.get("Tags") or []]
    data: dict[str, Any] = {"name": str(service.get("ID") or "")}
    url = str(meta.get("url") or "").strip()
    if not url:
        address = service.get("Address") or node.get("Address") or ""
        port = service.get("Port") or 0
        if not address:
            return None, "no Meta.url and no service or node address"
        scheme = "https" if "https" in tags or port == 443 else "http"
        default = 443 if scheme == "https" else 80
        host = f"[{address}]" if ":" in str(address) else str(address)
        url = f"{scheme}://{host}" + (f":{port}" if port and port != default else "")
    data["url"] = url
    if "weight" in meta and str(meta["weight"]).strip() != "":
        try:
            data["weight"] = check_weight(float(meta["weight"]))
        except AdmissionError as exc:
            return None, f"Meta.weight: {exc.why}"
        except (TypeError, ValueError):
            return None, f"Meta.weight: {meta['weight']!r} is not a number"
    prime = str(meta.get("prime", "")).strip().lower()
    if prime not in _TRUE | _FALSE:
        return None, f"Meta.prime: {meta['prime']!r} is not true or false"
    data["prime"] = prime in _TRUE or "prime" in tags
    if meta.get("region"):
        data["region"] = str(meta["region"])
    if meta.get("hub_url"):
        data["hub_url"] = str(meta["hub_url"]).strip()
    sites = [s.strip() for s in str(meta.get("data_sites") or "").split(",") if s.strip()]
    if sites:
        data["data_sites"] = sites
    error = jsonschema.exceptions.best_match(validator.iter_errors(data))
    if error is not None:
        key = str(error.absolute_path[0]) if error.absolute_path else ""
        origin = _FIELD_ORIGIN.get(key, key or "entry")
        if key == "url" and not meta.get("url"):
            origin = "address/port"
        return None, f"{origin}: {error.instance!r} is not valid ({error.schema.get('description') or error.message})"
    return Member(
        name=data["name"],
        url=data["url"].rstrip("/"),
        weight=float(data.get("weight", 1.0)),
        prime=data["prime"],
        data_sites=tuple(data.get("data_sites", ())),
        region=data.get("region", ""),
        source="consul",
        hub_url=data.get("hub_url", "").rstrip("/"),
    ), ""


class ConsulSource(BackgroundService):
    """Members from Consul's catalog; `start()`/`stop()` run by the app lifecycle."""

    name = "consul"

    def __init__(
        self,
        settings: ConsulSettings,
        membership: Membership,
        token: str = "",
        on_sync: SyncListener | None = None,
        *,
        retry_initial: float = 0.5,
        rng: random.Random | None = None,
    ):
        super().__init__("consul-source")
        self.settings = settings
        self.membership = membership
        self.token = token
        self.on_sync = on_sync
        self.backoff = Backoff(retry_initial, settings.retry_max, jitter=0.2, rng=rng)
        self.allowed_hosts = host_rules(settings.allowed_hosts)  # checked at config load
        self.index = 0                 # X-Consul-Index of the last answer
        self.failures = 0              # consecutive failed queries
        self.reachable: bool | None = None
        self.members: tuple[Member, ...] = ()
        self.synced = asyncio.Event()  # set after the first successful answer
        self._problems: dict[tuple[str, str], str] = {}
        self._client: consul.aio.Consul | None = None

    @property
    def wait(self) -> float:
        return self.settings.wait

    async def start(self) -> None:
        # Consul adds up to wait/16 of jitter to a blocking query; the HTTP timeout
        # must outlast that, or every quiet period would look like an outage.
        self._client = consul_client(self.settings.url, self.token, self.settings.datacenter,
                                     timeout=self.wait * 1.1 + 15)
        await super().start()
        log.info("watching Consul service %r at %s", self.settings.service, self.settings.url)
        if not self.allowed_hosts:
            log.warning("consul.allowed_hosts is empty: no Consul registration will be admitted; list the hosts "
                        "members may register (such as '*.example.org' or '10.0.0.0/8')")

    async def stop(self) -> None:
        await super().stop()
        if self._client is not None:
            with contextlib.suppress(Exception):
                await self._client.close()
            self._client = None

    async def run(self) -> None:
        while not self.stopping:
            started = time.monotonic()
            try:
                index, entries = await self._query()
            except Exception as exc:  # unreachable, refused, 5xx, ACL denied, garbage: all keep the last members
                self.failures += 1
                delay = self.backoff.next()
                self._mark(False)
                log.warning(
                    "Consul at %s unavailable (%s); keeping %d last known members, retry %d in %.1f s",
                    self.settings.url, _describe(exc), len(self.members), self.failures, delay,
                    extra={"source": self.name, "failures": self.failures, "retry_in": round(delay, 3)},
                )
                await self.pause(delay)
                continue
            if self.failures:
                log.info("Consul at %s reachable again after %d failed attempts", self.settings.url, self.failures)
            self.failures = 0
            self.backoff.reset()
            previous = self.index
            # Consul's rules for blocking queries: an index that goes backwards (Consul
            # restarted, or a snapshot restore) means start over; never block on 0.
            self.index = 0 if index < previous else max(index, 0)
            self._publish(entries)
            self._mark(True)
            if index == previous and time.monotonic() - started < 0.1:
                await self.pause(0.1)  # an early answer with no change: do not spin

    async def _query(self) -> tuple[int, list[dict[str, Any]]]:
        assert self._client is not None
        call = self._client.health.service(
            self.settings.service,
            index=self.index or None,
            wait=f"{self.wait:g}s",
            dc=self.settings.datacenter or None,
        )
        # asyncio.timeout, not asyncio.wait_for: on Python 3.11 wait_for can lose a cancel (hub.tasks).
        async with asyncio.timeout(self.wait * 1.1 + 15):
            raw_index, entries = await call
        try:
            index = int(raw_index)
        except (TypeError, ValueError):
            index = 0
        if entries is not None and not isinstance(entries, list):
            raise ValueError(f"unexpected answer from Consul: {type(entries).__name__}, expected a list")
        return index, entries or []

    def _publish(self, entries: list[dict[str, Any]]) -> None:
        view = members_from_health(entries, self.settings.exclude_critical, self.allowed_hosts)
        problems = {(p.node, p.service_id): p.why for p in (*view.left_out, *view.notes)}
        for p in view.notes:
            if self._problems.get((p.node, p.service_id)) != p.why:
                log.warning("Consul service %r on node %r: %s", p.service_id, p.node, p.why,
                            extra={"source": self.name, "service_id": p.service_id, "node": p.node, "problem": p.why})
        for p in view.left_out:
            if self._problems.get((p.node, p.service_id)) != p.why:
                log.log(logging.INFO if p.pending else logging.WARNING,
                        "Consul service %r on node %r left out: %s", p.service_id, p.node, p.why,
                        extra={"source": self.name, "service_id": p.service_id, "node": p.node, "problem": p.why})
        self._problems = problems
        if view.members == self.members:
            self.synced.set()
            return
        old = {m.name: m for m in self.members}
        new = {m.name: m for m in view.members}
        for name in sorted(new.keys() - old.keys()):
            log.info("member %s joined from Consul (%s)", name, new[name].url, extra={"member": name, "source": self.name})
        for name in sorted(old.keys() - new.keys()):
            log.info("member %s left Consul's rotation", name, extra={"member": name, "source": self.name})
        for name in sorted(n for n in new.keys() & old.keys() if new[n] != old[n]):
            log.info("member %s changed in Consul", name, extra={"member": name, "source": self.name})
        self.members = view.members
        self.membership.publish(self.name, view.members)
        self.synced.set()

    def _mark(self, reachable: bool) -> None:
        self.reachable = reachable
        if self.on_sync is not None:
            self.on_sync(self.name, reachable, len(self.members))


def _describe(exc: BaseException) -> str:
    if isinstance(exc, asyncio.TimeoutError):
        return "no answer in time"
    if isinstance(exc, consul.ACLPermissionDenied):
        return f"permission denied (check the Consul token): {str(exc).strip()[:200]}"
    text = str(exc).strip() or type(exc).__name__
    return text[:300]
