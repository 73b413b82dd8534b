"""Structured logging: one JSON object per line in production, readable text on a terminal.

Errors are rate-limited (`RepeatFilter`): a process that hits the same error thousands
of times a second (the event loop failing to accept connections once file descriptors
run out, say) logs the first occurrence, then at most one line per `REPEAT_INTERVAL`
seconds saying how many more there were, instead of filling the disk and drowning
everything else.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time

REPEAT_INTERVAL = 10.0  # seconds between two lines of one repeating error

# Attributes every LogRecord has; anything else was passed through `extra=` and is data.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__()
        self._second = -1
        self._stamp = ""

    def _time(self, created: float, msecs: float) -> str:
        # One strftime per second of log lines, not one per line.
        second = int(created)
        if second != self._second:
            self._second, self._stamp = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._stamp}.{int(msecs):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self._time(record.created, record.msecs),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = vars(record)
        for k in sorted(fields.keys() - _STANDARD):  # what came through `extra=`
            entry[k] = fields[k]
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class RepeatFilter(logging.Filter):
    """Let an error through once per `interval` seconds, saying how many like it were held back.

    Records count as the same when they come from the same logger at the same level with
    the same message template (`record.msg`, before its arguments). Records below
    `level` pass untouched, except those of the `asyncio` logger (the event loop's own
    error reports, such as `socket.accept() out of system resource`), which repeat
    at any level. A held-back count is reported with the next line that gets through.
    """

    def __init__(self, interval: float = REPEAT_INTERVAL, level: int = logging.ERROR,
                 clock=time.monotonic) -> None:
        super().__init__()
        self.interval = interval
        self.level = level
        self.clock = clock
        self._lock = threading.Lock()
        self._windows: dict[tuple[str, int, str], tuple[float, int]] = {}  # key -> (window start, held back)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < self.level and record.name != "asyncio":
            return True
        key = (record.name, record.levelno, str(record.msg))
        now = self.clock()
        with self._lock:
            start, held = self._windows.get(key, (None, 0))
            if start is not None and now - start < self.interval:
                self._windows[key] = (start, held + 1)
                return False
            self._windows[key] = (now, 0)
            if len(self._windows) > 1000:  # forget quiet keys: the filter's memory stays bounded
                self._windows = {k: w for k, w in self._windows.items() if now - w[0] < self.interval}
        if held:
            record.msg = f"{record.msg} (and {held} more like it in the last {now - start:.0f} s)"
            record.repeated = held
        return True


def setup_logging(fmt: str = "auto", level: str = "info") -> None:
    """`fmt`: json, text, or auto (json unless stderr is a terminal)."""
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter() if use_json else logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")
    )
    handler.addFilter(RepeatFilter())
    # Neither format writes the caller's file and line, thread or process: not looking
    # them up saves a walk of the stack on every line (the logging HOWTO's "Optimization").
    logging._srcfile = None  # noqa: SLF001 - the documented switch
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
