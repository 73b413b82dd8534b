"""Server-Sent Events (`text/event-stream`): an incremental decoder and an encoder.

The decoder follows the WHATWG HTML "event stream interpretation" rules exactly:

- the stream is UTF-8 (invalid bytes become U+FFFD); one leading BOM is dropped;
- lines end with CRLF, LF or CR (a CR at the end of one chunk and an LF at the start
  of the next are one line ending);
- a blank line dispatches the event being collected; an event without any `data`
  field is not dispatched;
- a line starting with `:` is a comment (BinderHub sends `:keepalive`); comments are
  returned as `Comment` items so a relay can tell that upstream is alive;
- `field:value` with at most one space after the colon removed; a line without a
  colon is a field with an empty value; `data` lines are joined with `\\n`;
  `event` sets the type, `id` the last event id (ignored if it contains NUL),
  `retry` the reconnection time (ASCII digits only); unknown fields are ignored;
- at end of stream an incomplete event is discarded (see `SSEDecoder.pending`).

It is transport-agnostic: feed it `bytes` chunks of any size, split anywhere
(inside a multi-byte character, between CR and LF), and it returns whatever
complete items they finish. Lines are split on bytes before decoding, which is safe
because CR and LF never occur inside a multi-byte UTF-8 sequence.

Memory is bounded: a line longer than `max_line_size` bytes (even one that never
ends) or an event whose data exceeds `max_event_size` bytes raises `EventTooLarge`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import AsyncIterable, AsyncIterator

__all__ = [
    "DEFAULT_MAX_SIZE",
    "Comment",
    "Event",
    "EventStreamError",
    "EventTooLarge",
    "SSEDecoder",
    "aiter_sse",
    "encode_comment",
    "encode_event",
]

DEFAULT_MAX_SIZE = 1 << 20  # 1 MiB

_BOM = b"\xef\xbb\xbf"
_EOL = re.compile(rb"\r\n|\r|\n")
_TEXT_EOL = re.compile(r"\r\n|\r|\n")


class EventStreamError(ValueError):
    """The byte stream cannot be decoded as an event stream."""


class EventTooLarge(EventStreamError):
    """A line or an event is larger than the decoder's limit."""


@dataclass(frozen=True, slots=True)
class Event:
    """One dispatched event.

    `data` is the data buffer (lines joined with `\\n`, no trailing newline);
    `event` the type (`"message"` unless an `event:` field said otherwise);
    `id` the stream's last event id at dispatch time (it persists across events).
    """

    data: str
    event: str = "message"
    id: str = ""


@dataclass(frozen=True, slots=True)
class Comment:
    """A comment line: `text` is everything after the leading colon (e.g. `"keepalive"`)."""

    text: str


