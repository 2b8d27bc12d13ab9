"""A fake OpenAI-compatible upstream scripted like a model driving a coding agent.

Coding agents (Claude Code, Codex CLI) only finish a turn that uses a tool if the model asks
for one and then answers once it has seen the result. This server plays that model over
chat completions (JSON and SSE, OpenAI's exact wire format):

- a request that offers tools and does not end with a tool result gets a call to the
  agent's shell tool (`Bash`, `shell`, `exec_command`, ...), with arguments valid for that
  tool's schema, running `COMMAND`. The command prints `TOOL_OUTPUT` only when a shell runs
  it (the text is computed by the shell, so it appears nowhere in the request), which lets a
  test tell a real tool run from an echo of the arguments;
- a request that ends with tool results gets a final text answer quoting them;
- a request without tools (titles, summaries, quota checks) gets a short text answer.

It reasons as the thinking models agents are run against do (DeepSeek V4, GLM, Kimi): each
tool call comes with `REASONING` as its `reasoning_content`, and, as DeepSeek's thinking mode
does, a request whose assistant tool-call turns lack it is a 400 ("The `reasoning_content` in
the thinking mode must be passed back to the API"): an agent's turn only completes if the
reasoning went to the agent and came back through the gateway.

Every request is recorded (`received`), every call it issued (`calls_issued`) and every
tool result it was sent back, by call id (`tool_results`), so a test can check that the
agent returned the result under the id the model gave it. Requests to any other path are
recorded too (`other_requests`) and get OpenAI's 404: a test sees what else an agent asks.
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from tests.support.ports import free_port
from tests.support.threaded_server import ThreadedServer

COMMAND = "echo tool-says-$((6*7))"
TOOL_OUTPUT = "tool-says-42"
FINAL_PREFIX = "The tool printed:"
PLAIN_ANSWER = "Fix the failing test."
# The agents' shell tools, by the names they give them, most specific first.
SHELL_TOOLS = ("Bash", "shell", "shell_command", "exec_command", "local_shell", "bash", "run_shell_command")
QUOTE_LIMIT = 2000  # of each tool result, in the final answer: agents may send long outputs
PROMPT_TOKENS = 120
COMPLETION_TOKENS = 17
REASONING = "The agent's shell answers this."


@dataclass(frozen=True)
class Seen:
    """One request as it arrived: path, headers (lower-case names) and the parsed JSON body."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any]


class AgentUpstream:
    """The scripted model. Thread-safe: uvicorn runs it in its own thread, the test reads it."""

    def __init__(self, name: str = "agent-model") -> None:
        self.name = name
        self.received: list[Seen] = []
        self.other_requests: list[tuple[str, str]] = []  # (method, path) of what it does not serve
        self.calls_issued: list[dict[str, Any]] = []  # {"id", "name", "arguments"} per tool call
        self.tool_results: dict[str, str] = {}  # call id -> the tool result's text
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._server: ThreadedServer | None = None

    def start(self) -> AgentUpstream:
        app = Starlette(
            routes=[
                Route("/v1/chat/completions", self._chat, methods=["POST"]),
                Route("/v1/models", self._models, methods=["GET"]),
                Route("/{path:path}", self._other, methods=["GET", "POST", "PUT", "DELETE", "HEAD"]),
            ]
        )
        self._server = ThreadedServer(app, self.port, "the agent upstream")
        return self

    def stop(self) -> None:
        if self._server:
            self._server.stop()

    def chat_requests(self) -> list[dict[str, Any]]:
        with self._lock:
            return [seen.body for seen in self.received]

    # -- handlers --------------------------------------------------------------------------
    async def _models(self, request: Request) -> Response:
        return _json({"object": "list", "data": []})

    async def _other(self, request: Request) -> Response:
        with self._lock:
            self.other_requests.append((request.method, request.url.path))
        error = {"message": f"Unknown request URL: {request.url.path}", "type": "invalid_request_error"}
        return _json({"error": {**error, "param": None, "code": "unknown_url"}}, 404)

    async def _chat(self, request: Request) -> Response:
        body = orjson.loads(await request.body())
        with self._lock:
            self.received.append(Seen(request.url.path, dict(request.headers), body))
            if any(
                isinstance(m, dict)
                and m.get("role") == "assistant"
                and m.get("tool_calls")
                and "reasoning_content" not in m
                for m in body.get("messages") or ()
            ):
                message = "The `reasoning_content` in the thinking mode must be passed back to the API."
                error = {"message": message, "type": "invalid_request_error", "param": None}
                return _json({"error": {**error, "code": "invalid_request_error"}}, 400)
            reply = self._reply(body)
        base = {
            "id": f"chatcmpl-{self.name}-{len(self.received)}",
            "created": int(time.time()),
            "model": body.get("model"),
            "system_fingerprint": "fp_agent",
        }
        usage = {
            "prompt_tokens": PROMPT_TOKENS,
            "completion_tokens": COMPLETION_TOKENS,
            "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS,
        }
        if body.get("stream"):
            with_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return StreamingResponse(
                _chunks(base, reply, usage if with_usage else None), media_type="text/event-stream"
            )
        finish = "tool_calls" if "tool_calls" in reply else "stop"
        message = {"role": "assistant", "content": reply.get("content"), "refusal": None, **reply}
        choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}
        return _json({**base, "object": "chat.completion", "choices": [choice], "usage": usage})

    # -- the script ------------------------------------------------------------------------
    def _reply(self, body: dict[str, Any]) -> dict[str, Any]:
        """The assistant message for this request (called under the lock)."""
        messages = body.get("messages") or []
        trailing = _trailing_tool_results(messages)
        for call_id, text in trailing:
            self.tool_results[call_id] = text
        if trailing:
            quoted = " | ".join(text[:QUOTE_LIMIT].strip() for _, text in trailing)
            return {"content": f"{FINAL_PREFIX} {quoted}"}
        tool = _shell_tool(body.get("tools") or [])
        if tool is None:
            return {"content": PLAIN_ANSWER}
        name, parameters = tool
        call = {
            "id": f"call_{self.name}_{next(self._ids)}",
            "type": "function",
            "function": {"name": name, "arguments": orjson.dumps(shell_arguments(parameters)).decode()},
        }
        self.calls_issued.append({"id": call["id"], "name": name, "arguments": call["function"]["arguments"]})
        return {"content": None, "reasoning_content": REASONING, "tool_calls": [call]}


