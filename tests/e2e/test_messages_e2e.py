"""POST /v1/messages as Claude Code and the `anthropic` SDK meet it: the real gateway process,
the official `anthropic` client, a fake OpenAI-compatible upstream (the request translated
through chat completions) and a fake Anthropic upstream (the request passed through natively)."""

from __future__ import annotations

import hashlib
import json

import anthropic
import httpx
import pytest

from gateway.protocol.messages import messages_to_chat
from gateway.protocol.tokens import estimate_prompt_tokens
from tests.e2e.test_usage_e2e import export_today
from tests.support.fake_anthropic import FakeAnthropic
from tests.support.poll import poll

KEY = "sk-ant-test-key-123456"
COMPAT_KEY = "sk-compat-123456"
CONFIG = """
backends:
  claude:
    type: anthropic
    base_url: {anthropic_url}
    api_key: {key}
    timeout_s: 5
    models:
      anthropic/claude-sonnet-4.5: {{upstream_id: claude-sonnet-4-5, context_length: 200000, max_output_tokens: 64000, input_price: 3.0, output_price: 15.0}}
  compat:
    type: openai
    base_url: {openai_url}
    api_key: {compat_key}
    timeout_s: 5
    models:
      qwen/qwen3-coder: {{upstream_id: Qwen/Qwen3-Coder, context_length: 262144, max_output_tokens: 65536, input_price: 1.0, output_price: 2.0}}
      qwen/qwen3-small: {{upstream_id: Qwen/Qwen3-0.6B, context_length: 2000}}
  dormant:
    type: openai
    base_url: {openai_url}
    enabled: false
    models:
      acme/offline: {{}}
routes:
  claude: {{strategy: ordered, models: [anthropic/claude-sonnet-4.5]}}
  open: {{strategy: ordered, models: [qwen/qwen3-coder]}}
  native-first: {{strategy: ordered, models: [anthropic/claude-sonnet-4.5, qwen/qwen3-coder]}}
  chat-first: {{strategy: ordered, models: [qwen/qwen3-coder, anthropic/claude-sonnet-4.5]}}
  offline: {{models: [acme/offline]}}
  small: {{models: [qwen/qwen3-small]}}
rate_limits:
  keys: {{limited: 1}}
"""
ENV = {"GATEWAY_API_KEYS": "team-a:sk-test,limited:sk-limited", "GATEWAY_USAGE_FLUSH_S": "0.05"}
HELLO = [{"role": "user", "content": "Say hello."}]
WEATHER = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
CALL = {"id": "call_w1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}


@pytest.fixture
def gw(start_gateway, claude, upstream):
    config = CONFIG.format(anthropic_url=claude.base_url, key=KEY, openai_url=upstream.base_url, compat_key=COMPAT_KEY)
    return start_gateway(config, env=ENV)


@pytest.fixture
def client(gw):
    made = anthropic.Anthropic(base_url=gw.url, api_key="sk-test", max_retries=0, timeout=30)
    yield made
    made.close()


def raw_events(gw, body: dict) -> list[tuple[str, dict]]:
    """The (event name, data) pairs of a streamed answer, exactly as the gateway sent them."""
    headers = {"x-api-key": "sk-test", "anthropic-version": "2023-06-01"}
    with httpx.stream("POST", gw.url + "/v1/messages", json={**body, "stream": True}, headers=headers) as response:
        assert response.status_code == 200 and response.headers["content-type"] == "text/event-stream"
        text = response.read().decode()
    events = []
    for block in filter(None, text.split("\n\n")):
        lines = dict(line.split(": ", 1) for line in block.split("\n"))
        events.append((lines["event"], json.loads(lines["data"])))
        assert events[-1][0] == events[-1][1]["type"]  # the event line names the data's type
    return events


def ledger(gw, count: int) -> list[dict]:
    """The ledger's rows once `count` have been written, oldest first."""
    rows = poll(lambda: (r := export_today(gw.dir / "data")) and len(r) >= count and r, timeout=15)
    return sorted(rows, key=lambda e: (e["timestamp"], e["attempt"]))


# -- translated through chat completions ------------------------------------------------------------


def test_create_is_translated_through_chat_for_an_openai_compatible_backend(gw, client, upstream, claude):
    raw = client.messages.with_raw_response.create(
        model="open",
        max_tokens=300,
        system=[{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        messages=HELLO,
        stop_sequences=["END"],
        metadata={"user_id": "u-42"},
        extra_body={"temperature": 0.5},  # the SDK no longer types it; clients still send it
    )
    message = raw.parse()
    assert raw.headers["x-gateway-backend"] == "compat"
    assert message.type == "message" and message.role == "assistant" and message.model == "open"
    assert [(b.type, b.text) for b in message.content] == [("text", "Hello from the fake upstream.")]
    assert message.stop_reason == "end_turn" and message.id.startswith("msg_")
    assert (message.usage.input_tokens, message.usage.output_tokens) == (11, 7)
    [sent] = upstream.received
    assert sent.body == {
        "model": "Qwen/Qwen3-Coder",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello."}],
        "max_tokens": 300,
        "temperature": 0.5,
        "stop": ["END"],
        "user": "u-42",
    }
    assert sent.headers["authorization"] == f"Bearer {COMPAT_KEY}" and "x-api-key" not in sent.headers
    assert claude.received == []
    [row] = ledger(gw, 1)
    assert (row["endpoint"], row["backend"], row["model"], row["key"]) == (
        "messages",
        "compat",
        "qwen/qwen3-coder",
        "team-a",
    )
    assert (row["prompt_tokens"], row["completion_tokens"], row["status"], row["estimated"]) == (11, 7, 200, False)


def test_stream_is_anthropics_exact_event_sequence_from_a_chat_stream(gw, client, upstream):
    events = raw_events(gw, {"model": "open", "max_tokens": 50, "messages": HELLO})
    names = [name for name, _ in events]
    words = ["Hello", "from", "the", "fake", "upstream."]
    assert names == (
        ["message_start", "content_block_start", "ping"]
        + ["content_block_delta"] * len(words)
        + ["content_block_stop", "message_delta", "message_stop"]
    )
    assert events[0][1]["message"]["model"] == "open" and events[0][1]["message"]["content"] == []
    assert events[1][1] == {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
    assert (
        "".join(e["delta"]["text"] for n, e in events if n == "content_block_delta") == "Hello from the fake upstream. "
    )
    assert events[-2][1]["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert events[-2][1]["usage"]["output_tokens"] == 7
    # Every count Anthropic's streams carry, in message_start too (a walkthrough found its
    # cache counts missing).
    counts = {"input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens", "output_tokens"}
    assert set(events[0][1]["message"]["usage"]) == set(events[-2][1]["usage"]) == counts
    # The gateway asked the chat upstream for usage on the client's behalf.
    assert upstream.received[-1].body["stream_options"] == {"include_usage": True}

    with client.messages.stream(model="open", max_tokens=50, messages=HELLO) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Hello from the fake upstream. " and final.stop_reason == "end_turn"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (11, 7)
    rows = ledger(gw, 2)
    assert [(r["endpoint"], r["prompt_tokens"], r["completion_tokens"], r["estimated"]) for r in rows] == [
        ("messages", 11, 7, False)
    ] * 2


def test_tools_round_trip_with_ids_intact_through_chat(gw, client, upstream):
    upstream.reset(tool_call=CALL)
    first = client.messages.create(
        model="open",
        max_tokens=200,
        tools=[WEATHER],
        tool_choice={"type": "auto"},
        messages=[{"role": "user", "content": "Weather in Paris?"}],
    )
    assert first.stop_reason == "tool_use"
    [use] = first.content
    assert (use.type, use.id, use.name, use.input) == ("tool_use", "call_w1", "get_weather", {"city": "Paris"})
    assert upstream.received[-1].body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": WEATHER["input_schema"],
                "description": "Weather for a city",
            },
        }
    ]
    assert upstream.received[-1].body["tool_choice"] == "auto"

    upstream.reset(content="It is sunny in Paris.")
    second = client.messages.create(
        model="open",
        max_tokens=200,
        tools=[WEATHER],
        messages=[
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": [b.model_dump() for b in first.content]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "sunny, 21C"}]},
        ],
    )
    assert second.content[0].text == "It is sunny in Paris." and second.stop_reason == "end_turn"
    sent = upstream.received[-1].body["messages"]
    assert sent[1] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "call_w1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}
        ],
    }
    assert sent[2] == {"role": "tool", "tool_call_id": "call_w1", "content": "sunny, 21C"}


