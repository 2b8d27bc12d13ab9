"""Coding agents' traffic as the gateway sees it: Claude Code's Messages calls and Codex CLI's
Responses calls, with their own model names, system prompts and tool sets, through a real
gateway process to a fake OpenAI-compatible upstream. The aliases route them without client
settings, the classifier sends them to the route's code models, and the ledger (so the
rankings) counts them as programming; a plain chat with tools stays tool_use."""

from __future__ import annotations

import json

import anthropic
import pytest

from gateway.usage.rankings import today_utc
from tests.e2e.usage_helpers import gateway_cli, poll_rankings

CONFIG = """
backends:
  up:
    type: openai
    base_url: {url}
    api_key: sk-up-123456
    timeout_s: 5
    models:
      qwen/qwen3-8b: {{input_price: 0.1, output_price: 0.2}}
      qwen/qwen3-coder: {{input_price: 1.0, output_price: 2.0}}
routes:
  auto:
    models: [qwen/qwen3-8b, qwen/qwen3-coder]
    tasks: {{code: [qwen/qwen3-coder]}}
aliases:
  "claude-*": auto
  "gpt-5*": auto
"""
ENV = {"GATEWAY_USAGE_FLUSH_S": "0.05", "GATEWAY_API_KEYS": "dev:sk-test"}

CLAUDE_CODE_SYSTEM = [
    {"type": "text", "text": "You are Claude Code, Anthropic's official CLI for Claude."},
    {"type": "text", "text": "You are an interactive CLI tool that helps users with software engineering tasks."},
]
CLAUDE_CODE_TOOLS = [
    {
        "name": name,
        "description": f"The {name} tool",
        "input_schema": {"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]},
    }
    for name in ("Task", "Bash", "Glob", "Grep", "Read", "Edit", "Write", "TodoWrite")
]
CODEX_TOOLS = [
    {
        "type": "function",
        "name": "shell",
        "description": "Runs a shell command and returns its output.",
        "strict": False,
        "parameters": {
            "type": "object",
            "properties": {"command": {"type": "array", "items": {"type": "string"}}},
            "required": ["command"],
        },
    },
    {
        "type": "function",
        "name": "apply_patch",
        "description": "Edit files with a patch.",
        "strict": False,
        "parameters": {"type": "object", "properties": {"input": {"type": "string"}}, "required": ["input"]},
    },
]


@pytest.fixture
def gw(start_gateway, upstream):
    return start_gateway(CONFIG.format(url=upstream.base_url), env=ENV)


def test_agent_calls_are_aliased_routed_to_code_models_and_ranked_as_programming(gw, upstream, openai_client):
    claude = anthropic.Anthropic(base_url=gw.url, api_key="sk-test", max_retries=0, timeout=30)
    try:
        raw = claude.messages.with_raw_response.create(
            model="claude-opus-5-5",  # Claude Code's default model name
            max_tokens=32000,
            system=CLAUDE_CODE_SYSTEM,
            tools=CLAUDE_CODE_TOOLS,
            messages=[{"role": "user", "content": "say hi"}],
        )
    finally:
        claude.close()
    assert (raw.headers["x-gateway-route"], raw.headers["x-gateway-task"]) == ("auto", "code")
    assert raw.headers["x-gateway-model"] == "qwen/qwen3-coder"
    assert raw.parse().content[0].text == "Hello from the fake upstream."
    assert upstream.received[-1].body["model"] == "qwen/qwen3-coder"

    client = openai_client(gw)
    codex = client.responses.with_raw_response.create(
        model="gpt-5-codex",
        instructions="You are a coding agent running in the Codex CLI, a terminal-based coding assistant.",
        input=[{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "list the files"}]}],
        tools=CODEX_TOOLS,
        store=False,
    )
    assert (codex.headers["x-gateway-task"], codex.headers["x-gateway-model"]) == ("code", "qwen/qwen3-coder")

    weather = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    plain = client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "Weather in Paris?"}], tools=weather
    )
    assert (plain.headers["x-gateway-task"], plain.headers["x-gateway-model"]) == ("tool_use", "qwen/qwen3-8b")

    body = poll_rankings(gw.url, lambda b: b["totals"]["requests"] == 3, window="week")
    assert [(e["model"], e["requests"]) for e in body["categories"]["programming"]] == [("qwen/qwen3-coder", 2)]
    assert [(e["model"], e["requests"]) for e in body["categories"]["tool_use"]] == [("qwen/qwen3-8b", 1)]
    day = today_utc().isoformat()
    done = gateway_cli("usage", "export", "--start", day, "--end", day, "--data-dir", str(gw.dir / "data"))
    assert done.returncode == 0, done.stderr
    rows = sorted((json.loads(line) for line in done.stdout.splitlines()), key=lambda e: e["timestamp"])
    assert [(e["endpoint"], e["category"], e["route"], e["model"]) for e in rows] == [
        ("messages", "programming", "auto", "qwen/qwen3-coder"),
        ("responses", "programming", "auto", "qwen/qwen3-coder"),
        ("chat", "tool_use", "auto", "qwen/qwen3-8b"),
    ]
