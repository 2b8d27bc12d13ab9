"""An `anthropic` backend as app developers meet it: the real gateway process, a real fake
Messages API server, and the official `openai` client speaking OpenAI's format."""

from __future__ import annotations

import json

import openai
import orjson
import pytest

from tests.e2e.test_hostile_upstream_e2e import ledger
from tests.support.scrape import scrape

KEY = "sk-ant-test-key-123456"

CONFIG = """
backends:
  claude:
    type: anthropic
    base_url: {anthropic_url}
    api_key: {key}
    timeout_s: 5
    models:
      anthropic/claude-sonnet-4.5: {{upstream_id: claude-sonnet-4-5, context_length: 200000, max_output_tokens: 8192, input_price: 3.0, output_price: 15.0}}
  spare:
    type: openai
    base_url: {openai_url}
    models:
      anthropic/claude-sonnet-4.5: {{upstream_id: spare-model, input_price: 30.0, output_price: 150.0}}
routes:
  auto:
    strategy: ordered
    models: [anthropic/claude-sonnet-4.5]
"""

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


@pytest.fixture
def gw(start_gateway, claude, upstream):
    return start_gateway(CONFIG.format(anthropic_url=claude.base_url, key=KEY, openai_url=upstream.base_url))


def ask(**extra):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello."}]
    return {"model": "auto", "messages": messages, **extra}


def test_non_streaming_is_translated_both_ways(gw, claude, openai_client):
    claude.reset(cache_read_tokens=100, cache_creation_tokens=20)
    raw = openai_client(gw).chat.completions.with_raw_response.create(**ask(temperature=0.2, stop=["END"], seed=3))
    completion = raw.parse()
    assert raw.headers["x-gateway-backend"] == "claude"
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.content == "Hello from the fake Anthropic."
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.prompt_tokens == 13 + 100 + 20
    assert completion.usage.completion_tokens == 9
    assert completion.usage.total_tokens == 142
    assert completion.usage.prompt_tokens_details.cached_tokens == 100
    sent = claude.received[-1]
    assert sent.headers["x-api-key"] == KEY
    assert sent.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in sent.headers
    assert sent.body == {
        "model": "claude-sonnet-4-5",
        "system": "Be brief.",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Say hello."}]}],
        "max_tokens": 8192,  # the offer's max_output_tokens
        "temperature": 0.2,
        "stop_sequences": ["END"],
    }