def test_a_failed_tools_result_reaches_a_chat_backend_saying_it_failed(gw, client, upstream, claude):
    """Chat's tool messages have no error flag: the text says it, the call id stays; an
    Anthropic backend gets the flag itself (passed through)."""
    use = {"type": "tool_use", "id": "toolu_w1", "name": "get_weather", "input": {"city": "Paris"}}
    failed = {
        "type": "tool_result",
        "tool_use_id": "toolu_w1",
        "content": "HTTP 503 from the weather API",
        "is_error": True,
    }
    messages = [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": [use]},
        {"role": "user", "content": [failed]},
    ]
    for model in ("open", "claude"):
        client.messages.create(model=model, max_tokens=200, tools=[WEATHER], messages=messages)
    [translated] = upstream.received
    assert translated.body["messages"][2] == {
        "role": "tool",
        "tool_call_id": "toolu_w1",
        "content": "Error: HTTP 503 from the weather API",
    }
    [native] = claude.received
    assert native.body["messages"][2] == {"role": "user", "content": [failed]}


def test_a_streamed_tool_call_arrives_as_input_json_deltas(gw, client, upstream):
    upstream.reset(tool_call=CALL)
    with client.messages.stream(model="open", max_tokens=200, tools=[WEATHER], messages=HELLO) as stream:
        events = list(stream)
        final = stream.get_final_message()
    assert [e.type for e in events if e.type == "content_block_start"] == ["content_block_start"]
    assert any(e.type == "content_block_delta" and e.delta.type == "input_json_delta" for e in events)
    [use] = [b for b in final.content if b.type == "tool_use"]
    assert (use.id, use.name, use.input) == ("call_w1", "get_weather", {"city": "Paris"})
    assert final.stop_reason == "tool_use"


def _answer(client, asked: dict, stream: bool):
    """The final message of `asked`, streamed or not."""
    if stream:
        with client.messages.stream(**asked) as answer:
            return answer.get_final_message()
    return client.messages.create(**asked)


@pytest.mark.parametrize("stream", [False, True])
def test_a_tool_call_the_backend_gave_no_id_gets_one_the_client_can_send_back(gw, client, upstream, claude, stream):
    """Some chat backends leave a tool call's `id` out: the client still gets a tool_use id it
    can answer (relayed as null or "", its next turn was refused), on either kind of backend."""
    upstream.reset(
        tool_call={"type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
    )
    asked = {"model": "open", "max_tokens": 200, "tools": [WEATHER], "messages": HELLO}
    first = _answer(client, asked, stream)
    [use] = first.content
    assert (use.type, use.id, use.input, first.id) == ("tool_use", "toolu_a_0", {"city": "Paris"}, "msg_a")
    upstream.reset()
    history = [
        *HELLO,
        {"role": "assistant", "content": [use.model_dump()]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "sunny"}]},
    ]
    for model in ("open", "claude"):
        answer = client.messages.create(model=model, max_tokens=200, tools=[WEATHER], messages=history)
        assert answer.stop_reason == "end_turn"
    assert upstream.received[-1].body["messages"][1:] == [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "toolu_a_0",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_a_0", "content": "sunny"},
    ]
    [native] = claude.received
    assert native.body["messages"][2]["content"][0]["tool_use_id"] == "toolu_a_0"
    assert len(upstream.received) == 1


