"""The translated bytes read by the vendors' own clients: the `anthropic` and `openai` SDKs,
pointed through an in-process transport at what our translators produce, parse streams with
their own SSE decoders and stream helpers and raise their own exception classes. (The routes
that serve these bytes over HTTP come next; their end-to-end tests use real processes.)"""

from __future__ import annotations

import anthropic
import httpx2
import openai
import orjson
import pytest

from gateway.protocol.errors import GatewayError
from gateway.protocol.messages_answer import anthropic_error, chat_to_message
from gateway.protocol.messages_stream import MessageStream
from gateway.protocol.responses_answer import chat_to_response
from gateway.protocol.responses_stream import ResponseStream
from gateway.protocol.translation import encode_event
from tests.protocol import samples as S


def _sse(events) -> bytes:
    return b"".join(encode_event(event) for event in events)


def _client(kind, status, body, media_type):
    def answer(request):
        return httpx2.Response(status, content=body, headers={"content-type": media_type})

    http = httpx2.Client(transport=httpx2.MockTransport(answer))
    return kind(
        api_key="sk-test",
        base_url="http://gateway.test/v1" if kind is openai.OpenAI else "http://gateway.test",
        http_client=http,
        max_retries=0,
    )


def _anthropic_events(chunks):
    translator = MessageStream("m", input_tokens=11)
    return [e for c in chunks for e in translator.feed(c)] + translator.finish()


def test_anthropic_sdk_streams_text():
    client = _client(anthropic.Anthropic, 200, _sse(_anthropic_events(S.CHAT_STREAM_TEXT)), "text/event-stream")
    with client.messages.stream(model="m", max_tokens=64, messages=[{"role": "user", "content": "hi"}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Hello there!"
    assert (final.stop_reason, final.usage.input_tokens, final.usage.output_tokens) == ("end_turn", 11, 6)


def test_anthropic_sdk_streams_a_tool_call_and_thinking():
    chunks = [*S.CHAT_STREAM_REASONING[:3], *S.CHAT_STREAM_TOOL_CALLS[1:]]
    client = _client(anthropic.Anthropic, 200, _sse(_anthropic_events(chunks)), "text/event-stream")
    with client.messages.stream(model="m", max_tokens=64, messages=[{"role": "user", "content": "hi"}]) as stream:
        final = stream.get_final_message()
    thinking, tool = final.content
    assert thinking.type == "thinking" and thinking.thinking == "Let me solve this step by step: 27 * 453 = 12,231"
    assert (tool.type, tool.id, tool.name, tool.input) == (
        "tool_use",
        "call_DdmO9pD3xa9XTPNJ32zg2hcA",
        "get_weather",
        {"location": "Paris, France"},
    )
    assert final.stop_reason == "tool_use"


def test_anthropic_sdk_raises_on_an_error_event_mid_stream():
    translator = MessageStream("m")
    events = translator.feed(S.CHAT_STREAM_TEXT[1]) + translator.feed(
        {"error": {"message": "no capacity", "code": 503}}
    )
    client = _client(anthropic.Anthropic, 200, _sse(events), "text/event-stream")
    with pytest.raises(anthropic.APIStatusError, match="no capacity"):
        with client.messages.stream(model="m", max_tokens=64, messages=[{"role": "user", "content": "hi"}]) as stream:
            stream.get_final_message()


def test_anthropic_sdk_reads_a_whole_message():
    body = orjson.dumps(chat_to_message(S.CHAT_COMPLETION_TOOL_CALLS, "m"))
    message = _client(anthropic.Anthropic, 200, body, "application/json").messages.create(
        model="m", max_tokens=64, messages=[{"role": "user", "content": "hi"}]
    )
    assert message.content[0].input == {"location": "Boston, MA"} and message.stop_reason == "tool_use"


@pytest.mark.parametrize(
    ("status", "exception"),
    [
        (400, anthropic.BadRequestError),
        (401, anthropic.AuthenticationError),
        (404, anthropic.NotFoundError),
        (429, anthropic.RateLimitError),
        (503, anthropic.OverloadedError),
        (504, anthropic.GatewayTimeoutError),
    ],
)
def test_anthropic_sdk_raises_its_own_exception_classes(status, exception):
    sent_status, body = anthropic_error(GatewayError(status, "why"))
    client = _client(anthropic.Anthropic, sent_status, orjson.dumps(body), "application/json")
    with pytest.raises(exception) as caught:
        client.messages.create(model="m", max_tokens=8, messages=[{"role": "user", "content": "hi"}])
    assert caught.value.body == body


def _response_events(chunks, request):
    translator = ResponseStream(request, "resp_abc", created_at=1)
    return [e for c in chunks for e in translator.feed(c)] + translator.finish()


def test_openai_sdk_streams_a_response_with_its_stream_helper():
    request = {"model": "m", "input": "hi"}
    body = _sse(_response_events(S.CHAT_STREAM_TEXT, request))
    client = _client(openai.OpenAI, 200, body, "text/event-stream")
    with client.responses.stream(model="m", input="hi") as stream:
        deltas = [event.delta for event in stream if event.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert deltas == ["Hello", " there", "!"]
    assert (final.id, final.status, final.output_text, final.usage.total_tokens) == (
        "resp_abc",
        "completed",
        "Hello there!",
        17,
    )


def test_openai_sdk_streams_function_calls():
    body = _sse(_response_events(S.CHAT_STREAM_TOOL_CALLS, {"model": "m", "input": "hi"}))
    events = list(
        _client(openai.OpenAI, 200, body, "text/event-stream").responses.create(model="m", input="hi", stream=True)
    )
    done = [e for e in events if e.type == "response.function_call_arguments.done"]
    assert [e.arguments for e in done] == ['{"location":"Paris, France"}']
    assert events[-1].response.output[0].call_id == "call_DdmO9pD3xa9XTPNJ32zg2hcA"


def test_openai_sdk_reads_a_whole_response():
    body = orjson.dumps(chat_to_response(S.CHAT_COMPLETION_REASONING, {"model": "m", "input": "hi"}, "resp_r"))
    response = _client(openai.OpenAI, 200, body, "application/json").responses.create(model="m", input="hi")
    assert response.output_text == "9.8 is greater than 9.11."
    assert response.output[0].type == "reasoning" and response.usage.input_tokens_details.cached_tokens == 16
