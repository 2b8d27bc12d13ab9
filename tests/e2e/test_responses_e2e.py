"""POST /v1/responses through real gateway processes, with the `openai` SDK as the client:
translated to chat completions for an OpenAI-compatible upstream, passed through to a
backend that serves the Responses API itself, conversations continued from the gateway's
own store (across two gateway processes on one redis-server), the ledger's rows."""

from __future__ import annotations

import json

import httpx
import jsonschema
import openai
import pytest

from tests.e2e.test_usage_e2e import export_today
from tests.protocol import samples as S
from tests.support.poll import poll
from tests.support.scrape import scrape
from tests.support.services import REPO, GatewayProcess

TRANSLATED = """
backends:
  chat-up:
    type: openai
    base_url: {chat}
    api_key: sk-upstream-secret-123456
    models:
      qwen/qwen3-32b: {{upstream_id: Qwen/Qwen3-32B, context_length: 32768, input_price: 1.0, output_price: 2.0}}
routes:
  auto:
    models: [qwen/qwen3-32b]
"""

# Two candidates: a backend serving /v1/responses natively (cheaper: tried first), then a chat one.
NATIVE_FIRST = """
backends:
  native:
    type: openai
    base_url: {native}
    api_key: sk-fake-responses-123456
    apis: [chat, responses]
    models:
      qwen/qwen3-32b: {{upstream_id: qwen3-native, context_length: 32768, input_price: 0.5, output_price: 1.0}}
  chat-up:
    type: openai
    base_url: {chat}
    api_key: sk-upstream-secret-123456
    models:
      qwen/qwen3-32b: {{upstream_id: Qwen/Qwen3-32B, context_length: 32768, input_price: 1.0, output_price: 2.0}}
routes:
  auto:
    models: [qwen/qwen3-32b]
"""
STREAMED = "Hello from the fake upstream. "  # the fake chat upstream streams word + " " per chunk
KEYS = {"GATEWAY_API_KEYS": "alice:sk-alice,bob:sk-bob", "GATEWAY_USAGE_FLUSH_S": "0.05"}
WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


@pytest.fixture
def gw(start_gateway, upstream):
    return start_gateway(TRANSLATED.format(chat=upstream.base_url), env=KEYS)


def ledger(gw, count: int) -> list[dict]:
    """The gateway's usage rows once `count` final rows are written, oldest first."""
    rows = poll(
        lambda: (r := export_today(gw.dir / "data")) and sum(e["final"] for e in r) >= count and r,
        what=f"{count} final usage rows",
        timeout=20,
    )
    return sorted(rows, key=lambda e: (e["timestamp"], e["attempt"]))


# -- translated through chat completions -------------------------------------------------------


def test_create_translates_to_chat_and_back(gw, upstream, openai_client):
    client = openai_client(gw, api_key="sk-alice")
    response = client.responses.create(
        model="auto",
        instructions="Be friendly.",
        input="Say hello.",
        max_output_tokens=50,
        metadata={"trace": "t1"},
        reasoning={"effort": "low"},
    )
    assert response.output_text == "Hello from the fake upstream."
    assert response.id.startswith("resp_") and response.status == "completed"
    assert response.metadata == {"trace": "t1"}
    assert (response.usage.input_tokens, response.usage.output_tokens) == (11, 7)
    assert len(upstream.received) == 1
    sent = upstream.received[0].body
    assert sent["model"] == "Qwen/Qwen3-32B" and sent["max_tokens"] == 50 and sent["reasoning_effort"] == "low"
    assert sent["messages"] == [
        {"role": "system", "content": "Be friendly."},
        {"role": "user", "content": "Say hello."},
    ]
    assert "metadata" not in sent and "store" not in sent


def test_stream_is_the_typed_event_sequence(gw, upstream, openai_client):
    client = openai_client(gw, api_key="sk-alice")
    with client.responses.stream(model="auto", input="Say hello.") as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert "response.output_text.delta" in kinds
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert final.output_text == STREAMED
    assert (final.usage.input_tokens, final.usage.output_tokens) == (11, 7)
    assert upstream.received[0].body["stream_options"] == {"include_usage": True}
    assert client.responses.retrieve(final.id).output_text == STREAMED  # stored as sent


@pytest.mark.parametrize("stream", [False, True])
def test_a_translated_response_echoes_truncation_verbosity_and_reasoning_summary(gw, upstream, openai_client, stream):
    """The Response echoes the request's settings as OpenAI's does (the SDK's `Response`):
    `truncation` as asked (`disabled` when not), `text.verbosity` and `reasoning.summary`."""
    client = openai_client(gw, api_key="sk-alice")
    asked = {
        "truncation": "auto",
        "text": {"verbosity": "low"},
        "reasoning": {"effort": "low", "summary": "concise"},
        "safety_identifier": "u-1",
        "prompt_cache_key": "conv-7",
        "max_tool_calls": 2,
        "top_logprobs": 3,
        "service_tier": "flex",
    }
    if stream:
        events = list(client.responses.create(model="auto", input="Say hello.", stream=True, **asked))
        carried = [e.response for e in events if e.type in ("response.created", "response.in_progress")]
        response = events[-1].response
        assert events[-1].type == "response.completed" and len(carried) == 2
    else:
        response, carried = client.responses.create(model="auto", input="Say hello.", **asked), []
    for r in [*carried, response, client.responses.retrieve(response.id)]:
        assert r.truncation == "auto"
        assert (r.text.format.type, r.text.verbosity) == ("text", "low")
        assert (r.reasoning.effort, r.reasoning.summary) == ("low", "concise")
        # As OpenAI's Response carries them (its recorded one: tests/protocol/samples.py RESPONSE_TEXT).
        assert (r.safety_identifier, r.prompt_cache_key, r.max_tool_calls, r.top_logprobs) == ("u-1", "conv-7", 2, 3)
        assert (r.service_tier, r.background) == ("default", False)  # the tier it was made at, not the one asked
    sent = upstream.received[-1].body
    assert sent["user"] == "u-1"  # the one of these a chat backend takes
    assert not {"safety_identifier", "prompt_cache_key", "max_tool_calls", "top_logprobs", "service_tier"} & set(sent)
    plain = client.responses.create(model="auto", input="Say hello.")
    assert (plain.truncation, plain.text.verbosity, plain.reasoning.summary) == ("disabled", None, None)
    assert (plain.safety_identifier, plain.prompt_cache_key, plain.max_tool_calls, plain.top_logprobs) == (
        None,
        None,
        None,
        0,
    )


