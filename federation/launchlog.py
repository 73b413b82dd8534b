"""The launch event log: one JSON line per routed launch, in the spirit of
BinderHub's own launch events. The store keeps recent events for the status page;
this sink writes them where an operator archives them."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import IO, Any, Mapping

log = logging.getLogger("binderfed.launchlog")


class LaunchLogError(Exception):
    """The launch log's file cannot be opened (at start: a router without it would lose events)."""


class LaunchLog:
    def __init__(self, sink: str = "none"):
        self.sink = sink
        self._file: IO[str] | None = None
        if sink.startswith("file:"):
            path = Path(sink[len("file:"):])
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                self._file = path.open("a", buffering=1)  # line-buffered: one launch, one flushed line
            except OSError as exc:
                raise LaunchLogError(f"launch_log.sink {sink!r}: cannot open {path}: {exc.strerror or exc}") from exc

    def write(self, event: Mapping[str, Any]) -> None:
        if self.sink == "none":
            return
        line = json.dumps(event, separators=(",", ":"), sort_keys=True)
        try:
            if self._file is not None:
                self._file.write(line + "\n")
            else:
                sys.stdout.write(line + "\n")
                sys.stdout.flush()
        except OSError as exc:  # a full disk must not turn launches into errors
            log.warning("cannot write launch event to %s: %s", self.sink, exc)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
