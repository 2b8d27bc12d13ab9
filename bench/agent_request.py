"""One realistic coding-agent turn, written as each ingress API spells it (issue 9's bench case).

A system prompt of a few kilobytes, 20 tools with JSON Schema parameters, and 10 turns of
conversation in which the assistant calls tools and reads their results, the shape Claude
Code, Codex or an OpenAI Agents SDK loop sends on every step. `chat()`, `messages()` and
`responses()` return the same conversation as a chat completions, Anthropic Messages and
OpenAI Responses request body; `answers()` the fixed upstream answers for each wire format,
JSON and SSE, produced from one chat completion by the gateway's own translations (so they
are exactly what its format checks expect).
"""

from __future__ import annotations

import json
from typing import Any

from gateway.protocol.responses import encode_event as encode_response_event

try:
    from gateway.protocol.messages_answer import chat_to_message
except ImportError:  # a gateway from before the Messages answer had a module of its own (bench/ab.py --base)
    from gateway.protocol.messages import chat_to_message  # type: ignore[attr-defined,no-redef]

try:
    from gateway.protocol.translation import encode_event as encode_message_event
except ImportError:  # a gateway from before the translations' shared module (bench/ab.py --base)
    from gateway.protocol.messages import encode_event as encode_message_event  # type: ignore[attr-defined,no-redef]

try:
    from gateway.protocol.responses_answer import chat_to_response
except ImportError:  # a gateway from before the answer half had a module of its own (bench/ab.py --base)
    from gateway.protocol.responses import chat_to_response  # type: ignore[attr-defined,no-redef]

try:
    from gateway.protocol.messages_stream import MessageStream
    from gateway.protocol.responses_stream import ResponseStream
except ImportError:  # a gateway from before the stream halves had modules of their own (bench/ab.py --base)
    from gateway.protocol.messages import MessageStream
    from gateway.protocol.responses import ResponseStream

SYSTEM = (
    "You are a coding agent working in the user's repository. You can read and edit files, run "
    "commands and search the code with the tools below. Work in small steps: read before you "
    "edit, run the tests after a change, and say what you did in a sentence or two. "
) * 12  # about 3 KB, as agents' system prompts are

_TOOL_NAMES = [
    "read_file",
    "write_file",
    "edit_file",
    "list_dir",
    "glob",
    "grep",
    "run_command",
    "run_tests",
    "git_status",
    "git_diff",
    "git_commit",
    "web_search",
    "web_fetch",
    "create_task",
    "update_task",
    "ask_user",
    "python_eval",
    "format_code",
    "lint",
    "open_pull_request",
]


def _schema(index: int) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "path": {"type": "string", "description": "Path relative to the repository root."},
            "query": {"type": "string", "description": "What to look for, or the command to run."},
            "limit": {"type": "integer", "minimum": 1, "maximum": 1000, "description": "At most this many results."},
            "options": {
                "type": "object",
                "properties": {
                    "recursive": {"type": "boolean"},
                    "timeout_s": {"type": "number"},
                    "mode": {"type": "string", "enum": ["fast", "thorough", f"variant-{index}"]},
                },
            },
        },
        "required": ["path"],
    }


TOOLS = [
    (name, f"{name.replace('_', ' ').capitalize()} in the workspace.", _schema(i)) for i, name in enumerate(_TOOL_NAMES)
]

# Ten turns: the user asks, the assistant calls a tool, the tool answers, four times over,
# then the assistant reports (user, then assistant/tool pairs, then the final question).
_FILE = "def add(a, b):\n    return a + b\n\n" * 40  # a tool result of about 1.3 KB
_STEPS = [
    ("read_file", {"path": "calc.py"}, _FILE),
    ("grep", {"path": ".", "query": "def add", "limit": 20}, "calc.py:1:def add(a, b):\n" * 10),
    ("run_tests", {"path": "tests/", "options": {"timeout_s": 60}}, "42 passed in 1.3s\n"),
    ("git_diff", {"path": "."}, "diff --git a/calc.py b/calc.py\n+    # checked\n"),
]
_QUESTION = "The add function in calc.py: is it tested, and does the suite pass? Fix what is missing."
_FOLLOW_UP = "Good. Now summarise what you changed in one paragraph."


def chat(model: str, stream: bool) -> dict[str, Any]:
    messages: list[dict[str, Any]] = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": _QUESTION}]
    for n, (name, arguments, result) in enumerate(_STEPS):
        call = {"id": f"call_{n}", "type": "function", "function": {"name": name, "arguments": json.dumps(arguments)}}
        messages.append({"role": "assistant", "content": f"Step {n + 1}: {name}.", "tool_calls": [call]})
        messages.append({"role": "tool", "tool_call_id": f"call_{n}", "content": result})
    messages.append({"role": "user", "content": _FOLLOW_UP})
    body: dict[str, Any] = {
        "model": model,
        "messages": messages,
        "tools": [
            {"type": "function", "function": {"name": n, "description": d, "parameters": p}} for n, d, p in TOOLS
        ],
        "max_tokens": 1024,
    }
    if stream:
        body.update(stream=True, stream_options={"include_usage": True})
    return body