@pytest.mark.parametrize("stream", [False, True])
def test_function_tools_and_a_function_call_output_turn(gw, upstream, openai_client, stream):
    client = openai_client(gw, api_key="sk-alice")
    call = {"id": "call_w1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}
    upstream.reset(tool_call=call)

    def create(**kwargs):
        if not stream:
            return client.responses.create(model="auto", tools=[WEATHER_TOOL], **kwargs)
        with client.responses.stream(model="auto", tools=[WEATHER_TOOL], **kwargs) as events:
            list(events)
            return events.get_final_response()

    first = create(input="Weather in Paris?", tool_choice="auto", parallel_tool_calls=False)
    item = first.output[0]
    assert (item.type, item.call_id, item.name, item.arguments) == (
        "function_call",
        "call_w1",
        "get_weather",
        '{"city":"Paris"}',
    )
    sent = upstream.received[0].body
    assert sent["tools"][0]["function"]["name"] == "get_weather" and sent["parallel_tool_calls"] is False

    upstream.reset(content="Sunny in Paris.")
    second = create(
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": "call_w1", "output": '{"sky":"clear"}'}],
    )
    assert second.output_text == ("Sunny in Paris. " if stream else "Sunny in Paris.")
    assert second.previous_response_id == first.id
    messages = upstream.received[0].body["messages"]
    assert messages == [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_w1", "content": '{"sky":"clear"}'},
    ]


@pytest.mark.parametrize("stream", [False, True])
def test_a_tool_call_without_an_id_gets_a_call_id_its_output_pairs_with(gw, upstream, openai_client, stream):
    """A chat backend that leaves a tool call's `id` out (some OpenAI-compatible servers do):
    the item's `call_id` is made, never empty as OpenAI's never are (an empty one was every
    call's id, so parallel calls' outputs could not be told apart), and the next turn sends the
    chat backend that id on the call and on the tool message answering it."""
    client = openai_client(gw, api_key="sk-alice")
    upstream.reset(tool_call={"type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'}})
    if stream:
        with client.responses.stream(model="auto", tools=[WEATHER_TOOL], input="Weather in Oslo?") as events:
            list(events)
            first = events.get_final_response()
    else:
        first = client.responses.create(model="auto", tools=[WEATHER_TOOL], input="Weather in Oslo?")
    call_id = first.output[0].call_id
    assert call_id == "call_" + first.id.removeprefix("resp_") + "_0"
    assert client.responses.retrieve(first.id).output[0].call_id == call_id

    upstream.reset(content="Snow in Oslo.")
    client.responses.create(
        model="auto",
        tools=[WEATHER_TOOL],
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call_id, "output": "snow"}],
    )
    assert len(upstream.received) == 1
    assistant, tool = upstream.received[0].body["messages"][1:]
    assert [c["id"] for c in assistant["tool_calls"]] == [call_id]
    assert tool == {"role": "tool", "tool_call_id": call_id, "content": "snow"}


def test_item_references_resolve_to_the_keys_stored_items(gw, upstream, openai_client):
    """`item_reference` input items are the items they name, as OpenAI resolves them: an
    output item of a stored response, an input item as `input_items` lists it; another
    key's item, or one never stored, is OpenAI's 400 naming `input`."""
    alice, bob = openai_client(gw, api_key="sk-alice"), openai_client(gw, api_key="sk-bob")
    first = alice.responses.create(model="auto", input="My name is Ada.")
    said = alice.responses.input_items.list(first.id).data[0].id
    upstream.received.clear()
    second = alice.responses.create(
        model="auto",
        input=[
            {"type": "item_reference", "id": said},
            {"type": "item_reference", "id": first.output[0].id},
            {"role": "user", "content": "What is my name?"},
        ],
    )
    assert second.output_text == "Hello from the fake upstream."
    assert upstream.received[0].body["messages"] == [
        {"role": "user", "content": "My name is Ada."},
        {"role": "assistant", "content": "Hello from the fake upstream."},
        {"role": "user", "content": "What is my name?"},
    ]
    # Stored as the items themselves: continuing `second` sends them, not the references.
    upstream.received.clear()
    alice.responses.create(model="auto", previous_response_id=second.id, input="And again?")
    assert upstream.received[0].body["messages"][:2] == [
        {"role": "user", "content": "My name is Ada."},
        {"role": "assistant", "content": "Hello from the fake upstream."},
    ]
    assert [i.type for i in alice.responses.input_items.list(second.id, order="asc").data] == ["message"] * 3

    upstream.received.clear()
    for client, ref in [(bob, first.output[0].id), (alice, "msg_nope"), (alice, "nothing"), (alice, first.id)]:
        with pytest.raises(openai.BadRequestError) as refused:
            client.responses.create(model="auto", input=[{"type": "item_reference", "id": ref}])
        assert refused.value.status_code == 400
        assert refused.value.body["param"] == "input" and refused.value.body["type"] == "invalid_request_error"
        assert refused.value.body["message"].startswith(f"Item with id '{ref}' not found.")
    not_stored = alice.responses.create(model="auto", input="Forget me.", store=False)
    with pytest.raises(openai.BadRequestError):
        alice.responses.create(model="auto", input=[{"type": "item_reference", "id": not_stored.output[0].id}])
    assert len(upstream.received) == 1  # the unstored one's call only: every refusal before any backend
    # Each response named is a store read: a body of references is not as many reads as it holds.
    many = [{"type": "item_reference", "id": f"msg_{n:048x}"} for n in range(101)]
    with pytest.raises(openai.BadRequestError) as refused:
        alice.responses.create(model="auto", input=many)
    assert refused.value.body["message"] == "An input holds more than 100 item_reference items."
    assert refused.value.body["param"] == "input" and len(upstream.received) == 1


def test_item_references_resolve_in_a_native_conversation(gw_native, native, openai_client):
    """A backend's own item ids do not name their response: found in the conversation that
    `previous_response_id` continues, and sent to the native backend as the item."""
    client = openai_client(gw_native, api_key="sk-alice")
    first = client.responses.create(model="auto", input="Say hello.")
    client.responses.create(
        model="auto",
        previous_response_id=first.id,
        input=[{"type": "item_reference", "id": first.output[0].id}, {"role": "user", "content": "Again."}],
    )
    replayed = json.loads(first.output[0].model_dump_json(exclude_none=True))
    assert native.received[1].body["input"] == [
        {"type": "message", "role": "user", "content": "Say hello."},
        replayed,
        replayed,
        {"role": "user", "content": "Again."},
    ]


def test_input_items_list_the_requests_own_input(gw, upstream, openai_client):
    client = openai_client(gw, api_key="sk-alice")
    first = client.responses.create(model="auto", input="My name is Ada.")
    second = client.responses.create(
        model="auto",
        previous_response_id=first.id,
        input=[
            {"type": "message", "role": "user", "content": "What is my name?"},
            {"role": "user", "content": [{"type": "input_text", "text": "Answer briefly."}]},
        ],
    )
    page = client.responses.input_items.list(second.id, order="asc")
    assert [item.content[0].text for item in page.data] == ["What is my name?", "Answer briefly."]
    assert all(item.type == "message" and item.role == "user" and item.id for item in page.data)
    assert page.has_more is False and page.first_id == page.data[0].id and page.last_id == page.data[1].id
    newest = client.responses.input_items.list(second.id, limit=1)  # desc by default
    assert [i.content[0].text for i in newest.data] == ["Answer briefly."] and newest.has_more is True
    older = client.responses.input_items.list(second.id, limit=1, after=newest.last_id)
    assert [i.content[0].text for i in older.data] == ["What is my name?"] and older.has_more is False
    assert [i.content[0].text for i in client.responses.input_items.list(first.id).data] == ["My name is Ada."]
    with pytest.raises(openai.NotFoundError):
        openai_client(gw, api_key="sk-bob").responses.input_items.list(second.id)
    with pytest.raises(openai.BadRequestError):
        client.responses.input_items.list(second.id, limit=0)


def test_a_codex_style_client_tool_search_turn(gw, upstream, openai_client):
    """Codex offers a `tool_search` it runs itself; the model's search comes back as a
    tool_search_call, and the tools the client found are callable on the next turn."""
    search = {
        "type": "tool_search",
        "execution": "client",
        "description": "Find tools.",
        "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]},
    }
    call = {"id": "call_s1", "type": "function", "function": {"name": "tool_search", "arguments": '{"query":"git"}'}}
    upstream.reset(tool_call=call)
    headers = {"authorization": "Bearer sk-alice"}
    body = {"model": "auto", "input": "What changed?", "tools": [search], "store": False}
    first = httpx.post(gw.url + "/v1/responses", json=body, headers=headers).json()
    assert first["output"] == [
        {
            "type": "tool_search_call",
            "id": first["output"][0]["id"],
            "call_id": "call_s1",
            "arguments": {"query": "git"},
            "execution": "client",
            "status": "completed",
        }
    ]
    found = {"type": "function", "name": "git_log", "parameters": {"type": "object", "properties": {}}}
    upstream.reset()
    body["input"] = [
        {"type": "message", "role": "user", "content": "What changed?"},
        first["output"][0],
        {"type": "tool_search_output", "call_id": "call_s1", "execution": "client", "tools": [found]},
    ]
    second = httpx.post(gw.url + "/v1/responses", json=body, headers=headers)
    assert second.status_code == 200 and second.json()["output"][0]["type"] == "message"
    sent = upstream.received[0].body
    assert [t["function"]["name"] for t in sent["tools"]] == ["tool_search", "git_log"]
    assert sent["messages"][-1] == {
        "role": "tool",
        "tool_call_id": "call_s1",
        "content": "Tools now available: git_log.",
    }


def test_store_false_keeps_nothing(gw, upstream, openai_client):
    client = openai_client(gw, api_key="sk-alice")
    response = client.responses.create(model="auto", input="Say hello.", store=False)
    assert response.output_text == "Hello from the fake upstream." and response.store is False
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(response.id)
    # OpenAI's 400 for a previous response it does not have (not the 404 of a response asked
    # by path): clients resend the whole conversation on its code.
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model="auto", input="Again.", previous_response_id=response.id)
    assert (caught.value.code, caught.value.param) == ("previous_response_not_found", "previous_response_id")
    assert caught.value.body["type"] == "invalid_request_error"
    assert caught.value.body["message"] == f"Previous response with id '{response.id}' not found."
    assert len(upstream.received) == 1  # the unknown previous response was refused before routing