@pytest.mark.parametrize("stream", [False, True])
def test_whitespace_before_a_tool_call_is_no_text_block_a_native_backend_would_refuse_back(
    gw, client, upstream, claude, stream
):
    """Qwen on vLLM writes "\n\n" before its tool call: as a text block of its own, the turn
    the client sends back was Anthropic's 400 on a native candidate."""
    upstream.reset(tool_call=CALL, tool_call_content="\n\n")
    asked = {"model": "open", "max_tokens": 200, "tools": [WEATHER], "messages": HELLO}
    first = _answer(client, asked, stream)
    assert [b.type for b in first.content] == ["tool_use"] and first.content[0].id == "call_w1"
    history = [
        *HELLO,
        {"role": "assistant", "content": [b.model_dump() for b in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_w1", "content": "sunny"}]},
    ]
    answer = client.messages.create(model="claude", max_tokens=200, tools=[WEATHER], messages=history)
    assert answer.content[0].text == "Hello from the fake Anthropic."
    [native] = claude.received
    assert [b["type"] for b in native.body["messages"][1]["content"]] == ["tool_use"]


def test_tool_ids_outside_anthropics_alphabet_reach_an_anthropic_backend_inside_it(gw, client, upstream, claude):
    """Kimi's call ids (`functions.get_weather:0`) came back to Anthropic as the client keeps
    them: its 400 ("String should match pattern") on every turn of the conversation after."""
    kimi = "functions.get_weather:0"
    upstream.reset(tool_call={**CALL, "id": kimi})
    first = client.messages.create(model="open", max_tokens=200, tools=[WEATHER], messages=HELLO)
    assert first.content[0].id == kimi  # the client's chat backend gets its own id back
    history = [
        *HELLO,
        {"role": "assistant", "content": [b.model_dump() for b in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": kimi, "content": "sunny"}]},
    ]
    for _ in range(2):
        answer = client.messages.create(model="claude", max_tokens=200, tools=[WEATHER], messages=history)
        assert answer.content[0].text == "Hello from the fake Anthropic."
    sent = [r.body["messages"] for r in claude.received]
    assert len(sent) == 2 and sent[0] == sent[1]  # the same id on every turn
    same = "functions_get_weather_0_" + hashlib.sha256(kimi.encode()).hexdigest()[:12]
    assert (sent[0][1]["content"][0]["id"], sent[0][2]["content"][0]["tool_use_id"]) == (same, same)
    assert history[1]["content"][0]["id"] == kimi  # the client's body as it was


def test_thinking_becomes_reasoning_effort_and_reasoning_comes_back_as_thinking(gw, client, upstream):
    upstream.reset(reasoning="Paris is in France.", content="Bonjour.")
    message = client.messages.create(
        model="open", max_tokens=4000, thinking={"type": "enabled", "budget_tokens": 2048}, messages=HELLO
    )
    assert upstream.received[-1].body["reasoning_effort"] == "low"
    assert [b.type for b in message.content] == ["thinking", "text"]
    assert message.content[0].thinking == "Paris is in France." and message.content[1].text == "Bonjour."

    events = raw_events(
        gw,
        {
            "model": "open",
            "max_tokens": 20000,
            "thinking": {"type": "enabled", "budget_tokens": 16384},
            "messages": HELLO,
        },
    )
    assert upstream.received[-1].body["reasoning_effort"] == "high"
    deltas = [e["delta"]["type"] for n, e in events if n == "content_block_delta"]
    assert deltas[0] == "thinking_delta" and set(deltas[1:]) == {"text_delta"}
    starts = [e["content_block"]["type"] for n, e in events if n == "content_block_start"]
    assert starts == ["thinking", "text"]


def test_a_mid_conversation_system_message_is_user_text_in_place(gw, client, upstream, claude):
    """Claude Code sends one after the first user turn on every request; as a chat system
    message in place, Qwen3.5-3.8's chat templates refused every one of them. Anthropic takes
    it where it is (a `system` turn, which its preserved-thinking guide advises over rewriting
    `system`): a native backend gets the turns as sent."""
    messages = [
        {"role": "user", "content": "Hi"},
        {"role": "system", "content": [{"type": "text", "text": "Mind the repo rules."}]},
        {"role": "user", "content": "Go on."},
    ]
    client.messages.create(model="open", max_tokens=50, messages=messages)
    assert upstream.received[-1].body["messages"] == [{"role": "user", "content": "Hi\nMind the repo rules.\nGo on."}]
    answer = client.messages.create(model="claude", max_tokens=50, messages=messages)
    assert answer.content[0].text == "Hello from the fake Anthropic."
    assert claude.received[-1].body["messages"] == messages


def test_consecutive_turns_of_a_role_reach_a_chat_backend_as_one_turn(gw, client, upstream):
    """Anthropic combines consecutive user or assistant turns into one turn. A chat backend
    gets one message for each run, roles alternating as chat templates demand ("Conversation
    roles must alternate"), the tool call in the message with the text written before it."""
    use = {"type": "tool_use", "id": "toolu_w1", "name": "get_weather", "input": {"city": "Paris"}}
    messages = [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "user", "content": [{"type": "text", "text": "In Celsius."}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Checking the weather."}]},
        {"role": "assistant", "content": [use]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_w1", "content": "21C"}]},
        {"role": "user", "content": "And tomorrow?"},
    ]
    for stream in (False, True):
        answer = client.messages.create(model="open", max_tokens=50, tools=[WEATHER], messages=messages, stream=stream)
        if stream:
            assert [event.type for event in answer][-1] == "message_stop"
        else:
            assert answer.content[0].text == "Hello from the fake upstream."
    assert len(upstream.received) == 2
    for sent in upstream.received:
        assert sent.body["messages"] == [
            {"role": "user", "content": "Weather in Paris?\nIn Celsius."},  # texts joined by lines, as vLLM joins them
            {
                "role": "assistant",
                "content": "Checking the weather.",
                "tool_calls": [
                    {
                        "id": "toolu_w1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "toolu_w1", "content": "21C"},
            {"role": "user", "content": "And tomorrow?"},
        ]


# -- passed through natively ------------------------------------------------------------------------


def test_create_is_passed_through_natively_to_an_anthropic_backend(gw, client, claude, upstream):
    claude.reset(cache_read_tokens=100, cache_creation_tokens=20)
    body = {
        "model": "claude",
        "max_tokens": 300,
        "system": [{"type": "text", "text": "Be brief."}],
        "messages": HELLO,
        "metadata": {"user_id": "u-42"},
    }
    raw = client.messages.with_raw_response.create(
        **body, extra_headers={"anthropic-beta": "interleaved-thinking-2025-05-14"}
    )
    message = raw.parse()
    assert raw.headers["x-gateway-backend"] == "claude"
    assert message.id == "msg_fake01" and message.content[0].text == "Hello from the fake Anthropic."
    usage = message.usage
    assert (usage.input_tokens, usage.cache_read_input_tokens, usage.cache_creation_input_tokens) == (13, 100, 20)
    [sent] = claude.received
    assert sent.body == {**body, "model": "claude-sonnet-4-5"}  # the client's body, the upstream's model id
    # The client's API version and betas, which its body is written for (not the vendor default).
    assert sent.headers["x-api-key"] == KEY
    assert sent.headers["anthropic-version"] == raw.http_request.headers["anthropic-version"] != "2023-06-01"
    assert sent.headers["anthropic-beta"] == "interleaved-thinking-2025-05-14"
    assert "authorization" not in sent.headers and upstream.received == []
    [row] = ledger(gw, 1)
    assert (row["endpoint"], row["backend"], row["model"]) == ("messages", "claude", "anthropic/claude-sonnet-4.5")
    assert (row["prompt_tokens"], row["cached_tokens"], row["cache_write_tokens"]) == (13 + 100 + 20, 100, 20)
    assert row["completion_tokens"] == 9 and row["estimated"] is False
    # 13 fresh at 3.0, 100 cache reads at input price (no cached price set), 20 writes at 1.25x, 9 out at 15.0.
    assert row["cost"] == pytest.approx((13 * 3.0 + 100 * 3.0 + 20 * 3.75 + 9 * 15.0) / 1e6)


def test_a_native_stream_is_relayed_byte_for_byte(gw, client, claude):
    claude.reset(
        thinking="Let me think.", tool_use={"id": "toolu_01", "name": "get_weather", "input": {"city": "Paris"}}
    )
    events = raw_events(gw, {"model": "claude", "max_tokens": 2000, "tools": [WEATHER], "messages": HELLO})
    assert [n for n, _ in events] == [
        "message_start",
        "ping",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        *["content_block_delta"] * 5,
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert [e["delta"]["type"] for n, e in events if n == "content_block_delta"][:2] == [
        "thinking_delta",
        "signature_delta",
    ]
    assert claude.received[-1].body["stream"] is True and claude.received[-1].body["model"] == "claude-sonnet-4-5"

    with client.messages.stream(model="claude", max_tokens=2000, tools=[WEATHER], messages=HELLO) as stream:
        final = stream.get_final_message()
    assert [b.type for b in final.content] == ["thinking", "text", "tool_use"]
    assert final.content[0].signature == "sig-fake-claude-sonnet-4-5"
    assert (final.content[2].id, final.content[2].input) == ("toolu_01", {"city": "Paris"})
    rows = ledger(gw, 2)
    assert [(r["endpoint"], r["prompt_tokens"], r["completion_tokens"], r["estimated"]) for r in rows] == [
        ("messages", 13, 9, False)
    ] * 2


def test_null_input_counts_in_a_native_message_delta_leave_the_prompt_billed(gw, claude):
    # The SDK types message_delta's input and cache counts `int | None`; a null one is no count.
    claude.reset(delta_input_nulls=True, cache_read_tokens=100)
    events = raw_events(gw, {"model": "claude", "max_tokens": 50, "messages": HELLO})
    assert events[-2][1]["usage"]["input_tokens"] is None  # relayed as sent
    headers = {"authorization": "Bearer sk-test"}
    body = {"model": "claude", "messages": HELLO, "stream": True, "stream_options": {"include_usage": True}}
    with httpx.stream("POST", gw.url + "/v1/chat/completions", json=body, headers=headers) as response:
        lines = [line for line in response.iter_lines() if line.startswith("data: {")]
    assert json.loads(lines[-1][6:])["usage"]["prompt_tokens"] == 113
    rows = ledger(gw, 2)
    assert [(r["endpoint"], r["prompt_tokens"], r["completion_tokens"]) for r in rows] == [
        ("messages", 113, 9),
        ("chat", 113, 9),
    ]


# -- fallback across both kinds of backend ------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_an_overloaded_native_backend_falls_back_to_a_translated_one(gw, client, claude, upstream, stream):
    claude.reset(status=529, error_type="overloaded_error", error_message="Overloaded")
    if stream:
        with client.messages.stream(model="native-first", max_tokens=50, messages=HELLO) as s:
            message = s.get_final_message()
    else:
        message = client.messages.create(model="native-first", max_tokens=50, messages=HELLO)
    assert message.content[0].text.strip() == "Hello from the fake upstream."
    assert len(claude.received) == 1 and len(upstream.received) == 1
    assert claude.received[0].body["messages"] == HELLO  # native
    assert upstream.received[0].body["messages"] == [{"role": "user", "content": "Say hello."}]  # chat
    rows = ledger(gw, 2)
    assert [(r["backend"], r["status"], r["error"], r["final"], r["endpoint"]) for r in rows] == [
        ("claude", 529, "http_529", False, "messages"),
        ("compat", 200, None, True, "messages"),
    ]


def test_a_native_stream_failing_before_content_falls_back_too(gw, client, claude, upstream):
    claude.reset(stream_error_before_content=True)
    with client.messages.stream(model="native-first", max_tokens=50, messages=HELLO) as s:
        text = "".join(s.text_stream)
    assert text == "Hello from the fake upstream. "
    assert len(claude.received) == 1 and len(upstream.received) == 1


def test_a_failing_chat_backend_falls_back_to_the_native_one(gw, client, claude, upstream):
    upstream.reset(status=503)
    message = client.messages.create(model="chat-first", max_tokens=50, messages=HELLO)
    assert message.id == "msg_fake01" and message.content[0].text == "Hello from the fake Anthropic."
    assert len(upstream.received) == 1 and len(claude.received) == 1
    assert claude.received[0].body == {"model": "claude-sonnet-4-5", "max_tokens": 50, "messages": HELLO}


def test_thinking_another_backend_wrote_is_not_replayed_to_an_anthropic_backend(gw, client, claude, upstream):
    """A chat backend's reasoning reaches the client as a thinking block with an empty
    signature, and the client sends it back. Anthropic refuses any block it did not sign
    ("Invalid `signature` in `thinking` block"), so the first turn a route sent to it after
    another backend answered failed, and every turn after it."""
    thinking = {"type": "enabled", "budget_tokens": 2048}
    upstream.reset(reasoning="Paris is in France.", content="Bonjour.")
    first = client.messages.create(model="open", max_tokens=4000, thinking=thinking, messages=HELLO)
    assert [(b.type, getattr(b, "signature", None)) for b in first.content] == [("thinking", ""), ("text", None)]
    history = [*HELLO, {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]}]
    history.append({"role": "user", "content": "And in German?"})
    upstream.reset(status=503)
    answer = client.messages.create(model="chat-first", max_tokens=4000, thinking=thinking, messages=history)
    assert answer.content[0].text == "Hello from the fake Anthropic."
    sent = claude.received[-1].body
    assert sent["messages"][1] == {"role": "assistant", "content": [{"type": "text", "text": "Bonjour."}]}
    assert sent["thinking"] == thinking  # the last assistant turn called no tool: thinking stays on

    # Mid tool use: without the unsigned block the last assistant turn has no thinking before
    # its tool_use, which Anthropic refuses while thinking is on: the turn goes without it.
    call = {"type": "tool_use", "id": "toolu_w1", "name": "get_weather", "input": {"city": "Paris"}}
    unsigned = {"type": "thinking", "thinking": "Need the weather.", "signature": ""}
    result = {"type": "tool_result", "tool_use_id": "toolu_w1", "content": "21C"}
    turns = [*HELLO, {"role": "assistant", "content": [unsigned, call]}, {"role": "user", "content": [result]}]
    for stream in (False, True):
        made = client.messages.create(
            model="chat-first", max_tokens=4000, thinking=thinking, tools=[WEATHER], messages=turns, stream=stream
        )
        if stream:
            assert [event.type for event in made][-1] == "message_stop"
        else:
            assert made.content[0].text == "Hello from the fake Anthropic."
        sent = claude.received[-1].body
        assert sent["messages"][1] == {"role": "assistant", "content": [call]}
        assert "thinking" not in sent and sent["tools"] == [WEATHER]

    # A block Anthropic signed goes back as it came, and thinking with it.
    signed = {"type": "thinking", "thinking": "Need the weather.", "signature": "sig-fake-claude-sonnet-4-5"}
    turns[1] = {"role": "assistant", "content": [signed, call]}
    client.messages.create(model="claude", max_tokens=4000, thinking=thinking, tools=[WEATHER], messages=turns)
    assert claude.received[-1].body == {
        "model": "claude-sonnet-4-5",
        "max_tokens": 4000,
        "thinking": thinking,
        "tools": [WEATHER],
        "messages": turns,
    }


def test_a_turn_of_another_backends_thinking_alone_goes_whole_to_an_anthropic_backend(gw, client, claude, upstream):
    """A chat backend that spent its answer reasoning answers a thinking block alone. Left
    out for Anthropic, the turn was `content: []`, Anthropic's 400 ("all messages must have
    non-empty content except for the optional final assistant message"): the turn goes, and
    the user turns either side of it are one."""
    thinking = {"type": "enabled", "budget_tokens": 2048}
    upstream.reset(reasoning="Thinking about hello.", content="")
    first = client.messages.create(model="open", max_tokens=4000, thinking=thinking, messages=HELLO)
    assert [(b.type, getattr(b, "signature", None)) for b in first.content] == [("thinking", "")]
    history = [*HELLO, {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]}]
    history.append({"role": "user", "content": "Go on."})
    upstream.reset(status=503)
    answer = client.messages.create(model="chat-first", max_tokens=4000, thinking=thinking, messages=history)
    assert answer.content[0].text == "Hello from the fake Anthropic."
    assert claude.received[-1].body == {
        "model": "claude-sonnet-4-5",
        "max_tokens": 4000,
        "thinking": thinking,
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "Say hello."}, {"type": "text", "text": "Go on."}]}
        ],
    }
    assert len(claude.received) == 1


def test_thinking_another_claude_model_signed_is_asked_again_without_it(gw, client, claude):
    """Signatures are model-bound: a turn Opus answered, continued on Sonnet (a fallback), was
    Anthropic's 400 for the block, and no candidate would take the request. Asked once more,
    on the same backend, without the thinking history."""
    thinking = {"type": "enabled", "budget_tokens": 2048}
    call = {"type": "tool_use", "id": "toolu_w1", "name": "get_weather", "input": {"city": "Paris"}}
    opus = {"type": "thinking", "thinking": "Need the weather.", "signature": "sig-fake-claude-opus-4-5"}
    result = {"type": "tool_result", "tool_use_id": "toolu_w1", "content": "21C"}
    turns = [*HELLO, {"role": "assistant", "content": [opus, call]}, {"role": "user", "content": [result]}]
    answer = client.messages.create(model="claude", max_tokens=4000, thinking=thinking, tools=[WEATHER], messages=turns)
    assert answer.content[0].text == "Hello from the fake Anthropic."
    first, second = (seen.body for seen in claude.received)
    assert first["messages"] == turns and first["thinking"] == thinking
    assert second["messages"][1] == {"role": "assistant", "content": [call]} and "thinking" not in second
    row = ledger(gw, 1)[-1]
    assert (row["status"], row["attempts"], row["backend"]) == (200, 1, "claude")
    assert gw.log().count("claude refused the thinking blocks it was sent back (another model's signature)") == 1
    # Any other 400 is the client's, relayed at once (asked once).
    claude.reset(status=400, error_type="invalid_request_error", error_message="max_tokens: too large")
    turns[1] = {"role": "assistant", "content": [{**opus, "signature": "sig-fake-claude-sonnet-4-5"}, call]}
    with pytest.raises(anthropic.BadRequestError, match="max_tokens: too large"):
        client.messages.create(model="claude", max_tokens=4000, thinking=thinking, tools=[WEATHER], messages=turns)
    assert len(claude.received) == 1


BINDING_BETA = "thinking-binding-controls-2026-08-01"
DROPPED = "claude refused the thinking blocks it was sent back (bound to a different conversation): asked again with drop_block"


def _agent_turns(client, claude, systems: list[str], thinking: dict, beta: str) -> list:
    """A tool loop of `len(systems)` turns against the fake Anthropic's preserved thinking,
    each sent with that turn's system prompt and the whole history as the API returned it:
    the answers, the requests the upstream saw for each turn, and the history after them."""
    claude.reset(bind_prefix=True, thinking="Need the weather.", content="Checking.", tool_use=None)
    history: list = [{"role": "user", "content": "Weather in Paris, then Rome, then Oslo?"}]
    answers, seen = [], []
    for n, system in enumerate(systems):
        claude.behaviour.tool_use = {"id": f"toolu_{n}", "name": "get_weather", "input": {"city": "Paris"}}
        before = len(claude.received)
        raw = client.messages.with_raw_response.create(
            model="claude",
            max_tokens=4000,
            system=system,
            thinking=thinking,
            tools=[WEATHER],
            messages=history,
            extra_headers={"anthropic-beta": beta},
        )
        answer = json.loads(raw.http_response.content)
        answers.append(answer)
        seen.append(claude.received[before:])
        result = {"type": "tool_result", "tool_use_id": f"toolu_{n}", "content": "21C"}
        history = [*history, {"role": "assistant", "content": answer["content"]}, {"role": "user", "content": [result]}]
    return [answers, seen, history]


def test_thinking_bound_to_a_prefix_the_client_changed_is_dropped_by_anthropic_and_kept_after(gw, client, claude):
    """Claude's newer models bind each thinking block to what came before it; a client that
    rewrites its system prompt (today's date) makes the blocks before the change fail the
    prefix check, a 400 that says "Invalid `signature` in `thinking` block. The block is bound
    to a different conversation". Leaving every thinking block out (as for another model's
    signature) bound the answer's own block to a history without them, so every later turn,
    which sends them all back, was refused and asked again. Asked again with `drop_block`
    under its beta, Anthropic drops just the stale blocks; the backend remembers the refused
    one, and the next turn asks for `drop_block` up front: one request, the new block kept."""
    thinking = {"type": "enabled", "budget_tokens": 2048}
    beta = "context-management-2025-06-27"  # the client's own beta, kept beside the gateway's
    days = ["Today is Monday.", "Today is Monday.", "Today is Tuesday.", "Today is Tuesday."]
    answers, seen, history = _agent_turns(client, claude, days, thinking, beta)
    assert [len(requests) for requests in seen] == [1, 1, 2, 1]
    assert all(a["content"][0]["type"] == "thinking" and a["content"][1]["text"] == "Checking." for a in answers)
    refused, asked = (r for r in seen[2])
    assert refused.body["thinking"] == thinking and refused.headers["anthropic-beta"] == beta
    dropping = {**thinking, "block_binding": {"prefix_mismatch_behavior": "drop_block"}}
    assert asked.body["thinking"] == dropping and asked.body["messages"] == refused.body["messages"]
    assert asked.headers["anthropic-beta"] == f"{beta},{BINDING_BETA}"
    stale = [
        {"type": "thinking_dropped", "path": f"messages.{i}.content.0", "reason": "prefix_binding_mismatch"}
        for i in (1, 3)
    ]
    assert answers[2]["input_transformations"] == stale
    # The next turn carries the refused block again: drop_block asked up front, and the block
    # written after the change (messages.5) passes the check.
    (last,) = seen[3]
    assert last.body["thinking"] == dropping and last.headers["anthropic-beta"] == f"{beta},{BINDING_BETA}"
    assert answers[3]["input_transformations"] == stale
    assert "input_transformations" not in answers[0] and "input_transformations" not in answers[1]
    # Streamed, as Claude Code asks: one request too, and message_start says what was dropped.
    turn = {"model": "claude", "max_tokens": 4000, "system": days[-1], "thinking": thinking, "tools": [WEATHER]}
    events = raw_events(gw, {**turn, "messages": history})
    assert events[0][1]["message"]["input_transformations"] == stale and events[-1][0] == "message_stop"
    assert claude.received[-1].body["thinking"] == dropping and len(claude.received) == 6
    rows = ledger(gw, 5)
    assert [(r["status"], r["attempt"], r["backend"]) for r in rows] == [(200, 1, "claude")] * 5
    assert gw.log().count(DROPPED) == 1


def test_thinking_bound_to_a_changed_prefix_is_refused_when_the_client_chose_errors(gw, client, claude):
    """A client that sets `prefix_mismatch_behavior` itself gets what it chose: with
    `"error"`, Anthropic's 400, asked once (it was asked again without any thinking)."""
    thinking = {"type": "enabled", "budget_tokens": 2048, "block_binding": {"prefix_mismatch_behavior": "error"}}
    with pytest.raises(anthropic.BadRequestError, match="bound to a different conversation") as refused:
        _agent_turns(client, claude, ["Today is Monday.", "Today is Tuesday."], thinking, BINDING_BETA)
    assert refused.value.body["error"]["type"] == "invalid_request_error"
    assert len(claude.received) == 2  # the first turn, then the refused one, once
    assert claude.received[-1].body["thinking"] == thinking
    assert gw.log().count("refused the thinking blocks it was sent back") == 0


def test_a_thinking_type_newer_than_the_gateway_reaches_a_native_backend_as_sent(gw, client, claude, upstream):
    """Anthropic adds thinking types with its models (`between_tools`): passed on, not
    refused, and a chat backend gets no effort for one."""
    thinking = {"type": "a_future_kind"}
    client.messages.create(model="claude", max_tokens=50, thinking=thinking, messages=HELLO)
    assert claude.received[-1].body["thinking"] == thinking
    client.messages.create(model="open", max_tokens=50, thinking=thinking, messages=HELLO)
    assert "reasoning_effort" not in upstream.received[-1].body


def test_a_tool_use_turn_no_backend_thought_for_is_asked_again_without_thinking(gw, client, claude):
    """A chat backend that did not reason answered the tool call: no thinking block to send
    back, and Anthropic refuses the next turn while thinking is enabled ("a final `assistant`
    message must start with a thinking block"). Asked once more without `thinking`."""
    thinking = {"type": "enabled", "budget_tokens": 2048}
    call = {"type": "tool_use", "id": "toolu_w1", "name": "get_weather", "input": {"city": "Paris"}}
    result = {"type": "tool_result", "tool_use_id": "toolu_w1", "content": "21C"}
    turns = [*HELLO, {"role": "assistant", "content": [call]}, {"role": "user", "content": [result]}]
    answer = client.messages.create(model="claude", max_tokens=4000, thinking=thinking, tools=[WEATHER], messages=turns)
    assert answer.content[0].text == "Hello from the fake Anthropic."
    first, second = (seen.body for seen in claude.received)
    assert first["thinking"] == thinking and first["messages"] == turns
    assert "thinking" not in second and second["messages"] == turns
    assert gw.log().count("claude refused the thinking blocks it was sent back (a tool-use turn without one)") == 1


# -- count_tokens -----------------------------------------------------------------------------------


def test_count_tokens_is_the_gateways_estimate(gw, client, upstream, claude):
    body = {"model": "open", "system": "Be brief.", "messages": HELLO, "tools": [WEATHER]}
    counted = client.messages.count_tokens(**body)
    assert counted.input_tokens == estimate_prompt_tokens(messages_to_chat({**body, "max_tokens": 1}))
    assert counted.input_tokens > 0 and upstream.received == [] and claude.received == []
    with pytest.raises(anthropic.AuthenticationError):
        anthropic.Anthropic(base_url=gw.url, api_key="sk-wrong", max_retries=0).messages.count_tokens(**body)


def test_count_tokens_refuses_an_embedding_model_as_messages_does(start_gateway, upstream):
    config = f"""
backends:
  compat:
    type: openai
    base_url: {upstream.base_url}
    models:
      baai/bge-m3: {{kind: embedding, dimensions: 8}}
"""
    gw = start_gateway(config)
    client = anthropic.Anthropic(base_url=gw.url, api_key="unused", max_retries=0)
    with pytest.raises(anthropic.BadRequestError) as counted:
        client.messages.count_tokens(model="baai/bge-m3", messages=HELLO)
    with pytest.raises(anthropic.BadRequestError) as created:
        client.messages.create(model="baai/bge-m3", max_tokens=10, messages=HELLO)
    # The same refusal, in the same words; each names its own request.
    assert counted.value.body["error"] == created.value.body["error"]
    assert counted.value.body["request_id"] != created.value.body["request_id"]
    assert "is an embedding model" in counted.value.body["error"]["message"]
    assert upstream.received == []


def test_count_tokens_refuses_a_model_messages_would_refuse(gw, client, upstream, claude):
    with pytest.raises(anthropic.NotFoundError) as caught:
        client.messages.count_tokens(model="nope", messages=HELLO)
    assert caught.value.body["error"]["type"] == "not_found_error"
    assert "nope" in caught.value.body["error"]["message"]
    with pytest.raises(anthropic.NotFoundError):
        client.messages.create(model="nope", max_tokens=10, messages=HELLO)  # as here
    empty = httpx.post(gw.url + "/v1/messages/count_tokens", content=b"", headers={"x-api-key": "sk-test"})
    assert (empty.status_code, empty.json()["error"]["message"]) == (
        400,
        "The request body is empty; send a JSON object with `model` and `messages`.",
    )
    assert upstream.received == [] and claude.received == []


# -- errors in Anthropic's shape ----------------------------------------------------------------------


def test_a_wrong_key_is_an_authentication_error_and_a_bearer_token_works(gw, upstream):
    wrong = anthropic.Anthropic(base_url=gw.url, api_key="sk-wrong", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as caught:
        wrong.messages.create(model="open", max_tokens=10, messages=HELLO)
    assert caught.value.status_code == 401
    assert caught.value.body["type"] == "error" and caught.value.body["error"]["type"] == "authentication_error"
    assert upstream.received == []
    bearer = anthropic.Anthropic(base_url=gw.url, auth_token="sk-test", max_retries=0)
    assert bearer.messages.create(model="open", max_tokens=10, messages=HELLO).content[0].text


def test_a_base_url_ending_in_v1_gets_a_404_that_says_to_drop_it(gw, upstream):
    """The SDK (and Claude Code) append /v1/messages themselves; a base URL copied from the
    OpenAI snippet, ending in /v1, reached /v1/v1/messages and got only "Unknown path"."""
    doubled = anthropic.Anthropic(base_url=gw.url + "/v1", api_key="sk-test", max_retries=0)
    with pytest.raises(anthropic.NotFoundError) as caught:
        doubled.messages.create(model="open", max_tokens=10, messages=HELLO)
    message = caught.value.body["error"]["message"]
    assert message == (
        "Unknown path /v1/v1/messages. The client adds /v1 itself: "
        f"set its base URL to the gateway's root, without /v1 ({gw.url})."
    )
    assert caught.value.body["type"] == "error" and caught.value.body["error"]["type"] == "not_found_error"
    assert upstream.received == []


def test_a_wrong_path_or_method_under_messages_is_refused_in_anthropics_shape(gw, upstream):
    headers = {"x-api-key": "sk-test", "anthropic-version": "2023-06-01"}
    wrong_path = httpx.post(gw.url + "/v1/messages/nope", json={}, headers=headers)
    wrong_method = httpx.get(gw.url + "/v1/messages", headers=headers)
    elsewhere = httpx.post(gw.url + "/v1/nope", json={}, headers=headers)
    # Each names its request as Anthropic's errors do, in the body and the `request-id` header
    # (a walkthrough found these without either, unlike /v1/messages' own).
    path_id, method_id = wrong_path.headers["request-id"], wrong_method.headers["request-id"]
    assert (wrong_path.status_code, wrong_path.json()) == (
        404,
        {
            "type": "error",
            "error": {"type": "not_found_error", "message": "Unknown path /v1/messages/nope."},
            "request_id": path_id,
        },
    )
    assert (wrong_method.status_code, wrong_method.json()) == (
        405,
        {
            "type": "error",
            "error": {"type": "invalid_request_error", "message": "GET is not allowed on /v1/messages."},
            "request_id": method_id,
        },
    )
    assert wrong_method.headers["allow"] == "POST"  # a 405 names the methods there are (RFC 9110)
    assert (wrong_path.headers["x-request-id"], wrong_method.headers["x-request-id"]) == (path_id, method_id)
    assert path_id != method_id
    assert elsewhere.status_code == 404 and elsewhere.json()["error"]["code"] == "not_found"  # OpenAI's shape
    # A stored response's path takes no POST (`/v1/responses/compact`, OpenAI's compaction, is
    # its own 404: tests/e2e/test_responses_e2e.py).
    posted = httpx.post(gw.url + "/v1/responses/resp_1", json={}, headers={"authorization": "Bearer sk-test"})
    assert (posted.status_code, posted.json()["error"]["code"]) == (405, "method_not_allowed")
    assert posted.headers["allow"] == "DELETE, GET, HEAD"
    assert upstream.received == []


def test_the_gateways_own_rate_limit_is_a_rate_limit_error_with_retry_after(gw, upstream):
    limited = anthropic.Anthropic(base_url=gw.url, api_key="sk-limited", max_retries=0)
    limited.messages.create(model="open", max_tokens=10, messages=HELLO)
    with pytest.raises(anthropic.RateLimitError) as caught:
        limited.messages.create(model="open", max_tokens=10, messages=HELLO)
    assert caught.value.status_code == 429 and caught.value.body["error"]["type"] == "rate_limit_error"
    assert int(caught.value.response.headers["retry-after"]) >= 1
    assert len(upstream.received) == 1


def test_every_backend_rate_limited_is_a_rate_limit_error(gw, client, upstream):
    upstream.reset(status=429, headers={"retry-after": "30"})
    with pytest.raises(anthropic.RateLimitError) as caught:
        client.messages.create(model="open", max_tokens=10, messages=HELLO)
    assert caught.value.response.headers["retry-after"] == "30" and len(upstream.received) == 1


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "open", "max_tokens": None, "messages": HELLO}, "max_tokens: Field required"),
        ({"model": "open", "max_tokens": "10", "messages": HELLO}, "max_tokens: Input should be a valid integer"),
        ({"model": "open", "max_tokens": 0, "messages": HELLO}, "max_tokens: Input should be greater than or equal"),
        ({"model": 7, "max_tokens": 10, "messages": HELLO}, "model: Input should be a valid string"),
        ({"model": "open", "max_tokens": 10, "messages": []}, "messages"),
        ({"model": "open", "max_tokens": 10, "messages": [{"role": "robot", "content": "x"}]}, "messages.0.role"),
        # "false" is not false: streaming on a truthy string would answer SSE to a client that asked JSON.
        (
            {"model": "open", "max_tokens": 10, "messages": HELLO, "stream": "false"},
            "stream: Input should be a valid boolean",
        ),
        (
            {"model": "open", "max_tokens": 10, "messages": HELLO, "temperature": "hot"},
            "temperature: Input should be a valid number",
        ),
        (
            {"model": "open", "max_tokens": 10, "messages": HELLO, "top_k": 1.5},
            "top_k: Input should be a valid integer",
        ),
        # Anthropic's bounds, which a chat backend does not have (its temperature goes to 2), and
        # the same 400 before a native backend is asked.
        *(
            (
                {"model": route, "max_tokens": 10, "messages": HELLO, "temperature": 1.5},
                "temperature: range: 0..1",
            )
            for route in ("open", "claude")
        ),
        (
            {
                "model": "open",
                "max_tokens": 4096,
                "messages": HELLO,
                "thinking": {"type": "enabled", "budget_tokens": 512},
            },
            "thinking.budget_tokens: Input should be greater than or equal to 1024.",
        ),
        (
            {"model": "claude", "max_tokens": 10, "messages": HELLO, "tools": [{"name": "get_weather"}]},
            "tools.0.input_schema: Field required.",
        ),
        (
            {"model": "open", "max_tokens": 10, "messages": [{"role": "user", "content": []}]},
            "messages.0: all messages must have non-empty content except for the optional final assistant message",
        ),
    ],
)
def test_bad_input_is_an_invalid_request_error_and_reaches_no_backend(gw, client, upstream, claude, body, param):
    with pytest.raises(anthropic.BadRequestError) as caught:
        # Sent as given (the SDK would refuse some of these bodies before sending them).
        client.messages.create(model="x", max_tokens=1, messages=HELLO, extra_body=body)
    assert caught.value.status_code == 400 and caught.value.body["error"]["type"] == "invalid_request_error"
    assert caught.value.body["error"]["message"].startswith(param)
    assert upstream.received == [] and claude.received == []


def _use(tool_use_id: str) -> dict:
    return {"type": "tool_use", "id": tool_use_id, "name": "get_weather", "input": {"city": "Paris"}}


def _result(tool_use_id: str) -> dict:
    return {"type": "tool_result", "tool_use_id": tool_use_id, "content": "sunny"}


@pytest.mark.parametrize("route", ["open", "claude"])
def test_tool_uses_and_results_that_do_not_pair_up_are_anthropics_400_before_any_backend(
    gw, client, upstream, claude, route
):
    """Translated, they are tool calls no tool message answers or a tool message answering no
    call, which chat backends refuse with an opaque 400; Anthropic answers these 400s itself,
    so a native backend is not asked either. A tool_use in the last turn (a prefill) stands."""
    ask = {"role": "user", "content": "Weather in Paris?"}
    asked = {"role": "assistant", "content": [{"type": "text", "text": "Checking."}, _use("toolu_a"), _use("toolu_b")]}
    no_result = (
        "messages.1: `tool_use` ids were found without `tool_result` blocks immediately after: {}. Each `tool_use` "
        "block must have a corresponding `tool_result` block in the next message."
    )
    no_use = (
        "messages.{}: unexpected `tool_use_id` found in `tool_result` blocks: {}. Each `tool_result` block must "
        "have a corresponding `tool_use` block in the previous message."
    )
    cases = [
        ([ask, asked, {"role": "user", "content": [_result("toolu_a")]}], no_result.format("toolu_b")),
        ([ask, asked, {"role": "user", "content": "Never mind."}], no_result.format("toolu_a, toolu_b")),
        ([{"role": "user", "content": [_result("toolu_x")]}], no_use.format("0.content.0", "toolu_x")),
        (
            [ask, asked, {"role": "user", "content": [_result("toolu_a"), _result("toolu_b"), _result("toolu_x")]}],
            no_use.format("2.content.2", "toolu_x"),
        ),
    ]
    for stream in (False, True):
        for messages, message in cases:
            with pytest.raises(anthropic.BadRequestError) as caught:
                client.messages.create(model=route, max_tokens=50, tools=[WEATHER], messages=messages, stream=stream)
            body = caught.value.body
            assert body == {
                "type": "error",
                "error": {"type": "invalid_request_error", "message": message},
                "request_id": caught.value.response.headers["request-id"],
            }
    for messages, message in cases:  # count_tokens answers the same 400s (inspect_ai#3108 quotes Anthropic's)
        with pytest.raises(anthropic.BadRequestError) as caught:
            client.messages.count_tokens(model=route, tools=[WEATHER], messages=messages)
        assert caught.value.body["error"] == {"type": "invalid_request_error", "message": message}
    assert upstream.received == [] and claude.received == []
    prefill = {"model": route, "tools": [WEATHER], "messages": [ask, asked]}
    counted = client.messages.count_tokens(**prefill).input_tokens
    assert counted == estimate_prompt_tokens(messages_to_chat({**prefill, "max_tokens": 1}))
    client.messages.create(model=route, max_tokens=50, tools=[WEATHER], messages=[ask, asked])  # a prefill
    answered = [ask, asked, {"role": "user", "content": [_result("toolu_b"), _result("toolu_a")]}]
    client.messages.create(model=route, max_tokens=50, tools=[WEATHER], messages=answered)
    assert (len(upstream.received), len(claude.received)) == ((2, 0) if route == "open" else (0, 2))


def test_a_body_past_the_limit_is_anthropics_request_too_large(gw, upstream):
    big = {"model": "open", "max_tokens": 10, "messages": [{"role": "user", "content": "x" * (9 << 20)}]}
    answer = httpx.post(gw.url + "/v1/messages", json=big, headers={"x-api-key": "sk-test"}, timeout=30)
    assert answer.status_code == 413
    assert answer.json()["type"] == "error" and answer.json()["error"]["type"] == "request_too_large"
    assert upstream.received == []


def test_a_request_no_candidate_can_take_is_an_invalid_request_not_overloaded(gw, client, upstream):
    """Hostile testing: every candidate refused for what the request asks (here a price
    ceiling under every price) was 503, which this ingress says as 529 overloaded_error, and
    the SDK (and Claude Code) retried what no retry can serve."""
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(
            model="open", max_tokens=10, messages=HELLO, extra_body={"provider": {"max_price": {"prompt": 0.01}}}
        )
    assert caught.value.status_code == 400 and caught.value.body["error"]["type"] == "invalid_request_error"
    assert "over the ceiling" in caught.value.body["error"]["message"]
    assert upstream.received == []


def test_no_backend_available_is_overloaded_529(gw, client):
    with pytest.raises(anthropic.InternalServerError) as caught:
        client.messages.create(model="offline", max_tokens=10, messages=HELLO)
    assert caught.value.status_code == 529 and caught.value.body["error"]["type"] == "overloaded_error"


def test_a_failing_backend_is_an_api_error(gw, client, upstream):
    upstream.reset(status=500)
    with pytest.raises(anthropic.InternalServerError) as caught:
        client.messages.create(model="open", max_tokens=10, messages=HELLO)
    assert caught.value.status_code == 502 and caught.value.body["error"]["type"] == "api_error"
    assert len(upstream.received) == 2  # a 500 is asked once more on the same candidate (issue 12)


def test_an_openai_compatible_server_that_serves_messages_gets_them_natively(start_gateway, upstream):
    """vLLM declares `messages` by default: the Messages body goes to its /v1/messages with its
    Bearer key; the same model on a backend whose `apis` leave it out gets the chat translation."""
    vllm = FakeAnthropic("sk-vllm-123456", accept_bearer=True).start()
    try:
        config = f"""
backends:
  vllm:
    type: vllm
    base_url: {vllm.base_url}
    api_key: sk-vllm-123456
    timeout_s: 5
    models:
      qwen/qwen3-coder: {{upstream_id: Qwen/Qwen3-Coder}}
  plain:
    type: vllm
    apis: [chat, completions, embeddings]
    base_url: {upstream.base_url}
    timeout_s: 5
    models:
      qwen/qwen3-coder: {{upstream_id: Qwen/Qwen3-Coder}}
routes:
  code: {{strategy: ordered, models: [qwen/qwen3-coder]}}
"""
        gw = start_gateway(config, env=ENV)
        client = anthropic.Anthropic(base_url=gw.url, api_key="sk-test", max_retries=0)
        raw = client.messages.with_raw_response.create(model="code", max_tokens=20, messages=HELLO)
        assert raw.parse().id == "msg_fake01" and raw.headers["x-gateway-backend"] == "vllm"
        [sent] = vllm.received
        assert sent.body == {"model": "Qwen/Qwen3-Coder", "max_tokens": 20, "messages": HELLO}
        assert sent.headers["authorization"] == "Bearer sk-vllm-123456" and "x-api-key" not in sent.headers
        assert sent.headers["anthropic-version"] == raw.http_request.headers["anthropic-version"]
        assert upstream.received == []

        vllm.reset(status=503, error_type="overloaded_error")
        message = client.messages.create(model="code", max_tokens=20, messages=HELLO)
        assert message.content[0].text == "Hello from the fake upstream."
        assert len(vllm.received) == 1 and len(upstream.received) == 1
        assert upstream.received[0].body["messages"] == [{"role": "user", "content": "Say hello."}]
    finally:
        vllm.stop()


def test_a_translated_stream_without_upstream_usage_ends_with_an_estimate(gw, client, upstream):
    upstream.reset(send_usage=False)
    with client.messages.stream(model="open", max_tokens=50, messages=HELLO) as stream:
        start = next(iter(stream))
        final = stream.get_final_message()
    assert final.stop_reason == "end_turn" and final.usage.output_tokens > 0
    # The cache counts are there from message_start on, as in Anthropic's streams (they were
    # None in the SDK's message until the end, and after it too with no usage chunk).
    assert start.type == "message_start" and start.message.usage.cache_read_input_tokens == 0
    assert (final.usage.cache_read_input_tokens, final.usage.cache_creation_input_tokens) == (0, 0)
    [row] = ledger(gw, 1)
    assert row["estimated"] is True and row["endpoint"] == "messages" and row["status"] == 200


def test_a_native_stream_that_breaks_mid_answer_ends_with_an_error_event(gw, claude):
    claude.reset(break_after_events=4)  # message_start, ping, content_block_start, one delta
    headers = {"x-api-key": "sk-test", "anthropic-version": "2023-06-01"}
    body = {"model": "claude", "max_tokens": 50, "messages": HELLO, "stream": True}
    with httpx.stream("POST", gw.url + "/v1/messages", json=body, headers=headers) as response:
        text = response.read().decode()
    blocks = [b for b in text.split("\n\n") if b]
    assert [b.split("\n")[0] for b in blocks] == [
        "event: message_start",
        "event: ping",
        "event: content_block_start",
        "event: content_block_delta",
        "event: error",
    ]
    assert json.loads(blocks[-1].split("data: ", 1)[1])["error"]["type"] == "api_error"
    [row] = ledger(gw, 1)
    assert (row["status"], row["endpoint"], row["backend"]) == (502, "messages", "claude")


def test_max_tokens_is_a_ceiling_capped_to_what_each_candidate_can_produce(gw, client, claude, upstream):
    """Claude Code asks 32000-128000 whatever the model: never a reason to refuse a backend."""
    client.messages.create(model="open", max_tokens=128000, messages=HELLO)
    assert upstream.received[-1].body["max_tokens"] == 65536  # the offer's max_output_tokens
    client.messages.create(model="claude", max_tokens=128000, messages=HELLO)
    assert claude.received[-1].body["max_tokens"] == 64000  # natively too
    client.messages.create(model="open", max_tokens=300, messages=HELLO)
    assert upstream.received[-1].body["max_tokens"] == 300  # below every cap: as asked
    # A small context: what is left of it after the prompt's estimate.
    body = {"model": "small", "max_tokens": 5000, "messages": HELLO}
    client.messages.create(**body)
    prompt = estimate_prompt_tokens(messages_to_chat(body))
    assert upstream.received[-1].body["max_tokens"] == 2000 - prompt


# Content only Anthropic's API takes: no chat form, yet a native candidate serves it as is.
WEB_SEARCH = {"type": "web_search_20250305", "name": "web_search", "max_uses": 3}
ANTHROPIC_ONLY = {
    "server tool": {"messages": HELLO, "tools": [WEB_SEARCH]},
    "document by url": {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "document", "source": {"type": "url", "url": "https://example.com/a.pdf"}},
                    {"type": "text", "text": "Summarise it."},
                ],
            }
        ]
    },
    # The Files API's image source (with its beta): it was refused as "must be a base64 or url
    # source" on every route, native ones too.
    "image by file id": {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "image", "source": {"type": "file", "file_id": "file_011CNha8iCJcU1wXNR6q4V8w"}},
                    {"type": "text", "text": "What is in it?"},
                ],
            }
        ]
    },
    "search result": {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "search_result", "source": "s", "title": "t", "content": [{"type": "text", "text": "x"}]},
                    {"type": "text", "text": "What does it say?"},
                ],
            }
        ]
    },
}


