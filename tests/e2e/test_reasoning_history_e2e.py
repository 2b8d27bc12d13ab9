"""Earlier turns' reasoning on a translated agent conversation, as Claude Code and Codex meet it:
the real gateway process, the `anthropic` and `openai` SDKs, and fake chat upstreams, one in
DeepSeek's thinking mode (a tool call's assistant turn without its `reasoning_content` is a
400, which every tool loop of an agent hit at its second turn) and one that is not sent it."""

from __future__ import annotations

import anthropic
import openai
import pytest

CONFIG = """
backends:
  deep:
    type: deepseek
    base_url: {deep_url}
    api_key: sk-deep-123456
    models:
      deepseek/deepseek-v4-pro: {{upstream_id: deepseek-v4-pro}}
  plain:
    type: openai
    base_url: {plain_url}
    models:
      qwen/qwen3-coder: {{upstream_id: Qwen/Qwen3-Coder}}
      qwen/qwen3-thinking: {{upstream_id: Qwen/Qwen3-Thinking, reasoning_history: true}}
routes:
  deep: {{models: [deepseek/deepseek-v4-pro]}}
  plain: {{models: [qwen/qwen3-coder]}}
  plain-taking: {{models: [qwen/qwen3-thinking]}}
"""
READ = {
    "name": "read",
    "description": "Read a file",
    "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]},
}
# Claude Code's history after two tool calls: the first answered with reasoning (a thinking
# block, unsigned: it came back from a chat backend), the second by a backend that gave none.
TURNS = [
    {"role": "user", "content": "Read a and b."},
    {
        "role": "assistant",
        "content": [
            {"type": "thinking", "thinking": "Need a first.", "signature": ""},
            {"type": "tool_use", "id": "toolu_1", "name": "read", "input": {"path": "a"}},
        ],
    },
    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "A"}]},
    {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_2", "name": "read", "input": {"path": "b"}}]},
    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_2", "content": "B"}]},
]


@pytest.fixture
def gw(start_gateway, upstream, upstream_b):
    upstream.reset(thinking_mode=True, reasoning="Both read.")
    return start_gateway(CONFIG.format(deep_url=upstream.base_url, plain_url=upstream_b.base_url))


def _assistants(body: dict) -> list[dict]:
    return [m for m in body["messages"] if m["role"] == "assistant"]


@pytest.mark.parametrize("stream", [False, True])
def test_claude_codes_thinking_goes_back_to_a_thinking_model_and_nowhere_else(gw, upstream, upstream_b, stream):
    client = anthropic.Anthropic(base_url=gw.url, api_key="unused", max_retries=0, timeout=30)
    ask = {"max_tokens": 400, "tools": [READ], "messages": TURNS, "stream": stream}
    answer = client.messages.create(model="deep", **ask)
    if stream:
        assert [event.type for event in answer][-1] == "message_stop"
    else:
        assert answer.content[-1].text == "Hello from the fake upstream."
    (sent,) = upstream.received  # DeepSeek took it at once: no 400
    assert [m.get("reasoning_content") for m in _assistants(sent.body)] == ["Need a first.", ""]
    client.messages.create(model="plain", **ask)
    client.messages.create(model="plain-taking", **ask)
    kept, taking = (seen.body for seen in upstream_b.received)
    assert all("reasoning_content" not in m for m in _assistants(kept))  # a strict server may refuse it
    assert [m.get("reasoning_content") for m in _assistants(taking)] == ["Need a first.", ""]


def test_codexs_reasoning_items_go_back_to_a_thinking_model(gw, upstream, upstream_b):
    """Codex sends the reasoning items it was answered with back in its input, before the
    calls they led to: their text (the gateway's own `reasoning_text`, else the summary)."""
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0, timeout=30)
    items = [
        {"role": "user", "content": "Read a and b."},
        {"type": "reasoning", "id": "rs_1", "summary": [], "content": [{"type": "reasoning_text", "text": "Need a."}]},
        {"type": "function_call", "call_id": "call_1", "name": "read", "arguments": '{"path":"a"}'},
        {"type": "function_call_output", "call_id": "call_1", "output": "A"},
        {"type": "reasoning", "id": "rs_2", "summary": [{"type": "summary_text", "text": "Then b."}]},
        {"type": "function_call", "call_id": "call_2", "name": "read", "arguments": '{"path":"b"}'},
        {"type": "function_call_output", "call_id": "call_2", "output": "B"},
    ]
    tools = [{"type": "function", "name": "read", "parameters": READ["input_schema"]}]
    answer = client.responses.create(model="deep", input=items, tools=tools, store=False)
    assert answer.output_text == "Hello from the fake upstream."
    (sent,) = upstream.received
    assert [m.get("reasoning_content") for m in _assistants(sent.body)] == ["Need a.", "Then b."]
    client.responses.create(model="plain", input=items, tools=tools, store=False)
    assert all("reasoning_content" not in m for m in _assistants(upstream_b.received[-1].body))


def test_without_the_reasoning_deepseek_refuses_the_tool_loop(gw, upstream):
    """What DeepSeek answers a tool call's turn sent without it: the 400 the tests above avoid
    (the fake's rule, checked against a chat client that leaves it out)."""
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0, timeout=30)
    call = {"id": "call_1", "type": "function", "function": {"name": "read", "arguments": '{"path":"a"}'}}
    history = [
        {"role": "user", "content": "Read a."},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "A"},
    ]
    with pytest.raises(openai.BadRequestError, match="must be passed back"):
        client.chat.completions.create(model="deep", messages=history)


@pytest.mark.parametrize("stream", [False, True])
def test_reasoning_a_stored_response_ended_with_goes_back_through_previous_response_id(gw, upstream, stream):
    """The reasoning a translated turn came back with is stored as its `reasoning` item
    (`reasoning_text` content; no summary: no backend writes one), and a turn continuing it
    by `previous_response_id` sends it back before the call it led to: DeepSeek takes the
    tool loop without a 400."""
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0, timeout=30)
    tools = [{"type": "function", "name": "read", "parameters": READ["input_schema"]}]
    call = {"id": "call_9", "type": "function", "function": {"name": "read", "arguments": '{"path":"a"}'}}
    upstream.reset(thinking_mode=True, reasoning="Need a.", tool_call=call)
    ask = {"model": "deep", "tools": tools, "reasoning": {"summary": "auto"}}
    if stream:
        with client.responses.stream(input="Read a.", **ask) as events:
            kinds = [e.type for e in events]
            first = events.get_final_response()
        assert "response.reasoning_text.delta" in kinds
    else:
        first = client.responses.create(input="Read a.", **ask)
    reasoning, called = first.output
    assert (reasoning.type, [c.text for c in reasoning.content or ()], reasoning.summary) == (
        "reasoning",
        ["Need a."],
        [],
    )
    assert (called.type, called.call_id) == ("function_call", "call_9")

    upstream.reset(thinking_mode=True, reasoning="Done.")
    second = client.responses.create(
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": "call_9", "output": "A"}],
        **ask,
    )
    assert second.output_text == "Hello from the fake upstream."
    (sent,) = upstream.received  # no 400 first
    assert [m.get("reasoning_content") for m in _assistants(sent.body)] == ["Need a."]
