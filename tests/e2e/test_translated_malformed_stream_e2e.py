"""A streamed chat answer that turns malformed, translated for a Messages or Responses
client: a chunk whose choice is not an object, or whose `delta` is not one. The real gateway
process, a fake upstream sending the chunk, the real `anthropic` and `openai` SDKs as callers.

Found by a hostile-upstream pass: the translation ended the client's stream (as it should:
its events cannot say what such a chunk meant) with an error event quoting a Python exception
(`AttributeError: 'str' object has no attribute 'get'`), and the call was accounted as a
success, billed and counted `ok` for the backend that sent it.
"""

from __future__ import annotations

import anthropic
import httpx
import pytest

from tests.e2e.test_hostile_upstream_e2e import CONTENT, ENV, MESSAGES, ledger, policy
from tests.support.scrape import scrape

# Before the upstream's third event (0 is the role chunk): after content reached the client.
MALFORMED_CHUNKS = {
    "choice-not-object": b'data: {"choices": ["x"]}\n\n',
    "delta-not-object": b'data: {"choices": [{"index": 0, "delta": "x"}]}\n\n',
}
PLAIN = "The upstream sent a malformed chunk; the stream ends here."


def _messages_error(gw) -> str:
    with anthropic.Anthropic(base_url=gw.url, api_key="sk-test", max_retries=0, timeout=30) as client:
        with pytest.raises(anthropic.APIStatusError) as caught:
            with client.messages.stream(model="auto", max_tokens=64, messages=MESSAGES) as stream:
                for _ in stream:
                    pass
    return str(caught.value.body["error"]["message"])


def _responses_error(gw, openai_client) -> str:
    client = openai_client(gw)
    events = list(client.responses.create(model="auto", input="Say hello.", stream=True))
    assert events[0].type == "response.created"
    assert any(e.type == "response.output_text.delta" for e in events)  # content came first
    assert events[-1].type == "response.failed"
    # Stored as it ended, as a stream that broke off is (it was a 404).
    assert client.responses.retrieve(events[0].response.id) == events[-1].response
    return str(events[-1].response.error.message)


@pytest.mark.parametrize("chunk", list(MALFORMED_CHUNKS.values()), ids=list(MALFORMED_CHUNKS))
@pytest.mark.parametrize("api", ["messages", "responses"])
def test_a_malformed_chunk_after_content_ends_the_stream_as_the_upstreams_fault(
    start_gateway, upstream, upstream_b, openai_client, api, chunk
):
    # Events 50 ms apart: the chunk comes in a read of its own, after content went out (in
    # the reads before the first content's, it fails over: the test below).
    upstream.reset(inject_before_event={3: chunk}, chunk_delay_s=0.05)
    gw = start_gateway(policy(upstream, upstream_b), env=ENV)
    message = _messages_error(gw) if api == "messages" else _responses_error(gw, openai_client)
    assert message == PLAIN
    assert "Error" not in message and "'" not in message  # no Python exception, nothing of the chunk
    assert len(upstream.received) == 1 and upstream_b.received == []  # content had reached the client
    [row] = ledger(gw, 1)
    assert (row["backend"], row["status"], row["error"]) == ("a", 502, "malformed")
    metrics = scrape(gw.url)
    assert metrics.value("gateway_backend_attempts_total", backend="a", model="m/first", result="malformed") == 1
    assert "AttributeError" not in gw.log()