def test_stream_with_include_usage(gw, claude, openai_client):
    chunks = list(
        openai_client(gw).chat.completions.create(
            **ask(stream=True, stream_options={"include_usage": True}, max_tokens=50)
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello from the fake Anthropic."
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.prompt_tokens == 13 and chunks[-1].usage.completion_tokens == 9
    assert all(c.usage is None for c in chunks[:-1])
    assert len({c.id for c in chunks}) == 1
    sent = claude.received[-1].body
    assert sent["stream"] is True and sent["max_tokens"] == 50 and "stream_options" not in sent


def test_stream_without_include_usage_has_no_usage_chunk(gw, openai_client):
    chunks = list(openai_client(gw).chat.completions.create(**ask(stream=True)))
    assert chunks and all(c.choices for c in chunks)
    assert all(c.usage is None for c in chunks)


def test_tool_call_round_trip(gw, claude, openai_client):
    client = openai_client(gw)
    claude.reset(
        content="Let me check.", tool_use={"id": "toolu_01", "name": "get_weather", "input": {"city": "Paris"}}
    )
    first = client.chat.completions.create(**ask(tools=[WEATHER_TOOL], tool_choice="auto"))
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "Let me check."
    call = choice.message.tool_calls[0]
    assert (call.id, call.type, call.function.name) == ("toolu_01", "function", "get_weather")
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    assert claude.received[-1].body["tools"] == [
        {
            "name": "get_weather",
            "description": "Weather for a city",
            "input_schema": WEATHER_TOOL["function"]["parameters"],
        }
    ]
    assert claude.received[-1].body["tool_choice"] == {"type": "auto"}

    claude.reset(content="It is sunny in Paris.")
    history = ask()["messages"] + [
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "sunny, 22C"},
    ]
    second = client.chat.completions.create(model="auto", messages=history, tools=[WEATHER_TOOL])
    assert second.choices[0].message.content == "It is sunny in Paris."
    turns = claude.received[-1].body["messages"]
    assert turns[1] == {
        "role": "assistant",
        "content": [
            {"type": "text", "text": "Let me check."},
            {"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {"city": "Paris"}},
        ],
    }
    assert turns[2] == {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": "toolu_01", "content": "sunny, 22C"}],
    }


def test_whitespace_another_backend_wrote_before_its_tool_call_is_left_out_for_anthropic(gw, claude, openai_client):
    """Qwen on vLLM writes "\n\n" before its tool call; a chat client keeps it as the turn's
    content, and Anthropic refuses a text block of whitespace alone."""
    call = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}
    history = ask()["messages"] + [
        {"role": "assistant", "content": "\n\n", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ]
    answer = openai_client(gw).chat.completions.create(model="auto", messages=history, tools=[WEATHER_TOOL])
    assert answer.choices[0].message.content == "Hello from the fake Anthropic."
    [sent] = claude.received
    assert sent.body["messages"][1] == {
        "role": "assistant",
        "content": [{"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}}],
    }


def test_a_reasoning_tool_loop_continues_with_thinking_off_for_the_turn_anthropic_wants_it_sent_back(
    gw, claude, openai_client
):
    """With thinking on, Anthropic wants the last tool-use turn to start with the thinking
    block its answer began with, and a chat client cannot send one back (the reasoning came
    back as `reasoning_content`, without its signature): every tool loop of an OpenAI-SDK agent
    with `reasoning_effort` was Anthropic's 400 at its second turn. That turn goes without
    extended thinking (the client's temperature kept, which thinking refuses); the next user
    turn has thinking again."""
    client = openai_client(gw)
    claude.reset(
        content="Let me check.",
        thinking="Need the weather.",
        tool_use={"id": "toolu_01", "name": "get_weather", "input": {"city": "Paris"}},
    )
    first = client.chat.completions.create(**ask(tools=[WEATHER_TOOL], reasoning_effort="medium", temperature=0.3))
    message = first.choices[0].message.model_dump(exclude_none=True)
    assert message["reasoning_content"] == "Need the weather." and first.choices[0].finish_reason == "tool_calls"
    del message["reasoning_details"]  # a client that keeps the content and calls, not the signed thinking
    assert claude.received[-1].body["thinking"] == {"type": "enabled", "budget_tokens": 4096}
    assert "temperature" not in claude.received[-1].body  # refused beside extended thinking
    claude.reset(content="It is sunny in Paris.", thinking="Sunny.")
    history = [*ask()["messages"], message, {"role": "tool", "tool_call_id": "toolu_01", "content": "sunny, 22C"}]
    second = client.chat.completions.create(
        model="auto", messages=history, tools=[WEATHER_TOOL], reasoning_effort="medium", temperature=0.3
    )
    assert second.choices[0].message.content == "It is sunny in Paris."
    (sent,) = claude.received  # asked once: no refusal
    assert "thinking" not in sent.body and sent.body["temperature"] == 0.3
    assert sent.body["messages"][1]["content"][0]["type"] == "text"  # no thinking to send back
    assert sent.body["messages"][1]["content"][0] == {"type": "text", "text": "Let me check."}
    history += [second.choices[0].message.model_dump(exclude_none=True), {"role": "user", "content": "And Rome?"}]
    client.chat.completions.create(model="auto", messages=history, tools=[WEATHER_TOOL], reasoning_effort="medium")
    assert claude.received[-1].body["thinking"] == {"type": "enabled", "budget_tokens": 4096}
    rows = ledger(gw, 3)
    assert [(r["status"], r["backend"]) for r in rows] == [(200, "claude")] * 3


@pytest.mark.parametrize("stream", [False, True])
def test_reasoning_details_a_client_keeps_carry_the_signed_thinking_through_its_tool_loop(
    gw, claude, openai_client, stream
):
    """The thinking comes back as OpenRouter's `reasoning_details` too (streamed: pieces by
    index, then the signature), which OpenRouter-aware clients keep on the assistant message:
    sent back, the turn starts with its signed thinking block and keeps extended thinking."""
    client = openai_client(gw)
    call = {"id": "toolu_01", "name": "get_weather", "input": {"city": "Paris"}}
    claude.reset(content="Let me check.", thinking="Need the weather.", tool_use=call)
    asked = ask(tools=[WEATHER_TOOL], reasoning_effort="medium", max_tokens=8000)
    if stream:
        chunks = list(client.chat.completions.create(**asked, stream=True))
        deltas = [c.choices[0].delta for c in chunks if c.choices]
        details = [d for delta in deltas for d in (delta.model_extra or {}).get("reasoning_details") or ()]
        calls = [tc for delta in deltas for tc in delta.tool_calls or ()]
        arguments = "".join(tc.function.arguments or "" for tc in calls)
        tool_call = {
            "id": calls[0].id,
            "type": "function",
            "function": {"name": calls[0].function.name, "arguments": arguments},
        }
        message = {
            "role": "assistant",
            "content": "Let me check.",
            "tool_calls": [tool_call],
            "reasoning_details": details,
        }
        # The thinking's pieces (the fake streams it in one), then the signature.
        assert [(d.get("text"), d.get("signature")) for d in details] == [
            ("Need the weather.", None),
            (None, "sig-fake-claude-sonnet-4-5"),
        ]
    else:
        message = client.chat.completions.create(**asked).choices[0].message.model_dump(exclude_none=True)
        assert message["reasoning_details"] == [
            {
                "type": "reasoning.text",
                "text": "Need the weather.",
                "format": "anthropic-claude-v1",
                "index": 0,
                "signature": "sig-fake-claude-sonnet-4-5",
            }
        ]
    claude.reset(content="It is sunny in Paris.")
    history = [*ask()["messages"], message, {"role": "tool", "tool_call_id": "toolu_01", "content": "sunny, 22C"}]
    second = client.chat.completions.create(
        model="auto", messages=history, tools=[WEATHER_TOOL], reasoning_effort="medium", max_tokens=8000
    )
    assert second.choices[0].message.content == "It is sunny in Paris."
    (sent,) = claude.received  # asked once: Anthropic took the block back
    assert sent.body["thinking"] == {"type": "enabled", "budget_tokens": 4096}
    assert sent.body["messages"][1]["content"] == [
        {"type": "thinking", "thinking": "Need the weather.", "signature": "sig-fake-claude-sonnet-4-5"},
        {"type": "text", "text": "Let me check."},
        {"type": "tool_use", **call},
    ]


def test_reasoning_details_another_claude_model_signed_are_asked_again_without_them(gw, claude, openai_client):
    """Signatures are model-bound: a chat client's turn another Claude model answered, sent to
    this one, is Anthropic's 400 for the block. Asked again as a native body would be: without
    the thinking, and so without extended thinking for the turn that began with it."""
    opus = {"type": "reasoning.text", "text": "Need it.", "signature": "sig-fake-claude-opus-4-5", "index": 0}
    arguments = '{"city":"Paris"}'
    called = {"id": "toolu_01", "type": "function", "function": {"name": "get_weather", "arguments": arguments}}
    message = {"role": "assistant", "content": "Let me check.", "tool_calls": [called], "reasoning_details": [opus]}
    history = [*ask()["messages"], message, {"role": "tool", "tool_call_id": "toolu_01", "content": "sunny, 22C"}]
    claude.reset(content="It is sunny in Paris.")
    answer = openai_client(gw).chat.completions.create(
        model="auto", messages=history, tools=[WEATHER_TOOL], reasoning_effort="medium", max_tokens=8000
    )
    assert answer.choices[0].message.content == "It is sunny in Paris."
    refused, again = claude.received
    assert refused.body["messages"][1]["content"][0]["signature"] == "sig-fake-claude-opus-4-5"
    assert again.body["messages"][1]["content"][0] == {"type": "text", "text": "Let me check."}
    assert "thinking" not in again.body
    assert [(r["status"], r["backend"]) for r in ledger(gw, 1)] == [(200, "claude")]


def test_streamed_tool_call(gw, claude, openai_client):
    claude.reset(content="", tool_use={"id": "toolu_02", "name": "get_weather", "input": {"city": "Oslo"}})
    chunks = list(openai_client(gw).chat.completions.create(**ask(stream=True, tools=[WEATHER_TOOL])))
    deltas = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert deltas[0].id == "toolu_02" and deltas[0].function.name == "get_weather"
    assert all(d.index == 0 for d in deltas)
    assert json.loads("".join(d.function.arguments or "" for d in deltas)) == {"city": "Oslo"}
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"


def test_overloaded_falls_back_to_the_next_backend(gw, claude, upstream, openai_client):
    claude.reset(status=529, error_type="overloaded_error", error_message="Overloaded")
    raw = openai_client(gw).chat.completions.with_raw_response.create(**ask())
    assert raw.headers["x-gateway-backend"] == "spare"
    assert raw.parse().choices[0].message.content == "Hello from the fake upstream."
    assert len(claude.received) == 1


def test_overloaded_error_event_before_content_falls_back(gw, claude, upstream, openai_client):
    claude.reset(stream_error_before_content=True)
    chunks = list(openai_client(gw).chat.completions.create(**ask(stream=True)))
    assert (
        "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).strip()
        == "Hello from the fake upstream."
    )
    assert len(claude.received) == 1 and len(upstream.received) == 1


@pytest.fixture
def gw_claude_only(start_gateway, claude):
    config = CONFIG.split("  spare:")[0] + "routes:\n  auto:\n    models: [anthropic/claude-sonnet-4.5]\n"
    return start_gateway(config.format(anthropic_url=claude.base_url, key=KEY))


def test_rate_limit_reaches_the_client_with_retry_after(gw_claude_only, claude, openai_client):
    claude.reset(status=429, error_type="rate_limit_error", error_message="slow down", headers={"retry-after": "7"})
    with pytest.raises(openai.RateLimitError) as caught:
        openai_client(gw_claude_only).chat.completions.create(**ask())
    assert caught.value.response.headers["retry-after"] == "7"


def test_prompt_too_long_is_a_context_length_error(gw_claude_only, claude, openai_client):
    claude.reset(
        status=400,
        error_type="invalid_request_error",
        error_message="prompt is too long: 210000 tokens > 200000 maximum",
    )
    with pytest.raises(openai.BadRequestError) as caught:
        openai_client(gw_claude_only).chat.completions.create(**ask())
    assert caught.value.code == "context_length_exceeded"
    assert "prompt is too long" in caught.value.message
    assert KEY not in caught.value.response.text


def test_request_anthropic_cannot_express_is_a_400_naming_the_field(gw_claude_only, claude, openai_client):
    audio = {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}
    with pytest.raises(openai.BadRequestError) as caught:
        openai_client(gw_claude_only).chat.completions.create(
            model="auto", messages=[{"role": "user", "content": [audio]}]
        )
    assert "input_audio" in caught.value.message
    assert claude.received == []


# 200 answers that are not a Message: its content not a list of blocks, a block that is not
# an object, its usage not an object.
NOT_A_MESSAGE = {
    "content-not-blocks": {"content": "hi"},
    "block-not-object": {"type": "message", "content": ["hi"], "stop_reason": "end_turn"},
    "usage-not-object": {
        "type": "message",
        "content": [{"type": "text", "text": "hi"}],
        "stop_reason": "end_turn",
        "usage": "x",
    },
}


@pytest.mark.parametrize("body", list(NOT_A_MESSAGE.values()), ids=list(NOT_A_MESSAGE))
def test_a_malformed_answer_falls_back_unbilled_as_malformed(start_gateway, claude, upstream, openai_client, body):
    """As an OpenAI-compatible backend's malformed 200: the next candidate answers, the
    attempt is `malformed` (not `protocol`) in the ledger and metrics, and nothing of it is billed."""
    config = CONFIG.format(anthropic_url=claude.base_url, key=KEY, openai_url=upstream.base_url)
    gw = start_gateway(config, env={"GATEWAY_USAGE_FLUSH_S": "0.05"})
    claude.reset(raw_body=orjson.dumps(body))
    raw = openai_client(gw).chat.completions.with_raw_response.create(**ask())
    assert raw.headers["x-gateway-backend"] == "spare"
    assert raw.parse().choices[0].message.content == "Hello from the fake upstream."
    assert len(claude.received) == 1 and len(upstream.received) == 1
    [row] = ledger(gw, 1, failed=(("claude", "malformed"),))
    assert (row["backend"], row["status"], row["prompt_tokens"]) == ("spare", 200, 11)
    metrics = scrape(gw.url)
    labels = {"backend": "claude", "model": "anthropic/claude-sonnet-4.5"}
    assert metrics.value("gateway_backend_attempts_total", **labels, result="malformed") == 1


def test_only_a_malformed_answer_is_a_502_saying_so(gw_claude_only, claude, openai_client):
    claude.reset(raw_body=orjson.dumps(NOT_A_MESSAGE["content-not-blocks"]))
    with pytest.raises(openai.APIStatusError) as caught:
        openai_client(gw_claude_only).chat.completions.create(**ask())
    assert caught.value.status_code == 502
    assert caught.value.body["code"] == "upstream_malformed_response"
    assert "(malformed)" in caught.value.body["message"] and "Error" not in caught.value.body["message"]
