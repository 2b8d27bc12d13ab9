"""A streamed chat answer as OpenAI's Responses event sequence (`ResponseStream`).

The stream half of the Responses translation (`gateway.protocol.responses` and
`gateway.protocol.responses_answer`, whose mappings, items and Response object it shares):
chat completion chunks, parsed, in; the typed events a Responses client reads, in OpenAI's
order and numbering, out. Pure code, no I/O.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from gateway.protocol.errors import GatewayError
from gateway.protocol.responses_answer import (
    call_id_of,
    call_item,
    custom_input,
    delta_logprobs,
    encoded_echo,
    ending,
    failed_response,
    message_item,
    output_logprobs,
    reasoning_item,
    response_object,
    response_usage,
    search_arguments,
)
from gateway.protocol.responses_tools import TOOL_SEARCH, CallKinds, call_kinds
from gateway.protocol.translation import (
    MALFORMED,
    HeldCalls,
    encode_event,
    malformed_chunk,
    unindexed_position,
    whole_json,
)

# Delta fields a plain text continuation may carry with a value (others only as nulls).
_CONTENT_ONLY = frozenset({"content", "role"})


class ResponseStream:
    """Chat-completion chunks (parsed) in, Responses stream events out, in OpenAI's order.

    response.created and response.in_progress first; then per output item
    output_item.added, its content part's added / deltas / done (output_text, reasoning_text)
    or function_call_arguments.delta / .done, and output_item.done; then response.completed
    (response.incomplete when the answer was cut at max_output_tokens) carrying the whole
    Response and its usage. Every event has the next `sequence_number`. The finish reason
    arrives before the usage chunk, so the last event waits for it or for `finish()`. An
    error chunk ends the stream with response.failed.
    """

    def __init__(
        self,
        request: dict[str, Any],
        response_id: str,
        created_at: int | None = None,
        echo: dict[str, orjson.Fragment] | None = None,
    ) -> None:
        self.request = request
        # The request's bulk, encoded once (`encoded_echo`): given when the caller made it
        # already, else made at the first event that carries the Response.
        self._echo: dict[str, orjson.Fragment] | None = echo or None
        self.response_id = response_id
        self.created_at = created_at if created_at is not None else int(time.time())
        self.output: list[dict[str, Any]] = []  # finished items, for the final Response
        self._counts: dict[Any, int] = {}  # how many of `output` are of each type (`_earlier`)
        self._sequence = 0
        self._started = False
        self._closed = False
        self._open: dict[str, Any] | None = None  # the item being streamed
        self._text: list[str] = []  # its text or arguments so far, joined when it closes
        self._logprobs: list[dict[str, Any]] = []  # the open message's text's, when the backend sends them
        self._calls: set[int] = set()  # chat tool_calls indexes already opened (or held)
        self._open_call: int | None = None  # the open item's chat tool_calls index
        # Calls that began while another call's arguments were still coming: their first
        # fragment and arguments, written whole once the open item is done (`_settle`).
        self._held = HeldCalls()
        self._call_ids: dict[str, int] | None = None  # for calls without an `index` (`unindexed_position`)
        self._kinds: CallKinds | None = None  # read at the first call
        self._finish: Any = None
        self._usage: dict[str, Any] | None = None
        self._finished = False
        self._completed_at: int | None = None
        self.malformed = False  # ended at a chunk it could not read (the upstream's malformed answer)
        self.failed: dict[str, Any] | None = None  # the Response `response.failed` carried, once it has

    @property
    def response(self) -> dict[str, Any]:
        """The final Response as the stream left it (what the gateway stores)."""
        status, incomplete = ending(self._finish)
        if self._completed_at is None:  # fixed at the first read, the response.completed event's
            self._completed_at = int(time.time())
        response = response_object(
            self.request, self.response_id, self.created_at, status, list(self.output), self._completed_at
        )
        response["incomplete_details"] = incomplete
        response["usage"] = self._usage
        return response

    def resume_at(
        self,
        response_id: str,
        created_at: int,
        sequence: int,
        output: list[dict[str, Any]],
        open_message: dict[str, Any] | None,
        text: str,
    ) -> None:
        """Continue a Response the client already has (a native stream that broke, continued
        from chat chunks): no second response.created; numbering goes on from `sequence`,
        `output` holds the items already done, and text goes on in `open_message` (the
        message item being written, whose text so far is `text`) or in a new item."""
        self.response_id, self.created_at, self._sequence = response_id, created_at, sequence
        self.output, self._counts = list(output), {}
        for item in output:
            kind = item.get("type")
            self._counts[kind] = self._counts.get(kind, 0) + 1
        self._started = True
        self._open = open_message
        self._text = [text] if open_message is not None and text else []

    def encode(self, event: dict[str, Any]) -> bytes:
        """`encode_event`, with the request's tools and instructions (an agent's are about
        15 KB) encoded once per stream rather than in each of the three events that carry the
        whole Response (created, in_progress, completed): the same bytes, as JSON fragments."""
        response = event.get("response")
        if response is None or response.get("tools") is not self.request.get("tools"):
            return encode_event(event)
        echo = self._echo
        if echo is None:
            echo = self._echo = encoded_echo(self.request)
        if not echo:
            return encode_event(event)
        return encode_event({**event, "response": {**response, **echo}})

    def feed(self, chunk: Any) -> list[dict[str, Any]]:
        """The events one chat chunk produces (possibly none). A chunk that is not a chat
        chunk ends the stream with response.failed."""
        if self._closed:
            return []
        text = self._text_only(chunk) if self._started else None
        if text is not None:
            # Most chunks of a long answer: one more piece of the message being written.
            self._text.append(text)
            return [self._text_event("response.output_text.delta", delta=text, logprobs=[])]
        events = self._start()
        sequence = self._sequence
        try:
            return events + self._feed(chunk)
        except MALFORMED as exc:
            self._sequence = sequence  # what this chunk began is never sent: keep the numbers gapless
            self.malformed = True  # the relay accounts the call as the upstream's malformed answer
            return events + self.fail(malformed_chunk(exc))

    def _text_only(self, chunk: Any) -> str | None:
        """The text of a chunk that only continues the open message (one choice, a content
        delta, no finish, no usage, no error), else None: the general path handles it."""
        open_item = self._open
        if open_item is None or open_item["type"] != "message" or not isinstance(chunk, dict):
            return None
        choices = chunk.get("choices")
        if not (isinstance(choices, list) and len(choices) == 1) or chunk.get("usage") or "error" in chunk:
            return None
        choice = choices[0]
        if (
            not isinstance(choice, dict)
            or choice.get("finish_reason")
            or choice.get("index", 0) != 0
            or choice.get("logprobs")  # asked for (`include`): the general path carries them
        ):
            return None
        delta = choice.get("delta")
        if not isinstance(delta, dict):
            return None
        content = delta.get("content")
        if not isinstance(content, str) or not content:
            return None
        for key, value in delta.items():
            if value and key not in _CONTENT_ONLY:
                return None  # reasoning or a tool call besides the text: the general path
        return content

    def _feed(self, chunk: dict[str, Any]) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        if chunk.get("error") is not None:
            error = chunk["error"] if isinstance(chunk["error"], dict) else {}
            status = error.get("code")
            if not isinstance(status, int):
                status = 502
            return self.fail(GatewayError(status, str(error.get("message") or "The backend failed.")))
        if chunk.get("usage"):
            self._usage = response_usage(chunk["usage"])
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue  # a Response has one answer
            events += self._delta(choice.get("delta") or {}, choice.get("logprobs"))
            if choice.get("finish_reason"):
                self._finish = choice["finish_reason"]  # first: the item it cut closes as incomplete
                events += self._settle()
                self._finished = True
        if self._finished and self._usage is not None:
            events += self._end()
        return events

    def finish(self) -> list[dict[str, Any]]:
        if self._closed:
            return []
        return self._start() + self._settle() + self._end()

    def fail(self, error: GatewayError) -> list[dict[str, Any]]:
        """response.failed for an error before the stream could complete."""
        if self._closed:
            return []
        events = self._start()
        self._closed = True
        response = failed_response(self.request, self.response_id, error, self.created_at)
        response["output"] = list(self.output)
        self.failed = response
        return events + [self._event("response.failed", response=response)]

    def _event(self, kind: str, **fields: Any) -> dict[str, Any]:
        event = {"type": kind, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        return event

    def _start(self) -> list[dict[str, Any]]:
        if self._started:
            return []
        self._started = True
        response = response_object(self.request, self.response_id, self.created_at, "in_progress", [])
        return [
            self._event("response.created", response=response),
            self._event("response.in_progress", response=response),
        ]

    def _delta(self, delta: dict[str, Any], logprobs: Any = None) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        reasoning = delta.get("reasoning_content") or delta.get("reasoning")
        if self._held and (reasoning or delta.get("content")):
            events += self._settle()  # the held calls are written before what follows them
        if isinstance(reasoning, str) and reasoning:
            if not self._is_open("reasoning"):
                item = reasoning_item(self.response_id, "", "in_progress", self._earlier("reasoning"))
                events += self._open_item(item)
                events.append(self._part_event("response.content_part.added", {"type": "reasoning_text", "text": ""}))
            events.append(self._text_event("response.reasoning_text.delta", delta=reasoning))
            self._text.append(reasoning)
        if isinstance(delta.get("content"), str) and delta["content"]:
            if not self._is_open("message"):
                events += self._open_item(message_item(self.response_id, None, "in_progress", self._earlier("message")))
                part = {"type": "output_text", "text": "", "annotations": []}
                events.append(self._part_event("response.content_part.added", part))
            tokens = output_logprobs(logprobs) if logprobs else []
            self._logprobs += tokens
            events.append(
                self._text_event("response.output_text.delta", delta=delta["content"], logprobs=delta_logprobs(tokens))
            )
            self._text.append(delta["content"])
        for call in delta.get("tool_calls") or ():
            events += self._call_delta(call)
        return events

    def _call_delta(self, call: dict[str, Any]) -> list[dict[str, Any]]:
        position = call.get("index")
        if type(position) is not int:
            if self._call_ids is None:
                self._call_ids = {}
            position = unindexed_position(call, self._call_ids, self._open_call)
        function = call.get("function") or {}
        events: list[dict[str, Any]] = []
        if position in self._held:
            self._held.hold(position, call)
            return []
        if position not in self._calls:
            self._calls.add(position)
            if self._open_call is not None and (self._held or not whole_json(self._text)):
                # Another call's arguments are still coming (a backend that sends every call's
                # head first): this one waits, and is written whole once that one is done.
                self._held.hold(position, call)
                return []
            name = function.get("name") or ""
            if self._kinds is None:
                self._kinds = call_kinds(self.request)
            custom, namespaces, search = self._kinds
            item = call_item(
                self.response_id,
                position,
                call_id_of(call, self.response_id, position),
                name,
                "",
                "in_progress",
                name in custom,
                namespaces.get(name),
                search and name == TOOL_SEARCH,
            )
            events += self._open_item(item)
            self._open_call = position
        elif position != self._open_call:
            return []  # a fragment for a call already done: its item cannot reopen
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments and self._current()["type"] != "function_call":
            self._text.append(arguments)  # custom input, search arguments: sent whole when the call is done
        elif isinstance(arguments, str) and arguments:
            events.append(
                self._event(
                    "response.function_call_arguments.delta",
                    item_id=self._current()["id"],
                    output_index=len(self.output),
                    delta=arguments,
                )
            )
            self._text.append(arguments)
        return events

    def _earlier(self, kind: str) -> int:
        """How many items of `kind` the Response has so far (a continued one's included)."""
        return self._counts.get(kind, 0)

    def _settle(self) -> list[dict[str, Any]]:
        """Close the open item, then write the held calls, each whole, in their order."""
        events = self._close_item()
        while (released := self._held.release()) is not None:
            position, call = released
            self._calls.discard(position)
            events += self._call_delta(call)
            events += self._close_item()
        return events

    def _current(self) -> dict[str, Any]:
        """The item being streamed, for the events that write to it. A fragment that arrives
        with none open (a tool call without an `index`, after its item was closed) is a
        malformed stream: `feed` answers it with the 502 it gives every malformed chunk."""
        if self._open is None:
            raise ValueError("a fragment arrived with no output item open")
        return self._open

    def _is_open(self, kind: str) -> bool:
        return self._open is not None and self._open["type"] == kind

    def _open_item(self, item: dict[str, Any]) -> list[dict[str, Any]]:
        events = self._close_item()
        self._open, self._text, self._open_call = item, [], None
        return events + [self._event("response.output_item.added", output_index=len(self.output), item=item)]

    def _part_event(self, kind: str, part: dict[str, Any]) -> dict[str, Any]:
        return self._event(
            kind, item_id=self._current()["id"], output_index=len(self.output), content_index=0, part=part
        )

    def _text_event(self, kind: str, **fields: Any) -> dict[str, Any]:
        return self._event(
            kind, item_id=self._current()["id"], output_index=len(self.output), content_index=0, **fields
        )

    def _close_item(self) -> list[dict[str, Any]]:
        item, text = self._open, "".join(self._text)
        if item is None:
            return []
        index = len(self.output)
        events: list[dict[str, Any]] = []
        # The text being written when the answer was cut (max_output_tokens, a content filter)
        # is incomplete, as OpenAI marks the item; any other item was whole before it.
        status = ending(self._finish)[0]
        if item["type"] == "message":
            logprobs = self._logprobs
            events.append(self._text_event("response.output_text.done", text=text, logprobs=delta_logprobs(logprobs)))
            part: dict[str, Any] = {"type": "output_text", "text": text, "annotations": []}
            if logprobs:
                part["logprobs"] = logprobs
            events.append(self._part_event("response.content_part.done", part))
            done = {**message_item(self.response_id, text, status, logprobs=logprobs), "id": item["id"]}
        elif item["type"] == "reasoning":
            events.append(self._text_event("response.reasoning_text.done", text=text))
            events.append(self._part_event("response.content_part.done", {"type": "reasoning_text", "text": text}))
            done = {**reasoning_item(self.response_id, text, status), "id": item["id"]}
        elif item["type"] == "custom_tool_call":
            text = custom_input(text)
            if text:
                events.append(
                    self._event(
                        "response.custom_tool_call_input.delta", item_id=item["id"], output_index=index, delta=text
                    )
                )
            events.append(
                self._event("response.custom_tool_call_input.done", item_id=item["id"], output_index=index, input=text)
            )
            done = {**item, "input": text}
        elif item["type"] == "tool_search_call":
            done = {**item, "arguments": search_arguments(text), "status": "completed"}
        else:
            events.append(
                self._event(
                    "response.function_call_arguments.done", item_id=item["id"], output_index=index, arguments=text
                )
            )
            done = {**item, "arguments": text, "status": "completed"}
        self.output.append(done)
        self._counts[done["type"]] = self._counts.get(done["type"], 0) + 1
        self._open, self._text, self._open_call, self._logprobs = None, [], None, []
        return events + [self._event("response.output_item.done", output_index=index, item=done)]

    def _end(self) -> list[dict[str, Any]]:
        self._closed = True
        response = self.response
        kind = "response.incomplete" if response["status"] == "incomplete" else "response.completed"
        return [self._event(kind, response=response)]
