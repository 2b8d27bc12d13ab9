"""A real HTTP server speaking OpenAI's Responses API (JSON and typed SSE), for tests of
native pass-through: vLLM and OpenRouter serve `POST /v1/responses` themselves.

Event and object shapes follow the `openai` SDK's types (src/openai/types/responses/:
`Response`, `ResponseCreatedEvent`, `ResponseOutputItemAddedEvent`, `ResponseTextDeltaEvent`,
`ResponseFunctionCallArgumentsDeltaEvent`, `ResponseCompletedEvent`, `ResponseFailedEvent`,
`ResponseErrorEvent`, `ResponseUsage`), in the order OpenAI sends them. Like the other fakes
it runs uvicorn in a background thread, records what it received and answers as its
`behaviour` says. It rejects what a stateless pass-through must never send it: a
`previous_response_id` (the gateway rebuilds the conversation itself) or `store: true`.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from tests.support.fake_upstream import Received
from tests.support.ports import free_port
from tests.support.threaded_server import ThreadedServer

# The request body's fields (ResponseCreateParams) this fake accepts.
RESPONSES_FIELDS = {
    "model",
    "input",
    "instructions",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "text",
    "reasoning",
    "max_output_tokens",
    "metadata",
    "stream",
    "store",
    "temperature",
    "top_p",
    "user",
    "include",
    "truncation",
    "service_tier",
    "safety_identifier",
    "prompt_cache_key",
    "stream_options",
    "client_metadata",  # Codex CLI's, on every request (OpenAI's API takes it)
}


@dataclass
class ResponsesBehaviour:
    status: int = 200
    error_message: str = "fake responses upstream says no"
    content: str = "Hello from the fake Responses upstream."
    # Answer with this call instead of text: {"call_id", "name", "arguments"}.
    function_call: dict | None = None
    input_tokens: int = 17
    output_tokens: int = 5
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    # A reasoning item before the message, with this summary text (one delta when streamed).
    reasoning_summary: str | None = None
    # A 200 that fails: a stream of response.created then this event ("failed": response.failed,
    # "error": an `error` event) before any content; non-streamed, a Response with status failed.
    fail_before_content: str | None = None
    break_after_events: int | None = None  # drop the connection after N stream events
    end_after_events: int | None = None  # end the body cleanly after N stream events
    chunk_delay_s: float = 0.0  # between stream events
    held_open_s: float = 0.0  # after the last event, the body left open this long (then ended)
    # After N stream events, the upstream's own failure ("failed": response.failed, "error": an
    # `error` event) with the code `server_error`, after a pause (a read of its own); then the end.
    fail_after_events: tuple[int, str] | None = None
    text_pieces: list[str] | None = None  # the message's text deltas when streamed (default: word by word)
    delay_s: float = 0.0
    response_id: str | None = None  # answer with this id (a backend reusing ids), else a fresh one
    omit_id: bool = False  # answer with Responses that have no `id` (a backend that forgets it)
    output: list[Any] | None = None  # a non-streamed answer's `output` as given (a backend writing junk)
    # Responses without a `store` member, as vLLM writes them (its ResponsesResponse has none).
    omit_store: bool = False
    # JSON written with spaces after `:` and `,` (json.dumps' default), as some servers do.
    spaced_json: bool = False
    headers: dict[str, str] = field(default_factory=dict)


class FakeResponses:
    def __init__(self, api_key: str = "sk-fake-responses-123456") -> None:
        self.api_key = api_key
        self.behaviour = ResponsesBehaviour()
        self.received: list[Received] = []
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self._ids = itertools.count(1)
        self._server: ThreadedServer | None = None

    def start(self) -> FakeResponses:
        app = Starlette(
            routes=[
                Route("/v1/responses", self._responses, methods=["POST"]),
                Route("/v1/models", self._models, methods=["GET"]),
            ]
        )
        self._server = ThreadedServer(app, self.port, "the fake Responses upstream")
        return self

    def stop(self) -> None:
        if self._server:
            self._server.stop()

    def reset(self, **kwargs: Any) -> None:
        self.behaviour = ResponsesBehaviour(**kwargs)
        self.received.clear()

    # -- handlers --------------------------------------------------------------------------
    async def _models(self, request: Request) -> Response:
        return _json({"object": "list", "data": []})

    async def _responses(self, request: Request) -> Response:
        b = self.behaviour
        body = orjson.loads(await request.body())
        self.received.append(Received(body, dict(request.headers)))
        if b.delay_s:
            await asyncio.sleep(b.delay_s)
        problem = self._problem(request, body)
        if problem:
            return _error(problem[0], problem[1], "invalid_request_error")
        if b.status >= 300:
            return _error(b.status, b.error_message, "server_error" if b.status >= 500 else "invalid_request_error")
        response_id = b.response_id or f"resp_fake{next(self._ids):04d}"
        if body.get("stream"):
            return StreamingResponse(self._events(body, response_id), media_type="text/event-stream", headers=b.headers)
        if b.fail_before_content:
            failed = self._response(body, response_id, "failed", [])
            failed["error"] = {"code": "server_error", "message": b.error_message}
            return _json(failed, headers=b.headers)
        output = b.output if b.output is not None else self._output(response_id)
        answer = self._response(body, response_id, "completed", output)
        if b.spaced_json:
            return Response(_dumps(answer, True), media_type="application/json", headers=b.headers)
        return _json(answer, headers=b.headers)

    def _problem(self, request: Request, body: Any) -> tuple[int, str] | None:
        if request.headers.get("authorization") != f"Bearer {self.api_key}":
            return 401, "Incorrect API key provided."
        if not isinstance(body, dict):
            return 400, "The body must be a JSON object."
        extra = sorted(set(body) - RESPONSES_FIELDS)
        if extra:
            return 400, f"Unknown parameter: '{extra[0]}'."
        if not isinstance(body.get("model"), str):
            return 400, "Missing required parameter: 'model'."
        if body.get("input") is None:
            return 400, "Missing required parameter: 'input'."
        if body.get("store") is not False:
            return 400, "This fake is stateless: send store: false (the gateway keeps responses itself)."
        return None

    # -- answers ---------------------------------------------------------------------------
    def _output(self, response_id: str) -> list[dict[str, Any]]:
        b = self.behaviour
        suffix = response_id.removeprefix("resp_")
        if b.function_call:
            call = b.function_call
            return [
                {
                    "type": "function_call",
                    "id": f"fc_{suffix}",
                    "call_id": call["call_id"],
                    "name": call["name"],
                    "arguments": call["arguments"],
                    "status": "completed",
                }
            ]
        text = {"type": "output_text", "text": b.content, "annotations": [], "logprobs": []}
        message = {
            "type": "message",
            "id": f"msg_{suffix}",
            "status": "completed",
            "role": "assistant",
            "content": [text],
        }
        if b.reasoning_summary is None:
            return [message]
        summary = [{"type": "summary_text", "text": b.reasoning_summary}]
        return [{"type": "reasoning", "id": f"rs_{suffix}", "summary": summary}, message]

    def _usage(self) -> dict[str, Any]:
        b = self.behaviour
        return {
            "input_tokens": b.input_tokens,
            "input_tokens_details": {"cached_tokens": b.cached_tokens},
            "output_tokens": b.output_tokens,
            "output_tokens_details": {"reasoning_tokens": b.reasoning_tokens},
            "total_tokens": b.input_tokens + b.output_tokens,
        }

    def _response(self, body: dict, response_id: str, status: str, output: list[dict]) -> dict[str, Any]:
        done = status in ("completed", "incomplete")
        response = {
            "id": response_id,
            "object": "response",
            "created_at": int(time.time()),
            "status": status,
            "error": None,
            "incomplete_details": None,
            "instructions": body.get("instructions"),
            "max_output_tokens": body.get("max_output_tokens"),
            "model": body["model"],
            "output": output,
            "parallel_tool_calls": body.get("parallel_tool_calls", True),
            "previous_response_id": None,
            "reasoning": {"effort": (body.get("reasoning") or {}).get("effort"), "summary": None},
            "store": False,
            "temperature": body.get("temperature", 1.0),
            "text": body.get("text") or {"format": {"type": "text"}},
            "tool_choice": body.get("tool_choice", "auto"),
            "tools": body.get("tools") or [],
            "top_p": body.get("top_p", 1.0),
            "truncation": "disabled",
            "usage": self._usage() if done else None,
            "user": None,
            "metadata": body.get("metadata") or {},
        }
        if self.behaviour.omit_id:
            del response["id"]
        if self.behaviour.omit_store:
            del response["store"]
        return response

    async def _events(self, body: dict, response_id: str):
        b = self.behaviour
        sequence = itertools.count()
        sent = 0

        def event(kind: str, **fields: Any) -> bytes:
            nonlocal sent
            sent += 1
            return (
                b"event: "
                + kind.encode()
                + b"\ndata: "
                + _dumps({"type": kind, "sequence_number": next(sequence), **fields}, b.spaced_json)
                + b"\n\n"
            )

        started = self._response(body, response_id, "in_progress", [])
        events = [event("response.created", response=started), event("response.in_progress", response=started)]
        if b.fail_before_content == "failed":
            failed = {**started, "status": "failed", "error": {"code": "server_error", "message": b.error_message}}
            events.append(event("response.failed", response=failed))
        elif b.fail_before_content == "error":
            events.append(event("error", code="server_error", message=b.error_message, param=None))
        else:
            output = self._output(response_id)
            for index, item in enumerate(output):
                events += self._item_events(event, index, item)
            events.append(event("response.completed", response=self._response(body, response_id, "completed", output)))
        if b.fail_after_events is not None:
            at, how = b.fail_after_events
            error = {"code": "server_error", "message": b.error_message}
            if how == "failed":
                failed = {**started, "status": "failed", "error": error}
                failure = {"type": "response.failed", "sequence_number": at, "response": failed}
            else:
                failure = {"type": "error", "sequence_number": at, **error, "param": None}
            events = events[:at]
        for i, data in enumerate(events):
            if b.break_after_events is not None and i >= b.break_after_events:
                raise ConnectionResetError("the fake Responses upstream drops the stream")
            if b.end_after_events is not None and i >= b.end_after_events:
                return
            if b.chunk_delay_s and i:
                await asyncio.sleep(b.chunk_delay_s)
            yield data
        if b.fail_after_events is not None:
            await asyncio.sleep(0.1)
            yield b"event: " + failure["type"].encode() + b"\ndata: " + orjson.dumps(failure) + b"\n\n"
        if b.held_open_s:
            await asyncio.sleep(b.held_open_s)

    def _item_events(self, event, index: int, item: dict[str, Any]) -> list[bytes]:
        if item["type"] == "function_call":
            opening = {**item, "arguments": "", "status": "in_progress"}
            arguments = item["arguments"]
            half = len(arguments) // 2
            return [
                event("response.output_item.added", output_index=index, item=opening),
                *(
                    event("response.function_call_arguments.delta", item_id=item["id"], output_index=index, delta=piece)
                    for piece in (arguments[:half], arguments[half:])
                ),
                event(
                    "response.function_call_arguments.done", item_id=item["id"], output_index=index, arguments=arguments
                ),
                event("response.output_item.done", output_index=index, item=item),
            ]
        if item["type"] == "reasoning":
            summary = item["summary"][0]
            where = {"item_id": item["id"], "output_index": index, "summary_index": 0}
            return [
                event("response.output_item.added", output_index=index, item={**item, "summary": []}),
                event("response.reasoning_summary_part.added", part={**summary, "text": ""}, **where),
                event("response.reasoning_summary_text.delta", delta=summary["text"], **where),
                event("response.reasoning_summary_text.done", text=summary["text"], **where),
                event("response.reasoning_summary_part.done", part=summary, **where),
                event("response.output_item.done", output_index=index, item=item),
            ]
        text = item["content"][0]["text"]
        empty = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        where = {"item_id": item["id"], "output_index": index, "content_index": 0}
        words = text.split(" ")
        return [
            event(
                "response.output_item.added", output_index=index, item={**item, "status": "in_progress", "content": []}
            ),
            event("response.content_part.added", part=empty, **where),
            *(
                event("response.output_text.delta", delta=piece, logprobs=[], **where)
                for piece in self.behaviour.text_pieces or [w if i == 0 else " " + w for i, w in enumerate(words)]
            ),
            event("response.output_text.done", text=text, logprobs=[], **where),
            event("response.content_part.done", part=item["content"][0], **where),
            event("response.output_item.done", output_index=index, item=item),
        ]


def _dumps(obj: dict, spaced: bool) -> bytes:
    return json.dumps(obj).encode() if spaced else orjson.dumps(obj)


def _json(obj: dict, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(obj), status_code=status, media_type="application/json", headers=headers)


def _error(status: int, message: str, kind: str) -> Response:
    return _json({"error": {"message": message, "type": kind, "param": None, "code": None}}, status)
