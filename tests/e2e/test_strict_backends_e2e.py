"""A chat client's conversation that went through a reasoning model, continued on Groq: the
real gateway process, the `openai` SDK, and fake chat upstreams, one as strict as Groq about
assistant-message fields it does not know (a 400, "property 'reasoning_content' is
unsupported", reported against many clients that send reasoning back)."""

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
  fast:
    type: groq
    base_url: {groq_url}
    api_key: sk-groq-123456
    models:
      moonshotai/kimi-k2: {{upstream_id: moonshotai/kimi-k2-instruct}}
routes:
  agent: {{strategy: ordered, models: [deepseek/deepseek-v4-pro, moonshotai/kimi-k2]}}
"""
REASONING = {
    "reasoning_content": "Need the file first.",
    "reasoning": "Need the file first.",
    "reasoning_details": [{"type": "reasoning.text", "text": "Need the file first.", "index": 0}],
}
# A turn an earlier answer came back with (DeepSeek's `reasoning_content`, vLLM's `reasoning`,
# OpenRouter's `reasoning_details`), sent back by the client as chat clients do.
MESSAGES = [
    {"role": "user", "content": "Read a."},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "read", "arguments": '{"path":"a"}'}}],
        **REASONING,
    },
    {"role": "tool", "tool_call_id": "call_1", "content": "A"},
]
TOOLS = [{"type": "function", "function": {"name": "read", "parameters": {"type": "object", "properties": {}}}}]
STRICT = frozenset({"reasoning_content", "reasoning", "reasoning_details"})


def test_earlier_reasoning_is_left_out_for_groq_and_sent_as_it_came_elsewhere(
    start_gateway, upstream, upstream_b, openai_client
):
    gw = start_gateway(CONFIG.format(deep_url=upstream.base_url, groq_url=upstream_b.base_url))
    client = openai_client(gw)
    upstream_b.reset(refused_message_fields=STRICT)

    answer = client.chat.completions.create(model="agent", messages=MESSAGES, tools=TOOLS)  # DeepSeek answers
    assert answer.choices[0].message.content == "Hello from the fake upstream."
    assert upstream.received[0].body["messages"] == MESSAGES  # the client's own turns, as sent
    assert upstream_b.received == []

    upstream.reset(status=503)  # DeepSeek down: the same conversation falls back to Groq
    _asked_both_ways(client)
    assert len(upstream.received) == 2 and len(upstream_b.received) == 2
    for received in upstream_b.received:
        assistant = received.body["messages"][1]
        assert assistant == {k: v for k, v in MESSAGES[1].items() if k not in REASONING}
        assert received.body["messages"][0] == MESSAGES[0] and received.body["messages"][2] == MESSAGES[2]


def test_groqs_refusal_reaches_the_client_as_a_400_when_a_field_is_not_reasoning(
    start_gateway, upstream, upstream_b, openai_client
):
    """Only reasoning fields are left out: any other field the client sends is its own, and
    a strict server's 400 for it is the client's to see (no fallback: no backend would differ)."""
    gw = start_gateway(CONFIG.format(deep_url=upstream.base_url, groq_url=upstream_b.base_url))
    upstream.reset(status=503)
    upstream_b.reset(refused_message_fields=frozenset({"audio"}))
    turns = [MESSAGES[0], {"role": "assistant", "content": "Hi.", "audio": {"id": "audio_1"}}, MESSAGES[0]]
    try:
        openai_client(gw).chat.completions.create(model="agent", messages=turns)
    except openai.BadRequestError as exc:
        assert "property 'audio' is unsupported" in str(exc)
    else:
        raise AssertionError("a 400 was expected")
    assert len(upstream_b.received) == 1 and upstream_b.received[0].body["messages"][1]["audio"] == {"id": "audio_1"}


# Cerebras refuses `reasoning_content` on an assistant message ("property
# 'messages.1.assistant.reasoning_content' is unsupported") and takes `reasoning`, the field it
# answers with: no vendor entry says so, the backend's own YAML does.
DECLARED = """
backends:
  deep:
    type: deepseek
    base_url: {deep_url}
    api_key: sk-deep-123456
    models:
      deepseek/deepseek-v4-pro: {{upstream_id: deepseek-v4-pro}}
  strict:
    type: {strict_type}
    base_url: {strict_url}
    api_key: sk-strict-123456
    apis: [chat]
    refused_message_fields: [reasoning_content]
    models:
      openai/gpt-oss-120b: {{upstream_id: gpt-oss-120b}}
routes:
  agent: {{strategy: ordered, models: [deepseek/deepseek-v4-pro, openai/gpt-oss-120b]}}
  strict: {{models: [openai/gpt-oss-120b]}}