class SSEDecoder:
    """Incremental event-stream decoder. Not thread-safe; one instance per stream.

    Attributes updated as the stream is fed: `retry` (last valid `retry:` value in ms,
    or None), `last_event_id`, `comments` (number of comment lines seen) and
    `events` (number of events dispatched). After an error the decoder is unusable.
    """

    def __init__(self, *, max_line_size: int = DEFAULT_MAX_SIZE, max_event_size: int = DEFAULT_MAX_SIZE) -> None:
        if max_line_size <= 0 or max_event_size <= 0:
            raise ValueError("max_line_size and max_event_size must be positive")
        self.max_line_size = max_line_size
        self.max_event_size = max_event_size
        self.retry: int | None = None
        self.comments = 0
        self.events = 0
        self._last_id = ""
        self._buf = bytearray()  # bytes of the current, unfinished line (never holds CR/LF)
        self._skip_lf = False  # previous chunk ended with CR: an LF first in the next is part of it
        self._at_start = True  # BOM not checked yet
        self._data: list[str] = []
        self._data_size = 0
        self._event_type = ""
        self._broken: str | None = None

    @property
    def last_event_id(self) -> str:
        return self._last_id

    @property
    def pending(self) -> bool:
        """True if an unfinished line or undispatched event fields are buffered.

        At end of stream such data is discarded (the spec says so); a caller can use
        this to tell that the stream was cut in the middle of an event.
        """
        return bool(self._buf) or bool(self._data) or bool(self._event_type)

    def feed(self, chunk: bytes | bytearray | memoryview) -> list[Event | Comment]:
        """Consume `chunk` and return the events and comments it completes, in order."""
        if self._broken is not None:
            raise EventStreamError(f"event stream decoder already failed: {self._broken}")
        out: list[Event | Comment] = []
        if not chunk:
            return out
        buf = self._buf
        scan_from = len(buf)  # the bytes already buffered hold no line ending
        buf += chunk
        if self._at_start:
            if len(buf) < len(_BOM) and _BOM.startswith(buf):
                return out  # might still become a BOM
            if buf.startswith(_BOM):
                del buf[: len(_BOM)]
                scan_from = 0
            self._at_start = False
        pos = 0
        if self._skip_lf and buf:
            self._skip_lf = False
            if buf[0] == 0x0A:
                pos = scan_from = 1
        while True:
            match = _EOL.search(buf, scan_from)
            if match is None:
                break
            start, end = match.span()
            if start - pos > self.max_line_size:
                self._fail(EventTooLarge(f"event stream line longer than {self.max_line_size} bytes"))
            if end == len(buf) and buf[start] == 0x0D:
                self._skip_lf = True
            self._line(bytes(buf[pos:start]), out)
            pos = scan_from = end
        del buf[:pos]
        if len(buf) > self.max_line_size:
            self._fail(EventTooLarge(f"event stream line longer than {self.max_line_size} bytes without a line ending"))
        return out

    def _fail(self, exc: EventStreamError) -> None:
        self._broken = str(exc)
        self._buf = bytearray()
        self._data = []
        raise exc

    def _line(self, line: bytes, out: list[Event | Comment]) -> None:
        if not line:
            self._dispatch(out)
            return
        text = line.decode("utf-8", "replace")
        if text[0] == ":":
            self.comments += 1
            out.append(Comment(text[1:]))
            return
        name, colon, value = text.partition(":")
        if colon and value[:1] == " ":
            value = value[1:]
        if name == "data":
            self._data_size += len(line)
            if self._data_size > self.max_event_size:
                self._fail(EventTooLarge(f"event stream event larger than {self.max_event_size} bytes"))
            self._data.append(value)
        elif name == "event":
            self._event_type = value
        elif name == "id":
            if "\x00" not in value:
                self._last_id = value
        elif name == "retry":
            if value and value.isascii() and value.isdigit():
                self.retry = int(value)
        # any other field is ignored

    def _dispatch(self, out: list[Event | Comment]) -> None:
        data, event_type = self._data, self._event_type
        self._data, self._data_size, self._event_type = [], 0, ""
        if not data:
            return
        self.events += 1
        out.append(Event(data="\n".join(data), event=event_type or "message", id=self._last_id))


async def aiter_sse(
    chunks: AsyncIterable[bytes], decoder: SSEDecoder | None = None
) -> AsyncIterator[Event | Comment]:
    """Decode an async iterable of byte chunks into events and comments."""
    decoder = decoder or SSEDecoder()
    async for chunk in chunks:
        for item in decoder.feed(chunk):
            yield item


def encode_event(data: str) -> bytes:
    """Encode `data` as one event: a `data: <line>` field per line, then a blank line.

    Any of CRLF, CR or LF in `data` separates lines (a decoder would split there
    anyway); decoding the result gives back `data` with line endings normalised to LF.
    """
    return "".join(f"data: {line}\n" for line in _TEXT_EOL.split(data)).encode("utf-8") + b"\n"


def encode_comment(text: str = "keepalive") -> bytes:
    """Encode a comment block such as BinderHub's `:keepalive\\n\\n`."""
    if _TEXT_EOL.search(text):
        raise ValueError("a comment cannot contain a line ending")
    return f":{text}\n\n".encode("utf-8")
