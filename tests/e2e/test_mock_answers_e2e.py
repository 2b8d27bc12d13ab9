"""The shipped `make run` setup (policies/default.yaml, the built-in mock backend) answering
what agents and structured-output callers send, through a real gateway process and the
official `openai` client: a tool call first, text after the tool result, JSON valid for the
schema, n choices, max_tokens and stop sequences."""

from __future__ import annotations

import json

import jsonschema
import pytest

from tests.protocol import samples as S
from tests.support.services import REPO, GatewayProcess

WEATHER = S.MESSAGES_REQUEST["tools"][0]["input_schema"]
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather", "parameters": WEATHER}}]
USER = [{"role": "user", "content": "What's the weather in Paris?"}]


@pytest.fixture(scope="module")
def gw():
    gateway = GatewayProcess((REPO / "policies" / "default.yaml").read_text()).start()
    yield gateway
    gateway.stop()


def test_agent_turns_tool_call_then_text(gw, openai_client):
    client = openai_client(gw)
    first = client.chat.completions.create(model="auto", messages=USER, tools=TOOLS)
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.function.name == "get_weather"
    jsonschema.validate(json.loads(call.function.arguments), WEATHER)
    assert first.usage.completion_tokens == (len(call.function.arguments) + 3) // 4

    history = [
        *USER,
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "15 degrees"},
    ]
    second = client.chat.completions.create(model="auto", messages=history, tools=TOOLS)
    assert second.choices[0].finish_reason == "stop" and second.choices[0].message.tool_calls is None
    assert second.choices[0].message.content.startswith("This is a synthetic reply")


def test_streamed_tool_call_arrives_head_then_arguments(gw, openai_client):
    chunks = list(
        openai_client(gw).chat.completions.create(
            model="auto", messages=USER, tools=TOOLS, stream=True, stream_options={"include_usage": True}
        )
    )
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    calls = [d.tool_calls[0] for d in deltas if d.tool_calls]
    assert len(calls) == 2 and calls[0].id.startswith("call_") and calls[0].function.name == "get_weather"
    assert calls[0].function.arguments == "" and calls[1].id is None
    jsonschema.validate(json.loads(calls[1].function.arguments), WEATHER)
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    assert chunks[-1].usage.completion_tokens == (len(calls[1].function.arguments) + 3) // 4


def test_json_schema_answer_is_valid_json(gw, openai_client):
    fmt = S.RESPONSES_REQUEST_ITEMS["text"]["format"]
    response_format = {
        "type": "json_schema",
        "json_schema": {"name": fmt["name"], "schema": fmt["schema"], "strict": True},
    }
    completion = openai_client(gw).chat.completions.create(model="auto", messages=USER, response_format=response_format)
    jsonschema.validate(json.loads(completion.choices[0].message.content), fmt["schema"])


def test_n_max_tokens_and_stop(gw, openai_client):
    client = openai_client(gw)
    two = client.chat.completions.create(model="auto", messages=USER, n=2, max_tokens=3)
    assert [(c.index, c.message.content, c.finish_reason) for c in two.choices] == [
        (0, "This is a", "length"),
        (1, "This is a", "length"),
    ]
    assert two.usage.completion_tokens == 6
    stopped = client.chat.completions.create(model="auto", messages=USER, stop=["reply"])
    assert (stopped.choices[0].message.content, stopped.choices[0].finish_reason) == ("This is a synthetic", "stop")


def test_embeddings_from_the_shipped_policy_are_deterministic_vectors_of_the_configured_size(gw, openai_client):
    client = openai_client(gw)
    # `text-embedding-3-small` is what RAG code sends: the policy's alias takes it to `embed`.
    first = client.embeddings.create(model="text-embedding-3-small", input=["a cat", "a dog"])  # SDK default: base64
    again = client.embeddings.create(model="embed", input="a cat", encoding_format="float")
    assert [len(d.embedding) for d in first.data] == [1536, 1536]
    assert first.data[0].embedding == pytest.approx(again.data[0].embedding, abs=1e-6)  # float32 on the wire
    assert first.data[0].embedding != first.data[1].embedding
    assert sum(v * v for v in again.data[0].embedding) == pytest.approx(1.0)
    assert len(client.embeddings.create(model="embed", input="x", dimensions=256).data[0].embedding) == 256


def test_legacy_completions_from_the_shipped_policy_streamed_and_not(gw, openai_client):
    client = openai_client(gw)
    answer = client.completions.create(model="auto", prompt="def add(a, b):", suffix="\n", max_tokens=4)
    assert (answer.choices[0].text, answer.choices[0].finish_reason, answer.usage.completion_tokens) == (
        "This is a synthetic",
        "length",
        4,
    )
    chunks = list(client.completions.create(model="auto", prompt="Once upon a time", stream=True))
    assert "".join(c.choices[0].text for c in chunks if c.choices).startswith("This is a synthetic reply")
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"  # OpenAI's default: 16 tokens


def test_a_stop_sequence_hit_is_named_as_vllm_names_it_and_through_messages(gw, openai_client):
    """The mock names the stop string that ended a choice in the choice's `stop_reason`, as
    vLLM does, so a Messages client of a translated backend reads `stop_reason:
    "stop_sequence"` and the matched string (a walkthrough found `end_turn` through the mock)."""
    import anthropic

    client = openai_client(gw)
    stopped = client.chat.completions.with_raw_response.create(model="auto", messages=USER, stop=["backend", "reply"])
    (choice,) = json.loads(stopped.text)["choices"]
    assert (choice["message"]["content"], choice["finish_reason"], choice["stop_reason"]) == (
        "This is a synthetic",
        "stop",
        "reply",  # the earliest hit, not the first listed
    )
    plain = json.loads(client.chat.completions.with_raw_response.create(model="auto", messages=USER).text)
    assert (plain["choices"][0]["finish_reason"], plain["choices"][0]["stop_reason"]) == ("stop", None)
    chunks = list(client.chat.completions.create(model="auto", messages=USER, stop=["reply"], stream=True))
    finishing = [c.choices[0].model_dump() for c in chunks if c.choices and c.choices[0].finish_reason]
    assert [(c["finish_reason"], c["stop_reason"]) for c in finishing] == [("stop", "reply")]
    text = client.completions.with_raw_response.create(model="auto", prompt="Once", stop="synthetic")
    assert [(c["text"], c["stop_reason"]) for c in json.loads(text.text)["choices"]] == [("This is a", "synthetic")]

    messages = anthropic.Anthropic(base_url=gw.url, api_key="sk-test", max_retries=0)
    hello = [{"role": "user", "content": "Say hello."}]
    answer = messages.messages.create(model="auto", max_tokens=64, messages=hello, stop_sequences=["mock", "reply"])
    assert (answer.content[0].text, answer.stop_reason, answer.stop_sequence) == (
        "This is a synthetic",
        "stop_sequence",
        "reply",
    )
    with messages.messages.stream(model="auto", max_tokens=64, messages=hello, stop_sequences=["reply"]) as stream:
        streamed = stream.get_final_message()
    assert (streamed.content[0].text, streamed.stop_reason, streamed.stop_sequence) == (
        "This is a synthetic",
        "stop_sequence",
        "reply",
    )
    unmatched = messages.messages.create(model="auto", max_tokens=64, messages=hello, stop_sequences=["zebra"])
    assert (unmatched.stop_reason, unmatched.stop_sequence) == ("end_turn", None)
