"""A streamed chat answer as Anthropic's Messages event sequence (`MessageStream`).

The stream half of the Messages translation (`gateway.protocol.messages_answer`, whose stop
reasons, usage, ids and errors it shares): chat completion chunks, parsed, in; the events an
Anthropic client reads (`message_start`, content blocks and their deltas, `message_delta`,
`message_stop`, `ping`), out. Pure code, no I/O.
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway.protocol.messages_answer import (
    anthropic_error,
    anthropic_error_from_chat,
    anthropic_stop,
    anthropic_usage,
    message_id,
    tool_use_id,
)
from gateway.protocol.translation import (
    MALFORMED,
    HeldCalls,
    MalformedChunk,
    malformed_chunk,
    unindexed_position,
    whole_json,
)


class MessageStream:
    """Chat-completion chunks (parsed) in, Anthropic stream events out, in Anthropic's order.

    message_start, then per content block content_block_start / _delta... / _stop (thinking,
    text, one tool_use block per tool call), a ping after the first block opens as Anthropic
    sends it, then message_delta with stop_reason and usage and message_stop. The finish
    reason arrives before the usage chunk, so the closing events wait for the usage chunk or
    `finish()`. Blocks are sequential, as Anthropic's are: a chunk for a new kind of content
    closes the open block. Tool calls streamed one after another (as vLLM and OpenAI send
    them) are relayed as they come; a call that begins while the open call's arguments are
    not yet whole JSON (a backend sending every call's head before their arguments) is held
    and written whole, as one block, once the open one is done. A fragment for a call whose
    block was already closed is dropped.
    """

    def __init__(self, model: str, input_tokens: int = 0, stop_sequences: list[str] | None = None) -> None:
        self.model = model
        self.stop_sequences = stop_sequences
        self._input_tokens = input_tokens  # an estimate for message_start; the usage chunk corrects it
        self._started = False
        self._message_id = "msg_unknown"  # message_start's, once sent: the base of ids made for calls
        self._tools_opened = 0
        self._pinged = False
        self._closed = False
        self._index = -1  # the open block's index, -1 when none is open
        self._open: str | None = None  # its kind: thinking, text or tool_use
        self._tool_blocks: dict[int, int] = {}  # chat tool_calls index -> block index
        self._open_tool: int | None = None
        self._tool_arguments: list[str] = []  # the open tool block's arguments so far
        self._tool_withheld = False  # its arguments do not start an object: held, checked at its end
        self._blank = ""  # whitespace no text block is open for: held until text follows it
        self._held = HeldCalls()  # calls waiting for it
        self._call_ids: dict[str, int] | None = None  # for calls without an `index` (`unindexed_position`)
        self._stop: tuple[str, str | None] | None = None
        self._usage: dict[str, int] | None = None
        self._generated_bytes = 0  # what went out, for an estimate when no usage chunk comes
        self._saw_tool_call = False
        self.malformed = False  # ended at a chunk it could not read (the upstream's malformed answer)

    def resume_at(self, last_index: int, text_open: bool, delivered_bytes: int) -> None:
        """Continue a message the client already has (a native stream that broke, continued
        from chat chunks): no second message_start or ping; text goes on in the open text
        block `last_index` when `text_open`, else into a new block after it. The delivered
        bytes count toward the output estimate used when no usage chunk comes."""
        self._started = self._pinged = True
        self._index = last_index
        self._open = "text" if text_open else None
        self._generated_bytes = delivered_bytes

    def feed(self, chunk: Any) -> list[dict[str, Any]]:
        """The events one chat chunk produces (possibly none). A chunk that is not a chat
        chunk ends the stream with an error event: the client learns the answer broke off."""
        if self._closed:
            return []
        events = self._start(chunk if isinstance(chunk, dict) else {})
        try:
            return events + self._feed(chunk)
        except MALFORMED as exc:
            return events + self._malformed(exc)

    def _feed(self, chunk: dict[str, Any]) -> list[dict[str, Any]]:
        if chunk.get("error") is not None:
            self._closed = True
            return [anthropic_error_from_chat(chunk["error"])]
        events = self._start(chunk)
        if chunk.get("usage"):
            self._usage = anthropic_usage(chunk["usage"])
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue  # Messages has one answer; n > 1 is not translated
            events += self._delta(choice.get("delta") or {})
            if choice.get("finish_reason"):
                events += self._settle()
                self._stop = anthropic_stop(choice, self.stop_sequences)
        if self._stop and self._usage is not None:
            events += self._end()
        return events

    def text_delta(self, chunk: dict[str, Any]) -> bytes | None:
        """The encoded event for a chunk that only continues the open text block (the bulk of
        a stream), built without the general path's intermediate objects; None for any other
        chunk, which then goes through `feed`. The bytes are exactly `encode_event` of what
        `feed` returns for it."""
        if self._open != "text" or self._closed or chunk.get("usage") or "error" in chunk:
            return None
        choices = chunk.get("choices")
        if type(choices) is not list or len(choices) != 1:
            return None
        choice = choices[0]
        delta = choice.get("delta") if type(choice) is dict else None
        if type(delta) is not dict or choice.get("finish_reason") or choice.get("index", 0) != 0:
            return None
        text = delta.get("content")
        if type(text) is not str or not text or len(delta) > 2 or (len(delta) == 2 and "role" not in delta):
            return None
        self._generated_bytes += len(text.encode())
        return (
            b'event: content_block_delta\ndata: {"type":"content_block_delta","index":'
            + str(self._index).encode()
            + b',"delta":{"type":"text_delta","text":'
            + orjson.dumps(text)
            + b"}}\n\n"
        )

    def finish(self) -> list[dict[str, Any]]:
        """At the end of the chat stream: close whatever is still open."""
        if self._closed:
            return []
        events = self._start({})
        try:
            events += self._settle()
        except MALFORMED as exc:
            return events + self._malformed(exc)
        return events + self._end()

    def _malformed(self, exc: Exception) -> list[dict[str, Any]]:
        """The error event ending the stream at a chunk it cannot read; `malformed` tells the
        relay the upstream's answer was at fault."""
        self._closed = self.malformed = True
        return [anthropic_error(malformed_chunk(exc))[1]]

    def _start(self, chunk: dict[str, Any]) -> list[dict[str, Any]]:
        if self._started:
            return []
        self._started = True
        self._message_id = message_id(chunk.get("id"))
        message: dict[str, Any] = {
            "id": self._message_id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            # Every count Anthropic's message_start carries: a client adding up the prompt
            # (input + cache writes + cache reads) from it reads no missing field. What was
            # cached is not known yet; message_delta's counts (cumulative) say it.
            "usage": {
                "input_tokens": self._input_tokens,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
                "output_tokens": 0,
            },
        }
        return [{"type": "message_start", "message": message}]

    def _delta(self, delta: dict[str, Any]) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        reasoning = delta.get("reasoning_content") or delta.get("reasoning")
        if self._held and (reasoning or delta.get("content")):
            events += self._settle()  # the held calls are written before what follows them
        if isinstance(reasoning, str) and reasoning:
            events += self._open_block("thinking", {"type": "thinking", "thinking": "", "signature": ""})
            events.append(self._block_delta({"type": "thinking_delta", "thinking": reasoning}))
        text = delta.get("content")
        if isinstance(text, str) and text:
            if self._open != "text" and not text.strip():
                # Whitespace before any text (Qwen's "\n\n" before its tool call) waits for
                # text to go before: a text block of whitespace alone, sent back as clients
                # send each turn, is Anthropic's 400 (`chat_to_message` leaves it out too).
                self._blank += text
            else:
                events += self._open_block("text", {"type": "text", "text": ""})
                text, self._blank = self._blank + text, ""
                events.append(self._block_delta({"type": "text_delta", "text": text}))
        for call in delta.get("tool_calls") or ():
            events += self._tool_delta(call)
        return events

    def _tool_delta(self, call: dict[str, Any]) -> list[dict[str, Any]]:
        position = call.get("index")
        if type(position) is not int:
            if self._call_ids is None:
                self._call_ids = {}
            position = unindexed_position(call, self._call_ids, self._open_tool)
        function = call.get("function") or {}
        events: list[dict[str, Any]] = []
        if position in self._held:
            self._held.hold(position, call)
            return []
        if position not in self._tool_blocks:
            self._saw_tool_call = True
            if self._open_tool is not None and (self._held or not whole_json(self._tool_arguments)):
                # The open call's arguments are still coming: this one waits (`_settle`).
                self._held.hold(position, call)
                self._tool_blocks[position] = -1  # not open yet
                return []
            block: dict[str, Any] = {
                "type": "tool_use",
                "id": tool_use_id(call.get("id"), self._message_id, self._tools_opened),
                "name": function.get("name") or "",
                "input": {},
            }
            events += self._open_block("tool_use", block, force=True)
            self._tools_opened += 1
            self._tool_blocks[position] = self._index
            self._open_tool = position
        elif position != self._open_tool:
            return []  # a fragment for a call already closed: Anthropic cannot reopen a block
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            self._tool_arguments.append(arguments)
            if self._tool_withheld or (len(self._tool_arguments) == 1 and not arguments.lstrip().startswith("{")):
                # Not the start of a JSON object (a model writing prose or a fenced block where
                # the arguments go): held, so the client's SDK, which parses input_json_delta as
                # it comes, never reads it; `_close_block` decides (an error event, as the
                # non-streamed answer's 502, unless it turns out an object after all).
                self._tool_withheld = True
                return events
            events.append(self._block_delta({"type": "input_json_delta", "partial_json": arguments}))
        return events

    def _open_block(self, kind: str, block: dict[str, Any], force: bool = False) -> list[dict[str, Any]]:
        if self._open == kind and not force:
            return []
        events = self._close_block()
        if kind != "text":
            self._blank = ""  # whitespace before another kind of block: nothing to go before
        self._index += 1
        self._open = kind
        events.append({"type": "content_block_start", "index": self._index, "content_block": block})
        if not self._pinged:
            self._pinged = True
            events.append({"type": "ping"})
        return events

    def _block_delta(self, delta: dict[str, Any]) -> dict[str, Any]:
        self._generated_bytes += len(
            (delta.get("text") or delta.get("thinking") or delta.get("partial_json") or "").encode()
        )
        return {"type": "content_block_delta", "index": self._index, "delta": delta}

    def _close_block(self) -> list[dict[str, Any]]:
        if self._open is None:
            return []
        events: list[dict[str, Any]] = []
        if self._open == "tool_use" and self._tool_arguments:
            text = "".join(self._tool_arguments)
            try:
                whole = orjson.loads(text)
            except orjson.JSONDecodeError:
                whole = None
            if type(whole) is not dict:
                # Anthropic's tool input is always an object: the stream ends with an error
                # event (the non-streamed answer is a 502 for the same arguments).
                raise MalformedChunk("The upstream's tool call arguments are not a JSON object; the stream ends here.")
            if self._tool_withheld:  # an object after all (leading whitespace): sent whole
                events.append(self._block_delta({"type": "input_json_delta", "partial_json": text}))
        self._open = None
        self._open_tool = None
        self._tool_arguments = []
        self._tool_withheld = False
        return events + [{"type": "content_block_stop", "index": self._index}]

    def _settle(self) -> list[dict[str, Any]]:
        """Close the open block, then write the held calls, each whole, in their order."""
        events = self._close_block()
        while (released := self._held.release()) is not None:
            position, call = released
            del self._tool_blocks[position]
            events += self._tool_delta(call)
            events += self._close_block()
        return events

    def _end(self) -> list[dict[str, Any]]:
        self._closed = True
        stop_reason, stop_sequence = self._stop or ("end_turn", None)
        if self._saw_tool_call and stop_reason == "end_turn":
            stop_reason = "tool_use"
        # Without the backend's count (it ignored stream_options), the router's estimate: bytes/3.
        usage = self._usage or {
            "input_tokens": self._input_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": (self._generated_bytes + 2) // 3,
        }
        return [
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence},
                "usage": usage,
            },
            {"type": "message_stop"},
        ]