@pytest.mark.parametrize("case", sorted(ANTHROPIC_ONLY))
def test_anthropic_only_content_is_served_natively_and_refused_only_where_nothing_can_take_it(
    client, gw, claude, upstream, case
):
    """Hostile testing: Claude Code's web search tool, a document by URL, a search result:
    a 400 before any backend was called, on a route of Anthropic backends too, since a body
    the routing view cannot read was translated to chat up front (and the translation has no
    form for these). Now such a body is routed on its size and served by native candidates;
    candidates asked in chat are passed over; only a route with no native candidate refuses."""
    body = ANTHROPIC_ONLY[case]
    for route in ("claude", "chat-first"):
        answer = client.messages.create(model=route, max_tokens=64, **body)
        assert answer.type == "message" and answer.content[0].text
        sent = claude.received[-1].body
        assert sent["messages"] == body["messages"] and sent.get("tools") == body.get("tools")  # as the client sent it
    assert len(claude.received) == 2 and upstream.received == []  # the chat candidate was passed over
    with pytest.raises(anthropic.BadRequestError) as refused:
        client.messages.create(model="open", max_tokens=64, **body)  # no native candidate: the 400, as before
    assert refused.value.body["error"]["type"] == "invalid_request_error"
    assert upstream.received == [] and len(claude.received) == 2
    counted = client.messages.count_tokens(model="claude", **body)
    assert counted.input_tokens > 3


