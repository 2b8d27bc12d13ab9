"""Cutting SSE bytes into events: `whole_events` and `EventCutter` against the plain-bytes
definitions they stand in for (`bytes.split` / `bytes.rfind` on a blank line), on short
chunks (cut by the C split) and on long ones (cut from newline to newline), whatever the
chunking."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.protocol.sse import EventCutter, whole_events


def reference_events(data: bytes) -> list[bytes]:
    return [event for part in data.split(b"\n\n") if (event := part.strip(b"\n"))]


# Bytes that are mostly event text, with newlines alone and in runs; long fillers so that
# chunks of several kilobytes with few newlines (an echoed Response) come up.
pieces = st.one_of(
    st.sampled_from([b"\n", b"\n\n", b"\n\n\n", b"event: x", b"data: {}", b"a", b"\r\n"]),
    st.integers(min_value=1, max_value=6000).map(lambda n: b"x" * n),
)
streams = st.lists(pieces, max_size=40).map(b"".join)


@given(streams)
@settings(max_examples=400, deadline=None)
def test_whole_events_is_split_on_blank_lines_without_empty_events(data: bytes) -> None:
    assert whole_events(data) == reference_events(data)


def test_whole_events_on_a_long_chunk_of_large_and_small_events() -> None:
    big = b'event: response.created\ndata: {"type":"response.created","pad":"' + b"p" * 15000 + b'"}'
    small = b'event: response.output_text.delta\ndata: {"delta":"hi"}'
    data = b"\n" + big + b"\n\n" + small + b"\n\n\n\n" + big + b"\n\n"
    assert len(data) > 30000
    assert whole_events(data) == [big, small, big]


class ReferenceCutter:
    """`EventCutter` as it was written first: the last blank line by `rfind(b"\n\n")`."""

    def __init__(self) -> None:
        self.tail = b""

    def complete(self, chunk: bytes) -> bytes:
        data = self.tail + chunk if self.tail else chunk
        if b"\r" in data:
            data = data.replace(b"\r\n", b"\n")
        cut = data.rfind(b"\n\n")
        if cut < 0:
            self.tail = data
            return b""
        complete, self.tail = data[: cut + 2], data[cut + 2 :]
        return complete


@given(streams, st.lists(st.integers(min_value=1, max_value=9000), max_size=12))
@settings(max_examples=300, deadline=None)
def test_event_cutter_cuts_where_the_last_blank_line_is(data: bytes, sizes: list[int]) -> None:
    cutter, reference = EventCutter(), ReferenceCutter()
    at = 0
    for size in [*sizes, len(data)]:
        chunk = data[at : at + size]
        at += size
        assert cutter.complete(chunk) == reference.complete(chunk)
    assert cutter.rest() == reference.tail
