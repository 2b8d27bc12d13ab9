"""gateway/protocol/tokens.py: the conservative prompt estimate routing and the ledger use."""

from __future__ import annotations

import orjson

from gateway.protocol.messages_view import messages_prompt
from gateway.protocol.responses_view import responses_prompt
from gateway.protocol.tokens import estimate_answer_tokens, estimate_prompt_tokens

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


def test_reasoning_sent_back_counts_as_text_the_backend_receives():
    """An assistant message's earlier reasoning (`reasoning_content`, which translated Messages
    thinking and Responses reasoning become, or OpenRouter's `reasoning`) is prompt the backend
    reads: it was left out of the estimate, so a long thinking history routed as a short prompt."""
    thought = "Let me think: the bug is in calc.py, line 12. ü"  # 47 characters, 48 UTF-8 bytes
    reasoned = {"role": "assistant", "content": "Fixed.", "reasoning_content": thought}
    assert estimate_prompt_tokens({"messages": [reasoned]}) == 3 + 4 + 2 + 16
    openrouter = {"role": "assistant", "content": "Fixed.", "reasoning": "x" * 30}
    assert estimate_prompt_tokens({"messages": [openrouter]}) == 3 + 4 + 2 + 10
    # Both spellings (vLLM answers with the same text in each): the backend reads one, the longer counts.
    both = {"role": "assistant", "content": None, "tool_calls": [CALL], "reasoning_content": "abcd", "reasoning": "e"}
    assert estimate_prompt_tokens({"messages": [both]}) == 3 + 4 + 0 + (len(orjson.dumps([CALL])) + 2) // 3 + 2
    alike = {"role": "assistant", "content": "Fixed.", "reasoning_content": thought, "reasoning": thought}
    assert estimate_prompt_tokens({"messages": [alike]}) == 3 + 4 + 2 + 16


def test_only_an_assistants_reasoning_text_counts():
    plain = {"messages": [{"role": "assistant", "content": "Fixed."}]}
    assert estimate_prompt_tokens(plain) == 3 + 4 + 2
    not_text = [{"text": "x" * 300}]  # not a string: no backend reads it as reasoning
    odd = {"messages": [{"role": "assistant", "content": "Fixed.", "reasoning_content": not_text, "reasoning": 5}]}
    assert estimate_prompt_tokens(odd) == 3 + 4 + 2
    user = {"messages": [{"role": "user", "content": "Fixed.", "reasoning_content": "x" * 300}]}
    assert estimate_prompt_tokens(user) == 3 + 4 + 2  # only an assistant's is reasoning sent back


def test_one_conversation_with_reasoning_is_estimated_alike_whichever_api_sent_it():
    """The same turn as chat (`reasoning_content`), as Messages (a thinking block) and as
    Responses (a reasoning item), estimated on the routing views as routing reads them: the
    reasoning counted in each, 3 + (4 + 2) + (4 + 2 + 3) for "Fix it", "Done." and 8 bytes
    of thinking."""
    chat = {
        "model": "m",
        "messages": [
            {"role": "user", "content": "Fix it"},
            {"role": "assistant", "content": "Done.", "reasoning_content": "Think é"},
        ],
    }
    messages = {
        "model": "m",
        "max_tokens": 16,
        "messages": [
            {"role": "user", "content": "Fix it"},
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "Think é", "signature": "s"},
                    {"type": "text", "text": "Done."},
                ],
            },
        ],
    }
    responses = {
        "model": "m",
        "input": [
            {"role": "user", "content": "Fix it"},
            {"type": "reasoning", "summary": [], "content": [{"type": "reasoning_text", "text": "Think é"}]},
            {"role": "assistant", "content": [{"type": "output_text", "text": "Done."}]},
        ],
    }
    messages_facts, responses_facts = messages_prompt(messages), responses_prompt(responses)
    assert messages_facts is not None and responses_facts is not None
    assert estimate_prompt_tokens(chat) == messages_facts.tokens == responses_facts.tokens == 18


def test_an_answer_without_usage_counts_its_text_tool_calls_and_reasoning():
    """What a non-streamed answer generated when its upstream reported no usage."""
    assert estimate_answer_tokens({"role": "assistant", "content": "x" * 300}) == 100
    calls = {"role": "assistant", "content": None, "tool_calls": [CALL]}
    assert estimate_answer_tokens(calls) == (len(orjson.dumps([CALL])) + 2) // 3
    reasoned = {"role": "assistant", "content": "x" * 30, "reasoning_content": "y" * 90, "reasoning": "y" * 90}
    assert estimate_answer_tokens(reasoned) == 10 + 30  # one spelling counted, as sent back
    assert estimate_answer_tokens({"role": "assistant", "content": ""}) == 0
    assert estimate_answer_tokens(None) == 0