def test_stored_responses_belong_to_their_key(gw, openai_client):
    alice, bob = openai_client(gw, api_key="sk-alice"), openai_client(gw, api_key="sk-bob")
    response = alice.responses.create(model="auto", input="Say hello.")
    assert alice.responses.retrieve(response.id).output_text == "Hello from the fake upstream."
    with pytest.raises(openai.NotFoundError):
        bob.responses.retrieve(response.id)
    with pytest.raises(openai.BadRequestError) as caught:
        bob.responses.create(model="auto", input="Go on.", previous_response_id=response.id)
    assert caught.value.code == "previous_response_not_found"
    with pytest.raises(openai.NotFoundError):
        bob.responses.delete(response.id)
    deleted = httpx.delete(f"{gw.url}/v1/responses/{response.id}", headers={"authorization": "Bearer sk-alice"})
    assert deleted.json() == {"id": response.id, "object": "response", "deleted": True}
    with pytest.raises(openai.NotFoundError):
        alice.responses.retrieve(response.id)


@pytest.mark.parametrize("stream", [False, True])
def test_a_translated_response_is_made_when_the_request_was_taken(gw, upstream, openai_client, stream):
    """Non-streamed, `created_at` was the backend's `created` (its own clock, a fallback's
    later): the stored and streamed Responses said when the gateway took the request."""
    import time

    upstream.behaviour.created = 1_000_000_000  # a backend whose clock is years off
    client = openai_client(gw, api_key="sk-alice")
    taken = int(time.time())
    if stream:
        events = list(client.responses.create(model="auto", input="Say hello.", stream=True))
        response = events[-1].response
        assert events[0].response.created_at == response.created_at
    else:
        response = client.responses.create(model="auto", input="Say hello.")
    assert taken <= response.created_at <= int(time.time())
    assert client.responses.retrieve(response.id).created_at == response.created_at


def test_input_tokens_counts_the_input_and_the_conversation_it_continues(gw, upstream, openai_client):
    """`client.responses.input_tokens.count` was a 405: the count is the gateway's estimate,
    the one routing and limits read, and no backend is asked. The stored conversation a
    `previous_response_id` names counts too, and only its own key's."""
    from gateway.protocol.responses import responses_to_chat
    from gateway.protocol.tokens import estimate_prompt_tokens

    alice, bob = openai_client(gw, api_key="sk-alice"), openai_client(gw, api_key="sk-bob")
    body = {"model": "auto", "instructions": "Be brief.", "input": "Say hello.", "tools": [WEATHER_TOOL]}
    counted = alice.responses.input_tokens.count(**body)
    assert counted.object == "response.input_tokens"
    assert counted.input_tokens == estimate_prompt_tokens(responses_to_chat(body))
    # `model` is optional in OpenAI's API.
    no_model = {k: v for k, v in body.items() if k != "model"}
    assert alice.responses.input_tokens.count(**no_model).input_tokens == counted.input_tokens
    assert upstream.received == []

    first = alice.responses.create(model="auto", input="Say hello.")
    assert len(upstream.received) == 1
    follow_up = alice.responses.input_tokens.count(model="auto", input="And again.", previous_response_id=first.id)
    alone = alice.responses.input_tokens.count(model="auto", input="And again.")
    assert follow_up.input_tokens > alone.input_tokens
    with pytest.raises(openai.BadRequestError) as caught:  # another key's conversation: not found
        bob.responses.input_tokens.count(model="auto", input="And again.", previous_response_id=first.id)
    assert caught.value.code == "previous_response_not_found"
    with pytest.raises(openai.NotFoundError):  # a model /v1/responses would not take
        alice.responses.input_tokens.count(model="no/such-model", input="hi")
    with pytest.raises(openai.BadRequestError) as malformed:
        alice.responses.input_tokens.count(model="auto", input=[{"type": "item_reference"}])
    assert malformed.value.body["type"] == "invalid_request_error"
    wrong_key = {"authorization": "Bearer sk-x"}
    refused = httpx.post(gw.url + "/v1/responses/input_tokens", json=body, headers=wrong_key)
    as_create = httpx.post(gw.url + "/v1/responses", json=body, headers=wrong_key)
    assert refused.status_code == as_create.status_code == 401
    assert refused.json()["error"] == as_create.json()["error"]  # the same error as /v1/responses
    assert len(upstream.received) == 1


@pytest.mark.parametrize("tool", ["web_search", "file_search", "computer_use_preview", "code_interpreter"])
def test_built_in_tools_are_a_400_naming_the_tool(gw, upstream, openai_client, tool):
    with pytest.raises(openai.BadRequestError) as caught:
        openai_client(gw, api_key="sk-alice").responses.create(model="auto", input="hi", tools=[{"type": tool}])
    assert f"'{tool}'" in caught.value.body["message"]
    assert caught.value.body["param"] == "tools[0].type" and caught.value.body["code"] == "unsupported_tool"
    assert upstream.received == []


@pytest.mark.parametrize(
    "fields, param",
    [
        ({"conversation": "conv_abc"}, "conversation"),
        ({"conversation": {"id": "conv_abc"}}, "conversation"),
        ({"prompt": {"id": "pmpt_abc", "version": "2"}}, "prompt"),
    ],
)
def test_state_kept_at_openai_is_a_400_not_dropped(gw, upstream, openai_client, fields, param):
    """A Conversation or a stored prompt lives at OpenAI, where no backend here can read it:
    answered without it, the client would lose its context unawares."""
    client = openai_client(gw, api_key="sk-alice")
    for stream in (False, True):
        with pytest.raises(openai.BadRequestError) as caught:
            client.responses.create(model="auto", input="Go on.", stream=stream, **fields)
        body = caught.value.body
        assert body["param"] == param and body["code"] == "unsupported_parameter"
        assert f"'{param}'" in body["message"]
    assert upstream.received == []