def _trailing_tool_results(messages: list[Any]) -> list[tuple[str, str]]:
    """(tool_call_id, text) of the tool messages after the assistant's last message, in order.
    Notes after them are passed over, as a model answers the results: Claude Code ends a tool
    result's turn to Haiku with one (`<total_tokens>... left`), which reaches a chat backend
    as user text."""
    found: list[tuple[str, str]] = []
    for message in reversed(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role == "assistant":
            break
        if role == "tool":
            found.append((str(message.get("tool_call_id")), _text(message.get("content"))))
    return found[::-1]


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


def _shell_tool(tools: list[Any]) -> tuple[str, dict[str, Any]] | None:
    """(name, JSON schema of its parameters) of the shell tool among chat `tools`, if any."""
    functions = {
        tool["function"]["name"]: tool["function"].get("parameters") or {}
        for tool in tools
        if isinstance(tool, dict) and tool.get("type") == "function" and isinstance(tool.get("function"), dict)
    }
    for name in SHELL_TOOLS:
        if name in functions:
            return name, functions[name]
    return None


def shell_arguments(schema: dict[str, Any]) -> dict[str, Any]:
    """Arguments valid for a shell tool's schema that run COMMAND: its `command` as a string or
    an argv (Codex's `shell` takes `["bash", "-lc", ...]`), other required fields filled."""
    properties = schema.get("properties") or {}
    arguments: dict[str, Any] = {}
    for field in schema.get("required") or ["command"]:
        spec = properties.get(field) or {}
        if field in ("command", "cmd"):
            arguments[field] = ["bash", "-lc", COMMAND] if spec.get("type") == "array" else COMMAND
        else:
            arguments[field] = _filler(field, spec)
    return arguments


def _filler(field: str, spec: dict[str, Any]) -> Any:
    """A value of the right type for a required field the script does not care about."""
    if "enum" in spec:
        return spec["enum"][0]
    kind = spec.get("type")
    if kind == "integer" or kind == "number":
        return 10_000 if "timeout" in field else 1
    if kind == "boolean":
        return False
    if kind == "array":
        return []
    if kind == "object":
        return {}
    return f"Print a greeting ({field})"


async def _chunks(base: dict[str, Any], reply: dict[str, Any], usage: dict[str, Any] | None):
    """The answer as chat.completion.chunk events, cut as OpenAI cuts them: a role chunk, the
    content word by word or the tool call's id and name then its arguments in pieces, a
    finish chunk, the usage chunk (with `stream_options.include_usage`), `[DONE]`."""
    chunk = {**base, "object": "chat.completion.chunk"}

    def event(delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return _sse({**chunk, "choices": [choice]})

    yield event({"role": "assistant", "content": "", "refusal": None})
    if reply.get("reasoning_content"):
        yield event({"reasoning_content": reply["reasoning_content"]})
    calls = reply.get("tool_calls")
    if calls:
        for index, call in enumerate(calls):
            head = {"index": index, "id": call["id"], "type": "function"}
            yield event({"tool_calls": [{**head, "function": {"name": call["function"]["name"], "arguments": ""}}]})
            arguments = call["function"]["arguments"]
            for start in range(0, len(arguments), 16):
                piece = arguments[start : start + 16]
                yield event({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
        yield event({}, "tool_calls")
    else:
        words = reply["content"].split(" ")
        for i, word in enumerate(words):
            yield event({"content": word if i == 0 else " " + word})
        yield event({}, "stop")
    if usage is not None:
        yield _sse({**chunk, "choices": [], "usage": usage})
    yield b"data: [DONE]\n\n"


def _sse(obj: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def _json(obj: dict[str, Any], status: int = 200) -> Response:
    return Response(orjson.dumps(obj), status_code=status, media_type="application/json")
