"""Coding agents' traffic is `code` (programming in the rankings), whatever the turn says;
tools alone are a capability, not a category.

The agent requests are shaped as the agents send them: Claude Code's Messages body (its system
prompt's opening lines, its built-in tools as its tools reference names them) and Codex CLI's
Responses body (its instructions' opening, `shell`, the custom `apply_patch`, `update_plan`),
each translated to chat the way the gateway's ingress does before routing.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from gateway.config.schema import GatewaySettings
from gateway.protocol.chat import ChatRequest, parse_chat_request
from gateway.protocol.messages import messages_to_chat
from gateway.protocol.responses import responses_to_chat
from gateway.routing.classify import classify
from gateway.routing.facts import request_facts
from tests.routing.support import chat

SETTINGS = GatewaySettings()


def guess(request: ChatRequest) -> tuple[str, str]:
    found = classify(request, {}, request_facts(request, SETTINGS), SETTINGS.classifier)
    return found.task, found.reason


def from_payload(payload: dict[str, Any]) -> ChatRequest:
    return parse_chat_request(orjson.dumps(payload))


def schema(**properties: str) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {name: {"type": kind} for name, kind in properties.items()},
        "required": list(properties),
    }


CLAUDE_CODE_TOOLS = [
    {
        "name": "Task",
        "description": "Launch a new agent",
        "input_schema": schema(description="string", prompt="string"),
    },
    {"name": "Bash", "description": "Executes a given bash command", "input_schema": schema(command="string")},
    {"name": "Glob", "description": "Fast file pattern matching", "input_schema": schema(pattern="string")},
    {
        "name": "Grep",
        "description": "A powerful search tool built on ripgrep",
        "input_schema": schema(pattern="string"),
    },
    {"name": "Read", "description": "Reads a file", "input_schema": schema(file_path="string")},
    {
        "name": "Edit",
        "description": "Performs exact string replacements in files",
        "input_schema": schema(file_path="string", old_string="string", new_string="string"),
    },
    {"name": "Write", "description": "Writes a file", "input_schema": schema(file_path="string", content="string")},
    {"name": "TodoWrite", "description": "Create a task list", "input_schema": schema(todos="array")},
    {"name": "WebFetch", "description": "Fetches a URL", "input_schema": schema(url="string", prompt="string")},
]
CLAUDE_CODE_SYSTEM = [
    {"type": "text", "text": "You are Claude Code, Anthropic's official CLI for Claude."},
    {
        "type": "text",
        "text": "You are an interactive CLI tool that helps users with software engineering tasks. "
        "Use the instructions below and the tools available to you to assist the user.",
        "cache_control": {"type": "ephemeral"},
    },
]


def claude_code(*turns: dict[str, Any], tools: list[dict[str, Any]] | None = None, system: Any = None) -> ChatRequest:
    body = {
        "model": "claude-sonnet-4-5-20250929",
        "max_tokens": 32000,
        "system": CLAUDE_CODE_SYSTEM if system is None else system,
        "messages": list(turns),
        "tools": CLAUDE_CODE_TOOLS if tools is None else tools,
        "stream": True,
    }
    return from_payload(messages_to_chat(body))


def test_claude_code_saying_hi_is_programming():
    task, reason = guess(claude_code({"role": "user", "content": "say hi"}))
    assert (task, reason) == ("code", "coding agent tools: bash, glob")


def test_claude_code_after_a_tool_result_is_still_programming():
    request = claude_code(
        {"role": "user", "content": "what is in README.md?"},
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "toolu_01A", "name": "Read", "input": {"file_path": "README.md"}}],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_01A", "content": "# Gateway\nRoutes open models."}
            ],
        },
    )
    assert guess(request)[0] == "code"


def test_a_long_claude_code_session_is_programming_not_long_context():
    filler = "The build log continues with more output lines. " * 3000  # ~50k tokens of tool output
    request = claude_code({"role": "user", "content": filler + "\nnow fix the failing test"})
    assert request_facts(request, SETTINGS).prompt_tokens > SETTINGS.classifier.long_context_tokens
    assert guess(request)[0] == "code"


def test_codex_cli_is_programming():
    body = {
        "model": "gpt-5-codex",
        "instructions": "You are a coding agent running in the Codex CLI, a terminal-based coding assistant. "
        "Codex CLI is an open source project led by OpenAI.",
        "input": [
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "list the files here"}]}
        ],
        "tools": [
            {
                "type": "function",
                "name": "shell",
                "description": "Runs a shell command and returns its output.",
                "strict": False,
                "parameters": {
                    "type": "object",
                    "properties": {
                        "command": {"type": "array", "items": {"type": "string"}},
                        "workdir": {"type": "string"},
                    },
                    "required": ["command"],
                    "additionalProperties": False,
                },
            },
            {
                "type": "custom",
                "name": "apply_patch",
                "description": "Use the `apply_patch` tool to edit files.",
                "format": {"type": "grammar", "syntax": "lark", "definition": 'start: "*** Begin Patch"'},
            },
            {
                "type": "function",
                "name": "update_plan",
                "description": "Updates the task plan.",
                "strict": False,
                "parameters": schema(explanation="string", plan="array"),
            },
        ],
        "tool_choice": "auto",
        "parallel_tool_calls": False,
        "stream": True,
        "store": False,
    }
    task, reason = guess(from_payload(responses_to_chat(body)))
    assert (task, reason) == ("code", "coding agent tools: shell, apply_patch")


@pytest.mark.parametrize(
    "names, expected",
    [
        (["run_shell_command", "read_file", "write_file", "replace"], "code"),  # Gemini CLI
        (["execute_command", "read_file", "write_to_file", "replace_in_file"], "code"),  # Cline
        (["bash", "edit", "read", "write", "glob", "grep"], "code"),  # OpenCode
        (["edit_file", "write_file"], "code"),  # an editing harness without a shell
        (["get_weather", "get_time"], "tool_use"),
        (["search_flights", "book_flight"], "tool_use"),
        (["bash"], "tool_use"),  # a shell alone, on a plain question: not enough
        (["read"], "tool_use"),
    ],
)
def test_tool_sets(names, expected):
    tools = [{"type": "function", "function": {"name": n, "parameters": {"type": "object"}}} for n in names]
    assert guess(chat("What's next for the trip?", tools=tools))[0] == expected


def test_a_coding_system_prompt_with_any_tools_is_programming():
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    messages = [
        {"role": "system", "content": "You are a coding agent. Help the user with their repository."},
        {"role": "user", "content": "continue"},
    ]
    assert guess(chat("x", messages=messages, tools=tools)) == ("code", "coding agent system prompt: 'coding agent'")


def test_tools_are_a_capability_the_text_decides_the_task():
    weather = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    assert guess(chat("What is the weather in Paris?", tools=weather)) == ("tool_use", "offers tools")
    assert guess(chat("Write a Python function that parses dates", tools=weather))[0] == "code"
    assert guess(chat("Translate 'good morning' into French.", tools=weather))[0] == "translation"
    assert guess(chat("Solve the equation 3x + 5 = 20.", tools=weather))[0] == "math"
    # tool_choice none: tools are not a need, and nothing says tool_use
    assert guess(chat("What is the weather in Paris?", tools=weather, tool_choice="none"))[0] == "chat"


def test_a_non_coding_agent_with_a_system_prompt_stays_tool_use():
    tools = [
        {"type": "function", "function": {"name": n, "parameters": {"type": "object"}}}
        for n in ("search_orders", "refund_order", "send_email")
    ]
    messages = [
        {"role": "system", "content": "You are a customer support agent for an online shop. Be polite."},
        {"role": "user", "content": "Where is my order 1234?"},
    ]
    assert guess(chat("x", messages=messages, tools=tools))[0] == "tool_use"


def test_the_header_still_wins_over_an_agent():
    request = claude_code({"role": "user", "content": "say hi"})
    found = classify(request, {"x-gateway-task": "chat"}, request_facts(request, SETTINGS), SETTINGS.classifier)
    assert found.task == "chat"