def test_bad_requests_are_400s_in_openais_shape(gw, upstream):
    headers = {"authorization": "Bearer sk-alice"}
    for body, param, message in [
        ({"input": "hi"}, "model", "Missing required parameter: 'model'."),
        ({"model": 123, "input": "hi"}, "model", "Invalid type for 'model': expected a string."),
        ({"model": "auto"}, "input", None),
        ({"model": "auto", "input": "hi", "stream": "yes"}, "stream", None),
        (
            {"model": "auto", "input": "hi", "temperature": "hot"},
            "temperature",
            "Invalid type for 'temperature': expected a number.",
        ),
        ({"model": "auto", "input": "hi", "max_output_tokens": 0}, "max_output_tokens", None),
        ({"model": "auto", "input": [{"type": "message", "role": "robot", "content": "x"}]}, "input[0].role", None),
    ]:
        answer = httpx.post(gw.url + "/v1/responses", json=body, headers=headers)
        assert answer.status_code == 400, body
        assert answer.json()["error"]["param"] == param
        assert answer.json()["error"]["type"] == "invalid_request_error"
        assert message is None or answer.json()["error"]["message"] == message
    assert upstream.received == []


@pytest.mark.parametrize("stream", [False, True])
def test_a_translated_responses_usage_is_what_the_ledger_bills(gw, upstream, openai_client, stream):
    """The usage a translated Response carries is read as the ledger reads the chat backend's:
    counts written as whole floats, and DeepSeek's top-level `prompt_cache_hit_tokens`, were
    zero in the Response while the call was billed for them."""
    client = openai_client(gw, api_key="sk-alice")
    reported = {
        "prompt_tokens": 1000.0,
        "completion_tokens": 20.0,
        "total_tokens": 1020.0,
        "prompt_cache_hit_tokens": 600,
    }
    upstream.reset(usage=reported)
    if stream:
        with client.responses.stream(model="auto", input="Say hello.") as events:
            list(events)
            response = events.get_final_response()
    else:
        response = client.responses.create(model="auto", input="Say hello.")
    usage = response.usage
    assert (usage.input_tokens, usage.output_tokens, usage.total_tokens) == (1000, 20, 1020)
    assert (usage.input_tokens_details.cached_tokens, usage.output_tokens_details.reasoning_tokens) == (600, 0)
    assert client.responses.retrieve(response.id).usage == usage
    (row,) = ledger(gw, 1)
    assert (row["prompt_tokens"], row["completion_tokens"], row["cached_tokens"], row["estimated"]) == (
        1000,
        20,
        600,
        False,
    )


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(("finish", "reason"), [("length", "max_output_tokens"), ("content_filter", "content_filter")])
def test_the_message_a_cut_fell_in_is_incomplete(gw, upstream, openai_client, stream, finish, reason):
    """A chat answer cut at max_tokens (or by a content filter) is an incomplete Response whose
    message item says so too, as OpenAI marks the item it cut: it said `completed`, so a
    client reading items took half a message for a whole one."""
    client = openai_client(gw, api_key="sk-alice")
    upstream.reset(reasoning="Thinking.", finish_reason=finish)
    if stream:
        events = list(client.responses.create(model="auto", input="Say hello.", max_output_tokens=16, stream=True))
        assert events[-1].type == "response.incomplete"
        done = [e.item for e in events if e.type == "response.output_item.done"]
        response = events[-1].response
        assert done == response.output
    else:
        response = client.responses.create(model="auto", input="Say hello.", max_output_tokens=16)
    assert (response.status, response.incomplete_details.reason) == ("incomplete", reason)
    assert [(item.type, item.status) for item in response.output] == [
        ("reasoning", "completed"),
        ("message", "incomplete"),
    ]
    assert client.responses.retrieve(response.id).output == response.output
    assert len(upstream.received) == 1


def test_the_ledger_records_responses_calls(gw, upstream, openai_client):
    client = openai_client(gw, api_key="sk-alice")
    client.responses.create(model="auto", input="Say hello.")
    with client.responses.stream(model="auto", input="Say hello.") as stream:
        list(stream)
    rows = [e for e in ledger(gw, 2) if e["final"]]
    assert [(e["endpoint"], e["key"], e["status"], e["backend"]) for e in rows] == [
        ("responses", "alice", 200, "chat-up"),
        ("responses", "alice", 200, "chat-up"),
    ]
    assert [(e["prompt_tokens"], e["completion_tokens"], e["estimated"]) for e in rows] == [(11, 7, False)] * 2
    assert rows[0]["cost"] == pytest.approx((11 * 1.0 + 7 * 2.0) / 1e6)


# -- native pass-through and fallback ---------------------------------------------------------


@pytest.fixture
def gw_native(start_gateway, upstream, native):
    return start_gateway(NATIVE_FIRST.format(native=native.base_url, chat=upstream.base_url), env=KEYS)


def test_a_backend_serving_responses_gets_the_request_natively(gw_native, native, upstream, openai_client):
    client = openai_client(gw_native, api_key="sk-alice")
    native.reset(cached_tokens=3)
    first = client.responses.create(model="auto", input="Say hello.", metadata={"a": "b"})
    assert first.id.startswith("resp_fake") and first.output_text == "Hello from the fake Responses upstream."
    assert len(native.received) == 1 and upstream.received == []
    sent = native.received[0].body
    assert sent["model"] == "qwen3-native" and sent["store"] is False and "previous_response_id" not in sent
    assert sent["input"] == [{"type": "message", "role": "user", "content": "Say hello."}]

    with client.responses.stream(model="auto", previous_response_id=first.id, input="And again.") as stream:
        kinds = [e.type for e in stream]
        second = stream.get_final_response()
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert second.output_text == "Hello from the fake Responses upstream."
    # The gateway sent the whole conversation: the first input, the first output, the new input.
    assert native.received[1].body["input"] == [
        {"type": "message", "role": "user", "content": "Say hello."},
        json.loads(first.output[0].model_dump_json(exclude_none=True)),
        {"type": "message", "role": "user", "content": "And again."},
    ]
    assert client.responses.retrieve(second.id).output_text == second.output_text  # stored: what the client got
    # The stored copies say what the gateway did with them (the backend was told store false
    # and no previous id; hostile testing found GET echoing that): kept, and chained.
    assert (client.responses.retrieve(first.id).store, client.responses.retrieve(first.id).previous_response_id) == (
        True,
        None,
    )
    assert client.responses.retrieve(second.id).store is True
    assert client.responses.retrieve(second.id).previous_response_id == first.id