@pytest.mark.parametrize("chunk", list(MALFORMED_CHUNKS.values()), ids=list(MALFORMED_CHUNKS))
@pytest.mark.parametrize("api", ["messages", "responses"])
def test_a_malformed_chunk_before_content_fails_over_unbilled(
    start_gateway, upstream, upstream_b, openai_client, api, chunk
):
    """Before the first content nothing has reached the client: a chunk the translation cannot
    read fails the attempt like any malformed answer, and the next candidate answers the
    stream whole. Found by a hostile pass: the translation met it only once the answer was
    committed to, and the client got a 502 with a healthy candidate left."""
    upstream.reset(inject_before_event={1: chunk})  # after the role chunk, before any text
    gw = start_gateway(policy(upstream, upstream_b), env=ENV)
    if api == "messages":
        with anthropic.Anthropic(base_url=gw.url, api_key="sk-test", max_retries=0, timeout=30) as client:
            with client.messages.stream(model="auto", max_tokens=64, messages=MESSAGES) as stream:
                text = "".join(stream.text_stream)
                final = stream.get_final_message()
        assert final.stop_reason == "end_turn"
    else:
        events = list(openai_client(gw).responses.create(model="auto", input="Say hello.", stream=True))
        assert [e.type for e in events if e.type in ("response.created", "response.completed")] == [
            "response.created",
            "response.completed",
        ]
        text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text.strip() == CONTENT
    assert len(upstream.received) == 1 and len(upstream_b.received) == 1  # one attempt each, no retry of `a`
    [row] = ledger(gw, 1, failed=(("a", "malformed"),))
    assert (row["backend"], row["status"], row["error"]) == ("b", 200, None)
    metrics = scrape(gw.url)
    assert metrics.value("gateway_backend_attempts_total", backend="a", model="m/first", result="malformed") == 1
    assert metrics.value("gateway_backend_attempts_total", backend="b", model="m/second", result="ok") == 1


def test_streamed_tool_arguments_that_are_not_an_object_end_a_messages_stream_as_malformed(
    start_gateway, upstream, upstream_b
):
    """Anthropic's tool input is an object: the stream ends with an error event that says so
    in the gateway's words (the arguments are not quoted), accounted as the chunk above."""
    call = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "Paris, please"}}
    upstream.reset(tool_call=call, chunk_delay_s=0.05)  # the call's end comes after its start went out
    gw = start_gateway(policy(upstream, upstream_b), env=ENV)
    message = _messages_error(gw)
    assert message == "The upstream's tool call arguments are not a JSON object; the stream ends here."
    [row] = ledger(gw, 1)
    assert (row["backend"], row["status"], row["error"]) == ("a", 502, "malformed")


@pytest.mark.parametrize("api", ["messages", "responses"])
def test_a_malformed_last_chunk_left_unterminated_is_not_relayed_as_chat_bytes(
    start_gateway, upstream, upstream_b, openai_client, api
):
    """The upstream's last event without its blank line is read at the stream's end (the
    accountant's flush), and translated there: one the translation cannot read ended the
    stream with its error event after the chat bytes themselves, which no Messages or
    Responses client can read (a `data: {"choices": ["x"]}` line in an Anthropic stream)."""
    role = b'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}\n\n'
    text = b'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"Hello"}}]}\n\n'
    upstream.reset(raw_stream=[role, text, b'data: {"choices": ["x"]}'], chunk_delay_s=0.05)
    gw = start_gateway(policy(upstream, upstream_b), env=ENV)
    if api == "messages":
        raw = httpx.post(
            gw.url + "/v1/messages",
            json={"model": "auto", "max_tokens": 64, "messages": MESSAGES, "stream": True},
            headers={"x-api-key": "sk-test"},
            timeout=30,
        ).content
        assert raw.count(b"event: error\n") == 1 and raw.rstrip().endswith(b"}")
    else:
        raw = httpx.post(
            gw.url + "/v1/responses",
            json={"model": "auto", "input": "Say hello.", "stream": True},
            headers={"Authorization": "Bearer sk-test"},
            timeout=30,
        ).content
        assert raw.count(b"event: response.failed\n") == 1
    assert b'"choices"' not in raw and b"chat.completion" not in raw  # nothing of the chat stream itself
    assert PLAIN.encode() in raw
    message = _messages_error(gw) if api == "messages" else _responses_error(gw, openai_client)
    assert message == PLAIN  # and the SDKs read the stream to that error
    assert len(upstream.received) == 2 and upstream_b.received == []
    rows = ledger(gw, 2)
    assert [(r["backend"], r["status"], r["error"]) for r in rows] == [("a", 502, "malformed")] * 2
