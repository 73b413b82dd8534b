"""One log line, not a traceback, for HTTP requests too malformed to reach a handler.

aiohttp answers a request it cannot parse (request line or header over
`max_line_size`/`max_field_size`, too many headers, control characters or raw
non-ASCII in the URL, a bad Content-Length, TLS spoken to the HTTP port...) with a
400 itself, and logs it through its server logger with `logger.exception`: an
ERROR with a full traceback for every such request, which turns any scanner on the
public internet into a log flood. The app's server (`create_app`'s `handler_args`)
logs through `MalformedRequestLog` instead: a client's malformed request becomes one
INFO line naming the cause and counts in
`federation_refused_launches_total{cause="bad_request"}`; anything else (a real
server error) is logged by aiohttp's logger exactly as before.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from aiohttp.http_exceptions import HttpProcessingError

log = logging.getLogger("binderfed.router")


class MalformedRequestLog(logging.LoggerAdapter):
    """aiohttp's server logger, with client errors logged as one line."""

    def __init__(self, on_malformed: Callable[[], None] | None = None,
                 logger: logging.Logger = logging.getLogger("aiohttp.server")):
        super().__init__(logger, {})
        self.on_malformed = on_malformed

    def exception(self, msg: Any, *args: Any, exc_info: Any = True, **kwargs: Any) -> None:
        if isinstance(exc_info, HttpProcessingError) and exc_info.code is not None and 400 <= exc_info.code < 500:
            remote = args[0] if args else "?"
            cause = " ".join(str(exc_info.message).split())[:200]  # one line, bounded: it quotes the request
            log.info("refused malformed HTTP request from %s: %s", remote, cause,
                     extra={"cause": "bad_request", "client": str(remote)})
            if self.on_malformed is not None:
                self.on_malformed()
            return
        self.logger.exception(msg, *args, exc_info=exc_info, **kwargs)