"""


def test_an_openai_backend_that_declares_a_refused_field_is_sent_the_conversation_without_it(
    start_gateway, upstream, upstream_b, openai_client
):
    """The chat conversation of the first test, falling back to an `openai` backend that
    refuses `reasoning_content` alone: only that field is left out, the others go as sent."""
    config = DECLARED.format(deep_url=upstream.base_url, strict_type="openai", strict_url=upstream_b.base_url)
    gw = start_gateway(config)
    client = openai_client(gw)
    upstream.reset(status=503)
    upstream_b.reset(refused_message_fields=frozenset({"reasoning_content"}))
    _asked_both_ways(client)
    assert len(upstream.received) == 2 and len(upstream_b.received) == 2
    for received in upstream_b.received:
        assert received.body["messages"][1] == {k: v for k, v in MESSAGES[1].items() if k != "reasoning_content"}
        assert received.body["messages"][0] == MESSAGES[0] and received.body["messages"][2] == MESSAGES[2]


def test_a_translated_conversations_reasoning_goes_back_only_in_a_field_the_backend_takes(
    start_gateway, upstream, upstream_b
):
    """Claude Code's thinking, translated for a vLLM-type backend (which takes earlier reasoning
    back as `reasoning_content` and `reasoning`) that refuses `reasoning_content`: sent as
    `reasoning` alone, and answered."""
    config = DECLARED.format(deep_url=upstream.base_url, strict_type="vllm", strict_url=upstream_b.base_url)
    gw = start_gateway(config)
    upstream_b.reset(refused_message_fields=frozenset({"reasoning_content"}))
    client = anthropic.Anthropic(base_url=gw.url, api_key="unused", max_retries=0, timeout=30)
    turns = [
        {"role": "user", "content": "Read a."},
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "Need the file first.", "signature": ""},
                {"type": "tool_use", "id": "toolu_1", "name": "read", "input": {"path": "a"}},
            ],
        },
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "A"}]},
    ]
    tools = [{"name": "read", "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}}}]
    answer = client.messages.create(model="strict", max_tokens=400, tools=tools, messages=turns)
    assert answer.content[-1].text == "Hello from the fake upstream."
    [sent] = upstream_b.received
    [assistant] = [m for m in sent.body["messages"] if m["role"] == "assistant"]
    assert assistant["reasoning"] == "Need the file first." and "reasoning_content" not in assistant
    assert upstream.received == []


def _asked_both_ways(client) -> None:
    """The conversation asked of route `agent` non-streamed, then streamed: answered each time."""
    for stream in (False, True):
        if stream:
            chunks = list(client.chat.completions.create(model="agent", messages=MESSAGES, tools=TOOLS, stream=True))
            text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        else:
            text = (
                client.chat.completions.create(model="agent", messages=MESSAGES, tools=TOOLS).choices[0].message.content
            )
        assert text.strip() == "Hello from the fake upstream."


TOP_K_CONFIG = """
backends:
  plain:
    type: openai
    base_url: {plain_url}
    api_key: sk-plain-123456
    models:
      acme/plain: {{}}
  fast:
    type: groq
    base_url: {plain_url}
    api_key: sk-groq-123456
    models:
      acme/fast: {{}}
  together:
    type: together
    base_url: {sampling_url}
    api_key: sk-together-123456
    models:
      acme/sampled: {{}}
routes:
  strict: {{strategy: ordered, models: [acme/plain, acme/fast]}}
"""


def test_a_translated_messages_top_k_goes_only_to_backends_that_take_it(start_gateway, upstream, upstream_b):
    """Anthropic's `top_k` has no place in OpenAI's API, which refuses an argument it does not
    know: a Messages request translated for an OpenAI-type or Groq backend is sent without it;
    one for Together, whose API documents it, with it."""
    gw = start_gateway(TOP_K_CONFIG.format(plain_url=upstream.base_url, sampling_url=upstream_b.base_url))
    client = anthropic.Anthropic(base_url=gw.url, api_key="unused", max_retries=0, timeout=30)
    # The installed SDK no longer types `top_k` and `temperature`; clients still send them.
    ask = {
        "max_tokens": 50,
        "messages": [{"role": "user", "content": "Hi."}],
        "extra_body": {"top_k": 5, "temperature": 0.5},
    }
    upstream.reset(status=503)  # the first candidate fails: the second, Groq, is asked too
    with pytest.raises(anthropic.APIStatusError):
        client.messages.create(model="strict", **ask)
    assert [r.body.get("top_k", "absent") for r in upstream.received] == ["absent", "absent"]
    assert [r.body["temperature"] for r in upstream.received] == [0.5, 0.5]  # OpenAI's own sampling fields stay
    client.messages.create(model="acme/sampled", **ask)
    [sent] = upstream_b.received
    assert sent.body["top_k"] == 5
    client.close()
