"""The incremental event-stream decoder and the encoder."""

from __future__ import annotations

import random
import re

import pytest

from hub.events import (
    Comment,
    Event,
    EventStreamError,
    EventTooLarge,
    SSEDecoder,
    aiter_sse,
    encode_comment,
    encode_event,
)
from tests.hub.conftest import fixture_path


def decode(*chunks: bytes, **kwargs) -> list[Event | Comment]:
    decoder = SSEDecoder(**kwargs)
    items: list[Event | Comment] = []
    for chunk in chunks:
        items.extend(decoder.feed(chunk))
    return items


def bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def events(items: list[Event | Comment]) -> list[Event]:
    return [i for i in items if isinstance(i, Event)]


@pytest.mark.parametrize("eol", [b"\n", b"\r\n", b"\r"])
def test_line_endings(eol: bytes) -> None:
    stream = b"data: one" + eol + eol + b"data: two" + eol + b"data: 2b" + eol + eol
    expected = [Event("one"), Event("two\n2b")]
    assert decode(stream) == expected
    assert decode(*bytewise(stream)) == expected


def test_mixed_line_endings_and_cr_lf_split_across_chunks() -> None:
    stream = b"data: a\r\ndata: b\rdata: c\n\r\n"
    assert decode(stream) == [Event("a\nb\nc")]
    # CR at the end of one chunk, LF at the start of the next: one line ending, not two
    assert decode(b"data: a\r", b"\ndata: b\r", b"\n\r", b"\n") == [Event("a\nb")]
    # ... whereas CR then CR is two line endings (the second dispatches)
    assert decode(b"data: a\r", b"\r") == [Event("a")]


def test_multiline_data_and_empty_data_lines() -> None:
    assert decode(b"data: x\ndata:\ndata: y\n\n") == [Event("x\n\ny")]
    # a lone empty data field still dispatches an (empty) event
    assert decode(b"data\n\n") == [Event("")]
    assert decode(b"data:\n\n") == [Event("")]


def test_space_after_colon_only_one_removed() -> None:
    assert decode(b"data:no space\n\n") == [Event("no space")]
    assert decode(b"data:  two spaces\n\n") == [Event(" two spaces")]
    assert decode(b"data: a: b\n\n") == [Event("a: b")]


def test_comments_are_items_and_counted() -> None:
    decoder = SSEDecoder()
    items = decoder.feed(b":keepalive\n\ndata: x\n: another\n\n:\n\n")
    assert items == [Comment("keepalive"), Comment(" another"), Event("x"), Comment("")]
    assert decoder.comments == 3
    assert decoder.events == 1


def test_blocks_without_data_are_not_dispatched() -> None:
    assert decode(b"event: ping\n\n\n\nid: 7\n\n") == []
    # the event type does not leak into the next event
    assert decode(b"event: ping\n\ndata: x\n\n") == [Event("x")]


def test_event_id_and_retry_fields() -> None:
    decoder = SSEDecoder()
    items = decoder.feed(b"event: update\nid: 42\nretry: 3000\ndata: a\n\ndata: b\n\n")
    assert items == [Event("a", event="update", id="42"), Event("b", event="message", id="42")]
    assert decoder.retry == 3000
    assert decoder.last_event_id == "42"
    # invalid retry values and ids containing NUL are ignored
    decoder.feed(b"retry: 12a\nretry: \xc2\xb2\nid: a\x00b\ndata: c\n\n")
    assert decoder.retry == 3000
    assert decoder.last_event_id == "42"
    # an empty id resets the last event id
    assert decoder.feed(b"id\ndata: d\n\n") == [Event("d", id="")]


def test_unknown_fields_and_lines_without_colon_are_ignored() -> None:
    assert decode(b"foo: bar\nfoo\ndata: ok\n\n") == [Event("ok")]


def test_utf8_split_inside_a_character() -> None:
    text = "héllo wörld — ☃ 𝄞"
    stream = encode_event(text)
    assert decode(*bytewise(stream)) == [Event(text)]
    # invalid bytes become U+FFFD, as the spec's UTF-8 decode says
    assert decode(b"data: a\xffb\n\n") == [Event("a\ufffdb")]