@pytest.mark.parametrize("shape", ["openai", "no_store", "spaced"])
def test_a_native_answer_is_the_response_retrieve_returns(gw_native, native, openai_client, shape):
    """The backend was sent `store: false` and no `previous_response_id` (the gateway keeps the
    conversation) and echoes that; the client sees what it asked, in the POST's answer and its
    stream's Response events as in `retrieve`: one object both ways. `no_store`: a backend
    that writes no `store` member (vLLM); `spaced`: JSON with spaces after its colons."""
    native.reset(omit_store=shape == "no_store", spaced_json=shape == "spaced")
    client = openai_client(gw_native, api_key="sk-alice")
    first = client.responses.create(model="auto", input="Say hello.")
    assert (first.store, first.previous_response_id) == (True, None)
    assert first.model_dump() == client.responses.retrieve(first.id).model_dump()

    events = list(client.responses.create(model="auto", input="Again.", previous_response_id=first.id, stream=True))
    carried = [
        e.response for e in events if e.type in ("response.created", "response.in_progress", "response.completed")
    ]
    assert len(carried) == 3
    assert [(r.store, r.previous_response_id) for r in carried] == [(True, first.id)] * 3
    assert carried[-1].model_dump() == client.responses.retrieve(carried[-1].id).model_dump()

    # Not stored, continuing one: the answer says so (store false, the id continued).
    third = client.responses.create(model="auto", input="Once more.", previous_response_id=first.id, store=False)
    assert (third.store, third.previous_response_id) == (False, first.id)
    streamed = list(
        client.responses.create(model="auto", input="Again.", previous_response_id=first.id, store=False, stream=True)
    )
    assert streamed[-1].type == "response.completed"
    assert (streamed[-1].response.store, streamed[-1].response.previous_response_id) == (False, first.id)
    # Every one sent to the backend as a stateless call.
    assert all(r.body["store"] is False and "previous_response_id" not in r.body for r in native.received)
    assert len(native.received) == 4


# A non-streamed body has no error event: a Response with status `failed` is its failure.
@pytest.mark.parametrize(("stream", "how"), [(False, "failed"), (True, "failed"), (True, "error")])
def test_a_native_failure_before_content_falls_back_to_the_next_candidate(
    gw_native, native, upstream, openai_client, stream, how
):
    native.reset(fail_before_content=how)
    client = openai_client(gw_native, api_key="sk-alice")
    if stream:
        with client.responses.stream(model="auto", input="Say hello.") as events:
            kinds = [e.type for e in events]
            response = events.get_final_response()
        assert "response.failed" not in kinds and "error" not in kinds  # the client never saw the failure
    else:
        response = client.responses.create(model="auto", input="Say hello.")
    assert response.output_text == (STREAMED if stream else "Hello from the fake upstream.")  # chat, translated
    # A failure before content is the backend's (a 5xx-class one): asked once more after a
    # jittered backoff (`fallback.retries_per_candidate`: 1), then the next candidate.
    assert len(native.received) == 2 and len(upstream.received) == 1
    rows = ledger(gw_native, 1)
    assert [(e["backend"], e["final"], e["attempt"]) for e in rows] == [
        ("native", False, 1),
        ("native", False, 2),
        ("chat-up", True, 3),
    ]
    assert rows[-1]["attempts"] == 3 and rows[-1]["endpoint"] == "responses"


def test_a_native_backend_error_status_falls_back(gw_native, native, upstream, openai_client):
    native.reset(status=503)
    response = openai_client(gw_native, api_key="sk-alice").responses.create(model="auto", input="Say hello.")
    assert response.output_text == "Hello from the fake upstream."
    assert (len(native.received), len(upstream.received)) == (1, 1)


def test_a_backend_reusing_an_id_never_hands_one_keys_response_to_another(gw_native, native, openai_client):
    alice, bob = openai_client(gw_native, api_key="sk-alice"), openai_client(gw_native, api_key="sk-bob")
    native.reset(response_id="resp_reused", content="For Alice only.")
    assert alice.responses.create(model="auto", input="hi").id == "resp_reused"
    native.reset(response_id="resp_reused", content="For Bob.")
    assert bob.responses.create(model="auto", input="hi").output_text == "For Bob."  # delivered
    assert alice.responses.retrieve("resp_reused").output_text == "For Alice only."
    with pytest.raises(openai.NotFoundError):
        bob.responses.retrieve("resp_reused")
    assert "response resp_reused not stored: another key's stored response has that id" in gw_native.log()


@pytest.mark.parametrize("stream", [False, True])
def test_a_native_response_without_an_id_is_delivered_and_not_stored_without_a_traceback(
    gw_native, native, upstream, stream
):
    """Hostile testing: a native backend's Response with no `id` was delivered, then the
    completed hook failed storing it (KeyError: 'id', with a traceback)."""
    native.reset(omit_id=True)
    body = {"model": "auto", "input": "Say hello.", "stream": stream}
    answer = httpx.post(gw_native.url + "/v1/responses", json=body, headers={"authorization": "Bearer sk-alice"})
    assert answer.status_code == 200 and "Hello from the fake Responses upstream." in answer.text
    assert (len(native.received), len(upstream.received)) == (1, 0)
    assert "not stored: the backend's Response has no string `id`" in gw_native.log()
    assert "Traceback" not in gw_native.log()


def test_a_native_response_with_output_items_that_are_not_objects_is_not_stored(gw_native, native, upstream):
    """Hostile testing: a native backend's `output` holding a string was stored as it came,
    and every request continuing that response was a 500 (AttributeError) before any backend
    was asked. Not stored now: continuing it is the 400 for an unknown previous response."""
    native.reset(response_id="resp_junk", output=["junk"])
    headers = {"authorization": "Bearer sk-alice"}
    first = httpx.post(gw_native.url + "/v1/responses", json={"model": "auto", "input": "hi"}, headers=headers)
    assert first.status_code == 200 and first.json()["output"] == ["junk"]  # delivered as the backend wrote it
    body = {"model": "auto", "input": "Go on.", "previous_response_id": "resp_junk"}
    again = httpx.post(gw_native.url + "/v1/responses", json=body, headers=headers)
    assert again.status_code == 400 and again.json()["error"]["code"] == "previous_response_not_found"
    assert (len(native.received), len(upstream.received)) == (1, 0)
    assert "response resp_junk not stored: the backend's Response has output items that are not objects" in (
        gw_native.log()
    )
    assert "Traceback" not in gw_native.log()


def test_a_native_response_with_an_overlong_id_is_delivered_and_not_stored(gw_native, native, upstream):
    """Hostile testing: a backend's `id` of any length became the store's key (bounded only
    by the 16 MB record limit). Ids are at most 256 characters now (OpenAI's are about 50)."""
    native.reset(response_id="resp_" + "x" * 300)
    headers = {"authorization": "Bearer sk-alice"}
    first = httpx.post(gw_native.url + "/v1/responses", json={"model": "auto", "input": "hi"}, headers=headers)
    assert first.status_code == 200 and first.json()["id"] == "resp_" + "x" * 300  # delivered as it came
    body = {"model": "auto", "input": "Go on.", "previous_response_id": "resp_" + "x" * 300}
    again = httpx.post(gw_native.url + "/v1/responses", json=body, headers=headers)
    assert again.status_code == 400 and again.json()["error"]["code"] == "previous_response_not_found"
    assert (len(native.received), len(upstream.received)) == (1, 0)
    assert "not stored: the backend's Response has an `id` longer than 256 characters" in gw_native.log()


def test_openrouter_provider_overrides_route_a_responses_request(gw_native, native, upstream, openai_client):
    client = openai_client(gw_native, api_key="sk-alice")
    response = client.responses.create(model="auto", input="hi", extra_body={"provider": {"only": ["chat-up"]}})
    assert response.output_text == "Hello from the fake upstream."  # the chat backend, though native is cheaper
    assert (len(native.received), len(upstream.received)) == (0, 1)
    assert "provider" not in upstream.received[0].body


def test_native_usage_reaches_the_ledger(gw_native, native, openai_client):
    native.reset(input_tokens=40, output_tokens=9, cached_tokens=8)
    with openai_client(gw_native, api_key="sk-alice").responses.stream(model="auto", input="hi") as stream:
        list(stream)
    (row,) = [e for e in ledger(gw_native, 1) if e["final"]]
    assert (row["backend"], row["prompt_tokens"], row["completion_tokens"], row["cached_tokens"]) == (
        "native",
        40,
        9,
        8,
    )
    assert row["endpoint"] == "responses" and row["estimated"] is False


