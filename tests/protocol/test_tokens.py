"""gateway/protocol/tokens.py: the conservative prompt estimate routing and the ledger use."""

from __future__ import annotations

import orjson

from gateway.protocol.tokens import estimate_prompt_tokens

TOOL = {
    "type": "function",
    "function": {
        "name": "read_file",
        "description": "Read a file of the workspace, with ünïcode.",
        "parameters": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]},
    },
}
CALL = {"id": "call_0", "type": "function", "function": {"name": "read_file", "arguments": '{"path": "a.py"}'}}


def test_tools_and_tool_calls_count_as_the_json_the_upstream_receives():
    base = estimate_prompt_tokens({"messages": [{"role": "user", "content": "hi"}]})
    with_tools = estimate_prompt_tokens({"messages": [{"role": "user", "content": "hi"}], "tools": [TOOL] * 20})
    assert with_tools - base == (len(orjson.dumps([TOOL] * 20)) + 2) // 3  # UTF-8 JSON bytes / 3
    calls = {"messages": [{"role": "assistant", "content": None, "tool_calls": [CALL]}]}
    assert estimate_prompt_tokens(calls) == 3 + 4 + 0 + (len(orjson.dumps([CALL])) + 2) // 3


def test_a_value_json_cannot_hold_is_counted_by_its_text():
    huge = {"messages": [{"role": "user", "content": "hi"}], "tools": [{"n": 2**70}]}  # past 64 bits
    assert estimate_prompt_tokens(huge) == 3 + 4 + 1 + (len(str([{"n": 2**70}])) + 2) // 3