@pytest.mark.parametrize("model", ["claude", "open"])
def test_an_image_of_a_type_anthropic_does_not_take_is_its_400(client, gw, claude, upstream, model):
    """A base64 image must be JPEG, PNG, GIF or WebP (Anthropic's enum): a BMP was sent to a
    chat backend as `data:image/bmp;...`, and passed through to a native one that refuses it."""
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/bmp", "data": "Qk0="}}
    content = [image, {"type": "text", "text": "What is it?"}]
    with pytest.raises(anthropic.BadRequestError) as refused:
        client.messages.create(model=model, max_tokens=64, messages=[{"role": "user", "content": content}])
    assert refused.value.body["error"]["message"] == (
        "messages.0.content.0.source.media_type: Input should be 'image/jpeg', 'image/png', 'image/gif' or 'image/webp'"
    )
    assert upstream.received == [] and claude.received == []


def test_anthropic_only_content_where_routing_leaves_no_native_candidate_is_its_400(client, gw, claude, upstream):
    """Review: a `models` list of chat-only models (or a native offer filtered out) left only
    candidates that pass such a body over: 503 'no backend', sent as a 529 the SDKs retry."""
    body = ANTHROPIC_ONLY["server tool"]
    with pytest.raises(anthropic.BadRequestError) as refused:
        client.messages.create(model="open", max_tokens=64, extra_body={"models": ["qwen/qwen3-coder"]}, **body)
    assert "web_search" in refused.value.body["error"]["message"]
    assert upstream.received == [] and claude.received == []