def test_settings_openai_refuses_are_its_400_and_no_backend_is_asked(gw_native, native, upstream, openai_client):
    """A backend serving Responses natively was sent these as they came (and a chat one had
    them dropped, or `background` answered in the foreground): each is OpenAI's 400 now,
    streamed or not, before either backend is asked."""
    client = openai_client(gw_native, api_key="sk-alice")
    refused = [
        (
            {"temperature": 3},
            "temperature",
            "decimal_above_max_value",
            "Invalid 'temperature': decimal above maximum value. Expected a value <= 2, but got 3 instead.",
        ),
        (
            {"max_output_tokens": 8},
            "max_output_tokens",
            "integer_below_min_value",
            "Invalid 'max_output_tokens': integer below minimum value. Expected a value >= 16, but got 8 instead.",
        ),
        (
            {"truncation": "middle"},
            "truncation",
            "invalid_value",
            "Invalid value: 'middle'. Supported values are: 'auto' and 'disabled'.",
        ),
        (
            {"background": True},
            "background",
            "unsupported_parameter",
            S.BACKGROUND_REFUSED,
        ),
    ]
    for stream in (False, True):
        for fields, param, code, message in refused:
            with pytest.raises(openai.BadRequestError) as caught:
                client.responses.create(model="auto", input="Hi.", stream=stream, **fields)
            assert caught.value.status_code == 400
            assert caught.value.body == {
                "message": message,
                "type": "invalid_request_error",
                "param": param,
                "code": code,
            }
    assert (len(native.received), len(upstream.received)) == (0, 0)


def test_an_effort_newer_than_the_gateway_reaches_a_native_backend_as_sent(gw_native, native, upstream, openai_client):
    """OpenAI adds efforts with its models and Codex sends them at once: passed on, not
    refused (a chat backend would get no effort for it)."""
    client = openai_client(gw_native, api_key="sk-alice")
    client.responses.create(model="auto", input="Hi.", reasoning={"effort": "ultra"})
    assert native.received[-1].body["reasoning"] == {"effort": "ultra"} and upstream.received == []


# -- tool call outputs answer calls --------------------------------------------------------------


def assert_refused_as_unpaired(client, refused: list[tuple[dict, list, str]], wording: str) -> None:
    """Each (extra fields, input items, what is named) is OpenAI's 400 in `wording`, streamed
    or not, with `input` as its param."""
    for stream in (False, True):
        for extra, items, message in refused:
            with pytest.raises(openai.BadRequestError) as caught:
                client.responses.create(model="auto", input=items, tools=[WEATHER_TOOL], stream=stream, **extra)
            assert caught.value.body == {
                "message": wording.format(message),
                "type": "invalid_request_error",
                "param": "input",
                "code": None,
            }


@pytest.mark.parametrize("config", ["translated", "native first"])
def test_a_tool_output_answering_no_call_is_openais_400_before_any_backend(
    start_gateway, upstream, native, openai_client, config
):
    """Sent on, it is a chat `tool` message answering no call, which chat backends refuse
    with an opaque 400 or take and answer nonsense; OpenAI answers this 400 itself, so a
    backend serving Responses natively is not asked either."""
    text = TRANSLATED if config == "translated" else NATIVE_FIRST
    gw = start_gateway(text.format(chat=upstream.base_url, native=native.base_url), env=KEYS)
    client = openai_client(gw, api_key="sk-alice")
    first = client.responses.create(model="auto", input="Hi.")  # its output is a message: no call
    orphan = {"type": "function_call_output", "call_id": "call_nowhere", "output": "42"}
    custom = {"type": "custom_tool_call_output", "call_id": "call_custom", "output": "done"}
    search = {"type": "tool_search_output", "call_id": "call_search", "execution": "client", "tools": []}
    late = {"type": "function_call", "call_id": "call_late", "name": "get_weather", "arguments": "{}"}
    refused = [
        ({}, [{"role": "user", "content": "Hi."}, orphan], "function call output with call_id call_nowhere"),
        ({"previous_response_id": first.id}, [orphan], "function call output with call_id call_nowhere"),
        ({}, [custom], "custom tool call output with call_id call_custom"),
        ({}, [{"role": "user", "content": "Find tools."}, search], "tool search output with call_id call_search"),
        # An output before its call: chat would get the tool message ahead of the call.
        ({}, [{**orphan, "call_id": "call_late"}, late], "function call output with call_id call_late"),
    ]
    assert_refused_as_unpaired(client, refused, "No tool call found for {}.")
    assert (len(upstream.received), len(native.received)) == ((1, 0) if config == "translated" else (0, 1))