def test_leading_bom_is_dropped_once_even_when_split() -> None:
    bom = b"\xef\xbb\xbf"
    assert decode(bom + b"data: x\n\n") == [Event("x")]
    assert decode(bom[:1], bom[1:2], bom[2:] + b"data: x\n\n") == [Event("x")]
    # only the first BOM is special: a second one is part of the field name
    assert decode(bom + bom + b"data: x\n\n") == []


def test_incomplete_event_at_end_is_pending_not_dispatched() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\n\ndata: b") == [Event("a")]
    assert decoder.pending
    decoder2 = SSEDecoder()
    decoder2.feed(b"data: a\n\n")
    assert not decoder2.pending


def test_line_size_limit_on_a_line_that_never_ends() -> None:
    decoder = SSEDecoder(max_line_size=1000)
    decoder.feed(b"data: " + b"x" * 900)
    with pytest.raises(EventTooLarge, match="longer than 1000 bytes"):
        for _ in range(100):  # a member that keeps sending without a newline
            decoder.feed(b"x" * 100)
    with pytest.raises(EventStreamError):
        decoder.feed(b"\n\n")  # unusable after the error


def test_line_size_limit_on_a_complete_line() -> None:
    with pytest.raises(EventTooLarge):
        decode(b"data: " + b"y" * 2000 + b"\n\n", max_line_size=1000)
    # exactly at the limit is fine
    line = b"data: " + b"y" * 994
    assert decode(line + b"\n\n", max_line_size=1000) == [Event("y" * 994)]


def test_event_size_limit_across_many_lines() -> None:
    with pytest.raises(EventTooLarge, match="event larger than 1000 bytes"):
        decode(b"data: 0123456789\n" * 200, max_event_size=1000)
    # the limit is per event: many small events are fine
    assert len(decode(b"data: 0123456789\n\n" * 200, max_event_size=1000)) == 200


def test_default_limit_is_one_mebibyte() -> None:
    decoder = SSEDecoder()
    assert decoder.max_line_size == decoder.max_event_size == 1 << 20
    with pytest.raises(EventTooLarge):
        decoder.feed(b"data: " + b"z" * (1 << 20))


def test_long_line_fed_in_small_chunks_is_linear() -> None:
    # 512 KiB in 16-byte chunks: must not rescan the buffer on every chunk
    decoder = SSEDecoder()
    payload = b"data: " + b"a" * (512 * 1024)
    for i in range(0, len(payload), 16):
        assert decoder.feed(payload[i : i + 16]) == []
    assert decoder.feed(b"\n\n") == [Event("a" * (512 * 1024))]


def test_encode_event_roundtrip() -> None:
    assert encode_event('{"phase": "ready"}') == b'data: {"phase": "ready"}\n\n'
    assert encode_event("a\nb") == b"data: a\ndata: b\n\n"
    assert encode_event("") == b"data: \n\n"
    for text in ["x", " leading space", "multi\nline\n", "crlf\r\nand\rcr", "ünïcode"]:
        expected = re.sub(r"\r\n|\r", "\n", text)
        assert decode(encode_event(text)) == [Event(expected)]


def test_encode_comment() -> None:
    assert encode_comment() == b":keepalive\n\n"
    assert decode(encode_comment("ping")) == [Comment("ping")]
    with pytest.raises(ValueError):
        encode_comment("a\nb")


def test_fixture_decodes_to_736_events_in_any_chunking() -> None:
    data = fixture_path("binderhub-build-events.sse").read_bytes()
    expected = re.findall(r"^data: (.*)$", data.decode("utf-8"), re.M)
    assert len(expected) == 736
    rng = random.Random(20240601)
    for _ in range(3):
        decoder = SSEDecoder()
        items: list[Event | Comment] = []
        pos = 0
        while pos < len(data):
            size = rng.randint(1, 300)
            items.extend(decoder.feed(data[pos : pos + size]))
            pos += size
        assert [e.data for e in events(items)] == expected
        assert decoder.comments == 1
        assert not decoder.pending


async def test_aiter_sse() -> None:
    async def chunks():
        for piece in (b"data: a", b"\n\n:k", b"a\n\ndata: b\n", b"\n"):
            yield piece

    assert [item async for item in aiter_sse(chunks())] == [Event("a"), Comment("ka"), Event("b")]
