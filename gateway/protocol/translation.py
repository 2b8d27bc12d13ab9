"""What the Messages and Responses translations share in reading chat answers.

Both turn a chat completion, or its stream of chunks, into another API's answer: the
errors for an answer they cannot read (`MALFORMED`, `malformed_answer`, `malformed_chunk`),
the tool calls a stream holds
while another call's arguments are still coming (`HeldCalls`, `unindexed_position`,
`whole_json`), and the typed SSE event both APIs write (`encode_event`). Pure code, no I/O.
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway.protocol.errors import GatewayError

# What reading a malformed backend answer raises (a list where an object belongs, and so on).
MALFORMED = (AttributeError, TypeError, KeyError, IndexError, ValueError)


class HeldCalls:
    """Tool calls of a streamed chat answer that began while another call's arguments were
    still coming (a backend sending every call's head first), kept whole until that call is
    done: the stream translations' items and blocks cannot reopen once closed, so a call is
    written in one piece when its turn comes (`release`)."""

    __slots__ = ("_calls",)

    def __init__(self) -> None:
        self._calls: dict[int, tuple[dict[str, Any], list[str]]] = {}  # position -> first fragment, arguments

    def __bool__(self) -> bool:
        return bool(self._calls)

    def __contains__(self, position: int) -> bool:
        return position in self._calls

    def hold(self, position: int, call: dict[str, Any]) -> None:
        """Keep this call (its first fragment), or add a later fragment's arguments to it."""
        arguments = (call.get("function") or {}).get("arguments")
        held = self._calls.get(position)
        if held is None:
            self._calls[position] = (call, [arguments] if isinstance(arguments, str) else [])
        elif isinstance(arguments, str):
            held[1].append(arguments)

    def release(self) -> tuple[int, dict[str, Any]] | None:
        """The first call held, whole (its arguments joined), and no longer held; None: none."""
        if not self._calls:
            return None
        position = next(iter(self._calls))
        call, arguments = self._calls.pop(position)
        return position, {**call, "function": {**(call.get("function") or {}), "arguments": "".join(arguments)}}


# Positions given to calls that came without an `index`, apart from any the upstream numbers.
_UNINDEXED = 1 << 20


def unindexed_position(call: dict[str, Any], ids: dict[str, int], open_position: int | None) -> int:
    """Which call a streamed tool-call fragment without an `index` belongs to (OpenAI's chunks
    always carry one; some servers leave it out): a fragment with an `id` not seen before
    begins a new call, one with a known id goes to that call, and one without an id goes on
    with the call open now. Taken as index 0, two such calls merged into one whose arguments
    were two JSON objects end to end (hostile testing). `ids` is the stream's own map."""
    call_id = call.get("id")
    if isinstance(call_id, str) and call_id:
        position = ids.get(call_id)
        if position is None:
            position = ids[call_id] = _UNINDEXED + len(ids)
        return position
    return open_position if open_position is not None else 0


def whole_json(parts: list[str]) -> bool:
    """Whether a streamed tool call's arguments so far are a whole JSON value: when another
    call begins, whether this one is done (a backend streaming calls one after another) or
    will go on (one that sends every call's head before their arguments), for the stream
    translations, whose items cannot reopen once closed."""
    text = "".join(parts)
    if not text:
        return False
    try:
        orjson.loads(text)
    except orjson.JSONDecodeError:
        return False
    return True


def malformed_answer(exc: Exception) -> GatewayError:
    return GatewayError(502, f"The backend's answer is not a valid chat completion ({type(exc).__name__}: {exc}).")


class MalformedChunk(ValueError):
    """A streamed chat chunk a stream translation cannot go on from, said in the gateway's
    own words (its message is what the client reads: no upstream text in it)."""


_MALFORMED_CHUNK = "The upstream sent a malformed chunk; the stream ends here."


def malformed_chunk(exc: Exception) -> GatewayError:
    """The error ending a translated stream at a chunk it cannot read (a choice or delta that
    is not an object, ...). Plain words: a Python exception's name and text say nothing to the
    client and may quote the upstream's bytes; a `MalformedChunk` says its own."""
    return GatewayError(502, str(exc) if isinstance(exc, MalformedChunk) else _MALFORMED_CHUNK)


def encode_event(event: dict[str, Any]) -> bytes:
    """One typed SSE event: the `event:` line names its type, as Anthropic's and OpenAI's
    Responses streams both do."""
    kind: str = event["type"]  # every event the stream translations build names its type
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"
