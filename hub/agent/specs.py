"""Which launch spec built which image slug: configured specs and what the pods taught."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from .. import images
from .pods import PodInfo

log = logging.getLogger("binderfed.agent")


@dataclass
class _Learned:
    spec: str
    seen: float
    saved: float = 0.0   # `seen` as last written to Redis


class SpecBook:
    """Which launch spec built which image slug (safe slug → `<provider>/<spec>`)."""

    def __init__(self, image_prefix: str):
        self.prefix = image_prefix
        self.configured: dict[str, str] = {}
        self.learned: dict[str, _Learned] = {}

    def configure(self, specs: Iterable[str]) -> None:
        for spec in specs:
            provider, _, rest = spec.partition("/")
            try:
                slug = images.build_slug(provider, rest)
            except ValueError as exc:
                log.warning("ignoring configured spec %r: %s", spec, exc)
                continue
            if slug is None:
                log.warning("configured spec %r names a data provider whose image slug needs the provider's API; "
                            "it is learned from its pods instead", spec)
                continue
            safe = images.safe_build_slug(slug, limit=images.MAX_IMAGE_NAME - len(self.prefix))
            self.configured[safe] = spec

    def learn_from_pod(self, pod: PodInfo, now: float) -> bool:
        """Remember the pod's (image slug, spec) pair if it is consistent; True if it was."""
        if pod.kind != "user" or not pod.image or not pod.spec:
            return False
        parsed = images.parse_image_name(self.prefix, pod.image)
        if parsed is None:
            return False
        slug = parsed[0]
        provider, _, rest = pod.spec.partition("/")
        try:
            expected = images.build_slug(provider, rest)
        except ValueError:
            return False
        if expected is not None and not images.slug_matches(slug, expected):
            log.debug("pod image %s does not belong to launch %s; not learned", pod.image, pod.spec)
            return False
        entry = self.learned.get(slug)
        if entry is None:
            self.learned[slug] = _Learned(pod.spec, now)
        else:
            if entry.spec != pod.spec:
                entry.saved = 0.0  # write the new spelling at the next save
            entry.spec, entry.seen = pod.spec, max(entry.seen, now)
        return True

    def spec_for(self, slug: str) -> str | None:
        entry = self.learned.get(slug)
        return entry.spec if entry is not None else self.configured.get(slug)

    def saw(self, slugs: Iterable[str], now: float) -> None:
        for slug in slugs:
            entry = self.learned.get(slug)
            if entry is not None:
                entry.seen = max(entry.seen, now)

    # persistence: one Redis hash field per slug, JSON {"spec", "seen"}
    def load(self, fields: Mapping[Any, Any]) -> None:
        for slug, raw in fields.items():
            slug = slug.decode() if isinstance(slug, bytes) else str(slug)
            try:
                data = json.loads(raw)
                spec, seen = str(data["spec"]), float(data["seen"])
            except (ValueError, KeyError, TypeError):
                continue
            entry = self.learned.get(slug)
            if entry is None or entry.seen < seen:
                self.learned[slug] = _Learned(spec, seen, saved=seen)

    def changes(self, now: float, forget_after: float, resave_after: float = 3600.0) -> tuple[dict[str, str], list[str]]:
        """(fields to write, slugs to forget); marks the written ones as saved."""
        write: dict[str, str] = {}
        forget = [slug for slug, e in self.learned.items() if now - e.seen > forget_after]
        for slug in forget:
            del self.learned[slug]
        for slug, entry in self.learned.items():
            if entry.saved == 0.0 or entry.seen - entry.saved >= resave_after:
                write[slug] = json.dumps({"spec": entry.spec, "seen": entry.seen})
                entry.saved = entry.seen
        return write, forget
