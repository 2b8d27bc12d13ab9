"""Server-sent events framing: cutting a byte stream into whole events, whatever the chunking.

Upstreams split their streams anywhere (mid-line, mid-event) and some end lines with CRLF.
Both the OpenAI relay and the Anthropic translation read events through this one cutter.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson


class EventCutter:
    """Holds the unfinished tail between chunks; hands out whole events only."""

    __slots__ = ("_tail",)

    def __init__(self) -> None:
        self._tail = b""

    def complete(self, chunk: bytes) -> bytes:
        """Every whole event received so far (ending with its blank line), or b''."""
        data = self._tail + chunk if self._tail else chunk
        if b"\r" in data:
            data = data.replace(b"\r\n", b"\n")
        cut = data.rfind(b"\n\n")
        if cut < 0:
            self._tail = data
            return b""
        complete, self._tail = data[: cut + 2], data[cut + 2 :]
        return complete

    def rest(self) -> bytes:
        """What the stream left unterminated at its end."""
        tail, self._tail = self._tail, b""
        return tail


def data_of(event: bytes) -> bytes | None:
    """The `data:` payload of one event (multi-line data joined), or None if it has none."""
    lines = [line[5:].lstrip() for line in event.split(b"\n") if line.startswith(b"data:")]
    return b"\n".join(lines) if lines else None


def json_objects(relayed: bytes) -> Iterator[dict[str, Any]]:
    """The JSON objects carried by a relayed stream's events, in order: what a continuation
    reads back of what the client already has. Events without data, `[DONE]`, data that is
    not JSON and JSON that is not an object are passed over (the relay dealt with them)."""
    for event in relayed.split(b"\n\n"):
        payload = data_of(event.strip(b"\n"))
        if payload is None or payload == b"[DONE]":
            continue
        try:
            obj = orjson.loads(payload)
        except orjson.JSONDecodeError:
            continue
        if type(obj) is dict:
            yield obj