@pytest.mark.parametrize("config", ["translated", "native first"])
def test_a_tool_call_no_output_answers_is_openais_400_before_any_backend(
    start_gateway, upstream, native, openai_client, config
):
    """Sent on, it is an assistant `tool_calls` message no tool message answers, which chat
    backends refuse with an opaque 400; OpenAI answers this 400 itself, for a call anywhere in
    the conversation (the last item of `input` too), so a native backend is not asked either."""
    text = TRANSLATED if config == "translated" else NATIVE_FIRST
    gw = start_gateway(text.format(chat=upstream.base_url, native=native.base_url), env=KEYS)
    client = openai_client(gw, api_key="sk-alice")
    upstream.reset(
        tool_call={"id": "call_w1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
    )
    native.reset(function_call={"call_id": "call_w1", "name": "get_weather", "arguments": "{}"})
    first = client.responses.create(model="auto", input="Weather in Paris?", tools=[WEATHER_TOOL])
    assert first.output[-1].type == "function_call" and first.output[-1].call_id == "call_w1"
    user = {"role": "user", "content": "Never mind."}
    call = {"type": "function_call", "call_id": "call_open", "name": "get_weather", "arguments": "{}"}
    custom = {"type": "custom_tool_call", "call_id": "call_patch", "name": "apply_patch", "input": "*** Begin"}
    refused = [
        ({}, [user, call], "function call call_open"),  # the last item
        ({}, [call, user], "function call call_open"),
        ({}, [user, custom], "custom tool call call_patch"),
        # The conversation continued ended in a call: the new turn must answer it.
        ({"previous_response_id": first.id}, [user], "function call call_w1"),
    ]
    assert_refused_as_unpaired(client, refused, "No tool output found for {}.")
    assert (len(upstream.received), len(native.received)) == ((1, 0) if config == "translated" else (0, 1))


@pytest.mark.parametrize("config", ["translated", "native first"])
def test_a_tool_output_answers_a_call_in_its_input_or_in_the_conversation_it_continues(
    start_gateway, upstream, native, openai_client, config
):
    text = TRANSLATED if config == "translated" else NATIVE_FIRST
    gw = start_gateway(text.format(chat=upstream.base_url, native=native.base_url), env=KEYS)
    client = openai_client(gw, api_key="sk-alice")
    upstream.reset(
        tool_call={"id": "call_w1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
    )
    native.reset(function_call={"call_id": "call_w1", "name": "get_weather", "arguments": "{}"})
    first = client.responses.create(model="auto", input="Weather in Paris?", tools=[WEATHER_TOOL])
    assert first.output[0].type == "function_call" and first.output[0].call_id == "call_w1"
    upstream.reset()
    native.reset()
    output = {"type": "function_call_output", "call_id": "call_w1", "output": "sunny"}
    second = client.responses.create(model="auto", previous_response_id=first.id, input=[output])
    call = {"type": "function_call", "call_id": "call_w2", "name": "get_weather", "arguments": "{}"}
    third = client.responses.create(model="auto", input=[call, {**output, "call_id": "call_w2"}])
    assert second.status == third.status == "completed"
    [to_second, to_third] = upstream.received if config == "translated" else native.received
    if config == "translated":
        assert to_second.body["messages"][1:] == [
            {"role": "assistant", "content": None, "tool_calls": [upstream_call("call_w1")]},
            {"role": "tool", "tool_call_id": "call_w1", "content": "sunny"},
        ]
        assert to_third.body["messages"] == [
            {"role": "assistant", "content": None, "tool_calls": [upstream_call("call_w2")]},
            {"role": "tool", "tool_call_id": "call_w2", "content": "sunny"},
        ]
    else:
        assert [(i["type"], i.get("call_id")) for i in to_second.body["input"]] == [
            ("message", None),
            ("function_call", "call_w1"),
            ("function_call_output", "call_w1"),
        ]
        assert to_third.body["input"] == [call, {**output, "call_id": "call_w2"}]


def upstream_call(call_id: str) -> dict:
    return {"id": call_id, "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}


# -- across replicas ----------------------------------------------------------------------------


def test_previous_response_id_works_across_two_gateways_sharing_redis(
    start_gateway, upstream, redis_server, openai_client
):
    env = {**KEYS, "GATEWAY_REDIS_URL": redis_server.url}
    one = start_gateway(TRANSLATED.format(chat=upstream.base_url), env=env)
    two = start_gateway(TRANSLATED.format(chat=upstream.base_url), env=env)
    first = openai_client(one, api_key="sk-alice").responses.create(model="auto", input="My name is Ada.")
    upstream.reset(content="Your name is Ada.")
    second = openai_client(two, api_key="sk-alice").responses.create(
        model="auto", input="What is my name?", previous_response_id=first.id
    )
    assert second.output_text == "Your name is Ada."
    assert upstream.received[0].body["messages"] == [
        {"role": "user", "content": "My name is Ada."},
        {"role": "assistant", "content": "Hello from the fake upstream."},
        {"role": "user", "content": "What is my name?"},
    ]
    assert openai_client(one, api_key="sk-alice").responses.retrieve(second.id).id == second.id
    with pytest.raises(openai.NotFoundError):
        openai_client(two, api_key="sk-bob").responses.retrieve(first.id)


def test_a_response_over_the_record_limit_is_delivered_but_not_stored(start_gateway, upstream, openai_client):
    env = {**KEYS, "GATEWAY_RESPONSES_MAX_RECORD_BYTES": "2048"}
    gw = start_gateway(TRANSLATED.format(chat=upstream.base_url), env=env)
    client = openai_client(gw, api_key="sk-alice")
    small = client.responses.create(model="auto", input="Say hello.")
    large = client.responses.create(model="auto", input="x" * 4096)
    assert large.output_text == "Hello from the fake upstream."  # delivered all the same
    assert client.responses.retrieve(small.id).id == small.id
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(large.id)
    assert f"response {large.id} not stored: over the record limit of 2048 bytes" in gw.log()


def test_an_input_too_deep_to_store_is_delivered_and_not_stored_without_a_traceback(gw, upstream, openai_client):
    """Hostile testing: an extra field 300 levels deep on an input item is read (orjson reads
    1024) and not sent (the translation drops it), but the stored record cannot be written
    (orjson writes 254): the completed hook failed with a traceback. Now the same warning as
    for a record over the size limit."""
    deep: dict = {}
    for _ in range(300):
        deep = {"x": deep}
    client = openai_client(gw, api_key="sk-alice")
    item = {"type": "message", "role": "user", "content": "Say hello.", "extra": deep}
    for stream in (False, True):
        if stream:
            with client.responses.stream(model="auto", input=[item]) as events:
                answer = events.get_final_response()
        else:
            answer = client.responses.create(model="auto", input=[item])
        assert answer.output_text == (STREAMED if stream else "Hello from the fake upstream.")
        with pytest.raises(openai.NotFoundError):
            client.responses.retrieve(answer.id)
        assert f"response {answer.id} not stored: its input holds JSON nested too deep to write" in gw.log()
    assert "Traceback" not in gw.log() and len(upstream.received) == 2
    assert "extra" not in upstream.received[-1].body["messages"][0]


def test_a_store_that_is_down_costs_the_storing_not_the_answer(start_gateway, upstream, redis_server, openai_client):
    # Its shutdown flushes the ledger to the Redis stopped below: given half a second, not 10.
    env = {**KEYS, "GATEWAY_REDIS_URL": redis_server.url, "GATEWAY_USAGE_SHUTDOWN_FLUSH_S": "0.5"}
    gw = start_gateway(TRANSLATED.format(chat=upstream.base_url), env=env)
    client = openai_client(gw, api_key="sk-alice")
    redis_server.stop()
    response = client.responses.create(model="auto", input="Say hello.")
    assert response.output_text == "Hello from the fake upstream."  # delivered, though not stored
    with pytest.raises(openai.InternalServerError) as caught:
        client.responses.create(model="auto", input="Go on.", previous_response_id=response.id)
    assert caught.value.status_code == 503 and caught.value.body["code"] == "response_store_unavailable"
    assert len(upstream.received) == 1  # the continuation never reached a backend
    m = scrape(gw.url)
    assert m.value("gateway_response_store_errors_total", op="put") == 1
    assert m.value("gateway_response_store_errors_total", op="get") == 1
    assert "response store put failed" in gw.log()


# -- the shipped `make run` setup --------------------------------------------------------------


def test_the_mock_backend_drives_an_agent_turn_through_responses(openai_client):
    """policies/default.yaml's mock backend: a tool call first, text once it has the result,
    and a json_schema answer valid for its schema, through the Responses API."""
    gw = GatewayProcess((REPO / "policies" / "default.yaml").read_text()).start()
    try:
        client = openai_client(gw)
        first = client.responses.create(model="auto", input="Weather in Paris?", tools=[WEATHER_TOOL])
        (call,) = first.output
        assert call.type == "function_call" and call.name == "get_weather"
        jsonschema.validate(json.loads(call.arguments), WEATHER_TOOL["parameters"])
        with client.responses.stream(
            model="auto",
            tools=[WEATHER_TOOL],
            previous_response_id=first.id,
            input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}],
        ) as stream:
            list(stream)
            second = stream.get_final_response()
        assert second.output[0].type == "message" and second.output_text
        schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
        structured = client.responses.create(
            model="auto",
            input="Name a city.",
            text={"format": {"type": "json_schema", "name": "city", "schema": schema}},
        )
        jsonschema.validate(json.loads(structured.output_text), schema)
    finally:
        gw.stop()


def test_a_stream_that_breaks_after_content_ends_with_response_failed_and_is_stored_so(gw, upstream, openai_client):
    """The failed Response the client was told about is stored, as OpenAI keeps one: `retrieve`
    says it failed and why (it was a 404, as if the id had never existed), and a conversation
    continues from its input."""
    upstream.reset(break_after_events=3)  # the role chunk and two words, then the connection drops
    client = openai_client(gw, api_key="sk-alice")
    events = list(client.responses.create(model="auto", input="Say hello.", stream=True))
    kinds = [e.type for e in events]
    assert kinds[0] == "response.created" and kinds[-1] == "response.failed"
    assert "response.completed" not in kinds and kinds.count("response.output_text.delta") == 2
    failed = events[-1].response
    assert failed.status == "failed" and failed.error.message == "The upstream stream broke off."
    stored = client.responses.retrieve(events[0].response.id)
    assert stored == failed and (stored.status, stored.error.code) == ("failed", "server_error")
    (row,) = [e for e in ledger(gw, 1) if e["final"]]
    assert (row["endpoint"], row["status"], row["attempts"]) == ("responses", 502, 1)
    assert len(upstream.received) == 1  # content had reached the client: no second attempt

    upstream.reset()
    again = client.responses.create(model="auto", input="Try again.", previous_response_id=failed.id)
    assert again.status == "completed" and again.previous_response_id == failed.id
    assert upstream.received[-1].body["messages"] == [{"role": "user", "content": "Say hello.\nTry again."}]


def test_a_native_response_failed_after_content_is_stored(start_gateway, native, openai_client):
    """A backend serving /v1/responses that ends its stream with `response.failed` after content
    (no other candidate to continue it): the client gets that event, and the failed Response
    is stored, saying the client's `store`, as `retrieve` returns it."""
    config = NATIVE_FIRST.format(native=native.base_url, chat="http://127.0.0.1:9/v1").replace(
        "    models: [qwen/qwen3-32b]", "    models: [qwen/qwen3-32b]\n    strategy: ordered"
    )
    gw = start_gateway(config.split("  chat-up:")[0] + config[config.index("routes:") :], env=KEYS)
    native.reset(fail_after_events=(6, "failed"))
    client = openai_client(gw, api_key="sk-alice")
    events = list(client.responses.create(model="auto", input="Say hello.", stream=True))
    assert events[-1].type == "response.failed" and len(native.received) == 1
    stored = client.responses.retrieve(events[-1].response.id)
    assert (stored.status, stored.error.code, stored.store) == ("failed", "server_error", True)


def test_an_image_a_tool_output_holds_reaches_the_model(gw, upstream, openai_client):
    """Codex's `view_image` result (an `input_image` in a function_call_output) was dropped
    on the way to a chat backend: the model answered about an image it never got."""
    client = openai_client(gw, api_key="sk-alice")
    image = "data:image/png;base64,iVBORw0KGgo="
    answer = client.responses.create(
        model="auto",
        tools=[WEATHER_TOOL],
        input=[
            {"role": "user", "content": "Show me the map."},
            {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": '{"city":"Paris"}'},
            {"type": "function_call_output", "call_id": "c1", "output": [{"type": "input_image", "image_url": image}]},
        ],
    )
    assert answer.status == "completed"
    sent = upstream.received[-1].body["messages"]
    assert sent[-2:] == [
        {"role": "tool", "tool_call_id": "c1", "content": ""},
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": image}}]},
    ]
    listed = httpx.get(f"{gw.url}/v1/responses/{answer.id}/input_items", headers={"authorization": "Bearer sk-alice"})
    assert listed.json()["data"][0]["output"][0]["image_url"] == image  # stored as sent (newest first)


def test_logprobs_asked_by_include_reach_the_sdks_stream_and_the_stored_response(gw, upstream, openai_client):
    """`include: ["message.output_text.logprobs"]` with `top_logprobs`: the chat backend is
    asked for them and the text events and the output text carry them (they were empty)."""

    def chunk(delta: dict, logprobs=None, finish=None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish}
        return (
            b"data: "
            + json.dumps({"id": "c", "object": "chat.completion.chunk", "choices": [choice]}).encode()
            + b"\n\n"
        )

    top = [{"token": "Hi", "logprob": -0.1, "bytes": [72, 105]}, {"token": "Yo", "logprob": -2.0, "bytes": [89, 111]}]
    usage = {
        "id": "c",
        "object": "chat.completion.chunk",
        "choices": [],
        "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
    }
    upstream.reset(
        raw_stream=[
            chunk({"role": "assistant", "content": ""}),
            chunk(
                {"content": "Hi"},
                {"content": [{"token": "Hi", "logprob": -0.1, "bytes": [72, 105], "top_logprobs": top}]},
            ),
            chunk({}, None, "stop"),
            b"data: " + json.dumps(usage).encode() + b"\n\n",
            b"data: [DONE]\n\n",
        ]
    )
    client = openai_client(gw, api_key="sk-alice")
    with client.responses.stream(
        model="auto", input="Greet.", include=["message.output_text.logprobs"], top_logprobs=2
    ) as stream:
        deltas = [e for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    sent = upstream.received[0].body
    assert (sent["logprobs"], sent["top_logprobs"]) == (True, 2)
    (delta,) = deltas
    assert [(lp.token, lp.logprob, [(t.token, t.logprob) for t in lp.top_logprobs]) for lp in delta.logprobs] == [
        ("Hi", -0.1, [("Hi", -0.1), ("Yo", -2.0)])
    ]
    (logprob,) = final.output[0].content[0].logprobs
    assert (logprob.token, logprob.bytes, [t.token for t in logprob.top_logprobs]) == ("Hi", [72, 105], ["Hi", "Yo"])
    assert client.responses.retrieve(final.id).output[0].content[0].logprobs == final.output[0].content[0].logprobs


def test_compact_is_a_404_saying_it_is_not_supported(gw, upstream, openai_client):
    """POST /v1/responses/compact (OpenAI's compaction, which Codex asks of OpenAI's and Azure's
    providers only) was a 405 naming only GET and DELETE: now OpenAI's error shape saying the
    endpoint is not supported and what to do instead; no backend is asked."""
    client = openai_client(gw, api_key="sk-alice")
    with pytest.raises(openai.NotFoundError) as caught:
        client.responses.compact(model="auto", input="Summarize our conversation.")
    error = caught.value.body
    assert (error["type"], error["code"], error["param"]) == ("invalid_request_error", "unsupported_endpoint", None)
    assert error["message"].startswith("POST /v1/responses/compact is not supported by this gateway")
    assert upstream.received == []
    assert httpx.post(gw.url + "/v1/responses/compact", json={}).status_code == 401  # keys first, as elsewhere
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve("compact")  # GET still reads it as an id


def test_cancel_is_openais_400_for_a_response_that_was_not_in_the_background(gw, openai_client):
    """POST /v1/responses/{id}/cancel was a 404 naming an unknown path: now OpenAI's refusal of
    a response that did not run in the background (none does here), and its 404 for an id
    the key has no response of."""
    client = openai_client(gw, api_key="sk-alice")
    made = client.responses.create(model="auto", input="Say hello.")
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.cancel(made.id)
    assert caught.value.body["message"].startswith("Only background responses can be cancelled")
    with pytest.raises(openai.NotFoundError):
        openai_client(gw, api_key="sk-bob").responses.cancel(made.id)  # another key's
    assert client.responses.retrieve(made.id).status == "completed"


def test_two_workers_share_the_embedded_store(start_gateway, upstream):
    """`--workers 2` without Redis: both workers read and write the one SQLite file, so a
    conversation continues whichever worker takes each request."""
    gw = start_gateway(TRANSLATED.format(chat=upstream.base_url), env=KEYS, workers=2)
    ids = []
    for i in range(6):  # a new connection each time: either worker may answer
        with openai.OpenAI(base_url=gw.url + "/v1", api_key="sk-alice", max_retries=0) as client:
            previous = {"previous_response_id": ids[-1]} if ids else {}
            ids.append(client.responses.create(model="auto", input=f"Turn {i}.", **previous).id)
    assert len(upstream.received[-1].body["messages"]) == 2 * 6 - 1  # five earlier turns and answers, then this one
    for response_id in ids:
        with openai.OpenAI(base_url=gw.url + "/v1", api_key="sk-alice", max_retries=0) as client:
            assert client.responses.retrieve(response_id).id == response_id