def test_a_malformed_turn_after_anthropic_only_content_is_a_400_not_a_500(client, gw, claude):
    """Review: the translation stops at its first Anthropic-only refusal; the coarse facts
    then read a later malformed block (a type that is a list) and raised a 500."""
    turns = [
        ANTHROPIC_ONLY["document by url"]["messages"][0],
        {"role": "assistant", "content": [{"type": ["x"]}]},
        {"role": "user", "content": "And?"},
    ]
    answer = httpx.post(
        gw.url + "/v1/messages",
        json={"model": "claude", "max_tokens": 16, "messages": turns},
        headers={"x-api-key": "sk-test"},
    )
    assert answer.status_code in (200, 400), answer.text  # the native backend judges it, or the gateway does
    counted = httpx.post(
        gw.url + "/v1/messages/count_tokens",
        json={"model": "claude", "messages": turns},
        headers={"x-api-key": "sk-test"},
    )
    assert counted.status_code in (200, 400), counted.text


def test_explain_shows_the_decision_for_anthropic_only_content_and_refuses_deep_json(gw):
    body = {"model": "native-first", "max_tokens": 64, **ANTHROPIC_ONLY["server tool"]}
    explained = httpx.post(gw.url + "/v1/route/explain?endpoint=messages", json=body, headers={"x-api-key": "sk-test"})
    assert explained.status_code == 200, explained.text
    deep: dict = {}
    for _ in range(300):
        deep = {"a": deep}
    tool = {"name": "t", "input_schema": {"type": "object", "properties": deep}}
    for endpoint, extra in (("messages", {"tools": [tool]}), ("chat", {})):
        refused = httpx.post(
            gw.url + f"/v1/route/explain?endpoint={endpoint}",
            json={"model": "open", "max_tokens": 64, "messages": HELLO, **extra},
            headers={"x-api-key": "sk-test"},
        )
        assert refused.status_code in ((400,) if extra else (200,)), refused.text


@pytest.mark.parametrize("stream", [False, True])
def test_a_translated_messages_usage_is_what_the_ledger_bills(gw, client, upstream, stream):
    """Hostile testing: counts a chat backend wrote as whole floats, and DeepSeek's top-level
    `prompt_cache_hit_tokens`, were 0 in the Messages usage while the ledger billed them (the
    Responses translation had the same fault): both read the usage one way now."""
    upstream.reset(
        usage={
            "prompt_tokens": 1000.0,
            "completion_tokens": 20.0,
            "total_tokens": 1020.0,
            "prompt_cache_hit_tokens": 600,
        }
    )
    if stream:
        with client.messages.stream(model="open", max_tokens=50, messages=HELLO) as events:
            usage = events.get_final_message().usage
    else:
        usage = client.messages.create(model="open", max_tokens=50, messages=HELLO).usage
    assert (usage.input_tokens, usage.output_tokens) == (400, 20)
    assert (usage.cache_read_input_tokens, usage.cache_creation_input_tokens) == (600, 0)
    (row,) = ledger(gw, 1)
    assert (row["prompt_tokens"], row["completion_tokens"], row["cached_tokens"], row["estimated"]) == (
        1000,
        20,
        600,
        False,
    )