def messages(model: str, stream: bool) -> dict[str, Any]:
    turns: list[dict[str, Any]] = [{"role": "user", "content": _QUESTION}]
    for n, (name, arguments, result) in enumerate(_STEPS):
        turns.append(
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": f"Step {n + 1}: {name}."},
                    {"type": "tool_use", "id": f"toolu_{n}", "name": name, "input": arguments},
                ],
            }
        )
        turns.append(
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": f"toolu_{n}", "content": result}]}
        )
    turns[-1]["content"].append({"type": "text", "text": _FOLLOW_UP})
    return {
        "model": model,
        "system": [{"type": "text", "text": SYSTEM}],
        "messages": turns,
        "tools": [{"name": n, "description": d, "input_schema": p} for n, d, p in TOOLS],
        "max_tokens": 1024,
        "stream": stream,
    }


# Codex CLI's tools beside its functions: apply_patch as a custom (freeform) tool with a Lark
# grammar, sub-agent functions grouped in a namespace, a tool search it runs itself.
_PATCH_GRAMMAR = (
    'start: begin_patch hunk+ end_patch\nbegin_patch: "*** Begin Patch" LF\nend_patch: "*** End Patch" LF?\n'
    'hunk: add_hunk | delete_hunk | update_hunk\nadd_hunk: "*** Add File: " filename LF add_line+\n'
    'delete_hunk: "*** Delete File: " filename LF\nupdate_hunk: "*** Update File: " filename LF change_move? change?\n'
    'filename: /(.+)/\nadd_line: "+" /(.*)/ LF -> line\n%import common.LF\n'
)
_CODEX_EXTRA = [
    {
        "type": "custom",
        "name": "apply_patch",
        "description": "Use the `apply_patch` tool to edit files. This is a FREEFORM tool, so do not wrap the patch in JSON.",
        "format": {"type": "grammar", "syntax": "lark", "definition": _PATCH_GRAMMAR},
    },
    {
        "type": "namespace",
        "name": "agents",
        "description": "Sub-agents working beside you.",
        "tools": [
            {
                "type": "function",
                "name": n,
                "description": f"{n} a sub-agent.",
                "parameters": _schema(i),
                "strict": False,
            }
            for i, n in enumerate(("spawn_agent", "send_input", "wait_agent"))
        ],
    },
    {"type": "tool_search", "execution": "client", "description": "Find tools not offered yet."},
]


def codex(model: str, stream: bool) -> dict[str, Any]:
    """The Responses turn with Codex's tool kinds: 16 of the function tools, then apply_patch,
    a namespace of three functions and a client tool search (`responses()` otherwise)."""
    body = responses(model, stream)
    body["tools"] = body["tools"][:16] + _CODEX_EXTRA
    return body


def responses(model: str, stream: bool) -> dict[str, Any]:
    items: list[dict[str, Any]] = [{"role": "user", "content": _QUESTION}]
    for n, (name, arguments, result) in enumerate(_STEPS):
        items.append({"role": "assistant", "content": f"Step {n + 1}: {name}."})
        items.append(
            {"type": "function_call", "call_id": f"call_{n}", "name": name, "arguments": json.dumps(arguments)}
        )
        items.append({"type": "function_call_output", "call_id": f"call_{n}", "output": result})
    items.append({"role": "user", "content": _FOLLOW_UP})
    return {
        "model": model,
        "instructions": SYSTEM,
        "input": items,
        "tools": [{"type": "function", "name": n, "description": d, "parameters": p} for n, d, p in TOOLS],
        "max_output_tokens": 1024,
        "stream": stream,
        "store": False,  # nothing kept: the bench measures the request path, not the conversation store
    }


# The upstream's answer: what the nginx upstream of bench.py answers, as one chat completion.
_COMPLETION = {
    "id": "chatcmpl-bench",
    "object": "chat.completion",
    "created": 1767225600,
    "model": "bench-model",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "I added a test for add and the suite passes."},
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 2900, "completion_tokens": 12, "total_tokens": 2912},
}
_CHUNK = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1767225600, "model": "bench-model"}
_PIECES = ["I added a test", " for add and", " the suite passes."]


def _chunks() -> list[dict[str, Any]]:
    deltas = [{"role": "assistant", "content": ""}] + [{"content": piece} for piece in _PIECES]
    out = [{**_CHUNK, "choices": [{"index": 0, "delta": d, "finish_reason": None}]} for d in deltas]
    out.append({**_CHUNK, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    out.append({**_CHUNK, "choices": [], "usage": _COMPLETION["usage"]})
    return out


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def answers() -> dict[tuple[str, bool], str]:
    """(API, streamed) -> the fixed upstream answer body, for chat, messages and responses."""
    chunks = _chunks()
    chat_sse = "".join(f"data: {_compact(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
    message_stream = MessageStream("bench-model", 2900)
    message_events = [e for c in chunks for e in message_stream.feed(c)] + message_stream.finish()
    request = responses("bench-model", True)
    response_stream = ResponseStream(request, "resp_bench", created_at=1767225600)
    response_events = [e for c in chunks for e in response_stream.feed(c)] + response_stream.finish()
    return {
        ("chat", False): _compact(_COMPLETION),
        ("chat", True): chat_sse,
        ("messages", False): _compact(chat_to_message(_COMPLETION, "bench-model")),
        ("messages", True): b"".join(encode_message_event(e) for e in message_events).decode(),
        ("responses", False): _compact(chat_to_response(_COMPLETION, request, "resp_bench")),
        ("responses", True): b"".join(encode_response_event(e) for e in response_events).decode(),
    }
